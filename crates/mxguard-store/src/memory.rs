//! [`MemoryStore`]: the state store in memory, forgotten at exit.
//!
//! # Security
//!
//! Holds the same data as the embedded store and normalises it the same
//! way (see the crate header); nothing here is read from outside the
//! process.

use std::net::IpAddr;
use std::sync::{PoisonError, RwLock};

use crate::bans::{BanEntry, BanIndex};
use crate::{Ban, StateStore, StoreError, clean_reason, parse_store_net};

/// A [`StateStore`] in memory: for tests, and for a server that keeps no
/// state across restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    bans: RwLock<BanIndex>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl StateStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn ban(&self, net: &str, until: u64, reason: &str) -> Result<(), StoreError> {
        let entry = BanEntry {
            until,
            reason: clean_reason(reason),
        };
        let net = parse_store_net(net)?;
        let mut bans = self.bans.write().unwrap_or_else(PoisonError::into_inner);
        bans.insert(net, entry);
        Ok(())
    }

    fn unban(&self, net: &str) -> Result<bool, StoreError> {
        let net = parse_store_net(net)?;
        let mut bans = self.bans.write().unwrap_or_else(PoisonError::into_inner);
        Ok(bans.remove(&net))
    }

    fn bans_at(&self, now: u64) -> Result<Vec<Ban>, StoreError> {
        let bans = self.bans.read().unwrap_or_else(PoisonError::into_inner);
        Ok(bans.list(now))
    }

    fn banned(&self, ip: IpAddr, now: u64) -> Result<Option<Ban>, StoreError> {
        let bans = self.bans.read().unwrap_or_else(PoisonError::into_inner);
        Ok(bans.lookup(ip, now))
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut bans = self.bans.write().unwrap_or_else(PoisonError::into_inner);
        let expired = bans.expired(now);
        for net in &expired {
            bans.remove(net);
        }
        Ok(expired.len())
    }
}

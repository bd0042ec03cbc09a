//! [`MemoryStore`]: the state store in memory, forgotten at exit.
//!
//! # Security
//!
//! Holds the same data as the embedded store and normalises it the same
//! way (see the crate header); nothing here is read from outside the
//! process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError, RwLock};

use crate::bans::{BanEntry, BanIndex};
use crate::{Ban, StateStore, StoreError, clean_reason, parse_store_net};

/// A [`StateStore`] in memory: for tests, and for a server that keeps no
/// state across restarts.
#[derive(Debug, Default)]
pub struct MemoryStore {
    bans: RwLock<BanIndex>,
    /// Key -> (value, expires).
    values: Mutex<HashMap<String, (u64, u64)>>,
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

    fn incr(&self, key: &str, n: u64, expires: u64, now: u64) -> Result<u64, StoreError> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = values.entry(key.to_string()).or_insert((0, expires));
        if entry.1 <= now {
            *entry = (0, expires);
        }
        entry.0 = entry.0.saturating_add(n);
        Ok(entry.0)
    }

    fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), StoreError> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values.insert(key.to_string(), (value, expires));
        Ok(())
    }

    fn get(&self, key: &str, now: u64) -> Result<Option<u64>, StoreError> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(values
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| *v))
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let mut bans = self.bans.write().unwrap_or_else(PoisonError::into_inner);
        let expired = bans.expired(now);
        for net in &expired {
            bans.remove(net);
        }
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let before = values.len();
        values.retain(|_, (_, expires)| *expires > now);
        Ok(expired.len() + before - values.len())
    }
}

//! [`EmbeddedStore`]: the state store in one redb file,
//! `data_dir/state.redb` by default.
//!
//! Tables: `meta` (`"schema_version"` -> 1), `bans` (network as
//! `"203.0.113.0/24"` -> `(until, reason)`) and `values` (key ->
//! `(value, expires)`: counters and expiring values). A ban is one redb
//! transaction committed with `Durability::Immediate` (flushed before the
//! call returns); the in-memory ban index is updated after the commit,
//! under a writer lock, so it never shows a ban the file does not hold.
//! Reads of bans never touch the file. Counters and values change on
//! every message, so they are committed without a flush
//! (`Durability::None`): the next flushed commit (a ban, a purge, or
//! closing the store) writes them out, and a crash loses at most the
//! latest counts, never a ban.
//!
//! redb takes an exclusive lock on the file for as long as the
//! [`EmbeddedStore`] lives: a second open, from this process or another,
//! fails with [`StoreError::Locked`]. Tools that need the state while the
//! server runs (`mxguard ban`, the admin page) must ask the server.
//!
//! # Security
//!
//! The file lives in `data_dir` and is trusted like the queue, but every
//! record is decoded defensively: a key that is not a network is
//! [`StoreError::Corrupt`], naming file and key, never a panic. Networks are
//! stored normalised and reasons cleaned (see the crate header), so what
//! a client influenced (the reason of an automatic ban may quote it)
//! cannot inject lines into logs or the admin page.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use ipnet::IpNet;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use crate::bans::{BanEntry, BanIndex};
use crate::{Ban, StateStore, StoreError, clean_reason, normalize_net, parse_store_net};

/// The state file's name inside `data_dir`.
pub const FILE_NAME: &str = "state.redb";

/// The encoding version of the tables below.
const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BANS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("bans");
const VALUES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("values");

/// A [`StateStore`] in one redb file; see the module header.
pub struct EmbeddedStore {
    path: PathBuf,
    db: Database,
    bans: RwLock<BanIndex>,
    /// Held across a write transaction and the index update that follows,
    /// so the index changes in the file's commit order.
    writer: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the state file at `path`, creating it if missing (its
    /// directory must exist), and loads the bans into memory.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            source => StoreError::Open {
                path: path.clone(),
                source: Box::new(source),
            },
        })?;
        let store = EmbeddedStore {
            path,
            db,
            bans: RwLock::new(BanIndex::default()),
            writer: Mutex::new(()),
        };
        store.init()?;
        let index = store.load()?;
        *store.bans.write().unwrap_or_else(PoisonError::into_inner) = index;
        Ok(store)
    }

    /// Opens `data_dir/state.redb` ([`FILE_NAME`]).
    pub fn open_in(data_dir: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open(data_dir.as_ref().join(FILE_NAME))
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    /// Creates the tables and checks (or writes) the schema version.
    fn init(&self) -> Result<(), StoreError> {
        let op = "open";
        let txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(op, e))?;
            let found = meta
                .get("schema_version")
                .map_err(|e| self.err(op, e))?
                .map(|v| v.value());
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: self.path.clone(),
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(|e| self.err(op, e))?;
                }
            }
            txn.open_table(BANS).map_err(|e| self.err(op, e))?;
            txn.open_table(VALUES).map_err(|e| self.err(op, e))?;
        }
        txn.commit().map_err(|e| self.err(op, e))
    }

    /// One unflushed write transaction on the `values` table.
    fn with_values<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut redb::Table<'_, &str, (u64, u64)>) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| self.err(op, redb::Error::from(e)))?;
        let out = {
            let mut table = txn.open_table(VALUES).map_err(|e| self.err(op, e))?;
            f(&mut table).map_err(|e| self.err(op, e))?
        };
        txn.commit().map_err(|e| self.err(op, e))?;
        Ok(out)
    }

    /// Reads every ban, expired ones included (they are skipped on read
    /// and deleted by `purge_expired`).
    fn load(&self) -> Result<BanIndex, StoreError> {
        let op = "load";
        let txn = self.db.begin_read().map_err(|e| self.err(op, e))?;
        let table = txn.open_table(BANS).map_err(|e| self.err(op, e))?;
        let mut index = BanIndex::default();
        for row in table.iter().map_err(|e| self.err(op, e))? {
            let (k, v) = row.map_err(|e| self.err(op, e))?;
            let key = k.value();
            let net: IpNet = key.parse().map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                table: "bans",
                key: key.to_string(),
                message: format!("not a network: {e}"),
            })?;
            let net_norm = normalize_net(net);
            if net_norm.to_string() != key {
                // Only `ban` writes here, always in normal form.
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    table: "bans",
                    key: key.to_string(),
                    message: format!("not in normal form (want {net_norm})"),
                });
            }
            let (until, reason) = v.value();
            index.insert(
                net_norm,
                BanEntry {
                    until,
                    reason: clean_reason(reason),
                },
            );
        }
        Ok(index)
    }
}

impl StateStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn ban(&self, net: &str, until: u64, reason: &str) -> Result<(), StoreError> {
        let op = "ban";
        let net = parse_store_net(net)?;
        let reason = clean_reason(reason);
        let key = net.to_string();
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        {
            let mut table = txn.open_table(BANS).map_err(|e| self.err(op, e))?;
            table
                .insert(key.as_str(), (until, reason.as_str()))
                .map_err(|e| self.err(op, e))?;
        }
        txn.commit().map_err(|e| self.err(op, e))?;
        self.bans
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(net, BanEntry { until, reason });
        Ok(())
    }

    fn unban(&self, net: &str) -> Result<bool, StoreError> {
        let op = "unban";
        let net = parse_store_net(net)?;
        let key = net.to_string();
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        let removed = {
            let mut table = txn.open_table(BANS).map_err(|e| self.err(op, e))?;
            table
                .remove(key.as_str())
                .map_err(|e| self.err(op, e))?
                .is_some()
        };
        txn.commit().map_err(|e| self.err(op, e))?;
        self.bans
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&net);
        Ok(removed)
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
        self.with_values("incr", |table| {
            let current = table.get(key)?.map(|v| v.value()).filter(|(_, e)| *e > now);
            let (value, expires) = match current {
                Some((v, e)) => (v.saturating_add(n), e),
                None => (n, expires),
            };
            table.insert(key, (value, expires))?;
            Ok(value)
        })
    }

    fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), StoreError> {
        self.with_values("put", |table| {
            table.insert(key, (value, expires))?;
            Ok(())
        })
    }

    fn get(&self, key: &str, now: u64) -> Result<Option<u64>, StoreError> {
        let op = "get";
        let txn = self.db.begin_read().map_err(|e| self.err(op, e))?;
        let table = txn.open_table(VALUES).map_err(|e| self.err(op, e))?;
        let row = table.get(key).map_err(|e| self.err(op, e))?;
        Ok(row
            .map(|v| v.value())
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| v))
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let op = "purge";
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = self
            .bans
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .expired(now);
        // A flushed commit: it also writes out the unflushed counters.
        let txn = self.db.begin_write().map_err(|e| self.err(op, e))?;
        let values_purged = {
            let mut table = txn.open_table(BANS).map_err(|e| self.err(op, e))?;
            for net in &expired {
                table
                    .remove(net.to_string().as_str())
                    .map_err(|e| self.err(op, e))?;
            }
            let mut values = txn.open_table(VALUES).map_err(|e| self.err(op, e))?;
            values
                .extract_if(|_, (_, expires)| expires <= now)
                .map_err(|e| self.err(op, e))?
                .count()
        };
        txn.commit().map_err(|e| self.err(op, e))?;
        let mut bans = self.bans.write().unwrap_or_else(PoisonError::into_inner);
        for net in &expired {
            bans.remove(net);
        }
        Ok(expired.len() + values_purged)
    }
}

impl Drop for EmbeddedStore {
    /// Writes out the unflushed counters with one flushed commit.
    fn drop(&mut self) {
        if let Ok(txn) = self.db.begin_write() {
            let _ = txn.commit();
        }
    }
}

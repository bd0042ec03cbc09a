//! mxguard's state store: what the server remembers between connections
//! and across restarts: bans (automatic and manual), and expiring counters
//! and values, on which the server builds its rate limits, greylist
//! triplets and POP-before-SMTP addresses.
//!
//! [`StateStore`] is the one interface the server uses; it has three backends:
//!
//! - [`EmbeddedStore`]: a single [redb] file (`data_dir/state.redb`), the
//!   default. It survives restarts. redb locks the file: while the server
//!   runs, no second process (the `mxguard` CLI included) can open it; the
//!   CLI asks the running server over its control socket instead.
//! - [`MemoryStore`]: the same behaviour in memory, forgotten at exit; for
//!   tests and for a server that wants no state on disk.
//! - [`RedisStore`]: a Redis server shared by several mxguard nodes, which
//!   then share bans (each node answers [`StateStore::banned`] from a local
//!   copy refreshed every second) and counters. Calls are bounded by a
//!   timeout and fail open ([`StoreError::Unavailable`]) while Redis is
//!   down; the store reconnects by itself.
//!
//! # Design
//!
//! - Every method is one atomic operation, so a backend can map it to one
//!   transaction (redb) or one command or script (Redis).
//! - Expiry is explicit: entries carry an `until` in Unix seconds, and
//!   methods that depend on the time take `now`. An expired entry is never
//!   returned; it stays in the file until [`StateStore::purge_expired`].
//! - [`StateStore::banned`] runs on every connection, so both backends
//!   answer it from an in-memory index loaded at open and
//!   updated on every write, without touching the file. The index (`bans.rs`)
//!   looks up one hash entry per prefix length in use, whatever the number of bans.
//! - A further kind of state is a further group of methods on the trait, a
//!   table of its own in the redb file (tables are created at open, so an
//!   older file simply gains the new table) and a field in [`MemoryStore`].
//!   The `meta` table's schema version changes only when the encoding of an
//!   existing table does.
//!
//! # Security
//!
//! Bans decide who may connect, so the store must not be bent by the
//! addresses and texts it is given: networks are normalised (host bits
//! cleared, IPv4-mapped IPv6 stored and looked up as IPv4, so
//! `::ffff:203.0.113.7` cannot slip past a ban of `203.0.113.7`), and
//! reasons, which may quote client input, have control characters replaced
//! and are cut to [`MAX_REASON_LEN`] bytes before they reach the file, the
//! logs or the admin page. The state file itself is trusted like the rest
//! of `data_dir`, but it is read defensively: a record that does not
//! decode is an error naming the file and the key, never a panic.

mod bans;
mod embedded;
mod memory;
mod redis_store;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub use embedded::{EmbeddedStore, FILE_NAME};
pub use ipnet::IpNet;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// The longest ban reason kept, in bytes; longer ones are cut at a
/// character boundary.
pub const MAX_REASON_LEN: usize = 200;

/// One ban: connections from `net` are refused until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The network, normalised, always with its prefix length:
    /// `"203.0.113.7/32"`, `"198.51.100.0/24"`, `"2001:db8::/32"`.
    pub net: String,
    /// Unix seconds; the ban holds while `now < until`. `u64::MAX` never
    /// expires.
    pub until: u64,
    /// Why, for the log and the admin page (cleaned, at most
    /// [`MAX_REASON_LEN`] bytes).
    pub reason: String,
}

/// A failure of the state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another `EmbeddedStore` in this one) has the
    /// file open. redb locks it for as long as the server runs.
    #[error(
        "{}: the state store is in use by another process (a running mxguard server?); \
         ask the server over its control socket instead",
        .path.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
    },
    /// The file could not be opened or created.
    #[error("{}: cannot open the state store: {source}", .path.display())]
    Open {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A read or write of the file failed.
    #[error("{}: state store {op} failed: {source}", .path.display())]
    Database {
        /// The state file.
        path: PathBuf,
        /// What was being done: `"ban"`, `"unban"`, `"purge"`, `"load"`.
        op: &'static str,
        /// Why.
        #[source]
        source: Box<redb::Error>,
    },
    /// The file was written by an incompatible version of mxguard.
    #[error(
        "{}: state store schema version {found}, this mxguard reads version {expected}",
        .path.display()
    )]
    Schema {
        /// The state file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The version this build writes.
        expected: u64,
    },
    /// A network given to [`StateStore::ban`] or [`StateStore::unban`] is
    /// neither an address nor a CIDR block.
    #[error("{net:?}: expected an IP address or a CIDR block like 198.51.100.0/24: {message}")]
    InvalidNetwork {
        /// The text given.
        net: String,
        /// What the parser said.
        message: String,
    },
    /// A remote store (Redis) did not answer, or answered with an error.
    /// The server carries on without the check (fail open).
    #[error("{backend} state store unavailable: {message}")]
    Unavailable {
        /// `"redis"`.
        backend: &'static str,
        /// What failed.
        message: String,
    },
    /// A record did not decode.
    #[error("{}: corrupt {table} record {key:?}: {message}", .path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The table (`"bans"`).
        table: &'static str,
        /// The record's key, as stored.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The state the server keeps between connections. Implemented by
/// [`EmbeddedStore`], [`RedisStore`] and [`MemoryStore`]; shared as
/// `Arc<dyn StateStore>`.
pub trait StateStore: Send + Sync {
    /// `"embedded"`, `"redis"` or `"memory"`, for logs.
    fn backend(&self) -> &'static str;

    // --- bans ---

    /// Bans `net` until `until` (Unix seconds). `net` is a CIDR block or a
    /// bare address, as [`parse_net`] reads it (`"203.0.113.7"`,
    /// `"198.51.100.0/24"`, `"2001:db8::/32"`); anything else is
    /// [`StoreError::InvalidNetwork`]. A ban of the same network (after
    /// normalisation) is replaced: its end and reason are the new ones, even
    /// if that shortens it.
    fn ban(&self, net: &str, until: u64, reason: &str) -> Result<(), StoreError>;

    /// Removes the ban of exactly `net` (read like [`StateStore::ban`]'s,
    /// then normalised; an address inside a banned network does not lift
    /// the network's ban). Returns whether there was one, expired or not.
    fn unban(&self, net: &str) -> Result<bool, StoreError>;

    /// The bans in force at `now`, sorted by network.
    fn bans_at(&self, now: u64) -> Result<Vec<Ban>, StoreError>;

    /// The bans in force now (by the system clock), sorted by network.
    fn bans(&self) -> Result<Vec<Ban>, StoreError> {
        self.bans_at(unix_now())
    }

    /// The ban in force at `now` that covers `ip`, the most specific one if
    /// several do. Called for every connection: answered from memory.
    fn banned(&self, ip: IpAddr, now: u64) -> Result<Option<Ban>, StoreError>;

    // --- expiring counters and values: rate limits, POP-before-SMTP,
    // --- greylisting. Keys are built by the server (`rate:ip:...`).

    /// Adds `n` to the counter `key` and returns its new value. A counter
    /// that is missing (or expired at `now`) starts from 0 and expires at
    /// `expires` (Unix seconds); an existing one keeps its expiry.
    fn incr(&self, key: &str, n: u64, expires: u64, now: u64) -> Result<u64, StoreError>;

    /// Sets `key` to `value`, expiring at `expires` (Unix seconds).
    fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), StoreError>;

    /// The value of `key` at `now`: `None` when missing or expired.
    fn get(&self, key: &str, now: u64) -> Result<Option<u64>, StoreError>;

    /// Deletes every entry expired at `now`; returns how many.
    fn purge_expired(&self, now: u64) -> Result<usize, StoreError>;
}

/// The system clock in Unix seconds (0 if it is set before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The form every network is stored and compared in: host bits cleared, and
/// an IPv4-mapped IPv6 network (`::ffff:a.b.c.d/96..128`) turned into the
/// IPv4 network it maps.
pub fn normalize_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

/// Parses a network as an administrator writes it: a CIDR block
/// (`"198.51.100.0/24"`, `"2001:db8::/32"`) or a bare address, which becomes
/// a /32 or /128. The result is normalised ([`normalize_net`]).
pub fn parse_net(text: &str) -> Result<IpNet, ipnet::AddrParseError> {
    let text = text.trim();
    let net = match text.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => text.parse::<IpNet>()?,
    };
    Ok(normalize_net(net))
}

/// [`parse_net`] for the backends: the error is a [`StoreError`].
pub(crate) fn parse_store_net(text: &str) -> Result<IpNet, StoreError> {
    parse_net(text).map_err(|e| StoreError::InvalidNetwork {
        net: text.to_string(),
        message: e.to_string(),
    })
}

/// A ban reason as stored: control characters replaced by spaces, cut to
/// [`MAX_REASON_LEN`] bytes at a character boundary.
pub fn clean_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_LEN));
    for c in reason.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON_LEN {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_networks() {
        let cases: &[(&str, &str)] = &[
            ("203.0.113.7/32", "203.0.113.7/32"),
            ("203.0.113.7/24", "203.0.113.0/24"),
            ("::ffff:203.0.113.7/128", "203.0.113.7/32"),
            ("::ffff:203.0.113.7/120", "203.0.113.0/24"),
            ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
            ("2001:db8::1/128", "2001:db8::1/128"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::/0", "::/0"),
        ];
        for (input, want) in cases {
            let got = normalize_net(input.parse().unwrap()).to_string();
            assert_eq!(got, *want, "{input}: got {got}, want {want}");
        }
    }

    #[test]
    fn parses_networks() {
        let cases: &[(&str, Option<&str>)] = &[
            ("203.0.113.7", Some("203.0.113.7/32")),
            (" 203.0.113.7/32 ", Some("203.0.113.7/32")),
            ("203.0.113.9/24", Some("203.0.113.0/24")),
            ("2001:db8::1", Some("2001:db8::1/128")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("::ffff:198.51.100.1", Some("198.51.100.1/32")),
            ("203.0.113.7/33", None),
            ("203.0.113", None),
            ("", None),
            ("host.example", None),
        ];
        for (input, want) in cases {
            let got = parse_net(input).ok().map(|n| n.to_string());
            assert_eq!(
                got.as_deref(),
                *want,
                "{input:?}: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn cleans_reasons() {
        assert_eq!(clean_reason("10 errors\r\nX: y"), "10 errors  X: y");
        let long = "é".repeat(150);
        let got = clean_reason(&long);
        assert_eq!(got.len(), MAX_REASON_LEN);
        assert!(got.chars().all(|c| c == 'é'));
    }
}

//! [`RedisStore`]: the state store on a Redis server (7.0 or later), shared
//! by every mxguard node that points at it: a ban made on one node holds on
//! all of them within about a second, and counters are common.
//!
//! Keys, all under `mxguard:`:
//!
//! - `mxguard:ban:<net>` = `"<until> <reason>"`, expiring at `until`
//!   (`EXPIREAT`; a ban beyond year 9999, such as `u64::MAX`, never
//!   expires), plus the set `mxguard:bans` of the banned networks, so a node
//!   can list them without a `SCAN`. Set members whose key is gone are
//!   removed by the next refresh or purge.
//! - `mxguard:v:<key>` = a decimal `u64`: counters (`INCRBY`, then
//!   `EXPIREAT .. NX` in the same `MULTI`/`EXEC`, so a counter keeps the
//!   expiry it was created with) and values (`SET .. EXAT`). The `v:`
//!   level keeps the server's keys apart from the ban keys whatever they
//!   are called.
//!
//! Redis expires keys by its own clock: the `now` given to
//! [`StateStore::get`] and [`StateStore::incr`] cannot move that expiry, so
//! the nodes' clocks and Redis's should agree (NTP). Bans carry their
//! `until` in the value, so [`StateStore::banned`], [`StateStore::bans_at`]
//! and [`StateStore::purge_expired`] do honour the `now` they are given.
//!
//! # Failure: bounded, fail open
//!
//! The trait is synchronous and is called from the server's async tasks,
//! so every call is bounded: connections are made with the timeout given
//! to [`RedisStore::open`], and reads and writes on them time out the same
//! way. A small pool keeps connections between calls; one that fails is
//! dropped, with the whole pool (after a failure the others are likely
//! dead too). After a failure a circuit breaker opens: for the next second
//! every call fails at once with [`StoreError::Unavailable`], without
//! touching the network; then one call (the first to come, possibly the
//! background refresh) tries again while the others still fail at once. A
//! dead or hung Redis therefore costs at most about one timed-out attempt
//! a second, and the store reconnects by itself when Redis is back.
//! [`RedisStore::open`] only parses the URL and never fails because Redis
//! is down; the server carries on without the checks that need it.
//!
//! [`StateStore::banned`] runs on every connection and never touches the
//! network: it reads a local copy of the bans (the crate's ban index),
//! loaded at open, refreshed from Redis every second by a background
//! thread (which ends when the store is dropped), and updated at once by
//! this node's own `ban` and `unban`. While Redis is down, the copy keeps
//! the last bans known. [`StateStore::bans_at`] refreshes it first when it
//! can.
//!
//! # Security
//!
//! Keys may contain client text (the server builds counter keys from
//! addresses and envelope senders): Redis keys are binary-safe and every
//! key and value is sent as one argument of the protocol, never spliced
//! into a command or a script, so such text cannot change what is run.
//! Keys and values quoted in errors are quoted with `{:?}` (control
//! characters escaped). Networks and reasons are normalised and cleaned
//! before they are written, like in the other backends, and what is read
//! back from Redis (which other nodes, or anyone with access to it, write)
//! is parsed defensively: a value that is not a number, or a ban record
//! that does not decode, is an error naming the key, never a panic, and a
//! bad ban record never enters the local copy. The Redis URL may carry a
//! password: it is never shown; [`RedisStore::address`] and the errors name
//! only host, port and database.

use std::net::IpAddr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use redis::{Client, Connection, ConnectionLike, RedisResult};

use crate::bans::{BanEntry, BanIndex};
use crate::{Ban, StateStore, StoreError, clean_reason, normalize_net, parse_store_net, unix_now};

/// The backend's name, in errors and [`StateStore::backend`].
const BACKEND: &str = "redis";
/// The set of banned networks.
const BANS_KEY: &str = "mxguard:bans";
/// A ban: `mxguard:ban:<net>`.
const BAN_PREFIX: &str = "mxguard:ban:";
/// A counter or value: `mxguard:v:<key>`.
const VALUE_PREFIX: &str = "mxguard:v:";
/// How long the breaker stays open after a failure.
const BREAK_FOR: Duration = Duration::from_secs(1);
/// How often the background thread reloads the bans.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Connections kept between calls; more are made (and then dropped) when
/// more calls run at once.
const POOL_MAX: usize = 8;
/// The last expiry sent to Redis (9999-12-31T23:59:59Z); a later one (such
/// as `u64::MAX`, "never") is stored without expiry.
const LAST_EXPIRY: u64 = 253_402_300_799;

/// Deletes the ban records given, each only if it still holds the value
/// read (an empty expected value: only if it is still missing), so that a
/// ban made meanwhile by another node survives. Returns how many networks
/// left the set.
///
/// `KEYS[1]`: the set of networks; `KEYS[i]` (i >= 2): a ban key;
/// `ARGV[2i-3]`: its network; `ARGV[2i-2]`: the value expected.
const SWEEP_SCRIPT: &str = r"
local removed = 0
for i = 2, #KEYS do
  local want = ARGV[2 * i - 2]
  local v = redis.call('GET', KEYS[i])
  if (v == false and want == '') or v == want then
    if v then redis.call('DEL', KEYS[i]) end
    removed = removed + redis.call('SREM', KEYS[1], ARGV[2 * i - 3])
  end
end
return removed
";

/// A [`StateStore`] on a Redis server shared by several nodes; see the
/// module header.
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Dropping it (with the store) ends the refresh thread.
    _stop: mpsc::Sender<()>,
}

struct Inner {
    client: Client,
    /// `host:port/db`, for errors and logs (never the password).
    address: String,
    timeout: Duration,
    pool: Mutex<Vec<Connection>>,
    breaker: Mutex<Breaker>,
    bans: RwLock<BanIndex>,
    /// Held by `ban`, `unban` and a refresh across their Redis call and
    /// the update of `bans` that follows, so a refresh never overwrites the
    /// copy with a snapshot older than this node's own latest change.
    sync: Mutex<()>,
}

#[derive(Default)]
struct Breaker {
    /// Calls fail at once until then.
    open_until: Option<Instant>,
    /// Why the last call failed.
    last_error: String,
}

/// What a reload of the bans found.
struct Reload {
    /// Networks that left the set (expired or vanished records).
    removed: usize,
    /// Ban records that do not decode: (key, why).
    corrupt: Vec<(String, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(message: String) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        message,
    }
}

/// `url` without the password, for an error about the URL itself.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn ban_key(net: &str) -> String {
    format!("{BAN_PREFIX}{net}")
}

fn value_key(key: &str) -> String {
    format!("{VALUE_PREFIX}{key}")
}

/// Decodes a ban record read back: the network (a member of the set) and
/// the value `"<until> <reason>"`.
fn decode_ban(member: &[u8], value: &[u8]) -> Result<(IpNet, BanEntry), String> {
    let text = std::str::from_utf8(member).map_err(|_| "network is not UTF-8".to_string())?;
    let net: IpNet = text.parse().map_err(|e| format!("not a network: {e}"))?;
    let norm = normalize_net(net);
    if norm.to_string() != text {
        return Err(format!("network not in normal form (want {norm})"));
    }
    let value = String::from_utf8_lossy(value);
    let (until, reason) = value
        .split_once(' ')
        .ok_or_else(|| format!("value {value:?} is not \"<until> <reason>\""))?;
    let until: u64 = until
        .parse()
        .map_err(|e| format!("value {value:?}: bad until: {e}"))?;
    Ok((
        norm,
        BanEntry {
            until,
            reason: clean_reason(reason),
        },
    ))
}

/// A counter or value read back from `address`: a decimal `u64`.
fn decode_value(address: &str, key: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            unavailable(format!(
                "{address}: {:?}: corrupt value {:?}: not a number",
                value_key(key),
                String::from_utf8_lossy(bytes)
            ))
        })
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://127.0.0.1:6379/0`,
    /// `redis://:password@host:6379/2`, `redis+unix:///run/redis.sock`).
    /// Each call waits at most about `timeout` for a connection and as
    /// much for each read or write. Fails only on a URL it cannot read or
    /// a zero `timeout`: Redis being down is not an error here (calls fail
    /// open until it is back); the bans are loaded now if Redis answers,
    /// else by the background refresh once it does.
    pub fn open(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        if timeout.is_zero() {
            return Err(unavailable(format!(
                "{}: the timeout must be more than zero",
                redact(url)
            )));
        }
        let client = Client::open(url)
            .map_err(|e| unavailable(format!("{}: not a Redis URL: {e}", redact(url))))?;
        let info = client.get_connection_info();
        let address = format!("{}/{}", info.addr(), info.redis_settings().db());
        let inner = Arc::new(Inner {
            client,
            address,
            timeout,
            pool: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker::default()),
            bans: RwLock::new(BanIndex::default()),
            sync: Mutex::new(()),
        });
        // Redis may be down: the refresh thread loads the bans later.
        let _ = inner.reload(None);
        let (stop, stopped) = mpsc::channel::<()>();
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("mxguard-redis-bans".into())
            .spawn(move || refresh_loop(&weak, &stopped))
            .map_err(|e| {
                unavailable(format!(
                    "{}: cannot start the ban refresh thread: {e}",
                    inner.address
                ))
            })?;
        Ok(RedisStore { inner, _stop: stop })
    }

    /// The server, as `host:port/db` (no password), for logs.
    pub fn address(&self) -> &str {
        &self.inner.address
    }
}

/// The background refresh: reloads the bans every [`REFRESH_EVERY`] until
/// the store is dropped (the channel disconnects).
fn refresh_loop(store: &Weak<Inner>, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(REFRESH_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        // Failures open the breaker; the copy keeps the last bans known.
        let _ = inner.reload(None);
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.inner.address)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Lets a call through, or fails it at once while the breaker is open.
    /// Once the breaker's second has passed, the call let through is the
    /// probe: the breaker stays open for the others until it ends.
    fn admit(&self, op: &str) -> Result<(), StoreError> {
        let mut breaker = lock(&self.breaker);
        if let Some(until) = breaker.open_until {
            let now = Instant::now();
            if now < until {
                return Err(unavailable(format!(
                    "{op} on {}: not retried within {} s of a failure ({})",
                    self.address,
                    BREAK_FOR.as_secs(),
                    breaker.last_error
                )));
            }
            // Long enough for the probe to connect, write and read.
            breaker.open_until = Some(now + BREAK_FOR + self.timeout * 3);
        }
        Ok(())
    }

    fn connect(&self) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    /// Runs `f` on a pooled or new connection, under the breaker. A pooled
    /// connection found dropped (Redis restarted since it was last used) is
    /// replaced once by a new one.
    fn call<T>(
        &self,
        op: &str,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.admit(op)?;
        let mut retried = false;
        loop {
            let pooled = lock(&self.pool).pop();
            let from_pool = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => match self.connect() {
                    Ok(conn) => conn,
                    Err(e) => return Err(self.failed(op, &e)),
                },
            };
            match f(&mut conn) {
                Ok(v) => {
                    lock(&self.breaker).open_until = None;
                    let mut pool = lock(&self.pool);
                    if conn.is_open() && pool.len() < POOL_MAX {
                        pool.push(conn);
                    }
                    return Ok(v);
                }
                Err(e) if from_pool && !retried && e.is_connection_dropped() => {
                    lock(&self.pool).clear();
                    retried = true;
                }
                Err(e) => return Err(self.failed(op, &e)),
            }
        }
    }

    /// Opens the breaker and drops the pooled connections.
    fn failed(&self, op: &str, e: &redis::RedisError) -> StoreError {
        let message = format!("{op} on {}: {e}", self.address);
        lock(&self.pool).clear();
        let mut breaker = lock(&self.breaker);
        breaker.open_until = Some(Instant::now() + BREAK_FOR);
        breaker.last_error.clone_from(&message);
        unavailable(message)
    }

    /// Reloads the local copy of the bans from Redis, removing from the set
    /// the networks whose record is gone, and with `purge_at`, also the bans
    /// expired at that time (records included).
    fn reload(&self, purge_at: Option<u64>) -> Result<Reload, StoreError> {
        let _sync = lock(&self.sync);
        let (members, values) = self.call("reload bans", |c| {
            let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS").arg(BANS_KEY).query(c)?;
            if members.is_empty() {
                return Ok((members, Vec::new()));
            }
            let keys: Vec<Vec<u8>> = members
                .iter()
                .map(|m| [BAN_PREFIX.as_bytes(), m].concat())
                .collect();
            let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(c)?;
            Ok((members, values))
        })?;
        if values.len() != members.len() {
            return Err(unavailable(format!(
                "reload bans on {}: MGET of {} keys answered {} values",
                self.address,
                members.len(),
                values.len()
            )));
        }
        let mut index = BanIndex::default();
        let mut corrupt = Vec::new();
        // (network, expected value: empty if missing)
        let mut sweep: Vec<(&[u8], &[u8])> = Vec::new();
        for (member, value) in members.iter().zip(&values) {
            let Some(value) = value else {
                sweep.push((member, b""));
                continue;
            };
            match decode_ban(member, value) {
                Ok((_, entry)) if purge_at.is_some_and(|now| now >= entry.until) => {
                    sweep.push((member, value));
                }
                Ok((net, entry)) => index.insert(net, entry),
                Err(why) => corrupt.push((
                    format!("{BAN_PREFIX}{}", String::from_utf8_lossy(member)),
                    why,
                )),
            }
        }
        let removed = if sweep.is_empty() {
            0
        } else {
            let mut script = redis::cmd("EVAL");
            script.arg(SWEEP_SCRIPT).arg(sweep.len() + 1).arg(BANS_KEY);
            for (member, _) in &sweep {
                script.arg([BAN_PREFIX.as_bytes(), member].concat());
            }
            for (member, value) in &sweep {
                script.arg(*member).arg(*value);
            }
            self.call("sweep bans", |c| script.query::<usize>(c))?
        };
        *self.bans.write().unwrap_or_else(PoisonError::into_inner) = index;
        Ok(Reload { removed, corrupt })
    }
}

impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn ban(&self, net: &str, until: u64, reason: &str) -> Result<(), StoreError> {
        let net = parse_store_net(net)?;
        let entry = BanEntry {
            until,
            reason: clean_reason(reason),
        };
        let text = net.to_string();
        let key = ban_key(&text);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(format!("{until} {}", entry.reason));
        if until <= LAST_EXPIRY {
            // EXAT 0 is refused; 1 is as past.
            pipe.arg("EXAT").arg(until.max(1));
        }
        pipe.ignore().cmd("SADD").arg(BANS_KEY).arg(&text).ignore();
        let inner = &self.inner;
        let _sync = lock(&inner.sync);
        inner.call("ban", |c| pipe.exec(c))?;
        inner
            .bans
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(net, entry);
        Ok(())
    }

    fn unban(&self, net: &str) -> Result<bool, StoreError> {
        let net = parse_store_net(net)?;
        let text = net.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(ban_key(&text))
            .cmd("SREM")
            .arg(BANS_KEY)
            .arg(&text);
        let inner = &self.inner;
        let _sync = lock(&inner.sync);
        let (deleted, left): (u64, u64) = inner.call("unban", |c| pipe.query(c))?;
        let cached = inner
            .bans
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&net);
        Ok(deleted > 0 || left > 0 || cached)
    }

    fn bans_at(&self, now: u64) -> Result<Vec<Ban>, StoreError> {
        // Redis down: answer from the last bans known.
        if let Ok(reload) = self.inner.reload(None)
            && let Some((key, why)) = reload.corrupt.first()
        {
            return Err(unavailable(format!(
                "{}: {} ban record(s) do not decode; first {key:?}: {why}",
                self.inner.address,
                reload.corrupt.len()
            )));
        }
        let bans = self
            .inner
            .bans
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(bans.list(now))
    }

    fn banned(&self, ip: IpAddr, now: u64) -> Result<Option<Ban>, StoreError> {
        let bans = self
            .inner
            .bans
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(bans.lookup(ip, now))
    }

    fn incr(&self, key: &str, n: u64, expires: u64, _now: u64) -> Result<u64, StoreError> {
        let rkey = value_key(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("INCRBY")
            .arg(&rkey)
            .arg(i64::try_from(n).unwrap_or(i64::MAX));
        if expires <= LAST_EXPIRY {
            // A past expiry deletes the key at once: the value is still
            // returned, as if it had expired right after.
            pipe.cmd("EXPIREAT")
                .arg(&rkey)
                .arg(expires.max(1))
                .arg("NX")
                .ignore();
        }
        let (value,): (i64,) = self.inner.call("incr", |c| pipe.query(c))?;
        u64::try_from(value).map_err(|_| {
            unavailable(format!(
                "{rkey:?} on {}: corrupt counter {value}: negative",
                self.inner.address
            ))
        })
    }

    fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), StoreError> {
        let rkey = value_key(key);
        let mut cmd = if expires <= unix_now() {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(&rkey);
            cmd
        } else {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&rkey).arg(value);
            if expires <= LAST_EXPIRY {
                cmd.arg("EXAT").arg(expires);
            }
            cmd
        };
        let cmd = &mut cmd;
        self.inner.call("put", |c| cmd.exec(c))
    }

    fn get(&self, key: &str, _now: u64) -> Result<Option<u64>, StoreError> {
        let rkey = value_key(key);
        let bytes: Option<Vec<u8>> = self
            .inner
            .call("get", |c| redis::cmd("GET").arg(&rkey).query(c))?;
        bytes
            .map(|b| decode_value(&self.inner.address, key, &b))
            .transpose()
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        // Counters and values: Redis expires them itself.
        Ok(self.inner.reload(Some(now))?.removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379/0"), "redis://host:6379/0");
    }

    #[test]
    fn decodes_ban_records() {
        let (net, entry) = decode_ban(b"10.0.0.0/8", b"100 a reason").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert_eq!(entry.until, 100);
        assert_eq!(entry.reason, "a reason");
        let (_, entry) = decode_ban(b"10.0.0.0/8", b"100 bad\r\nX: y").unwrap();
        assert_eq!(entry.reason, "bad  X: y");
        for (member, value, want) in [
            (&b"junk"[..], &b"1 x"[..], "not a network"),
            (b"10.1.2.3/8", b"1 x", "normal form"),
            (b"\xff", b"1 x", "UTF-8"),
            (b"10.0.0.0/8", b"1", "<until> <reason>"),
            (b"10.0.0.0/8", b"soon x", "bad until"),
            (b"10.0.0.0/8", b"-1 x", "bad until"),
        ] {
            let err = decode_ban(member, value).unwrap_err();
            assert!(err.contains(want), "{member:?} {value:?}: {err}");
        }
    }

    #[test]
    fn decodes_values() {
        assert_eq!(decode_value("h:1/0", "k", b"42").unwrap(), 42);
        let err = decode_value("h:1/0", "rate:\r\nx", b"4x2")
            .unwrap_err()
            .to_string();
        assert!(err.contains(r#""mxguard:v:rate:\r\nx""#), "{err}");
        assert!(err.contains("not a number"), "{err}");
    }
}

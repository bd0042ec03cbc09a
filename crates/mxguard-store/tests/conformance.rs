//! One behaviour, every backend: the same suite runs on `MemoryStore`,
//! `EmbeddedStore` and `RedisStore`; the embedded store's own properties
//! (restarts, the file lock, a damaged file) follow, then the Redis store's
//! (bans shared between nodes, failing open and reconnecting, reading
//! defensively), each test on a `redis-server` of its own, started on a
//! free port of 127.0.0.1 (scripts/test.sh installs it).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mxguard_store::{
    Ban, EmbeddedStore, MemoryStore, RedisStore, StateStore, StoreError, unix_now,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Which ban covers which address at which time. Times are relative to the
/// real clock (`t`), so a backend that expires bans by its own clock (Redis)
/// keeps them for the whole test.
fn lookups(store: &dyn StateStore) {
    let b = store.backend();
    let t = unix_now();
    assert_eq!(store.bans_at(t).unwrap(), vec![], "{b}: new store");
    store.ban("203.0.113.7", t + 1000, "10 errors").unwrap();
    store.ban("198.51.100.77/24", t + 2000, "manual").unwrap();
    store.ban("2001:db8:1::/48", t + 3000, "v6 net").unwrap();
    store.ban("2001:db8::5", t + 3000, "v6 host").unwrap();
    // (address, now - t, want: the covering net)
    let cases: &[(&str, u64, Option<&str>)] = &[
        ("203.0.113.7", 0, Some("203.0.113.7/32")),
        ("203.0.113.7", 999, Some("203.0.113.7/32")),
        ("203.0.113.7", 1000, None), // expires at `until`
        ("::ffff:203.0.113.7", 10, Some("203.0.113.7/32")),
        ("203.0.113.8", 10, None),
        ("198.51.100.0", 10, Some("198.51.100.0/24")),
        ("198.51.100.255", 1999, Some("198.51.100.0/24")),
        ("::ffff:198.51.100.1", 10, Some("198.51.100.0/24")),
        ("198.51.101.0", 10, None),
        ("2001:db8:1:ffff::1", 10, Some("2001:db8:1::/48")),
        ("2001:db8:2::1", 10, None),
        ("2001:db8::5", 10, Some("2001:db8::5/128")),
        ("2001:db8::6", 10, None),
        ("2001:db8::5", 3000, None),
    ];
    for (addr, offset, want) in cases {
        let got = store.banned(ip(addr), t + offset).unwrap().map(|b| b.net);
        assert_eq!(
            got.as_deref(),
            *want,
            "{b}: banned({addr}, t + {offset}): got {got:?}, want {want:?}"
        );
    }
    let got = store.banned(ip("203.0.113.7"), t + 5).unwrap().unwrap();
    assert_eq!(
        got,
        Ban {
            net: "203.0.113.7/32".into(),
            until: t + 1000,
            reason: "10 errors".into()
        },
        "{b}"
    );
}

/// Listing, replacing, unbanning, purging (times relative to the clock).
fn lifecycle(store: &dyn StateStore) {
    let b = store.backend();
    let t = unix_now();
    store.ban("198.51.100.0/24", t + 500, "net").unwrap();
    store.ban("198.51.100.7", t + 100, "host").unwrap();
    store.ban("192.0.2.1", t + 300, "other").unwrap();
    store.ban("2001:db8::1", t + 50, "v6").unwrap();
    // (net, until - t) in force at t + offset
    let list = |offset| -> Vec<(String, u64)> {
        store
            .bans_at(t + offset)
            .unwrap()
            .into_iter()
            .map(|b| (b.net, b.until - t))
            .collect()
    };
    let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(n, u)| (n.to_string(), *u)).collect()
    };
    // sorted by network, IPv4 before IPv6; expired ones skipped
    assert_eq!(
        list(0),
        owned(&[
            ("192.0.2.1/32", 300),
            ("198.51.100.0/24", 500),
            ("198.51.100.7/32", 100),
            ("2001:db8::1/128", 50),
        ]),
        "{b}"
    );
    assert_eq!(
        list(100),
        owned(&[("192.0.2.1/32", 300), ("198.51.100.0/24", 500)]),
        "{b}"
    );
    // the most specific live ban wins, then the wider one shows through
    assert_eq!(
        store
            .banned(ip("198.51.100.7"), t + 10)
            .unwrap()
            .unwrap()
            .reason,
        "host",
        "{b}"
    );
    assert_eq!(
        store
            .banned(ip("198.51.100.7"), t + 100)
            .unwrap()
            .unwrap()
            .reason,
        "net",
        "{b}"
    );
    // a new ban of the same net replaces the old one, even if shorter
    store.ban("198.51.100.99/24", t + 200, "again").unwrap();
    let got = store.banned(ip("198.51.100.1"), t + 10).unwrap().unwrap();
    assert_eq!((got.until, got.reason.as_str()), (t + 200, "again"), "{b}");
    assert_eq!(
        store.banned(ip("198.51.100.1"), t + 200).unwrap(),
        None,
        "{b}"
    );
    // unban is exact: an address inside a banned net lifts nothing
    assert!(!store.unban("198.51.100.1").unwrap(), "{b}");
    assert!(
        store.banned(ip("198.51.100.1"), t + 10).unwrap().is_some(),
        "{b}"
    );
    assert!(store.unban("198.51.100.0/24").unwrap(), "{b}");
    assert!(!store.unban("198.51.100.0/24").unwrap(), "{b}");
    assert_eq!(
        store.banned(ip("198.51.100.1"), t + 10).unwrap(),
        None,
        "{b}"
    );
    // a ban expired at `now` can still be unbanned until it is purged
    assert_eq!(
        store.banned(ip("2001:db8::1"), t + 50).unwrap(),
        None,
        "{b}"
    );
    assert!(store.unban("2001:db8::1").unwrap(), "{b}");
    // purge deletes exactly what has expired
    assert_eq!(store.purge_expired(t + 100).unwrap(), 1, "{b}"); // the host ban
    assert_eq!(store.purge_expired(t + 100).unwrap(), 0, "{b}");
    assert_eq!(list(0), owned(&[("192.0.2.1/32", 300)]), "{b}");
    assert_eq!(store.purge_expired(u64::MAX).unwrap(), 1, "{b}");
    assert_eq!(list(0), vec![], "{b}");
}

/// Input is normalised and cleaned; the clock-based listing works.
fn normalisation(store: &dyn StateStore) {
    let b = store.backend();
    let t = unix_now();
    store
        .ban("::ffff:203.0.113.9/128", u64::MAX, "bad\r\nInjected: yes\0")
        .unwrap();
    let got = store.banned(ip("203.0.113.9"), t).unwrap().unwrap();
    assert_eq!(got.net, "203.0.113.9/32", "{b}");
    assert_eq!(got.reason, "bad  Injected: yes ", "{b}");
    store
        .ban("10.1.2.3/8", u64::MAX, &"x".repeat(1000))
        .unwrap();
    let got = store.banned(ip("10.200.0.1"), t).unwrap().unwrap();
    assert_eq!(got.net, "10.0.0.0/8", "{b}");
    assert_eq!(got.reason.len(), mxguard_store::MAX_REASON_LEN, "{b}");
    // bans() uses the system clock: a ban that ended in 1970 is not listed
    store.ban("192.0.2.200", 1, "ancient").unwrap();
    store.ban("192.0.2.201", t + 3600, "fresh").unwrap();
    let nets: Vec<String> = store.bans().unwrap().into_iter().map(|b| b.net).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/8", "192.0.2.201/32", "203.0.113.9/32"],
        "{b}"
    );
    // what is neither an address nor a network is refused, and changes nothing
    for bad in [
        "",
        "203.0.113",
        "10.0.0.0/33",
        "host.example",
        "1.2.3.4/8/8",
    ] {
        let err = store.ban(bad, u64::MAX, "x").unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidNetwork { .. }),
            "{b}: ban({bad:?}): got {err:?}"
        );
        assert!(store.unban(bad).is_err(), "{b}: unban({bad:?})");
    }
    assert_eq!(store.bans().unwrap().len(), 3, "{b}");
}

/// Many threads banning and looking up at once.
fn concurrency(store: Arc<dyn StateStore>) {
    let b = store.backend();
    let t = unix_now();
    let threads: Vec<_> = (0..4u8)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    let addr = IpAddr::from([192, 0, n, i]);
                    store.ban(&addr.to_string(), t + 100, "t").unwrap();
                    assert!(store.banned(addr, t + 1).unwrap().is_some());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(store.bans_at(t).unwrap().len(), 100, "{b}");
}

/// Counters and expiring values, with times around the real clock (a
/// remote backend expires entries by its own clock).
fn values(store: &dyn StateStore) {
    let b = store.backend();
    let now = unix_now();
    assert_eq!(store.get("rate:a", now).unwrap(), None, "{b}");
    assert_eq!(store.incr("rate:a", 1, now + 100, now).unwrap(), 1, "{b}");
    assert_eq!(store.incr("rate:a", 4, now + 500, now).unwrap(), 5, "{b}");
    assert_eq!(store.get("rate:a", now).unwrap(), Some(5), "{b}");
    // keys are independent, and may hold any client text
    assert_eq!(
        store
            .incr("rate:b <x@y.test> é", 2, now + 100, now)
            .unwrap(),
        2,
        "{b}"
    );
    assert_eq!(store.get("rate:a", now).unwrap(), Some(5), "{b}");
    store.put("pop:192.0.2.1", 7, now + 100).unwrap();
    assert_eq!(store.get("pop:192.0.2.1", now).unwrap(), Some(7), "{b}");
    store.put("pop:192.0.2.1", 8, now + 200).unwrap();
    assert_eq!(store.get("pop:192.0.2.1", now).unwrap(), Some(8), "{b}");
    // a value whose time has passed is gone
    store.put("gone", 1, now.saturating_sub(1)).unwrap();
    assert_eq!(store.get("gone", now).unwrap(), None, "{b}");
    assert_eq!(
        store.incr("gone2", 3, now.saturating_sub(1), now).unwrap(),
        3,
        "{b}"
    );
}

/// Expiry decided by the `now` given: the local backends only.
fn values_expire_at_now(store: &dyn StateStore) {
    let b = store.backend();
    assert_eq!(store.incr("c", 1, 1000, 10).unwrap(), 1, "{b}");
    assert_eq!(
        store.incr("c", 1, 5000, 999).unwrap(),
        2,
        "{b}: keeps its expiry"
    );
    assert_eq!(store.get("c", 999).unwrap(), Some(2), "{b}");
    assert_eq!(
        store.get("c", 1000).unwrap(),
        None,
        "{b}: expires at `expires`"
    );
    // an expired counter starts again, with the new expiry
    assert_eq!(store.incr("c", 1, 3000, 1000).unwrap(), 1, "{b}");
    assert_eq!(store.get("c", 2999).unwrap(), Some(1), "{b}");
    store.put("v", 9, 2000).unwrap();
    store.ban("203.0.113.7", 1500, "x").unwrap();
    // purge removes expired bans and values together
    assert_eq!(store.purge_expired(2500).unwrap(), 2, "{b}");
    assert_eq!(store.get("c", 2600).unwrap(), Some(1), "{b}");
}

/// The shared suite, each part on a fresh store from `make`. `local`: the
/// backend expires entries by the `now` it is given (not Redis).
fn suite(make: &dyn Fn() -> Arc<dyn StateStore>, local: bool) {
    lookups(&*make());
    lifecycle(&*make());
    normalisation(&*make());
    concurrency(make());
    values(&*make());
    if local {
        values_expire_at_now(&*make());
    }
}

#[test]
fn memory_backend() {
    suite(&|| Arc::new(MemoryStore::new()), true);
}

#[test]
fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0);
    suite(
        &|| {
            n.set(n.get() + 1);
            let path = dir.path().join(format!("state-{}.redb", n.get()));
            Arc::new(EmbeddedStore::open(path).unwrap())
        },
        true,
    );
}

#[test]
fn embedded_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        assert_eq!(store.path(), dir.path().join("state.redb"));
        store.ban("203.0.113.7", 1000, "errors").unwrap();
        store.ban("2001:db8::/32", 2000, "v6").unwrap();
        store.ban("192.0.2.1", 10, "short").unwrap();
        store.ban("192.0.2.2", 10, "unbanned").unwrap();
        assert!(store.unban("192.0.2.2").unwrap());
        // counters are written without a flush, and kept when the store closes
        store.incr("rate:x", 3, u64::MAX, 0).unwrap();
    }
    {
        let store = EmbeddedStore::open_in(dir.path()).unwrap();
        let nets: Vec<String> = store
            .bans_at(0)
            .unwrap()
            .into_iter()
            .map(|b| b.net)
            .collect();
        assert_eq!(nets, ["192.0.2.1/32", "203.0.113.7/32", "2001:db8::/32"]);
        assert_eq!(
            store
                .banned(ip("2001:db8:ff::1"), 5)
                .unwrap()
                .unwrap()
                .reason,
            "v6"
        );
        // expired entries are kept until purged, and skipped meanwhile
        assert_eq!(store.banned(ip("192.0.2.1"), 10).unwrap(), None);
        assert_eq!(store.purge_expired(10).unwrap(), 1);
        assert_eq!(store.get("rate:x", 10).unwrap(), Some(3));
    }
    let store = EmbeddedStore::open_in(dir.path()).unwrap();
    assert_eq!(store.bans_at(0).unwrap().len(), 2);
}

#[test]
fn embedded_file_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let first = EmbeddedStore::open(&path).unwrap();
    let err = EmbeddedStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "got {err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("control socket"), "{msg}");
    drop(first);
    EmbeddedStore::open(&path).unwrap();
}

#[test]
fn embedded_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // not a redb file
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"this is not a database, just some text".repeat(200)).unwrap();
    let err = EmbeddedStore::open(&junk).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "got {err:?}");
    assert!(err.to_string().contains("junk.redb"), "{err}");
    // the directory does not exist
    let missing = dir.path().join("no/such/dir/state.redb");
    let err = EmbeddedStore::open(&missing).unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn embedded_refuses_damaged_records() {
    use redb::{Database, TableDefinition};
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    const BANS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("bans");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, version: u64, key: &str| {
        let path = dir.path().join(name);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", version)
            .unwrap();
        txn.open_table(BANS)
            .unwrap()
            .insert(key, (100u64, "x"))
            .unwrap();
        txn.commit().unwrap();
        path
    };
    let cases: &[(&str, u64, &str, &str)] = &[
        (
            "bad-key.redb",
            1,
            "not-a-net",
            "corrupt bans record \"not-a-net\"",
        ),
        ("unnormal.redb", 1, "10.1.2.3/8", "not in normal form"),
        ("future.redb", 2, "10.0.0.0/8", "schema version 2"),
    ];
    for (name, version, key, want) in cases {
        let path = write(name, *version, key);
        let err = EmbeddedStore::open(&path).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(want),
            "{name}: got {err}"
        );
    }
    let ok = write("ok.redb", 1, "10.0.0.0/8");
    let store = EmbeddedStore::open(&ok).unwrap();
    assert!(store.banned(ip("10.9.9.9"), 0).unwrap().is_some());
}

// --- Redis ---

/// A `redis-server` of the test's own on 127.0.0.1, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port (trying a few, in case another test took
    /// the port between the probe and the start).
    fn start() -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = RedisServer::start_on(port) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts one on `port`; `None` if it exits (port taken).
    fn start_on(port: u16) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            _dir: dir,
        };
        server.spawn().then_some(server)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: scripts/test.sh installs it \
                 (apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.port) {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (its data is gone: no save).
    fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on {}",
            self.port
        );
    }

    /// A plain client, for setting up what the test needs.
    fn client(&self, db: u32) -> redis::Connection {
        redis::Client::open(self.url(db))
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Whether a Redis answers PING on `port`.
fn ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

fn redis_store(url: &str) -> RedisStore {
    RedisStore::open(url, Duration::from_millis(500)).unwrap()
}

/// Polls `f` every 50 ms until it holds, for at most `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_unavailable(err: &StoreError, what: &str) {
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                backend: "redis",
                ..
            }
        ),
        "{what}: got {err:?}"
    );
}

#[test]
fn redis_backend() {
    let server = RedisServer::start();
    // each part on a database of its own
    let db = std::cell::Cell::new(0);
    suite(
        &|| {
            db.set(db.get() + 1);
            let store = redis_store(&server.url(db.get()));
            assert_eq!(
                store.address(),
                format!("127.0.0.1:{}/{}", server.port, db.get())
            );
            Arc::new(store)
        },
        false,
    );
}

#[test]
fn redis_bans_are_shared_between_nodes() {
    let server = RedisServer::start();
    let a = redis_store(&server.url(0));
    let b = redis_store(&server.url(0));
    let now = unix_now();
    let client = ip("198.51.100.9");
    assert_eq!(b.banned(client, now).unwrap(), None);
    a.ban("198.51.100.0/24", now + 600, "from a").unwrap();
    assert!(
        eventually(Duration::from_secs(3), || {
            b.banned(client, unix_now()).unwrap().is_some()
        }),
        "b never saw a's ban"
    );
    let got = b.banned(client, now).unwrap().unwrap();
    assert_eq!(
        (got.net.as_str(), got.until),
        ("198.51.100.0/24", now + 600)
    );
    assert_eq!(got.reason, "from a");
    // the listing reloads first: no wait
    a.ban("192.0.2.1", now + 600, "listed").unwrap();
    assert_eq!(b.bans_at(now).unwrap().len(), 2);
    assert!(a.unban("198.51.100.0/24").unwrap());
    assert!(
        eventually(Duration::from_secs(3), || {
            b.banned(client, unix_now()).unwrap().is_none()
        }),
        "b never saw a's unban"
    );
    // counters are common, at once
    assert_eq!(a.incr("rate:x", 2, now + 60, now).unwrap(), 2);
    assert_eq!(b.incr("rate:x", 3, now + 60, now).unwrap(), 5);
    assert_eq!(a.get("rate:x", now).unwrap(), Some(5));
    // a dropped store closes its connections and ends its refresh thread
    drop((a, b));
    let mut admin = server.client(0);
    assert!(
        eventually(Duration::from_secs(3), || {
            let info: String = redis::cmd("INFO").arg("clients").query(&mut admin).unwrap();
            info.contains("connected_clients:1\r")
        }),
        "the stores' connections outlived them"
    );
}

#[test]
fn redis_fails_open_and_reconnects() {
    let mut server = RedisServer::start();
    let store = redis_store(&server.url(0));
    let now = unix_now();
    store.put("k", 7, now + 100).unwrap();
    store.ban("192.0.2.1", now + 100, "x").unwrap();
    server.kill();
    // every call fails, quickly: the first after trying, the next ones at
    // once while the breaker is open
    for i in 0..20 {
        let started = Instant::now();
        let err = store.get("k", now).unwrap_err();
        assert_unavailable(&err, "get");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "call {i}: {took:?}");
        let started = Instant::now();
        let err = store.incr("k2", 1, now + 100, now).unwrap_err();
        assert_unavailable(&err, "incr");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(50),
            "call {i} (breaker open): {took:?}"
        );
        assert!(err.to_string().contains("not retried"), "{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_unavailable(&store.ban("192.0.2.2", now + 100, "y").unwrap_err(), "ban");
    assert_unavailable(&store.put("k", 1, now + 100).unwrap_err(), "put");
    // the bans last known still hold, and still list
    assert!(store.banned(ip("192.0.2.1"), now).unwrap().is_some());
    assert_eq!(store.bans_at(now).unwrap().len(), 1);
    // Redis is back (empty: it saves nothing): the same store recovers
    server.restart();
    assert!(
        eventually(Duration::from_secs(5), || store
            .put("k", 8, now + 100)
            .is_ok()),
        "no recovery within 5 s"
    );
    assert_eq!(store.get("k", now).unwrap(), Some(8));
    store.ban("192.0.2.3", now + 100, "back").unwrap();
}

#[test]
fn redis_survives_a_restart_between_calls() {
    let mut server = RedisServer::start();
    let store = redis_store(&server.url(0));
    let now = unix_now();
    // a few connections in the pool
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    store.incr("n", 1, now + 100, now).unwrap();
                }
            });
        }
    });
    // restart right after a background refresh, so that none runs (and
    // fails) while the server is down
    let mut admin = server.client(0);
    let mut refreshes = || -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut admin)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_smembers:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let before = refreshes();
    assert!(eventually(Duration::from_secs(3), || refreshes() > before));
    server.restart();
    // the pooled connections are dead: replaced, without failing the call
    store.put("k", 1, now + 100).unwrap();
    assert_eq!(store.get("k", now).unwrap(), Some(1));
    assert_eq!(store.incr("n", 1, now + 100, now).unwrap(), 1);
}

#[test]
fn redis_hung_server_costs_one_timeout_a_second() {
    // accepts connections (into the backlog) and never answers
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}/0", hung.local_addr().unwrap().port());
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let store = RedisStore::open(&url, timeout).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "open: {:?}",
        started.elapsed()
    );
    let (mut slow, mut calls) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let call = Instant::now();
        let err = store.get("k", unix_now()).unwrap_err();
        assert_unavailable(&err, "get");
        let took = call.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        if took >= Duration::from_millis(50) {
            slow += 1;
        } else {
            assert!(err.to_string().contains("not retried"), "{err}");
        }
        calls += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    // one attempt a second at most (some made by the refresh thread)
    assert!(slow <= 4, "{slow} timed-out calls in 3 s");
    assert!(calls > 50, "only {calls} calls in 3 s");
}

#[test]
fn redis_open_needs_no_server() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let started = Instant::now();
    let store = redis_store(&url);
    assert!(started.elapsed() < Duration::from_millis(1500));
    let now = unix_now();
    assert_unavailable(&store.get("k", now).unwrap_err(), "get");
    assert_eq!(store.banned(ip("192.0.2.1"), now).unwrap(), None);
    // the server comes up later: the store connects by itself, and the
    // refresh thread brings in the bans another node makes
    let Some(server) = RedisServer::start_on(port) else {
        panic!("port {port} was taken meanwhile");
    };
    let other = redis_store(&server.url(0));
    other.ban("192.0.2.1", now + 100, "late").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            store.banned(ip("192.0.2.1"), unix_now()).unwrap().is_some()
        }),
        "the ban never arrived"
    );
    assert!(eventually(Duration::from_secs(5), || store
        .get("k", now)
        .is_ok()));
}

#[test]
fn redis_open_refuses_bad_settings() {
    let timeout = Duration::from_millis(500);
    for url in [
        "",
        "not a url",
        "http://127.0.0.1/",
        "redis://127.0.0.1:99999/0",
    ] {
        let err = RedisStore::open(url, timeout).unwrap_err();
        assert_unavailable(&err, url);
    }
    // the password never shows, neither in errors nor in the address
    let err = RedisStore::open("redis://u:s3cret@127.0.0.1:99999/0", timeout)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cret"), "{err}");
    let store = RedisStore::open("redis://u:s3cret@127.0.0.1:1/3", timeout).unwrap();
    assert_eq!(store.address(), "127.0.0.1:1/3");
    assert!(!format!("{store:?}").contains("s3cret"));
    let err = store.get("k", 0).unwrap_err().to_string();
    assert!(!err.contains("s3cret"), "{err}");
    let err = RedisStore::open("redis://127.0.0.1/0", Duration::ZERO).unwrap_err();
    assert!(err.to_string().contains("timeout"), "{err}");
}

#[test]
fn redis_reads_defensively() {
    let server = RedisServer::start();
    let mut admin = server.client(0);
    let mut set = |args: &[&[u8]]| {
        let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.exec(&mut admin).unwrap();
    };
    let now = unix_now();
    let until = (now + 600).to_string();
    // a value that is not a number
    set(&[b"SET", b"mxguard:v:rate:\r\nx", b"12abc"]);
    // a set member without a record, records that do not decode, and one
    // written by another node with a reason to clean
    set(&[b"SADD", b"mxguard:bans", b"192.0.2.50/32"]);
    for (net, value) in [
        (&b"not-a-net"[..], format!("{until} x").into_bytes()),
        (b"10.1.2.3/8", format!("{until} x").into_bytes()),
        (b"192.0.2.60/32", b"garbage".to_vec()),
        (
            b"192.0.2.70/32",
            format!("{until} evil\r\nX: y").into_bytes(),
        ),
    ] {
        set(&[b"SADD", b"mxguard:bans", net]);
        set(&[b"SET", &[&b"mxguard:ban:"[..], net].concat(), &value]);
    }
    let store = redis_store(&server.url(0));
    let err = store.get("rate:\r\nx", now).unwrap_err();
    assert_unavailable(&err, "get");
    let msg = err.to_string();
    assert!(
        msg.contains(r#""mxguard:v:rate:\r\nx""#) && msg.contains("not a number"),
        "{msg}"
    );
    // a bad value is no outage: the next call goes through
    assert_eq!(store.get("other", now).unwrap(), None);
    // the bad records stay out of the copy, and the listing names them
    let got = store.banned(ip("192.0.2.70"), now).unwrap().unwrap();
    assert_eq!(got.reason, "evil  X: y");
    for addr in ["10.1.2.3", "192.0.2.60"] {
        assert_eq!(store.banned(ip(addr), now).unwrap(), None, "{addr}");
    }
    let err = store.bans_at(now).unwrap_err().to_string();
    assert!(err.contains("3 ban record(s) do not decode"), "{err}");
    // purge sweeps the member without a record (the listing did it here)
    // and bans expired at `now`, but leaves the bad records for a human
    assert_eq!(store.purge_expired(now).unwrap(), 0);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("mxguard:bans")
        .query(&mut server.client(0))
        .unwrap();
    assert_eq!(members.len(), 4, "{members:?}");
    assert!(!members.contains(&"192.0.2.50/32".to_string()));
    assert_eq!(store.purge_expired(now + 600).unwrap(), 1);
    assert_eq!(store.banned(ip("192.0.2.70"), now).unwrap(), None);
}

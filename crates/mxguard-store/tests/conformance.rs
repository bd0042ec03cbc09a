//! One behaviour, every backend: the same suite runs on `MemoryStore` and
//! `EmbeddedStore`; the embedded store's own properties (restarts, the file
//! lock, a damaged file) follow.

use std::net::IpAddr;
use std::sync::Arc;

use mxguard_store::{Ban, EmbeddedStore, MemoryStore, StateStore, StoreError, unix_now};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Which ban covers which address at which time.
fn lookups(store: &dyn StateStore) {
    let b = store.backend();
    assert_eq!(store.bans_at(0).unwrap(), vec![], "{b}: new store");
    store.ban("203.0.113.7", 1000, "10 errors").unwrap();
    store.ban("198.51.100.77/24", 2000, "manual").unwrap();
    store.ban("2001:db8:1::/48", 3000, "v6 net").unwrap();
    store.ban("2001:db8::5", 3000, "v6 host").unwrap();
    // (address, now, want: the covering net)
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
    for (addr, now, want) in cases {
        let got = store.banned(ip(addr), *now).unwrap().map(|b| b.net);
        assert_eq!(
            got.as_deref(),
            *want,
            "{b}: banned({addr}, {now}): got {got:?}, want {want:?}"
        );
    }
    let got = store.banned(ip("203.0.113.7"), 5).unwrap().unwrap();
    assert_eq!(
        got,
        Ban {
            net: "203.0.113.7/32".into(),
            until: 1000,
            reason: "10 errors".into()
        },
        "{b}"
    );
}

/// Listing, replacing, unbanning, purging.
fn lifecycle(store: &dyn StateStore) {
    let b = store.backend();
    store.ban("198.51.100.0/24", 500, "net").unwrap();
    store.ban("198.51.100.7", 100, "host").unwrap();
    store.ban("192.0.2.1", 300, "other").unwrap();
    store.ban("2001:db8::1", 50, "v6").unwrap();
    let list = |now| -> Vec<(String, u64)> {
        store
            .bans_at(now)
            .unwrap()
            .into_iter()
            .map(|b| (b.net, b.until))
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
            .banned(ip("198.51.100.7"), 10)
            .unwrap()
            .unwrap()
            .reason,
        "host",
        "{b}"
    );
    assert_eq!(
        store
            .banned(ip("198.51.100.7"), 100)
            .unwrap()
            .unwrap()
            .reason,
        "net",
        "{b}"
    );
    // a new ban of the same net replaces the old one, even if shorter
    store.ban("198.51.100.99/24", 200, "again").unwrap();
    let got = store.banned(ip("198.51.100.1"), 10).unwrap().unwrap();
    assert_eq!((got.until, got.reason.as_str()), (200, "again"), "{b}");
    assert_eq!(store.banned(ip("198.51.100.1"), 200).unwrap(), None, "{b}");
    // unban is exact: an address inside a banned net lifts nothing
    assert!(!store.unban("198.51.100.1").unwrap(), "{b}");
    assert!(
        store.banned(ip("198.51.100.1"), 10).unwrap().is_some(),
        "{b}"
    );
    assert!(store.unban("198.51.100.0/24").unwrap(), "{b}");
    assert!(!store.unban("198.51.100.0/24").unwrap(), "{b}");
    assert_eq!(store.banned(ip("198.51.100.1"), 10).unwrap(), None, "{b}");
    // an expired ban can still be unbanned until it is purged
    assert!(store.unban("2001:db8::1").unwrap(), "{b}");
    // purge deletes exactly what has expired
    assert_eq!(store.purge_expired(100).unwrap(), 1, "{b}"); // the host ban
    assert_eq!(store.purge_expired(100).unwrap(), 0, "{b}");
    assert_eq!(list(0), owned(&[("192.0.2.1/32", 300)]), "{b}");
    assert_eq!(store.purge_expired(u64::MAX).unwrap(), 1, "{b}");
    assert_eq!(list(0), vec![], "{b}");
}

/// Input is normalised and cleaned; the clock-based listing works.
fn normalisation(store: &dyn StateStore) {
    let b = store.backend();
    store
        .ban("::ffff:203.0.113.9/128", u64::MAX, "bad\r\nInjected: yes\0")
        .unwrap();
    let got = store.banned(ip("203.0.113.9"), 0).unwrap().unwrap();
    assert_eq!(got.net, "203.0.113.9/32", "{b}");
    assert_eq!(got.reason, "bad  Injected: yes ", "{b}");
    store
        .ban("10.1.2.3/8", u64::MAX, &"x".repeat(1000))
        .unwrap();
    let got = store.banned(ip("10.200.0.1"), 0).unwrap().unwrap();
    assert_eq!(got.net, "10.0.0.0/8", "{b}");
    assert_eq!(got.reason.len(), mxguard_store::MAX_REASON_LEN, "{b}");
    // bans() uses the system clock: a ban that ended in 1970 is not listed
    store.ban("192.0.2.200", 1, "ancient").unwrap();
    store
        .ban("192.0.2.201", unix_now() + 3600, "fresh")
        .unwrap();
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
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    let addr = IpAddr::from([192, 0, t, i]);
                    store.ban(&addr.to_string(), 100, "t").unwrap();
                    assert!(store.banned(addr, 1).unwrap().is_some());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.bans_at(0).unwrap().len(), 100, "{b}");
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

fn suite(make: &dyn Fn() -> Arc<dyn StateStore>) {
    lookups(&*make());
    lifecycle(&*make());
    normalisation(&*make());
    concurrency(make());
    values(&*make());
    values_expire_at_now(&*make());
}

#[test]
fn memory_backend() {
    suite(&|| Arc::new(MemoryStore::new()));
}

#[test]
fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0);
    suite(&|| {
        n.set(n.get() + 1);
        let path = dir.path().join(format!("state-{}.redb", n.get()));
        Arc::new(EmbeddedStore::open(path).unwrap())
    });
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

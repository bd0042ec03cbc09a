//! Micro-benchmark of `mxguard_config::IpList`: build time and the cost of
//! one `contains` lookup with 100,000 entries, IPv4 and IPv6, hits and
//! misses.
//!
//!     cargo run --release --example iplist_lookup            # 100,000 entries
//!     cargo run --release --example iplist_lookup -- 1000000 # another size
//!     cargo run --release --example iplist_lookup -- 100000 bench-blacklist.txt
//!
//! The optional file (an `access.blacklist_file`, such as the one
//! `bench/conn-bench.sh` generates) is loaded with `IpList::load` and timed
//! too, and looked up with the same kind of random queries.
//!
//! Lists (deterministic pseudo-random, seed fixed):
//! - IPv4: 90% single addresses, 10% CIDR blocks /16 to /30;
//! - IPv6: 50% single addresses, 50% blocks /32 to /64 inside 2000::/3.
//!
//! Queries: 1,000,000 per kind, drawn before timing. A hit is a random
//! address inside a random entry; a miss is a random address (of the same
//! space) checked to be outside the list. Queries run in random order, so
//! this is the cost with cold-ish caches, not the cost of asking about the
//! same address again and again. Each figure is the best of 7 passes.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Instant;

use mxguard_config::IpList;

/// xorshift64*: good enough for test data, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// A random public-looking IPv4 address (not 0/8, 10/8, 127/8, 224/3).
fn rand_v4(rng: &mut Rng) -> u32 {
    loop {
        let a = rng.next() as u32;
        let first = a >> 24;
        if first != 0 && first != 10 && first != 127 && first < 224 {
            return a;
        }
    }
}

/// A random IPv6 address in 2000::/3.
fn rand_v6(rng: &mut Rng) -> u128 {
    (rng.u128() & (u128::MAX >> 3)) | (1u128 << 125)
}

struct Entries {
    text: String,
    /// (first, last) of every entry, for drawing hits.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn gen_v4(n: usize, rng: &mut Rng) -> Entries {
    let mut e = Entries {
        text: String::new(),
        v4: Vec::with_capacity(n),
        v6: Vec::new(),
    };
    for i in 0..n {
        let a = rand_v4(rng);
        if i % 10 == 9 {
            let bits = 16 + rng.below(15) as u32; // /16 ../30
            let mask = u32::MAX << (32 - bits);
            let start = a & mask;
            e.text
                .push_str(&format!("{}/{bits}\n", Ipv4Addr::from(start)));
            e.v4.push((start, start | !mask));
        } else {
            e.text.push_str(&format!("{}\n", Ipv4Addr::from(a)));
            e.v4.push((a, a));
        }
    }
    e
}

fn gen_v6(n: usize, rng: &mut Rng) -> Entries {
    let mut e = Entries {
        text: String::new(),
        v4: Vec::new(),
        v6: Vec::with_capacity(n),
    };
    for i in 0..n {
        let a = rand_v6(rng);
        if i % 2 == 1 {
            let bits = 32 + rng.below(33) as u32; // /32 ../64
            let mask = u128::MAX << (128 - bits);
            let start = a & mask;
            e.text
                .push_str(&format!("{}/{bits}\n", Ipv6Addr::from(start)));
            e.v6.push((start, start | !mask));
        } else {
            e.text.push_str(&format!("{}\n", Ipv6Addr::from(a)));
            e.v6.push((a, a));
        }
    }
    e
}

const QUERIES: usize = 1_000_000;
const PASSES: usize = 7;

/// Best-of-PASSES ns per lookup; checks every answer is `expect`.
fn time_lookups(list: &IpList, queries: &[IpAddr], expect: bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..PASSES {
        let t = Instant::now();
        let mut found = 0usize;
        for &ip in queries {
            if list.contains(black_box(ip)) {
                found += 1;
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / queries.len() as f64;
        let expected = if expect { queries.len() } else { 0 };
        assert_eq!(black_box(found), expected, "wrong answers");
        best = best.min(ns);
    }
    best
}

fn hits_v4(e: &Entries, rng: &mut Rng) -> Vec<IpAddr> {
    (0..QUERIES)
        .map(|_| {
            let (s, l) = e.v4[rng.below(e.v4.len() as u64) as usize];
            let ip = s + (rng.next() % (u64::from(l - s) + 1)) as u32;
            IpAddr::V4(Ipv4Addr::from(ip))
        })
        .collect()
}

fn misses_v4(list: &IpList, rng: &mut Rng) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(QUERIES);
    while out.len() < QUERIES {
        let ip = IpAddr::V4(Ipv4Addr::from(rand_v4(rng)));
        if !list.contains(ip) {
            out.push(ip);
        }
    }
    out
}

fn hits_v6(e: &Entries, rng: &mut Rng) -> Vec<IpAddr> {
    (0..QUERIES)
        .map(|_| {
            let (s, l) = e.v6[rng.below(e.v6.len() as u64) as usize];
            let span = l - s;
            let off = if span == u128::MAX {
                rng.u128()
            } else {
                rng.u128() % (span + 1)
            };
            IpAddr::V6(Ipv6Addr::from(s + off))
        })
        .collect()
}

fn misses_v6(list: &IpList, rng: &mut Rng) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(QUERIES);
    while out.len() < QUERIES {
        let ip = IpAddr::V6(Ipv6Addr::from(rand_v6(rng)));
        if !list.contains(ip) {
            out.push(ip);
        }
    }
    out
}

/// Best-of-3 build time in ms of `IpList::parse` on the text (parsing
/// included) and the list.
fn build(text: &str) -> (f64, IpList) {
    let mut best = f64::MAX;
    let mut list = IpList::new();
    for _ in 0..3 {
        let t = Instant::now();
        list = IpList::parse(text, Path::new("bench.txt")).expect("generated list parses");
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    (best, list)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .map(|s| s.parse().expect("entries: a number"))
        .unwrap_or(100_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    println!(
        "IpList micro-benchmark: {n} entries per list, {QUERIES} queries per kind, best of {PASSES} passes"
    );
    println!();
    println!(
        "| list | entries | merged ranges | build ms (parse + sort + merge) | hit ns/lookup | miss ns/lookup |"
    );
    println!("|---|---:|---:|---:|---:|---:|");

    let e4 = gen_v4(n, &mut rng);
    let (ms4, l4) = build(&e4.text);
    let h4 = hits_v4(&e4, &mut rng);
    let m4 = misses_v4(&l4, &mut rng);
    println!(
        "| IPv4 (90% /32, 10% /16-/30) | {n} | {} | {ms4:.1} | {:.1} | {:.1} |",
        l4.len(),
        time_lookups(&l4, &h4, true),
        time_lookups(&l4, &m4, false)
    );

    let e6 = gen_v6(n, &mut rng);
    let (ms6, l6) = build(&e6.text);
    let h6 = hits_v6(&e6, &mut rng);
    let m6 = misses_v6(&l6, &mut rng);
    println!(
        "| IPv6 (50% /128, 50% /32-/64) | {n} | {} | {ms6:.1} | {:.1} | {:.1} |",
        l6.len(),
        time_lookups(&l6, &h6, true),
        time_lookups(&l6, &m6, false)
    );

    // An IPv4 client seen as ::ffff:a.b.c.d by a dual-stack socket.
    let mapped: Vec<IpAddr> = h4
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
            v6 => *v6,
        })
        .collect();
    println!(
        "| IPv4 list, hits asked as ::ffff:a.b.c.d | {n} | {} | | {:.1} | |",
        l4.len(),
        time_lookups(&l4, &mapped, true)
    );

    // The same address again and again (a busy client): the warm-cache cost.
    let same = vec![h4[0]; QUERIES];
    let same_miss = vec![m4[0]; QUERIES];
    println!(
        "| IPv4, one address repeated (warm cache) | {n} | {} | | {:.1} | {:.1} |",
        l4.len(),
        time_lookups(&l4, &same, true),
        time_lookups(&l4, &same_miss, false)
    );

    if let Some(path) = args.get(2) {
        let path = Path::new(path);
        let mut best = f64::MAX;
        let mut list = IpList::new();
        for _ in 0..3 {
            let t = Instant::now();
            list = IpList::load(path).expect("list file loads");
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let misses = misses_v4(&list, &mut rng);
        println!(
            "| file {} (IpList::load, read included) | | {} | {best:.1} | | {:.1} |",
            path.display(),
            list.len(),
            time_lookups(&list, &misses, false)
        );
    }
}

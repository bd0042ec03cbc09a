//! Micro-benchmark of the router table: parse time, and the cost of routing
//! one address (`mxguard_policy::router::route`) with a large table.
//!
//!     cargo run --release --example router_lookup            # 100,000 records
//!     cargo run --release --example router_lookup -- 10000   # another size
//!
//! The table (deterministic pseudo-random, seed fixed): N address records
//! without `*` (`<aliasK@example.test> = userK@example.test`, an ISP's alias
//! list), then 100 wildcard records (`<*@domK.test> = *@hostK.test`) and 100
//! domain records (`oldK.test = newK.test`). Queries, 1,000,000 of each kind
//! drawn before timing, in random order:
//! - alias hit: a random alias, rewritten once (then no record applies);
//! - wildcard hit: an address in a random domK.test;
//! - miss: an address no record applies to (what most mail for a plain
//!   account costs).
//!
//! The same queries also go through a plain scan of the records in order
//! (the obvious implementation) to show what the index saves: 1,000 of
//! each kind, best of 2 passes. The indexed figures are the best of 5.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use mxguard_config::{RouterRecord, RouterTable, RouterTarget, parse_router};
use mxguard_policy::pattern::glob;
use mxguard_policy::router::route;

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
}

/// The first record that matches, by scanning (no index): the reference.
fn scan<'t>(records: &'t [RouterRecord], address: &str) -> Option<&'t RouterRecord> {
    let domain = address.rsplit_once('@').map_or(address, |(_, d)| d);
    records.iter().find(|r| {
        if r.address_record {
            glob(&r.pattern, address).is_some()
        } else {
            glob(&r.pattern, domain).is_some()
        }
    })
}

fn best_of<F: FnMut() -> usize>(passes: usize, queries: usize, mut f: F) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..passes {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed().as_nanos() as f64 / queries as f64);
    }
    best
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut text = String::with_capacity(n * 48);
    text.push_str("; router_lookup benchmark table\n");
    for k in 0..n {
        text.push_str(&format!("<alias{k}@example.test> = user{k}@example.test\n"));
    }
    for k in 0..100 {
        text.push_str(&format!("<*@dom{k}.test> = *@host{k}.test\n"));
    }
    for k in 0..100 {
        text.push_str(&format!("old{k}.test = new{k}.test\n"));
    }
    let t = Instant::now();
    let records = match parse_router(&text, Path::new("bench-router.txt")) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let parse_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let table = RouterTable::new(records.clone());
    let index_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(matches!(records[0].target, RouterTarget::Rewrite(_)));

    let q = 1_000_000;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alias: Vec<String> = (0..q)
        .map(|_| format!("alias{}@example.test", rng.below(n as u64)))
        .collect();
    let wild: Vec<String> = (0..q)
        .map(|_| format!("x{}@dom{}.test", rng.below(1000), rng.below(100)))
        .collect();
    let miss: Vec<String> = (0..q)
        .map(|_| format!("user{}@example.test", rng.below(n as u64)))
        .collect();

    // Sanity: the index and the scan agree on where routing starts.
    for a in alias.iter().chain(&wild).chain(&miss).take(2000) {
        let first_step = route(&table, a)
            .ok()
            .and_then(|r| r.steps.first().map(|s| s.line));
        assert_eq!(first_step, scan(&records, a).map(|r| r.line), "{a}");
    }

    println!("router table: {n} exact records + 100 wildcard + 100 domain records");
    println!("parse: {parse_ms:.1} ms, index: {index_ms:.1} ms");
    println!("| query | indexed ns/address | scan ns/address |");
    println!("|---|---:|---:|");
    for (name, qs) in [
        ("alias hit (1 rewrite)", &alias),
        ("wildcard hit (1 rewrite)", &wild),
        ("miss", &miss),
    ] {
        let indexed = best_of(5, qs.len(), || {
            qs.iter()
                .map(|a| route(&table, a).map(|r| r.steps.len()).unwrap_or(0))
                .sum()
        });
        // The scan is slow: time a thousandth of the queries.
        let few = &qs[..qs.len() / 1000];
        let scanned = best_of(2, few.len(), || {
            few.iter().filter(|a| scan(&records, a).is_some()).count()
        });
        println!("| {name} | {indexed:.0} | {scanned:.0} |");
    }
}

//! Applying the router table (SPEC §3, CommuniGate Pro's router).
//!
//! Records are tried in order; the first that matches rewrites the address
//! (or ends routing with `error` or `spamtrap`), and the rewritten address
//! goes through the table again from the top, up to [`MAX_HOPS`] times: a
//! table that sends an address round in circles is reported as a loop,
//! never followed forever. `Relay:` (the default prefix) and `RelayAll:`
//! set the "may relay" marker, `NoRelay:` leaves it alone, and once set it
//! is never reset. A multi-route address (`user%host@h`, `host!user@h`, a
//! quoted local part holding `@`) gets the marker only from `RelayAll:`.
//!
//! This module is pure: the table comes from `mxguard_config::parse_router`.

use mxguard_config::{RelayPrefix, RouterRecord, RouterTable, RouterTarget};

use crate::pattern::glob;

/// How many rewrites one address may go through.
pub const MAX_HOPS: usize = 16;

/// One rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStep {
    /// The router file line of the record that applied.
    pub line: usize,
    pub from: String,
    pub to: String,
}

/// Where routing ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteEnd {
    /// At an address (to deliver locally or relay, as the caller decides).
    Address,
    /// At a record whose target is `error`.
    Error { line: usize },
    /// At a spam trap.
    SpamTrap { line: usize },
}

/// The result of routing one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// The final address (lowercase).
    pub address: String,
    pub may_relay: bool,
    pub end: RouteEnd,
    pub steps: Vec<RouteStep>,
}

/// The table sends an address round in circles (or too far).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("routing loop: {} rewrites without an end ({})", steps.len(), steps.iter().map(|s| format!("line {}: {} -> {}", s.line, s.from, s.to)).collect::<Vec<_>>().join(", "))]
pub struct RouteLoop {
    pub steps: Vec<RouteStep>,
}

/// Puts the captures into the `*`s of a target, in order.
fn substitute(target: &str, caps: &[String]) -> String {
    let mut out = String::with_capacity(target.len() + 16);
    let mut caps = caps.iter();
    for (i, part) in target.split('*').enumerate() {
        if i > 0 {
            out.push_str(caps.next().map(String::as_str).unwrap_or(""));
        }
        out.push_str(part);
    }
    out
}

/// Whether an address routes through more than one host.
pub fn is_multi_route(address: &str) -> bool {
    let local = address.rsplit_once('@').map(|(l, _)| l).unwrap_or(address);
    local.contains(['%', '!', '@']) || address.starts_with('@')
}

/// The first record (in file order) that matches `address`, with what its
/// `*`s matched: the exact records by hash lookup, the ones with `*` by a
/// scan of those that could match, stopping past the best candidate.
fn first_match<'t>(
    table: &'t RouterTable,
    address: &str,
) -> Option<(&'t RouterRecord, Vec<String>)> {
    let domain = address.rsplit_once('@').map_or(address, |(_, d)| d);
    let mut best: Option<(usize, Vec<String>)> =
        match (table.exact_address(address), table.exact_domain(domain)) {
            (Some(a), Some(d)) => Some((a.min(d), Vec::new())),
            (a, d) => a.or(d).map(|i| (i, Vec::new())),
        };
    for list in [table.local_wildcards(domain), table.wildcards()] {
        for &i in list {
            if best.as_ref().is_some_and(|(b, _)| *b < i) {
                break;
            }
            let r = &table[i];
            let caps = if r.address_record {
                glob(&r.pattern, address)
            } else {
                glob(&r.pattern, domain)
            };
            if let Some(caps) = caps {
                best = Some((i, caps));
                break;
            }
        }
    }
    best.map(|(i, caps)| (&table[i], caps))
}

/// Routes one address through the table.
pub fn route(table: &RouterTable, address: &str) -> Result<Routed, RouteLoop> {
    let mut current = address.to_ascii_lowercase();
    let mut may_relay = false;
    let mut steps: Vec<RouteStep> = Vec::new();
    while let Some((r, caps)) = first_match(table, &current) {
        let next = match &r.target {
            RouterTarget::Error => {
                return Ok(Routed {
                    address: current,
                    may_relay,
                    end: RouteEnd::Error { line: r.line },
                    steps,
                });
            }
            RouterTarget::SpamTrap => {
                return Ok(Routed {
                    address: current,
                    may_relay,
                    end: RouteEnd::SpamTrap { line: r.line },
                    steps,
                });
            }
            RouterTarget::Rewrite(t) if r.address_record => substitute(t, &caps),
            RouterTarget::Rewrite(t) => {
                let local = current.rsplit_once('@').map_or("", |(l, _)| l);
                format!("{local}@{}", substitute(t, &caps))
            }
        };
        // Only a rewrite carries the marker; error and spamtrap end here.
        may_relay |= match r.prefix {
            RelayPrefix::Relay => !is_multi_route(&current),
            RelayPrefix::RelayAll => true,
            RelayPrefix::NoRelay => false,
        };
        if next == current {
            // A record that maps an address to itself ends routing.
            break;
        }
        if steps.len() >= MAX_HOPS || steps.iter().any(|s| s.from == next) {
            steps.push(RouteStep {
                line: r.line,
                from: current,
                to: next,
            });
            return Err(RouteLoop { steps });
        }
        steps.push(RouteStep {
            line: r.line,
            from: std::mem::replace(&mut current, next.clone()),
            to: next,
        });
    }
    Ok(Routed {
        address: current,
        may_relay,
        end: RouteEnd::Address,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxguard_config::parse_router;
    use std::path::Path;

    fn table(text: &str) -> RouterTable {
        parse_router(text, Path::new("router.txt")).unwrap().into()
    }

    const SPEC: &str = "; comments\n\
        <joe@example.test> = joe@other.test\n\
        NoRelay:<*@client.test> = *@mail.client.test\n\
        Relay:<*@backup.test> = *@backup-host.test\n\
        RelayAll:<report-*@example.test> = report-*@lists.test\n\
        <*@spammer.test> = error\n\
        <promo*@bigcorp.test> = error\n\
        <misterX@example.test> = spamtrap\n";

    #[test]
    fn spec_examples() {
        let t = table(SPEC);
        // (address, final address, may relay, end)
        let cases: &[(&str, &str, bool, RouteEnd)] = &[
            (
                "joe@example.test",
                "joe@other.test",
                true,
                RouteEnd::Address,
            ),
            (
                "Joe@Example.Test",
                "joe@other.test",
                true,
                RouteEnd::Address,
            ),
            (
                "ann@client.test",
                "ann@mail.client.test",
                false,
                RouteEnd::Address,
            ),
            (
                "bob@backup.test",
                "bob@backup-host.test",
                true,
                RouteEnd::Address,
            ),
            (
                "report-daily@example.test",
                "report-daily@lists.test",
                true,
                RouteEnd::Address,
            ),
            (
                "x@spammer.test",
                "x@spammer.test",
                false,
                RouteEnd::Error { line: 6 },
            ),
            (
                "promo-2026@bigcorp.test",
                "promo-2026@bigcorp.test",
                false,
                RouteEnd::Error { line: 7 },
            ),
            (
                "ceo@bigcorp.test",
                "ceo@bigcorp.test",
                false,
                RouteEnd::Address,
            ),
            (
                "misterx@example.test",
                "misterx@example.test",
                false,
                RouteEnd::SpamTrap { line: 8 },
            ),
            (
                "nobody@elsewhere.test",
                "nobody@elsewhere.test",
                false,
                RouteEnd::Address,
            ),
        ];
        for (addr, want, relay, end) in cases {
            let r = route(&t, addr).unwrap();
            assert_eq!(&r.address, want, "{addr}");
            assert_eq!(r.may_relay, *relay, "{addr}");
            assert_eq!(&r.end, end, "{addr}");
        }
    }

    #[test]
    fn communigate_joe_example_keeps_the_marker() {
        // An alias with the default Relay: prefix, then a NoRelay: domain
        // record: the marker set by the first is kept.
        let t = table(
            "<joe@mydomain.test> = joe@otherdomain.test\nNoRelay:otherdomain.test = otherhost.test\n",
        );
        let r = route(&t, "joe@mydomain.test").unwrap();
        assert_eq!(r.address, "joe@otherhost.test");
        assert!(r.may_relay);
        assert_eq!(r.steps.len(), 2);
        assert_eq!((r.steps[0].line, r.steps[1].line), (1, 2));
    }

    #[test]
    fn multi_route_addresses_need_relayall() {
        let t = table("Relay:<*@backup.test> = *@backup-host.test\n");
        let r = route(&t, "x%far.test@backup.test").unwrap();
        assert!(!r.may_relay, "Relay: never marks a multi-route address");
        let t = table("RelayAll:<*@backup.test> = *@backup-host.test\n");
        assert!(route(&t, "x%far.test@backup.test").unwrap().may_relay);
        assert!(is_multi_route("far.test!x@backup.test"));
        assert!(is_multi_route("\"x@far.test\"@backup.test"));
        assert!(!is_multi_route("x@backup.test"));
    }

    #[test]
    fn loops_are_reported() {
        let t = table("<a@x.test> = b@x.test\n<b@x.test> = a@x.test\n");
        let e = route(&t, "a@x.test").unwrap_err();
        assert!(e.to_string().contains("routing loop"), "{e}");
        // a domain record that keeps growing the domain is cut too
        let t = table("*x.test = *.x.test\n");
        assert!(route(&t, "a@x.test").is_err());
        // growing without end is cut at MAX_HOPS
        let t = table("<*@x.test> = a*@x.test\n");
        assert!(route(&t, "b@x.test").unwrap_err().steps.len() <= MAX_HOPS + 1);
        // mapping to itself ends routing
        let t = table("<a@x.test> = a@x.test\n");
        assert_eq!(route(&t, "a@x.test").unwrap().address, "a@x.test");
    }

    #[test]
    fn substitution() {
        assert_eq!(substitute("*-*@y", &["1".into(), "2".into()]), "1-2@y");
        assert_eq!(substitute("x@y", &["1".into()]), "x@y");
    }
}

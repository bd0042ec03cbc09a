//! The router table, bans and return-path checks as RCPT TO and MAIL FROM
//! see them (SPEC §2 `[router]`, `[sender]`, `[recipient]`, §3).

use std::net::IpAddr;
use std::path::Path as FsPath;
use std::sync::Arc;

use mxguard_config::{Config, parse_router};
use mxguard_proto::address::parse_path;

use crate::CheckId;
use crate::recipient::{Client, RelayReason, Route, Via, route_recipient};
use crate::sender::{DomainAnswer, SenderCheck, check_sender, judge_sender_domain};

const BASE: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test", "alias.test"]
[relay]
clients = ["10.0.0.0/8"]
[[account]]
address = "joe@example.test"
[[account]]
address = "ann@example.test"
aliases = ["sales@example.test"]
"#;

/// SPEC §3's example table, CommuniGate's joe example (an alias with the
/// default Relay: prefix, then a NoRelay: domain record), and a domain alias.
const TABLE: &str = "; comments\n\
    <joe@example.test> = joe@other.test\n\
    NoRelay:<*@client.test> = *@mail.client.test\n\
    Relay:<*@backup.test> = *@backup-host.test\n\
    RelayAll:<report-*@example.test> = report-*@lists.test\n\
    <*@spammer.test> = error\n\
    <promo*@bigcorp.test> = error\n\
    <misterX@example.test> = spamtrap\n\
    NoRelay:other.test = mail.other.test\n\
    <*@alias.test> = *@example.test\n\
    <boss@example.test> = sales@example.test\n\
    RelayAll:<*%*@gateway.test> = *@*\n\
    <*@loop.test> = *@loop2.test\n\
    <*@loop2.test> = *@loop.test\n";

fn config(extra: &str) -> Config {
    let text = format!("{BASE}{extra}");
    let mut cfg = Config::parse(&text, FsPath::new("t.toml")).unwrap();
    cfg.router.records = Arc::new(
        parse_router(TABLE, FsPath::new("router.txt"))
            .unwrap()
            .into(),
    );
    cfg
}

fn stranger() -> IpAddr {
    "192.0.2.1".parse().unwrap()
}

fn rcpt(cfg: &Config, to: &str, client: &Client<'_>) -> Result<Route, (u16, CheckId)> {
    let path = parse_path(to, true).unwrap().unwrap();
    route_recipient(cfg, &path, client).map_err(|v| (v.reply.code(), v.check))
}

#[test]
fn recipients_through_the_router() {
    let cfg = config("");
    let s = Client::at(stranger());
    let relay = |address: &str, reason| {
        Ok(Route::Relay {
            address: address.to_string(),
            reason,
        })
    };
    // CommuniGate's joe: the alias sets the marker, the NoRelay: domain
    // record after it does not reset it, so even a stranger may send.
    assert_eq!(
        rcpt(&cfg, "<joe@example.test>", &s),
        relay("joe@mail.other.test", RelayReason::Router)
    );
    // NoRelay: reroutes but gives no right to relay
    assert_eq!(
        rcpt(&cfg, "<x@client.test>", &s),
        Err((554, CheckId::Relay))
    );
    let client = Client::at("10.1.1.1".parse().unwrap());
    assert_eq!(
        rcpt(&cfg, "<x@client.test>", &client),
        relay("x@mail.client.test", RelayReason::ClientAddress)
    );
    // Relay: backup domain, relayed for anyone to the routed host
    assert_eq!(
        rcpt(&cfg, "<Someone@Backup.test>", &s),
        relay("someone@backup-host.test", RelayReason::Router)
    );
    assert_eq!(
        rcpt(&cfg, "<report-may@example.test>", &s),
        relay("report-may@lists.test", RelayReason::Router)
    );
    // error targets refuse the recipient
    assert_eq!(
        rcpt(&cfg, "<anyone@spammer.test>", &s),
        Err((550, CheckId::Router))
    );
    assert_eq!(
        rcpt(&cfg, "<promo-1@bigcorp.test>", &s),
        Err((550, CheckId::Router))
    );
    // a spam trap is accepted at RCPT (refused at the end of DATA)
    assert_eq!(
        rcpt(&cfg, "<MisterX@example.test>", &s),
        Ok(Route::SpamTrap { line: 8 })
    );
    // a domain alias ends at a local account; a routed alias of an alias too
    match rcpt(&cfg, "<ann@alias.test>", &s) {
        Ok(Route::Local(l)) => assert_eq!(
            (l.mailbox.as_str(), l.via),
            ("ann@example.test", Via::Account)
        ),
        other => panic!("{other:?}"),
    }
    match rcpt(&cfg, "<boss@example.test>", &s) {
        Ok(Route::Local(l)) => assert_eq!(
            (l.mailbox.as_str(), l.via),
            ("ann@example.test", Via::Alias)
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rcpt(&cfg, "<nobody@alias.test>", &s),
        Err((550, CheckId::UnknownUser))
    );
    // a loop is a configuration problem: 4xx, so the mail comes back later
    assert_eq!(rcpt(&cfg, "<a@loop.test>", &s), Err((451, CheckId::Router)));
}

#[test]
fn multi_route_addresses_need_relay_all() {
    let cfg = config("");
    let s = Client::at(stranger());
    // RelayAll: may relay a percent-hack address, once routed
    assert_eq!(
        rcpt(&cfg, "<user%far.test@gateway.test>", &s),
        Ok(Route::Relay {
            address: "user@far.test".into(),
            reason: RelayReason::Router
        })
    );
    // Relay: does not give the marker to a multi-route address
    let text = "Relay:<*@backup.test> = *@backup-host.test\n";
    let mut cfg = config("");
    cfg.router.records = Arc::new(parse_router(text, FsPath::new("r")).unwrap().into());
    assert_eq!(
        rcpt(&cfg, "<user%far.test@backup.test>", &s),
        Err((554, CheckId::Relay))
    );
    // not even for a relay client: a percent hack is never relayed without RelayAll:
    let client = Client::at("10.1.1.1".parse().unwrap());
    assert_eq!(
        rcpt(&cfg, "<user%far.test@backup.test>", &client),
        Err((554, CheckId::Relay))
    );
    assert_eq!(
        rcpt(&cfg, "<user@backup.test>", &s),
        Ok(Route::Relay {
            address: "user@backup-host.test".into(),
            reason: RelayReason::Router
        })
    );
}

#[test]
fn routed_local_parts_are_quoted_when_they_must_be() {
    let mut cfg = config("");
    let text = "Relay:<*@backup.test> = *@backup-host.test\n";
    cfg.router.records = Arc::new(parse_router(text, FsPath::new("r")).unwrap().into());
    assert_eq!(
        rcpt(
            &cfg,
            "<\"john smith\"@backup.test>",
            &Client::at(stranger())
        ),
        Ok(Route::Relay {
            address: "\"john smith\"@backup-host.test".into(),
            reason: RelayReason::Router
        })
    );
}

#[test]
fn unrouted_remote_addresses_keep_their_spelling() {
    let cfg = config("");
    let client = Client::at("10.1.1.1".parse().unwrap());
    assert_eq!(
        rcpt(&cfg, "<\"Odd Name\"@Far.Test>", &client),
        Ok(Route::Relay {
            address: "\"Odd Name\"@far.test".into(),
            reason: RelayReason::ClientAddress
        })
    );
}

#[test]
fn recipient_bans() {
    let cfg = config("[recipient]\nban = [\"*@competitor.test\", \"sales@example.test\"]\n");
    let client = Client::at("10.1.1.1".parse().unwrap());
    assert_eq!(
        rcpt(&cfg, "<ceo@Competitor.Test>", &client),
        Err((550, CheckId::RecipientBan))
    );
    // the ban is on the address as given, before routing and aliases
    assert_eq!(
        rcpt(&cfg, "<SALES@example.test>", &client),
        Err((550, CheckId::RecipientBan))
    );
    assert!(matches!(
        rcpt(&cfg, "<ann@example.test>", &client),
        Ok(Route::Local(_))
    ));
    // a pattern without @ is a domain
    let cfg = config("[recipient]\nban = [\"competitor.test\"]\n");
    assert_eq!(
        rcpt(&cfg, "<x@competitor.test>", &client),
        Err((550, CheckId::RecipientBan))
    );
}

fn mail(
    cfg: &Config,
    from: Option<&str>,
    client: &Client<'_>,
) -> Result<SenderCheck, (u16, CheckId)> {
    check_sender(cfg, from, client).map_err(|v| (v.reply.code(), v.check))
}

#[test]
fn return_paths_through_the_router() {
    let cfg = config("");
    let s = Client::at(stranger());
    // <> is never refused
    assert_eq!(mail(&cfg, None, &s), Ok(SenderCheck::Accept));
    // routed to error: 550 5.7.1
    let v = check_sender(&cfg, Some("bulk@spammer.test"), &s).unwrap_err();
    assert_eq!((v.reply.code(), v.check), (550, CheckId::Router));
    assert_eq!(
        v.reply.enhanced().map(|e| e.to_string()),
        Some("5.7.1".into())
    );
    assert!(v.reason.contains("line 6"), "{}", v.reason);
    // local, or known to the router: no DNS
    for known in [
        "joe@example.test",
        "x@alias.test",
        "x@backup.test",
        "x@client.test",
        "misterx@example.test",
    ] {
        assert_eq!(
            mail(&cfg, Some(known), &s),
            Ok(SenderCheck::Accept),
            "{known}"
        );
    }
    // a domain literal needs no DNS either
    assert_eq!(
        mail(&cfg, Some("x@[192.0.2.9]"), &s),
        Ok(SenderCheck::Accept)
    );
    // anything else: the DNS is asked about the domain
    assert_eq!(
        mail(&cfg, Some("Someone@Far.Test."), &s),
        Ok(SenderCheck::VerifyDomain("far.test".into()))
    );
    // but not for trusted clients
    let client = Client::at("10.1.1.1".parse().unwrap());
    assert_eq!(
        mail(&cfg, Some("x@far.test"), &client),
        Ok(SenderCheck::Accept)
    );
    let white = Client {
        whitelisted: true,
        ..s
    };
    assert_eq!(
        mail(&cfg, Some("x@far.test"), &white),
        Ok(SenderCheck::Accept)
    );
    let pop = Client {
        recent_pop: true,
        ..s
    };
    assert_eq!(
        mail(&cfg, Some("x@far.test"), &pop),
        Ok(SenderCheck::Accept)
    );
    // nor with verify_domain = false
    let off = config("[sender]\nverify_domain = false\n");
    assert_eq!(mail(&off, Some("x@far.test"), &s), Ok(SenderCheck::Accept));
    // a routing loop on a sender is a 4xx too
    assert_eq!(
        mail(&cfg, Some("x@loop.test"), &s),
        Err((451, CheckId::Router))
    );
}

#[test]
fn sender_domain_answers() {
    let cfg = config("");
    let judge = |a: DomainAnswer| {
        judge_sender_domain(&cfg, "x@far.test", "far.test", &a)
            .map_err(|v| (v.reply.to_string(), v.check))
    };
    assert_eq!(judge(DomainAnswer::MailServers), Ok(()));
    let default_reply = "450 4.1.8 Sender address rejected: Domain not found";
    assert_eq!(
        judge(DomainAnswer::NoSuchDomain),
        Err((default_reply.into(), CheckId::SenderDomain))
    );
    assert_eq!(
        judge(DomainAnswer::NoRecords),
        Err((default_reply.into(), CheckId::SenderDomain))
    );
    let (reply, _) = judge(DomainAnswer::Unavailable("timed out".into())).unwrap_err();
    assert!(reply.starts_with("451 4.4.3 "), "{reply}");
    let (reply, _) = judge(DomainAnswer::NullMx).unwrap_err();
    assert!(reply.starts_with("550 5.7.27 "), "{reply}");
    // the administrator may choose a 5xx for a domain that does not exist
    let strict =
        config("[sender]\nunknown_domain_reply = \"550 5.1.8 Sender domain does not exist\"\n");
    let v = judge_sender_domain(
        &strict,
        "x@far.test",
        "far.test",
        &DomainAnswer::NoSuchDomain,
    )
    .unwrap_err();
    assert_eq!(
        v.reply.to_string(),
        "550 5.1.8 Sender domain does not exist"
    );
    // but never for a DNS failure (RFC 2505 §4)
    let v = judge_sender_domain(
        &strict,
        "x@far.test",
        "far.test",
        &DomainAnswer::Unavailable("SERVFAIL".into()),
    )
    .unwrap_err();
    assert_eq!(v.reply.code(), 451);
}

#[test]
fn sender_bans_and_excludes() {
    let cfg = config(
        "[sender]\nban = [\"*@spam.test\", \"promo*@bigcorp.test\"]\n\
         exclude = [ { hosts = [\"198.51.100.0/24\"], local_part = \"^[0-9]+$\" } ]\n",
    );
    let s = Client::at(stranger());
    assert_eq!(
        mail(&cfg, Some("X@Spam.Test"), &s),
        Err((550, CheckId::SenderBan))
    );
    assert_eq!(
        mail(&cfg, Some("promo7@bigcorp.test"), &s),
        Err((550, CheckId::SenderBan))
    );
    assert_eq!(
        mail(&cfg, Some("ceo@bigcorp.test"), &s),
        Ok(SenderCheck::VerifyDomain("bigcorp.test".into()))
    );
    // bans hold for authenticated users too
    let joe = cfg.account_for("joe@example.test");
    let authed = Client { account: joe, ..s };
    assert_eq!(
        mail(&cfg, Some("x@spam.test"), &authed),
        Err((550, CheckId::SenderBan))
    );
    // exclude: numeric local parts from 198.51.100.0/24 only
    let there = Client::at("198.51.100.20".parse().unwrap());
    assert_eq!(
        mail(&cfg, Some("12345@far.test"), &there),
        Err((550, CheckId::SenderExclude))
    );
    assert!(mail(&cfg, Some("joe12@far.test"), &there).is_ok());
    assert!(mail(&cfg, Some("12345@far.test"), &s).is_ok());
    // <> stays untouched
    assert_eq!(mail(&cfg, None, &there), Ok(SenderCheck::Accept));
}

mod properties {
    //! Routing terminates, within the loop limit, for any table and any
    //! address; RCPT TO and MAIL FROM decisions never panic on them.

    use super::*;
    use crate::router::{MAX_HOPS, route};
    use proptest::prelude::*;

    /// A side of a record: local parts and domains from a small alphabet
    /// (so that records often match each other), with wildcards.
    fn side() -> impl Strategy<Value = String> {
        "[ab*%!]{0,3}@[xy*]{1,2}\\.test"
    }

    fn domain_side() -> impl Strategy<Value = String> {
        "[xy*]{1,2}\\.test"
    }

    /// One router line: an address or domain record with any prefix and
    /// any target.
    fn record() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            Just(""),
            Just("Relay:"),
            Just("NoRelay:"),
            Just("RelayAll:")
        ];
        let address =
            (prefix.clone(), side(), side()).prop_map(|(p, l, r)| format!("{p}<{l}> = {r}"));
        let domain = (prefix.clone(), domain_side(), domain_side())
            .prop_map(|(p, l, r)| format!("{p}{l} = {r}"));
        let end = (prefix, side(), prop_oneof![Just("error"), Just("spamtrap")])
            .prop_map(|(p, l, t)| format!("{p}<{l}> = {t}"));
        prop_oneof![4 => address, 2 => domain, 1 => end]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn routing_terminates(lines in proptest::collection::vec(record(), 1..8),
                              address in "[ab%!]{1,3}@[xy]{1,2}\\.test") {
            // Lines the parser refuses (more `*` on the right) are skipped,
            // as an administrator would be told of them.
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let kept: Vec<_> = text
                .lines()
                .filter(|l| parse_router(l, FsPath::new("r")).is_ok())
                .collect();
            let table: mxguard_config::RouterTable =
                parse_router(&kept.join("\n"), FsPath::new("r")).unwrap().into();
            let first_line = match route(&table, &address) {
                Ok(r) => {
                    prop_assert!(r.steps.len() <= MAX_HOPS);
                    match r.end {
                        crate::router::RouteEnd::Error { line }
                        | crate::router::RouteEnd::SpamTrap { line } if r.steps.is_empty() => Some(line),
                        _ => r.steps.first().map(|s| s.line),
                    }
                }
                Err(e) => {
                    prop_assert!(e.steps.len() <= MAX_HOPS + 1);
                    e.steps.first().map(|s| s.line)
                }
            };
            // The index finds the record a scan in file order finds (a
            // record mapping the address to itself ends routing unseen).
            let lower = address.to_ascii_lowercase();
            let domain = lower.rsplit_once('@').map_or(lower.as_str(), |(_, d)| d);
            let scanned = table.iter().find(|r| {
                let text = if r.address_record { lower.as_str() } else { domain };
                crate::pattern::glob(&r.pattern, text).is_some()
            });
            if let Some(line) = first_line {
                prop_assert_eq!(Some(line), scanned.map(|r| r.line));
            }
            let mut cfg = config("");
            cfg.router.records = Arc::new(table);
            let s = Client::at(stranger());
            if let Ok(Some(path)) = parse_path(&format!("<{address}>"), false) {
                let _ = route_recipient(&cfg, &path, &s);
            }
            let _ = check_sender(&cfg, Some(&address), &s);
        }
    }
}

//! Table-driven tests of the connection stage.

use super::*;

const BASE: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
"#;

fn config(extra: &str) -> Config {
    let text = format!("{BASE}{extra}");
    Config::parse(&text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `(code, enhanced, check)` of a verdict, for comparing.
fn summary(v: &Verdict) -> (u16, String, CheckId) {
    let enhanced = v
        .reply
        .enhanced()
        .map(|e| e.to_string())
        .unwrap_or_default();
    (v.reply.code(), enhanced, v.check)
}

type Want = Result<(), (u16, &'static str, CheckId)>;

fn matches_want(got: Result<(), &Verdict>, want: &Want) -> bool {
    match (got, want) {
        (Ok(()), Ok(())) => true,
        (Err(v), Err((code, enh, check))) => summary(v) == (*code, enh.to_string(), *check),
        _ => false,
    }
}

#[test]
fn lists() {
    let cfg = config(
        r#"
[relay]
clients = ["10.0.0.0/8"]
[access]
blacklist = ["203.0.113.0/24", "2001:db8:bad::/48"]
whitelist = ["203.0.113.5"]
reject_reply = "421 4.7.1 go away [%IP%]"
"#,
    );
    let only = config(
        r#"
[relay]
clients = ["10.0.0.0/8"]
clients_only = true
[access]
blacklist = ["10.9.0.0/16"]
whitelist = ["198.51.100.1"]
"#,
    );
    // (config, ip, banned, want: Ok(whitelisted) or Err((code, enhanced, check)))
    type Row<'a> = (
        &'a Config,
        &'a str,
        bool,
        Result<bool, (u16, &'a str, CheckId)>,
    );
    let cases: &[Row] = &[
        (&cfg, "192.0.2.1", false, Ok(false)),
        (
            &cfg,
            "203.0.113.9",
            false,
            Err((421, "4.7.1", CheckId::Blacklist)),
        ),
        (
            &cfg,
            "::ffff:203.0.113.9",
            false,
            Err((421, "4.7.1", CheckId::Blacklist)),
        ),
        (
            &cfg,
            "2001:db8:bad::1",
            false,
            Err((421, "4.7.1", CheckId::Blacklist)),
        ),
        // the whitelist wins over the blacklist and over a ban
        (&cfg, "203.0.113.5", false, Ok(true)),
        (&cfg, "203.0.113.5", true, Ok(true)),
        // a ban comes before the blacklist
        (
            &cfg,
            "203.0.113.9",
            true,
            Err((421, "4.7.1", CheckId::Banned)),
        ),
        (
            &cfg,
            "192.0.2.1",
            true,
            Err((421, "4.7.1", CheckId::Banned)),
        ),
        // clients_only: strangers get reject_reply (default 554 5.7.1)
        (&cfg, "192.0.2.1", false, Ok(false)),
        (
            &only,
            "192.0.2.1",
            false,
            Err((554, "5.7.1", CheckId::ClientsOnly)),
        ),
        (&only, "10.1.2.3", false, Ok(false)),
        (&only, "198.51.100.1", false, Ok(true)),
        (
            &only,
            "10.9.1.1",
            false,
            Err((554, "5.7.1", CheckId::Blacklist)),
        ),
    ];
    for (cfg, addr, banned, want) in cases {
        let got = check_lists(cfg, ip(addr), banned.then_some("3 errors in one session"));
        let got_s = got
            .as_ref()
            .map(|r| *r == ListResult::Whitelisted)
            .map_err(summary);
        let want_s = want.map_err(|(c, e, k)| (c, e.to_string(), k));
        assert_eq!(
            got_s, want_s,
            "{addr} banned={banned}: got {got:?}, want {want:?}"
        );
    }
    let v = check_lists(&cfg, ip("203.0.113.9"), None).unwrap_err();
    assert_eq!(v.reply.text(), "go away [203.0.113.9]");
    assert!(v.reason.contains("access.blacklist"), "{}", v.reason);
    let v = check_lists(
        &cfg,
        ip("192.0.2.1"),
        Some("sent to the spam trap x@example.test"),
    )
    .unwrap_err();
    assert_eq!(
        v.reply.text(),
        "Your address is temporarily banned; try again later"
    );
    assert!(v.reason.contains("sent to the spam trap"), "{}", v.reason);
}

#[test]
fn connection_limits() {
    let cfg = config("[limits]\nmax_connections = 10\nconnections_per_ip = 3\n");
    // (total open, open from this ip, both including this one; want)
    let cases: &[(usize, usize, Want, &str)] = &[
        (1, 1, Ok(()), ""),
        (10, 3, Ok(()), ""),
        (
            11,
            1,
            Err((421, "4.7.0", CheckId::ConnectionLimit)),
            "Too many connections;",
        ),
        (
            5,
            4,
            Err((421, "4.7.0", CheckId::ConnectionLimit)),
            "from your address",
        ),
        (
            11,
            4,
            Err((421, "4.7.0", CheckId::ConnectionLimit)),
            "from your address",
        ),
    ];
    for (total, from_ip, want, text) in cases {
        let got = check_connection_limits(&cfg, *total, *from_ip);
        assert!(
            matches_want(got.as_ref().map(|_| ()), want),
            "({total}, {from_ip}): got {got:?}, want {want:?}"
        );
        if let Err(v) = got {
            assert!(v.reply.text().contains(text), "{}", v.reply);
        }
    }
}

#[test]
fn dnsbl_query_names() {
    let cases: &[(&str, &str, &str)] = &[
        ("192.0.2.99", "bl.example.net", "99.2.0.192.bl.example.net."),
        (
            "192.0.2.99",
            "bl.example.net.",
            "99.2.0.192.bl.example.net.",
        ),
        ("::ffff:192.0.2.99", "bl.test", "99.2.0.192.bl.test."),
        ("127.0.0.2", "zen.test", "2.0.0.127.zen.test."),
        (
            "2001:db8:1:2:3:4:567:89ab",
            "bl.test",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test.",
        ),
        (
            "::1",
            "v6.bl.test",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.v6.bl.test.",
        ),
        (
            "2001:DB8::ABCD",
            "bl.test",
            "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.",
        ),
    ];
    for (addr, zone, want) in cases {
        let got = dnsbl_query_name(ip(addr), zone);
        assert_eq!(got, *want, "{addr} in {zone}: got {got}, want {want}");
        if addr.contains(':') && !addr.starts_with("::ffff:") {
            let labels = got.trim_end_matches('.').split('.').count();
            assert_eq!(labels, 32 + zone.trim_end_matches('.').split('.').count());
        }
    }
}

const DNSBL: &str = r#"
[[dnsbl]]
zone = "score1.test"
match = ["127.0.0.2"]
score = 1.5
[[dnsbl]]
zone = "block1.test"
match = ["127.0.0.2-127.0.0.10"]
[[dnsbl]]
zone = "score2.test"
score = 2
[[dnsbl]]
zone = "block2.test"
reply = "450 4.7.1 [%IP%] is on %ZONE%, try later"
"#;

#[test]
fn dnsbl_outcomes() {
    use DnsblAnswer::{Failed, Listed, NotListed};
    let cfg = config(DNSBL);
    let a = |s: &[&str]| Listed(s.iter().map(|x| x.parse().unwrap()).collect());
    let fail = || Failed("timed out".into());
    // (answers for score1, block1, score2, block2;
    //  want: (verdict's zone and reply, score, hits, failures))
    type Row = (
        Vec<DnsblAnswer>,
        Option<&'static str>,
        f64,
        &'static [&'static str],
        usize,
    );
    let cases: Vec<Row> = vec![
        (
            vec![NotListed, NotListed, NotListed, NotListed],
            None,
            0.0,
            &[],
            0,
        ),
        // score zones add up, nothing refused
        (
            vec![a(&["127.0.0.2"]), NotListed, a(&["127.0.0.4"]), NotListed],
            None,
            3.5,
            &["score1.test=127.0.0.2", "score2.test=127.0.0.4"],
            0,
        ),
        // an answer outside the zone's `match` does not count
        (
            vec![
                a(&["127.0.0.3"]),
                a(&["127.0.0.11"]),
                NotListed,
                a(&["127.0.0.1"]),
            ],
            None,
            0.0,
            &[],
            0,
        ),
        (
            vec![
                NotListed,
                NotListed,
                a(&["10.0.0.1", "192.0.2.1"]),
                NotListed,
            ],
            None,
            0.0,
            &[],
            0,
        ),
        // ... unless another address of the same answer does
        (
            vec![
                NotListed,
                a(&["127.0.0.11", "127.0.0.9"]),
                NotListed,
                NotListed,
            ],
            Some("554 5.7.1 Service unavailable; [192.0.2.7] listed at block1.test"),
            0.0,
            &["block1.test=127.0.0.9"],
            0,
        ),
        // first refusing zone in configuration order wins; scores still add
        (
            vec![
                a(&["127.0.0.2"]),
                a(&["127.0.0.2"]),
                NotListed,
                a(&["127.0.0.2"]),
            ],
            Some("554 5.7.1 Service unavailable; [192.0.2.7] listed at block1.test"),
            1.5,
            &[
                "score1.test=127.0.0.2",
                "block1.test=127.0.0.2",
                "block2.test=127.0.0.2",
            ],
            0,
        ),
        (
            vec![NotListed, NotListed, NotListed, a(&["127.0.0.2"])],
            Some("450 4.7.1 [192.0.2.7] is on block2.test, try later"),
            0.0,
            &["block2.test=127.0.0.2"],
            0,
        ),
        // failures count as not listed and are reported
        (vec![fail(), fail(), fail(), fail()], None, 0.0, &[], 4),
        (
            vec![fail(), a(&["127.0.0.5"]), a(&["127.0.0.2"])],
            Some("554 5.7.1 Service unavailable; [192.0.2.7] listed at block1.test"),
            2.0,
            &["block1.test=127.0.0.5", "score2.test=127.0.0.2"],
            2, // score1 failed, block2 had no answer
        ),
    ];
    let client = ip("192.0.2.7");
    for (i, (answers, verdict, score, hits, failures)) in cases.iter().enumerate() {
        let got = check_dnsbl(&cfg, client, answers);
        let got_reply = got.verdict.as_ref().map(|v| v.reply.to_string());
        assert_eq!(got_reply.as_deref(), *verdict, "case {i}: got {got:?}");
        if let Some(v) = &got.verdict {
            assert_eq!(v.check, CheckId::Dnsbl, "case {i}");
        }
        assert!(
            (got.score - score).abs() < 1e-9,
            "case {i}: got score {}, want {score}",
            got.score
        );
        assert_eq!(got.hits, *hits, "case {i}");
        assert_eq!(
            got.failures.len(),
            *failures,
            "case {i}: {:?}",
            got.failures
        );
    }
    // IPv6 client: %IP% is the address as written by Rust
    let got = check_dnsbl(
        &cfg,
        ip("2001:db8::7"),
        &[NotListed, NotListed, NotListed, a(&["127.0.0.2"])],
    );
    assert_eq!(
        got.verdict.unwrap().reply.text(),
        "[2001:db8::7] is on block2.test, try later"
    );
    // no zones configured: nothing to decide
    let none = check_dnsbl(&config(""), client, &[]);
    assert_eq!(none, DnsblOutcome::default());
}

#[test]
fn ptr_checks() {
    let names = |confirmed| PtrFacts::Names {
        names: vec!["host.example.test".into()],
        confirmed,
    };
    let temp = PtrFacts::TempFail("SERVFAIL".into());
    let empty = PtrFacts::Names {
        names: vec![],
        confirmed: false,
    };
    // (mode, facts, want: Ok(score) or Err((code, enhanced)))
    type Row<'a> = (&'a str, &'a PtrFacts, Result<f64, (u16, &'a str)>);
    let (conf, unconf) = (names(true), names(false));
    let cases: &[Row] = &[
        ("off", &PtrFacts::NoPtr, Ok(0.0)),
        ("off", &temp, Ok(0.0)),
        ("off", &unconf, Ok(0.0)),
        ("require", &conf, Ok(0.0)),
        ("require", &unconf, Ok(0.0)),
        ("require", &PtrFacts::NoPtr, Err((554, "5.7.1"))),
        ("require", &empty, Err((554, "5.7.1"))),
        ("require", &temp, Err((450, "4.7.25"))),
        ("fcrdns", &conf, Ok(0.0)),
        ("fcrdns", &unconf, Err((554, "5.7.1"))),
        ("fcrdns", &PtrFacts::NoPtr, Err((554, "5.7.1"))),
        ("fcrdns", &temp, Err((450, "4.7.25"))),
        ("score", &conf, Ok(0.0)),
        ("score", &unconf, Ok(2.5)),
        ("score", &PtrFacts::NoPtr, Ok(2.5)),
        ("score", &empty, Ok(2.5)),
        ("score", &temp, Ok(0.0)),
    ];
    for (mode, facts, want) in cases {
        let cfg = config(&format!("[access]\nptr = \"{mode}\"\nptr_score = 2.5\n"));
        let got = check_ptr(&cfg, ip("192.0.2.8"), facts);
        let got_s = got.as_ref().map(|s| *s).map_err(|v| {
            assert_eq!(v.check, CheckId::Ptr);
            (v.reply.code(), v.reply.enhanced().unwrap().to_string())
        });
        let want_s = want.map_err(|(c, e)| (c, e.to_string()));
        assert_eq!(
            got_s, want_s,
            "{mode} {facts:?}: got {got:?}, want {want:?}"
        );
    }
    // permanent refusals use access.reject_reply, %IP% substituted
    let cfg = config(
        "[access]\nptr = \"fcrdns\"\nreject_reply = \"550 5.7.25 no reverse DNS for [%IP%]\"\n",
    );
    let v = check_ptr(&cfg, ip("192.0.2.8"), &PtrFacts::NoPtr).unwrap_err();
    assert_eq!(
        v.reply.to_string(),
        "550 5.7.25 no reverse DNS for [192.0.2.8]"
    );
    assert!(v.reason.contains("no PTR record"), "{}", v.reason);
    let v = check_ptr(&cfg, ip("192.0.2.8"), &names(false)).unwrap_err();
    assert_eq!(v.reply.code(), 550);
    assert!(v.reason.contains("\"host.example.test\""), "{}", v.reason);
    // hostile PTR names are escaped in the reason
    let evil = PtrFacts::Names {
        names: vec!["a\r\nb".into()],
        confirmed: false,
    };
    let v = check_ptr(&cfg, ip("192.0.2.8"), &evil).unwrap_err();
    assert!(
        !v.reason.contains('\n') && v.reason.contains("a\\r\\nb"),
        "{}",
        v.reason
    );
}

/// RFC 2505 §2: trouble with DNS is never a reason for a permanent refusal.
#[test]
fn dns_failures_never_give_5xx() {
    let dnsbl = config(DNSBL);
    let failed: Vec<DnsblAnswer> = (0..4)
        .map(|i| DnsblAnswer::Failed(format!("e{i}")))
        .collect();
    for addr in ["192.0.2.1", "2001:db8::1"] {
        assert_eq!(check_dnsbl(&dnsbl, ip(addr), &failed).verdict, None);
        assert_eq!(check_dnsbl(&dnsbl, ip(addr), &[]).verdict, None);
        for mode in ["off", "require", "fcrdns", "score"] {
            let cfg = config(&format!("[access]\nptr = \"{mode}\"\n"));
            let got = check_ptr(&cfg, ip(addr), &PtrFacts::TempFail("timeout".into()));
            if let Err(v) = got {
                assert!(v.reply.is_transient(), "{mode}: {}", v.reply);
            }
        }
    }
}

#[test]
fn helo_names() {
    let cfg = config("[access]\nehlo_block = [\"ylmf-pc\", \"friend\"]\n");
    let client = ip("192.0.2.1");
    // (name, want: None = accepted, Some((code, enhanced, check, close)))
    type Row = (&'static str, Option<(u16, &'static str, CheckId, bool)>);
    let blocked = Some((554, "5.7.1", CheckId::EhloBlock, true));
    let syntax = Some((501, "5.5.2", CheckId::HeloSyntax, false));
    let cases: &[Row] = &[
        ("mx.example.test", None),
        ("MX.Example.TEST", None),
        ("localhost", None),
        ("my-pc", None),
        ("DESKTOP_1234", None),
        ("a.b-c.d1", None),
        ("123abc.example", None),
        ("host.123", None),
        ("[192.0.2.1]", None),
        ("[198.51.100.200]", None), // not the client's address: NAT, allowed
        ("[IPv6:2001:db8::1]", None),
        ("[ipv6:::1]", None),
        ("ylmf-pc", blocked),
        ("YLMF-PC", blocked),
        ("mail.myfriend.test", blocked),
        ("[ylmf-pc]", blocked), // the block list wins over syntax
        ("", syntax),
        ("192.0.2.1", syntax),
        ("12345", syntax),
        ("[192.0.2.1", syntax),
        ("[192.0.2.256]", syntax),
        ("[192.0.2.01]", syntax),
        ("[2001:db8::1]", syntax),
        ("[IPv6:192.0.2.1]", syntax),
        ("[IPv6:]", syntax),
        ("[]", syntax),
        ("[tag:content]", syntax),
        ("-host.example", syntax),
        ("host-.example", syntax),
        ("host..example", syntax),
        (".example", syntax),
        ("example.", syntax),
        ("ex ample", syntax),
        ("ex\u{e4}mple.test", syntax),
        ("host/1", syntax),
        ("a\r\nb", syntax),
    ];
    for (name, want) in cases {
        let got = check_helo(&cfg, name, client);
        let got_s = got.as_ref().err().map(|r| {
            let (c, e, k) = summary(&r.verdict);
            (c, e, k, r.close)
        });
        let want_s = want.map(|(c, e, k, close)| (c, e.to_string(), k, close));
        assert_eq!(got_s, want_s, "{name:?}: got {got:?}, want {want:?}");
    }
    // label and name lengths
    let label63 = "a".repeat(63);
    let cases: Vec<(String, bool)> = vec![
        (format!("{label63}.test"), true),
        (format!("{label63}a.test"), false),
        ([label63.as_str(); 4].join("."), true), // 255 characters
        (format!("{}.a", [label63.as_str(); 4].join(".")), false),
    ];
    for (name, want) in cases {
        assert_eq!(is_valid_helo_name(&name), want, "{} chars", name.len());
    }
    // no ehlo_block configured: only syntax matters
    assert!(check_helo(&config(""), "ylmf-pc", client).is_ok());
}

#[test]
fn fixed_verdicts() {
    let cases: &[(Verdict, &str, CheckId)] = &[
        (
            early_talker_verdict(),
            "554 5.5.1 Protocol error: talked before the greeting",
            CheckId::EarlyTalker,
        ),
        (
            too_many_errors_verdict(10),
            "421 4.7.0 Too many errors; closing the connection",
            CheckId::TooManyErrors,
        ),
    ];
    for (v, want, check) in cases {
        assert_eq!(v.reply.to_string(), *want);
        assert_eq!(v.check, *check);
    }
    assert!(too_many_errors_verdict(7).reason.contains('7'));
}

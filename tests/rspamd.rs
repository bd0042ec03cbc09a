//! `mxguard::facts::rspamd::check` against a real rspamd (tests/support/
//! rspamd.rs: the stock rules of the installed package, its own temporary
//! directory, its own test DNS). One rspamd serves every case: it takes
//! seconds to start.
//!
//! What the tests assume of rspamd's stock rules: GTUBE is a pre-result
//! "reject" at the reject threshold (15); a plain message from a loopback
//! client scores near 0 (local clients skip the DNS-based checks);
//! HFILTER_HOSTNAME_UNKNOWN (2.5) fires for a remote client without a
//! `Hostname`, and FORGED_SENDER (0.3) when MAIL FROM and From: differ.
//! Exact scores of ordinary messages depend on the rules and are not
//! checked.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use mxguard::facts::rspamd::{Answer, Request, check};
use mxguard_config::RspamdConfig;
use support::rspamd::Rspamd;

/// rspamd's test string: its stock rules reject any message holding it.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn config(r: &Rspamd) -> RspamdConfig {
    RspamdConfig {
        url: r.url(),
        host: "127.0.0.1".into(),
        port: r.port,
        path: String::new(),
        // Generous: a first scan may wait for rule compilation.
        timeout: Duration::from_secs(30),
        max_size: 2 * 1024 * 1024,
    }
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <{from}>\r\nTo: Joe <joe@example.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{}.1@client.test>\r\nDate: Sun, 22 Nov 2026 08:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// Envelope of a client: `ip`, HELO client.test, MAIL FROM `sender`,
/// RCPT joe@example.test.
struct Envelope {
    ip: IpAddr,
    helo: &'static str,
    hostname: Option<&'static str>,
    sender: &'static str,
    recipients: Vec<String>,
}

impl Envelope {
    fn local() -> Envelope {
        Envelope {
            ip: "127.0.0.1".parse().expect("an IP"),
            helo: "client.test",
            hostname: Some("localhost"),
            sender: "alice@client.test",
            recipients: vec!["joe@example.test".into()],
        }
    }

    fn remote(hostname: Option<&'static str>) -> Envelope {
        Envelope {
            ip: "192.0.2.10".parse().expect("an IP"),
            hostname,
            ..Envelope::local()
        }
    }
}

fn run(rt: &tokio::runtime::Runtime, r: &Rspamd, env: &Envelope, msg: &[u8]) -> Answer {
    let req = Request {
        client_ip: env.ip,
        helo: env.helo,
        hostname: env.hostname,
        sender: env.sender,
        recipients: &env.recipients,
        queue_id: "RSPAMDTEST1",
    };
    match rt.block_on(check(&config(r), &req, msg)) {
        Ok(a) => a,
        Err(e) => panic!("rspamd check failed: {e}\n{}", r.log_tail()),
    }
}

fn has(a: &Answer, symbol: &str) -> bool {
    a.symbols.iter().any(|(n, _)| n == symbol)
}

#[test]
fn checks_against_a_real_rspamd() {
    let Some(r) = Rspamd::start() else {
        return;
    };
    eprintln!("rspamd answered /ping after {:?}", r.startup);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    // GTUBE: rejected at the threshold.
    let gtube = message(
        "alice@client.test",
        "GTUBE",
        &format!("This is the GTUBE\r\n{GTUBE}\r\n"),
    );
    let a = run(&rt, &r, &Envelope::local(), &gtube);
    eprintln!("GTUBE: {a:?}");
    let required = a.required_score.expect("rspamd sends required_score");
    assert!(required >= 5.0, "{a:?}");
    assert!(a.score >= required, "GTUBE below the threshold: {a:?}");
    assert_eq!(a.action, "reject", "{a:?}");
    // rspamd's GTUBE symbol carries no score of its own (the pre-result
    // sets the total), so it is not among the scored symbols.
    assert!(a.symbols.iter().all(|(_, s)| *s != 0.0), "{a:?}");

    // A plain message from a loopback client: far from any action.
    let clean = message(
        "alice@client.test",
        "Lunch on Tuesday",
        "Hi Joe,\r\n\r\nshall we have lunch on Tuesday at noon? The usual place.\r\n\r\nAlice\r\n",
    );
    let a = run(&rt, &r, &Envelope::local(), &clean);
    eprintln!("clean: {a:?}");
    assert!(a.score < 4.0, "{a:?}");
    assert!(a.score < required / 2.0, "{a:?}");
    assert_eq!(a.action, "no action", "{a:?}");
    assert!(!has(&a, "GTUBE"), "{a:?}");

    // The envelope reaches rspamd: its IP (a remote one gets the host
    // checks a loopback client is spared) and Hostname.
    let a = run(&rt, &r, &Envelope::remote(None), &clean);
    eprintln!("remote, no hostname: {a:?}");
    assert!(has(&a, "HFILTER_HOSTNAME_UNKNOWN"), "{a:?}");
    let a = run(&rt, &r, &Envelope::remote(Some("mail.client.test")), &clean);
    eprintln!("remote, hostname: {a:?}");
    assert!(!has(&a, "HFILTER_HOSTNAME_UNKNOWN"), "{a:?}");
    assert!(!has(&a, "FORGED_SENDER"), "{a:?}");
    // ... and MAIL FROM: another address than From: is noticed.
    let env = Envelope {
        sender: "someone@elsewhere.test",
        ..Envelope::remote(Some("mail.client.test"))
    };
    let a = run(&rt, &r, &env, &clean);
    eprintln!("remote, other sender: {a:?}");
    assert!(has(&a, "FORGED_SENDER"), "{a:?}");

    // A HELO with CR LF in it is just an odd name to rspamd.
    let env = Envelope {
        helo: "client.test\r\nRcpt: injected@example.test",
        ..Envelope::local()
    };
    let a = run(&rt, &r, &env, &clean);
    assert!(a.score < 4.0, "{a:?}");

    // Its lookups went to its own test DNS, none to the machine's.
    let queries = r.dns.queries();
    eprintln!("rspamd asked its test DNS {} questions", queries.len());
    assert!(
        queries
            .iter()
            .any(|(name, _)| name.ends_with("client.test.")),
        "{queries:?}"
    );
}

// ---------------------------------------------------------------------------
// Through the server: rspamd's score joins ours at the end of DATA.

const LOG_WAIT: Duration = Duration::from_secs(10);
const DELIVERY: Duration = Duration::from_secs(15);

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-rspamd")
        .tempdir()
        .expect("a temporary directory")
}

fn send_to_joe(c: &mut support::Client, subject: &str, body: &str) -> support::Reply {
    let message =
        String::from_utf8(message("alice@client.test", subject, body)).expect("an ASCII message");
    c.send("MAIL FROM:<alice@client.test>").expect("250");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    c.send("DATA").expect("354");
    c.send_raw(&support::dot_stuff(&message));
    c.send_raw(b".\r\n");
    c.read_reply()
}

fn rspamd_section(url: &str, timeout: &str) -> String {
    format!("\n[rspamd]\nurl = \"{url}\"\ntimeout = \"{timeout}\"\n")
}

#[test]
fn the_server_refuses_gtube_and_scores_with_a_real_rspamd() {
    let Some(r) = Rspamd::start() else {
        return;
    };
    let tmp = root();
    let cfg = support::ConfigBuilder::new().extra(&rspamd_section(&r.url(), "30s"));
    let server = support::Server::start(&cfg, tmp.path());
    let mut c = support::net::client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    // GTUBE: rspamd's 15 is above reject_above (10).
    let reply = send_to_joe(&mut c, "GTUBE", &format!("Test\r\n{GTUBE}\r\n"));
    assert!(
        reply
            .first()
            .starts_with("550 5.7.1 Message rejected as spam (score 15"),
        "{reply:?}\n{}",
        r.log_tail()
    );
    let line = server
        .logs
        .wait_for(&["DATA refused (scoring)", "rspamd=15"], LOG_WAIT);
    assert!(line.contains("check=\"scoring\""), "{line}");
    // A plain message: delivered with rspamd's score in X-Spam-Status.
    let reply = send_to_joe(&mut c, "Lunch", "Shall we have lunch on Tuesday?\r\n");
    assert!(reply.first().starts_with("250 2.0.0"), "{reply:?}");
    c.quit();
    let joe = server.new_dir("joe@example.test");
    support::wait_for_files(&joe, 1, DELIVERY);
    let m = &support::messages_in(&joe)[0];
    let status = m
        .split("\r\n")
        .find(|l| l.starts_with("X-Spam-Status: "))
        .unwrap_or_default();
    assert!(status.contains("tests=rspamd="), "{m}");
    assert!(status.starts_with("X-Spam-Status: No,"), "{status}");
}

/// A stand-in for rspamd that answers every request with `answer` (a
/// recorded /checkv2 answer), after reading the request whole.
fn fake_rspamd(answer: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = tx.send(format!("{head}{}", String::from_utf8_lossy(&body)));
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, rx)
}

#[test]
fn a_recorded_answer_tags_and_rspamd_down_lets_mail_flow() {
    // rspamd's answer for a remote client without reverse DNS (recorded).
    const ANSWER: &str = r#"{"is_skipped":false,"score":7.300000,"required_score":15.0,"action":"add header","thresholds":{"reject":15.0,"add header":6.0,"greylist":4.0},"symbols":{"HFILTER_HOSTNAME_UNKNOWN":{"name":"HFILTER_HOSTNAME_UNKNOWN","score":2.500000,"metric_score":2.500000},"RDNS_NONE":{"name":"RDNS_NONE","score":2.0,"metric_score":2.0},"HFILTER_HELO_NORES_A_OR_MX":{"name":"HFILTER_HELO_NORES_A_OR_MX","score":0.300000,"metric_score":0.300000},"MIME_GOOD":{"name":"MIME_GOOD","score":-0.100000,"metric_score":-0.100000},"ARC_NA":{"name":"ARC_NA","score":0.0,"metric_score":0.0}},"messages":{},"message-id":"Lunch.1@client.test"}"#;
    let (port, requests) = fake_rspamd(ANSWER);
    let tmp = root();
    let cfg = support::ConfigBuilder::new()
        .extra(&rspamd_section(&format!("http://127.0.0.1:{port}"), "5s"));
    let server = support::Server::start(&cfg, tmp.path());
    let mut c = support::net::client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    let reply = send_to_joe(&mut c, "Lunch", "Shall we?\r\n");
    assert!(reply.first().starts_with("250 2.0.0"), "{reply:?}");
    let queue_id = reply.queue_id();
    c.quit();
    // rspamd was told the envelope and sent the message as delivered.
    let request = requests
        .recv_timeout(LOG_WAIT)
        .expect("a request to rspamd");
    for want in [
        "POST /checkv2 HTTP/1.1\r\n",
        "ip: 127.0.0.2\r\n",
        "helo: client.test\r\n",
        "from: alice@client.test\r\n",
        "rcpt: joe@example.test\r\n",
        &format!("queue-id: {queue_id}\r\n"),
        "\r\n\r\nReceived: from client.test",
        "Subject: Lunch\r\n",
    ] {
        assert!(
            request
                .to_ascii_lowercase()
                .contains(&want.to_ascii_lowercase()),
            "{want:?} not in\n{request}"
        );
    }
    let joe = server.new_dir("joe@example.test");
    support::wait_for_files(&joe, 1, DELIVERY);
    let m = &support::messages_in(&joe)[0];
    assert!(m.contains("X-Spam-Flag: YES\r\n"), "{m}");
    assert!(m.contains("X-Spam-Score: 7.3\r\n"), "{m}");
    assert!(
        m.contains("tests=rspamd=7.3,rspamd:HFILTER_HOSTNAME_UNKNOWN,rspamd:RDNS_NONE,rspamd:HFILTER_HELO_NORES_A_OR_MX,rspamd:MIME_GOOD\r\n"),
        "{m}"
    );
    drop(server);

    // rspamd down: nothing listens on its port. Mail flows, logged.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let tmp = root();
    let cfg = support::ConfigBuilder::new()
        .extra(&rspamd_section(&format!("http://127.0.0.1:{port}"), "2s"));
    let server = support::Server::start(&cfg, tmp.path());
    let mut c = support::net::client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    let reply = send_to_joe(&mut c, "Down", "Still delivered\r\n");
    assert!(reply.first().starts_with("250 2.0.0"), "{reply:?}");
    c.quit();
    let line = server.logs.wait_for(
        &["rspamd gave no answer; the message flows without its score"],
        LOG_WAIT,
    );
    assert!(line.contains("check=\"rspamd\""), "{line}");
    assert!(line.contains("cannot connect"), "{line}");
    support::wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
}

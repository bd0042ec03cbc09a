//! End-to-end tests of outbound delivery: the real `mxguard` binary relays
//! mail to real receiving servers (tests/sinks/sink.py, aiosmtpd) found
//! through routes or through MX records of an in-process DNS server, and
//! is driven with `mxguard queue ...`.
//!
//! Every test starts its own mxguard, sinks and DNS on loopback addresses
//! with ports of the system's choosing; every wait is bounded.
//!
//! The `infra_` tests check the test infrastructure itself (DNS server,
//! sink, scripted server, client bound to another address, configuration
//! text); they pass without outbound delivery:
//! `cargo test --test outbound infra_`.
//!
//! What the tests assume of the command line (kept loose on purpose):
//! - `mxguard queue list --config FILE` exits 0 and, for each queued
//!   message, prints its queue id (as in "queued as ID"), its recipient
//!   addresses, the word "deferred" or "pending" (any case) for one that
//!   waits for a retry, the word "attempt" (any case, e.g. "attempts: 2")
//!   and the text of the last error (the remote reply, e.g. containing
//!   "451", or a connection error containing "connect"). A message that
//!   is gone is not mentioned (its id does not appear).
//! - `mxguard queue show ID --config FILE` exits 0 and prints each
//!   recipient of the message with its state ("deferred" or "pending").
//! - `mxguard queue delete ID --config FILE` and
//!   `mxguard queue flush --config FILE` exit 0.
//! - When a message with the null sender fails, the server logs a line
//!   with its queue id that says it was not bounced (a line holding the id,
//!   one of "bounce", "notice", "dsn" in any case, and one of "not", "no ",
//!   "false", "suppress", "skip", "without"), and no mail file appears in
//!   any Maildir.

mod support;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use support::dns::{DeadDns, TestDns, Zones, query_tcp, query_udp};
use support::net::{client_from, free_port, tcp_connect_from};
use support::outbound::{
    StallingServer, mxguard, outbound_config, queue_cmd, queue_list, wait_queue_list,
};
use support::sink::{Sink, SinkMode};
use support::{Client, ConfigBuilder, Server, all_files_below, dot_stuff, files_in, read_string};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{RData, RecordType};

/// How long a delivery may take (first attempt or a retry after 1-2s).
const DELIVERY: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers

/// A test's temporary root (configuration and data).
fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-outbound")
        .tempdir()
        .expect("a temporary directory")
}

/// A message with a few lines that test transparency (leading dots).
fn message(subject: &str, to: &str) -> String {
    format!(
        "From: <sender@client.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\
         \r\nHello, this is {subject}.\r\n.a line that starts with a dot\r\n..and one with two\r\n\
         \r\nlast line\r\n"
    )
}

/// MAIL, RCPTs (each must get 250), DATA, the message; returns the queue id.
#[track_caller]
fn send_mail(c: &mut Client, from: &str, to: &[&str], msg: &str) -> String {
    c.send(&format!("MAIL FROM:<{from}>")).expect("250");
    for t in to {
        c.send(&format!("RCPT TO:<{t}>")).expect("250");
    }
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(msg));
    c.send_raw(b".\r\n");
    c.read_reply().expect("250").queue_id()
}

/// Sends one message from a relay client (127.0.0.1); returns its queue id.
#[track_caller]
fn relay(server: &Server, from: &str, to: &[&str], msg: &str) -> String {
    let mut c = server.client();
    c.ehlo("client.test");
    let id = send_mail(&mut c, from, to, msg);
    c.quit();
    id
}

/// Asserts that `data` is `original` with exactly one header prepended:
/// mxguard's `Received:` (folded lines allowed) naming mx.example.test.
#[track_caller]
fn assert_relayed_copy(data: &[u8], original: &str) {
    let text = String::from_utf8_lossy(data);
    assert!(
        data.ends_with(original.as_bytes()),
        "the relayed message does not end with the original message byte for byte;\n\
         relayed:\n{text}\noriginal:\n{original}"
    );
    let prefix = &text[..data.len() - original.len()];
    assert!(
        prefix.starts_with("Received:"),
        "the relayed message does not start with a Received: header:\n{text}"
    );
    assert!(
        prefix.contains("by mx.example.test"),
        "the prepended Received: does not say `by mx.example.test`:\n{prefix}"
    );
    assert!(prefix.ends_with("\r\n"), "bad header end: {prefix:?}");
    let header_starts = prefix
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .count();
    assert_eq!(
        header_starts, 1,
        "exactly one header (Received:) must be prepended, found:\n{prefix}"
    );
}

/// Unfolds header lines (CRLF followed by white space).
fn unfold(s: &str) -> String {
    s.replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .replace("\n ", " ")
        .replace("\n\t", " ")
}

fn contains_state_word(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l.contains("deferred") || l.contains("pending")
}

/// Waits for a server log line satisfying `pred`; returns it.
#[track_caller]
fn wait_log(server: &Server, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = server.logs.snapshot().into_iter().find(|l| pred(l)) {
            return l;
        }
        if Instant::now() >= deadline {
            panic!(
                "no log line {what} within {timeout:?}; the log:\n{}",
                server.logs.text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn addr_str(ip: &str, port: u16) -> String {
    format!("{ip}:{port}")
}

// ---------------------------------------------------------------------------
// Configuration

/// The configuration the tests write is accepted by `check-config`.
#[test]
fn check_config_accepts_the_outbound_settings() {
    let dir = root();
    let cfg = outbound_config("127.0.0.1:53")
        .smarthost("127.0.0.1:2525")
        .route("routed.test", "127.0.0.1:2526")
        .mx_port(2527);
    let path = dir.path().join("mxguard.toml");
    fs::write(&path, cfg.render(&dir.path().join("data"))).unwrap();
    let p = path.display().to_string();
    let out = mxguard(&["check-config", "--config", &p]);
    assert!(
        out.status.success(),
        "check-config refused the outbound settings:\n{}\nthe file:\n{}",
        out.all(),
        read_string(&path)
    );
}

// ---------------------------------------------------------------------------
// (a) relay by route

/// A relay client's message to a routed domain reaches the route's server
/// unchanged but for one Received: header.
#[test]
fn relay_client_message_is_delivered_by_route() {
    let dns = TestDns::start(Zones::new());
    let sink = Sink::start("127.0.0.1", SinkMode::Accept);
    let cfg = outbound_config(&dns.nameserver()).route("routed.test", &sink.addr().to_string());
    let dir = root();
    let server = Server::start(&cfg, dir.path());

    let msg = message("route-a", "x@routed.test");
    let id = relay(&server, "sender@client.test", &["x@routed.test"], &msg);
    assert!(!id.is_empty());

    let got = sink.wait_for_messages(1, DELIVERY);
    let m = &got[0];
    assert_eq!(m.mail_from, "sender@client.test", "{m:?}");
    assert_eq!(m.rcpt_tos, vec!["x@routed.test".to_string()], "{m:?}");
    assert_relayed_copy(&m.data, &msg);

    // Delivered once: no second copy after a retry period.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.messages().len(), 1, "{}", sink.log_text());
}

// ---------------------------------------------------------------------------
// (b) relay_to domain via MX, from a stranger

/// A stranger (127.0.0.2) may send to a relay_to domain; the message goes
/// to the domain's MX hosts in preference order, skipping the one where
/// nothing listens.
#[test]
fn relay_to_domain_from_stranger_is_delivered_via_mx_fallback() {
    let sink = Sink::start("127.0.0.12", SinkMode::Accept);
    let dns = TestDns::start(
        Zones::new()
            .mx("backup.test", 10, "mx1.backup.test")
            .mx("backup.test", 20, "mx2.backup.test")
            .a("mx1.backup.test", "127.0.0.11")
            .a("mx2.backup.test", "127.0.0.12"),
    );
    let cfg = outbound_config(&dns.nameserver()).mx_port(sink.port);
    let dir = root();
    let server = Server::start(&cfg, dir.path());

    let msg = message("mx-b", "x@backup.test");
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("stranger.test");
    send_mail(&mut c, "someone@stranger.test", &["x@backup.test"], &msg);
    c.quit();

    let got = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(got[0].rcpt_tos, vec!["x@backup.test".to_string()]);
    assert_eq!(got[0].mail_from, "someone@stranger.test");
    assert_relayed_copy(&got[0].data, &msg);
    assert!(
        dns.queries()
            .iter()
            .any(|(n, t)| n.eq_ignore_ascii_case("backup.test.") && *t == RecordType::MX),
        "mxguard never asked the test DNS for the MX of backup.test: {:?}",
        dns.queries()
    );
}

// ---------------------------------------------------------------------------
// (c) no open relay

/// A stranger cannot relay to a domain that is neither local nor relay_to:
/// 554 5.7.1 at RCPT, and nothing leaves.
#[test]
fn stranger_cannot_relay_to_other_domains() {
    let sink = Sink::start("127.0.0.12", SinkMode::Accept);
    let dns = TestDns::start(
        Zones::new()
            .mx("other.test", 10, "mx.other.test")
            .a("mx.other.test", "127.0.0.12"),
    );
    let cfg = outbound_config(&dns.nameserver())
        .mx_port(sink.port)
        .route("routed.test", &sink.addr().to_string());
    let dir = root();
    let server = Server::start(&cfg, dir.path());

    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("stranger.test");
    c.send("MAIL FROM:<spammer@stranger.test>").expect("250");
    c.send("RCPT TO:<victim@other.test>").expect("554 5.7.1");
    // The same stranger may still write to a local account.
    c.send("RCPT TO:<joe@example.test>").expect("250");
    c.send("RSET").expect("250");
    c.send("MAIL FROM:<spammer@stranger.test>").expect("250");
    c.send("RCPT TO:<victim@other.test>").expect("554 5.7.1");
    let r = c.send("DATA");
    assert!(
        r.code() >= 500,
        "DATA without an accepted recipient must fail: {r:?}"
    );
    c.quit();

    // A marker relayed afterwards by a relay client arrives: the queue ran.
    let marker = message("marker-c", "x@routed.test");
    relay(&server, "sender@client.test", &["x@routed.test"], &marker);
    sink.wait_for_messages(1, DELIVERY);
    std::thread::sleep(Duration::from_secs(1));

    let to_other: Vec<_> = sink
        .rcpt_attempts()
        .into_iter()
        .filter(|a| a.rcpt.to_ascii_lowercase().ends_with("@other.test"))
        .collect();
    assert!(
        to_other.is_empty(),
        "a message left for other.test: {to_other:?}"
    );
    assert_eq!(sink.messages().len(), 1, "{}", sink.log_text());
    let list = queue_list(&server.config_path);
    assert!(
        !list.contains("other.test"),
        "other.test is in the queue:\n{list}"
    );
}

// ---------------------------------------------------------------------------
// (d) temporary failures are retried

/// 451 twice, then accepted: three RCPT attempts, one delivery; while
/// deferred, `queue list` shows the message with its last error.
#[test]
fn temporary_failures_are_retried_until_delivered() {
    let dns = TestDns::start(Zones::new());
    let sink = Sink::start("127.0.0.1", SinkMode::Tempfail(2));
    let cfg = outbound_config(&dns.nameserver())
        .route("routed.test", &sink.addr().to_string())
        // Two seconds between attempts: room to look at the queue.
        .queue_retry(&["2s"]);
    let dir = root();
    let server = Server::start(&cfg, dir.path());

    let msg = message("tempfail-d", "x@routed.test");
    let id = relay(&server, "sender@client.test", &["x@routed.test"], &msg);

    sink.wait_for_rcpt_attempts(1, DELIVERY);
    let list = wait_queue_list(
        &server.config_path,
        "the deferred message with its 451",
        Duration::from_secs(20),
        |o| o.contains(&id) && o.contains("451"),
    );
    assert!(list.contains("x@routed.test"), "recipient missing:\n{list}");
    assert!(
        contains_state_word(&list),
        "no deferred/pending state:\n{list}"
    );
    assert!(
        list.to_ascii_lowercase().contains("attempt"),
        "no attempt count:\n{list}"
    );

    let got = sink.wait_for_messages(1, DELIVERY);
    assert_relayed_copy(&got[0].data, &msg);
    let attempts = sink.rcpt_attempts_for("x@routed.test");
    assert_eq!(attempts.len(), 3, "expected 3 RCPT attempts: {attempts:?}");
    assert!(attempts[0].reply.starts_with("451"), "{attempts:?}");
    assert!(attempts[1].reply.starts_with("451"), "{attempts:?}");
    assert!(attempts[2].reply.starts_with("250"), "{attempts:?}");

    wait_queue_list(
        &server.config_path,
        "the delivered message gone",
        Duration::from_secs(10),
        |o| !o.contains(&id),
    );
    // Delivered once, not again after another retry period.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.messages().len(), 1, "{}", sink.log_text());
    assert_eq!(sink.rcpt_attempts_for("x@routed.test").len(), 3);
}

// ---------------------------------------------------------------------------
// (e) permanent failures are bounced (but not bounces)

/// 550 5.1.1 from the remote server: the local sender gets an RFC 3464
/// delivery status notification; a failed message from <> is not bounced.
#[test]
fn permanent_failure_is_bounced_to_the_sender_but_null_sender_is_not() {
    let dns = TestDns::start(Zones::new());
    let sink = Sink::start("127.0.0.1", SinkMode::Reject);
    let cfg = outbound_config(&dns.nameserver()).route("routed.test", &sink.addr().to_string());
    let dir = root();
    let server = Server::start(&cfg, dir.path());
    let joe_new = server.new_dir("joe@example.test");

    let msg = message("reject-e", "x@routed.test");
    relay(&server, "joe@example.test", &["x@routed.test"], &msg);

    let files = support::wait_for_files(&joe_new, 1, DELIVERY);
    assert_eq!(files.len(), 1, "{files:?}");
    let dsn = unfold(&read_string(&files[0]));
    let lower = dsn.to_ascii_lowercase().replace('"', "");
    assert!(
        lower.contains("multipart/report"),
        "not a multipart/report:\n{dsn}"
    );
    assert!(
        lower.contains("report-type=delivery-status"),
        "no report-type=delivery-status:\n{dsn}"
    );
    assert!(
        lower.contains("action: failed"),
        "no `Action: failed`:\n{dsn}"
    );
    assert!(
        lower.contains("status: 5.1.1"),
        "no `Status: 5.1.1`:\n{dsn}"
    );
    assert!(dsn.contains("x@routed.test"), "recipient not named:\n{dsn}");
    let diag = dsn
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("diagnostic-code:"))
        .unwrap_or_else(|| panic!("no Diagnostic-Code:\n{dsn}"));
    assert!(
        diag.contains("550 5.1.1"),
        "remote reply not quoted: {diag}"
    );
    assert_eq!(sink.messages().len(), 0);

    // Now a message from <> that fails the same way.
    let msg2 = message("reject-null-e", "y@routed.test");
    let id2 = relay(&server, "", &["y@routed.test"], &msg2);
    sink.wait_until("a RCPT for y@routed.test", DELIVERY, |s| {
        !s.rcpt_attempts_for("y@routed.test").is_empty()
    });
    let line = wait_log(
        &server,
        &format!("saying that {id2} was not bounced"),
        DELIVERY,
        |l| {
            let low = l.to_ascii_lowercase();
            l.contains(&id2)
                && ["bounce", "notice", "dsn"].iter().any(|w| low.contains(w))
                && ["not", "no ", "false", "suppress", "skip", "without"]
                    .iter()
                    .any(|w| low.contains(w))
        },
    );
    assert!(!line.is_empty());
    std::thread::sleep(Duration::from_secs(1));
    // Messages are the files in the Maildirs' new/ and cur/.
    let mail: Vec<_> = all_files_below(&server.data_dir.join("mail"))
        .into_iter()
        .filter(|p| {
            let parent = p.parent().and_then(|d| d.file_name());
            parent.is_some_and(|n| n == "new" || n == "cur")
        })
        .collect();
    assert_eq!(
        mail.len(),
        1,
        "only joe's first bounce may exist, found: {mail:?}"
    );
    assert!(
        files_in(&server.new_dir("postmaster@example.test")).is_empty(),
        "postmaster got something"
    );
    // The failed messages are not left in the queue.
    wait_queue_list(
        &server.config_path,
        "the failed message gone",
        Duration::from_secs(10),
        |o| !o.contains(&id2),
    );
}

// ---------------------------------------------------------------------------
// (f) a host that is down

/// Nothing listens at the route: the message stays queued with a connection
/// error; once a server listens there, `queue flush` delivers it.
#[test]
fn message_for_a_down_host_waits_and_queue_flush_delivers_it() {
    let dns = TestDns::start(Zones::new());
    let port = free_port("127.0.0.13");
    let cfg = outbound_config(&dns.nameserver())
        .route("routed.test", &addr_str("127.0.0.13", port))
        // No retry during the test: only the flush can deliver it.
        .queue_retry(&["1h"]);
    let dir = root();
    let server = Server::start(&cfg, dir.path());

    let msg = message("down-f", "x@routed.test");
    let id = relay(&server, "sender@client.test", &["x@routed.test"], &msg);

    let list = wait_queue_list(
        &server.config_path,
        "the message with a connection error",
        DELIVERY,
        |o| o.contains(&id) && o.to_ascii_lowercase().contains("connect"),
    );
    assert!(list.contains("x@routed.test"), "recipient missing:\n{list}");
    assert!(
        contains_state_word(&list),
        "no deferred/pending state:\n{list}"
    );

    let sink = Sink::start_on("127.0.0.13", port, SinkMode::Accept);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sink.connections(),
        0,
        "delivered before the flush (retry is 1h)"
    );
    queue_cmd(&server.config_path, &["flush"]).expect_success("mxguard queue flush");

    let got = sink.wait_for_messages(1, DELIVERY);
    assert_relayed_copy(&got[0].data, &msg);
    wait_queue_list(
        &server.config_path,
        "the delivered message gone",
        Duration::from_secs(10),
        |o| !o.contains(&id),
    );
}

// ---------------------------------------------------------------------------
// (g) crash during an outbound transaction

/// mxguard is killed while the remote server has the whole message but has
/// not answered it: after a restart the message is delivered (at least once).
#[test]
fn crash_during_outbound_transaction_loses_nothing() {
    let dns = TestDns::start(Zones::new());
    let stall = StallingServer::start();
    let cfg = outbound_config(&dns.nameserver()).route("routed.test", &stall.addr.to_string());
    let dir = root();
    let mut server = Server::start(&cfg, dir.path());

    let msg = message("crash-g", "x@routed.test");
    relay(&server, "sender@client.test", &["x@routed.test"], &msg);
    let seen = stall.wait_for_message(DELIVERY);
    assert!(
        seen.ends_with(msg.as_bytes()),
        "the stalling server read something else:\n{}",
        String::from_utf8_lossy(&seen)
    );
    // It now waits for the final reply, which never comes.
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();

    let sink = Sink::start("127.0.0.1", SinkMode::Accept);
    let cfg2 = cfg.route("routed.test", &sink.addr().to_string());
    let server2 = Server::start(&cfg2, dir.path());
    let got = sink.wait_for_messages(1, DELIVERY);
    assert_relayed_copy(&got[0].data, &msg);
    drop(server2);
    drop(stall);
}

// ---------------------------------------------------------------------------
// (h) queue show / delete

/// `queue show` lists each recipient with its state; `queue delete` removes
/// a deferred message for good.
#[test]
fn queue_show_and_delete_a_deferred_message() {
    let dns = TestDns::start(Zones::new());
    let port = free_port("127.0.0.13");
    let cfg = outbound_config(&dns.nameserver())
        .route("routed.test", &addr_str("127.0.0.13", port))
        .queue_retry(&["1h"]);
    let dir = root();
    let server = Server::start(&cfg, dir.path());

    let msg = message("show-h", "x@routed.test");
    let id = relay(
        &server,
        "sender@client.test",
        &["x@routed.test", "y@routed.test"],
        &msg,
    );
    wait_queue_list(&server.config_path, "the deferred message", DELIVERY, |o| {
        o.contains(&id) && o.to_ascii_lowercase().contains("connect")
    });

    let show = queue_cmd(&server.config_path, &["show", &id]).expect_success("mxguard queue show");
    let text = show.stdout;
    for r in ["x@routed.test", "y@routed.test"] {
        let line = text
            .lines()
            .find(|l| l.contains(r))
            .unwrap_or_else(|| panic!("`queue show` does not name {r}:\n{text}"));
        // The state is on the recipient's line or in the block under it.
        let block = support::outbound::block_mentioning(&text, r);
        assert!(
            contains_state_word(line) || contains_state_word(&block),
            "no state for {r} in `queue show`:\n{text}"
        );
    }

    queue_cmd(&server.config_path, &["delete", &id]).expect_success("mxguard queue delete");
    wait_queue_list(
        &server.config_path,
        "the deleted message gone",
        Duration::from_secs(10),
        |o| !o.contains(&id),
    );

    // Deleted for good: a flush with a listening server sends nothing.
    let sink = Sink::start_on("127.0.0.13", port, SinkMode::Accept);
    queue_cmd(&server.config_path, &["flush"]).expect_success("mxguard queue flush");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.connections(), 0, "{}", sink.log_text());
}

// ---------------------------------------------------------------------------
// The infrastructure on its own

#[test]
fn infra_dns_answers_over_udp_and_tcp() {
    let dns = TestDns::start(
        Zones::new()
            .mx("backup.test", 10, "mx1.backup.test")
            .mx("backup.test", 20, "mx2.backup.test")
            .a("mx1.backup.test", "127.0.0.11")
            .aaaa("mx1.backup.test", "::1")
            .txt("backup.test", "v=spf1 ip4:127.0.0.1 -all")
            .ptr("192.0.2.10", "mx.client.test"),
    );
    let t = Duration::from_secs(5);

    let m = query_udp(dns.addr(), "backup.test", RecordType::MX, t).expect("MX over UDP");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let mut mx: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(x) => Some((x.preference, x.exchange.to_string())),
            _ => None,
        })
        .collect();
    mx.sort();
    assert_eq!(
        mx,
        vec![
            (10, "mx1.backup.test.".to_string()),
            (20, "mx2.backup.test.".to_string())
        ]
    );

    let m = query_tcp(dns.addr(), "mx1.backup.test", RecordType::A, t).expect("A over TCP");
    let a: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(a, vec![Ipv4Addr::new(127, 0, 0, 11)]);

    let m = query_udp(dns.addr(), "mx1.backup.test", RecordType::AAAA, t).expect("AAAA");
    assert!(
        m.answers
            .iter()
            .any(|r| matches!(&r.data, RData::AAAA(x) if x.0.is_loopback())),
        "{m:?}"
    );

    let m = query_udp(dns.addr(), "backup.test", RecordType::TXT, t).expect("TXT");
    let txt: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(x) => Some(x.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        txt.iter().any(|s| s.contains("v=spf1 ip4:127.0.0.1 -all")),
        "{txt:?}"
    );

    let m = query_udp(dns.addr(), "10.2.0.192.in-addr.arpa", RecordType::PTR, t).expect("PTR");
    assert!(
        m.answers
            .iter()
            .any(|r| matches!(&r.data, RData::PTR(p) if p.0.to_string() == "mx.client.test.")),
        "{m:?}"
    );

    assert!(
        dns.queries()
            .iter()
            .any(|(n, t)| n == "backup.test." && *t == RecordType::MX),
        "{:?}",
        dns.queries()
    );
}

#[test]
fn infra_dns_unknown_names_are_nxdomain_and_records_can_be_added() {
    let dns = TestDns::start(Zones::new().a("known.test", "127.0.0.5"));
    let t = Duration::from_secs(5);
    let m = query_udp(dns.addr(), "unknown.test", RecordType::A, t).expect("an answer");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    // A name with no record of the asked type: NOERROR, no answer.
    let m = query_udp(dns.addr(), "known.test", RecordType::MX, t).expect("an answer");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());

    dns.add(Zones::new().mx("later.test", 5, "known.test"));
    let m = query_udp(dns.addr(), "later.test", RecordType::MX, t).expect("an answer");
    assert!(
        m.answers.iter().any(|r| matches!(&r.data, RData::MX(_))),
        "{m:?}"
    );
}

#[test]
fn infra_dns_can_be_silenced_and_dead_dns_never_answers() {
    let dns = TestDns::start(Zones::new().a("a.test", "127.0.0.5"));
    let short = Duration::from_millis(500);
    query_udp(dns.addr(), "a.test", RecordType::A, short).expect("answers while not silent");
    dns.set_silent(true);
    let started = Instant::now();
    let e =
        query_udp(dns.addr(), "a.test", RecordType::A, short).expect_err("no answer when silent");
    assert!(started.elapsed() >= Duration::from_millis(400), "{e}");
    query_tcp(dns.addr(), "a.test", RecordType::A, short)
        .expect_err("no answer over TCP when silent");
    dns.set_silent(false);
    query_udp(dns.addr(), "a.test", RecordType::A, Duration::from_secs(5)).expect("answers again");

    let dead = DeadDns::start();
    query_udp(dead.addr(), "a.test", RecordType::A, short).expect_err("a dead server");
    query_tcp(dead.addr(), "a.test", RecordType::A, short).expect_err("a dead server over TCP");
}

/// A plain SMTP exchange with a sink, by hand.
fn sink_exchange(sink: &Sink, rcpt_reply: &str, data_reply: Option<&str>, body: &str) {
    let mut c = Client::connect(sink.addr());
    let ehlo = c.ehlo("tester.test").text();
    for ext in ["PIPELINING", "8BITMIME", "SMTPUTF8"] {
        assert!(ehlo.contains(ext), "EHLO lacks {ext}: {ehlo}");
    }
    c.send("MAIL FROM:<a@client.test>").expect("250");
    c.send("RCPT TO:<x@routed.test>").expect(rcpt_reply);
    if let Some(dr) = data_reply {
        c.send("DATA").expect("354");
        c.send_raw(&dot_stuff(body));
        c.send_raw(b".\r\n");
        c.read_reply().expect(dr);
    } else {
        c.send("RSET").expect("250");
    }
    c.quit();
}

#[test]
fn infra_sink_accepts_and_logs_messages_byte_exact() {
    let sink = Sink::start("127.0.0.12", SinkMode::Accept);
    assert_ne!(sink.port, 0);
    let body = message("sink-accept", "x@routed.test");
    sink_exchange(&sink, "250", Some("250"), &body);
    let msgs = sink.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(msgs[0].data, body.as_bytes(), "{}", msgs[0].text());
    assert_eq!(msgs[0].size as usize, body.len());
    assert_eq!(msgs[0].mail_from, "a@client.test");
    assert_eq!(msgs[0].rcpt_tos, vec!["x@routed.test".to_string()]);
    assert!(!msgs[0].tls);
    assert_eq!(msgs[0].sha256.len(), 64);
    assert_eq!(sink.connections(), 1);
    let at = sink.rcpt_attempts();
    assert_eq!(at.len(), 1);
    assert!(at[0].reply.starts_with("250"));
}

#[test]
fn infra_sink_tempfail_reject_and_reject_data_modes() {
    let body = message("sink-modes", "x@routed.test");
    let t = Duration::from_secs(10);

    let sink = Sink::start("127.0.0.1", SinkMode::Tempfail(2));
    sink_exchange(&sink, "451 4.3.0", None, &body);
    sink_exchange(&sink, "451 4.3.0", None, &body);
    sink_exchange(&sink, "250", Some("250"), &body);
    sink.wait_for_messages(1, t);
    let at = sink.rcpt_attempts_for("x@routed.test");
    assert_eq!(at.len(), 3, "{at:?}");

    let sink = Sink::start("127.0.0.1", SinkMode::Reject);
    sink_exchange(&sink, "550 5.1.1", None, &body);
    sink.wait_for_rcpt_attempts(1, t);
    assert!(sink.messages().is_empty());

    let sink = Sink::start("127.0.0.1", SinkMode::RejectData);
    sink_exchange(&sink, "250", Some("554 5.6.0"), &body);
    sink.wait_until("a refused message", t, |s| s.all_messages().len() == 1);
    assert!(sink.messages().is_empty());
    assert!(!sink.all_messages()[0].accepted);
}

#[test]
fn infra_sink_on_a_chosen_port() {
    let port = free_port("127.0.0.13");
    let sink = Sink::start_on("127.0.0.13", port, SinkMode::Accept);
    assert_eq!(sink.addr(), SocketAddr::from(([127, 0, 0, 13], port)));
    let c = Client::connect(sink.addr());
    c.quit();
}

#[test]
fn infra_stalling_server_never_answers_the_final_dot() {
    let stall = StallingServer::start();
    let mut c = Client::connect(stall.addr);
    c.ehlo("tester.test");
    c.send("MAIL FROM:<a@client.test>").expect("250");
    c.send("RCPT TO:<x@routed.test>").expect("250");
    c.send("DATA").expect("354");
    let body = message("stall", "x@routed.test");
    c.send_raw(&dot_stuff(&body));
    c.send_raw(b".\r\n");
    assert_eq!(
        stall.wait_for_message(Duration::from_secs(5)),
        body.as_bytes()
    );
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let r = c.try_read_reply();
    assert!(r.is_err(), "the stalling server answered: {r:?}");
}

#[test]
fn infra_client_can_connect_from_another_loopback_address() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _s = tcp_connect_from("127.0.0.2", addr);
    let (_conn, peer) = l.accept().unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
}

#[test]
fn infra_config_renders_the_outbound_sections() {
    let text = outbound_config("127.0.0.1:5300")
        .smarthost("127.0.0.1:2525")
        .route("routed.test", "127.0.0.1:2526")
        .route("r2.test", "127.0.0.1:2527")
        .mx_port(2528)
        .render(std::path::Path::new("/tmp/d"));
    for want in [
        "[domains]\nlocal = [\"example.test\"]\nrelay_to = [\"backup.test\"]\n",
        "[dns]\nnameservers = [\"127.0.0.1:5300\"]\ntimeout = \"1s\"\n",
        "[relay]\nclients = [\"127.0.0.1\"]\nsmarthost = \"127.0.0.1:2525\"\n\
         routes = { \"routed.test\" = \"127.0.0.1:2526\", \"r2.test\" = \"127.0.0.1:2527\" }\nmx_port = 2528\n",
        "[queue]\nretry = [\"1s\"]\nmax_age = \"5d\"\ndelay_warning = \"0s\"\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("other.test"), "{text}");
    // The default configuration of the other tests is unchanged.
    let d = ConfigBuilder::new().render(std::path::Path::new("/tmp/d"));
    assert!(d.contains(
        "[domains]\nlocal = [\"example.test\", \"other.test\"]\ncatchall = { \"other.test\" = \"postmaster@example.test\" }\n\n[[account]]"
    ));
    assert!(!d.contains("[relay]") && !d.contains("[dns]") && !d.contains("[queue]"));
}

// ---------------------------------------------------------------------------
// delay notices and giving up

/// A message that keeps failing temporarily: its sender gets one delay
/// notice after `queue.delay_warning`, however many attempts follow.
#[test]
fn delayed_message_gets_one_delay_notice() {
    let dns = TestDns::start(Zones::new());
    let sink = Sink::start("127.0.0.1", SinkMode::Tempfail(1000));
    let cfg = outbound_config(&dns.nameserver())
        .route("routed.test", &sink.addr().to_string())
        .queue_retry(&["1s"])
        .delay_warning("1s");
    let dir = root();
    let server = Server::start(&cfg, dir.path());
    let joe_new = server.new_dir("joe@example.test");

    let msg = message("delayed-notice", "x@routed.test");
    let id = relay(&server, "joe@example.test", &["x@routed.test"], &msg);

    let files = support::wait_for_files(&joe_new, 1, DELIVERY);
    let notice = unfold(&read_string(&files[0]));
    let lower = notice.to_ascii_lowercase();
    assert!(
        lower.contains("action: delayed"),
        "not a delay notice:\n{notice}"
    );
    assert!(
        lower.contains("status: 4.3.0"),
        "the 451's status is missing:\n{notice}"
    );
    assert!(notice.contains(&id), "the queue id is not named:\n{notice}");
    // More attempts follow, but no second notice.
    sink.wait_for_rcpt_attempts(4, DELIVERY);
    assert_eq!(
        files_in(&joe_new).len(),
        1,
        "a second delay notice was sent"
    );
    assert!(
        queue_list(&server.config_path).contains(&id),
        "the message left the queue"
    );
}

/// A recipient still failing after `queue.max_age` is given up and bounced,
/// with the last error quoted.
#[test]
fn message_past_max_age_is_bounced() {
    let dns = TestDns::start(Zones::new());
    let sink = Sink::start("127.0.0.1", SinkMode::Tempfail(1000));
    let cfg = outbound_config(&dns.nameserver())
        .route("routed.test", &sink.addr().to_string())
        .queue_retry(&["1s"])
        .queue_max_age("2s");
    let dir = root();
    let server = Server::start(&cfg, dir.path());
    let joe_new = server.new_dir("joe@example.test");

    let msg = message("expired", "x@routed.test");
    let id = relay(&server, "joe@example.test", &["x@routed.test"], &msg);

    let files = support::wait_for_files(&joe_new, 1, DELIVERY);
    let bounce = unfold(&read_string(&files[0]));
    let lower = bounce.to_ascii_lowercase();
    assert!(
        lower.contains("action: failed"),
        "not a failure report:\n{bounce}"
    );
    assert!(
        lower.contains("gave up after"),
        "no reason given:\n{bounce}"
    );
    assert!(
        bounce.contains("451"),
        "the last error is not quoted:\n{bounce}"
    );
    wait_queue_list(
        &server.config_path,
        "the expired message gone",
        Duration::from_secs(10),
        |o| !o.contains(&id),
    );
    assert_eq!(sink.messages().len(), 0);
}

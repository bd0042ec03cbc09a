//! End-to-end tests of the address rules: the router table (aliases,
//! reroutes, the relay marker, `error` and `spamtrap` targets), return-path
//! verification against a real DNS server started here, `sender.ban`,
//! `recipient.ban`, `sender.exclude`, `recipient.max_per_message`, and the
//! router table reloaded by `mxguard reload`.
//!
//! Clients connect from distinct loopback addresses (127.0.0.x) so that a
//! ban of one does not touch the others; every wait is bounded.
//!
//! What the tests assume of the log: a refused MAIL FROM is `MAIL denied
//! (CHECK)`, a refused RCPT is `RCPT denied (CHECK)`, a refused message is
//! `DATA refused (spamtrap)`, each with `check=...`; a ban is `client
//! banned`.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_server::proto::rr::RecordType;
use support::dns::{TestDns, Zones};
use support::net::client_from;
use support::outbound::mxguard;
use support::sink::{Sink, SinkMode};
use support::{Client, ConfigBuilder, Server, dot_stuff, files_in, simple_message, wait_for_files};

const LOG_WAIT: Duration = Duration::from_secs(5);
const DELIVERY: Duration = Duration::from_secs(15);

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-router")
        .tempdir()
        .expect("a temporary directory")
}

/// Writes `router.txt` next to the configuration and returns the
/// `[router]` section that names it.
fn router_section(root: &Path, table: &str, keys: &str) -> String {
    fs::write(root.join("router.txt"), table).expect("write router.txt");
    format!("[router]\nfile = \"router.txt\"\n{keys}\n")
}

/// Sends `message` after DATA and returns the final reply.
fn data(c: &mut Client, message: &str) -> support::Reply {
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(message));
    c.send_raw(b".\r\n");
    c.read_reply()
}

#[test]
fn return_paths_are_verified_in_the_dns() {
    let dns = TestDns::start(
        Zones::new()
            .mx("mx-only.test", 10, "mail.elsewhere.test")
            .a("a-only.test", "127.0.0.9")
            .aaaa("aaaa-only.test", "::1")
            .mx("nullmx.test", 0, ".")
            .txt("txt-only.test", "v=spf1 -all"),
    );
    let tmp = root();
    let cfg = ConfigBuilder::new()
        .nameserver(&dns.nameserver())
        .dns_timeout("1s")
        .verify_sender_domain();
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    for ok in [
        "a@mx-only.test",
        "a@a-only.test",
        "a@aaaa-only.test",
        "A@MX-Only.Test",
    ] {
        c.send(&format!("MAIL FROM:<{ok}>")).expect("250");
        c.send("RSET").expect("250");
    }
    // RFC 2505 §2.9: a domain that does not exist gets a 4xx by default
    let r = c.send("MAIL FROM:<a@nx.test>");
    assert_eq!(
        r.first(),
        "450 4.1.8 Sender address rejected: Domain not found"
    );
    c.send("MAIL FROM:<a@txt-only.test>")
        .expect("450 4.1.8 Sender address rejected: Domain not found");
    // RFC 7505: a null MX says the domain sends no mail it can take back
    c.send("MAIL FROM:<a@nullmx.test>").expect("550 5.7.27");
    // <> is never refused; local and routed domains are not looked up
    c.send("MAIL FROM:<>").expect("250");
    c.send("RSET").expect("250");
    c.send("MAIL FROM:<joe@example.test>").expect("250");
    c.send("RSET").expect("250");
    // a message from a verified domain goes through
    c.send("MAIL FROM:<a@mx-only.test>").expect("250");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    data(&mut c, &simple_message("verified")).expect("250");
    let asked: Vec<(String, RecordType)> = dns.queries();
    assert!(
        !asked.iter().any(|(n, _)| n.starts_with("example.test")),
        "a local sender domain was looked up: {asked:?}"
    );
    assert!(asked.contains(&("nx.test.".to_string(), RecordType::MX)));
    server.logs.wait_for(
        &[
            "MAIL denied (sender_domain)",
            "check=\"sender_domain\"",
            "nx.test does not exist",
        ],
        LOG_WAIT,
    );

    // RFC 2505 §4: a DNS server that does not answer gives a 4xx, never a 5xx
    dns.set_silent(true);
    let started = Instant::now();
    c.send("MAIL FROM:<a@silent.test>").expect("451 4.4.3");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    dns.set_silent(false);
    server
        .logs
        .wait_for(&["cannot look up silent.test"], LOG_WAIT);
    c.quit();
}

#[test]
fn unknown_domain_reply_may_be_made_permanent_and_trusted_clients_are_not_checked() {
    let dns = TestDns::start(Zones::new().mx("mx-only.test", 10, "mail.elsewhere.test"));
    let tmp = root();
    let cfg = ConfigBuilder::new()
        .nameserver(&dns.nameserver())
        .dns_timeout("1s")
        .relay_clients(&["127.0.0.1"])
        .verify_sender_domain()
        .sender_keys("unknown_domain_reply = \"550 5.1.8 Sender domain does not exist\"");
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.3", server.mx);
    c.ehlo("client.test").expect("250");
    c.send("MAIL FROM:<a@nx.test>")
        .expect("550 5.1.8 Sender domain does not exist");
    c.quit();
    // a relay client is ours: no DNS question about its senders
    let mut c = client_from("127.0.0.1", server.mx);
    c.ehlo("inside.test").expect("250");
    c.send("MAIL FROM:<a@nx2.test>").expect("250");
    c.quit();
    let asked = dns.queries();
    assert!(
        !asked.iter().any(|(name, _)| name.starts_with("nx2.test")),
        "{asked:?}"
    );
}

#[test]
fn the_router_reroutes_relays_and_refuses() {
    let sink = Sink::start("127.0.0.1", SinkMode::Accept);
    let tmp = root();
    let table = "; test table\n\
        Relay:<*@backup2.test> = *@backup-host.test\n\
        <sales@example.test> = joe@example.test\n\
        <*@spammer.test> = error\n\
        NoRelay:<*@client.test> = *@mail.client.test\n\
        RelayAll:<*%*@gateway.test> = *@*\n";
    let cfg = ConfigBuilder::new()
        .smarthost(&sink.addr().to_string())
        .queue_retry(&["1s"])
        .delay_warning("0s")
        .extra(&router_section(tmp.path(), table, ""));
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    // the sender routes to error: 550 5.7.1, named in the log
    c.send("MAIL FROM:<bulk@spammer.test>").expect("550 5.7.1");
    server.logs.wait_for(
        &["MAIL denied (router)", "routes to error (router line 4)"],
        LOG_WAIT,
    );
    c.send("MAIL FROM:<friend@client.test>").expect("250");
    // Relay: gives a stranger the right to relay, to the routed address
    c.send("RCPT TO:<Someone@backup2.test>").expect("250");
    // RelayAll: even for a percent-hack address
    c.send("RCPT TO:<user%far.test@gateway.test>").expect("250");
    // an alias in the table ends at a local account
    c.send("RCPT TO:<sales@example.test>").expect("250");
    // an error target refuses the recipient
    c.send("RCPT TO:<victim@spammer.test>").expect("550 5.7.1");
    // NoRelay: reroutes without the right to relay
    c.send("RCPT TO:<x@client.test>")
        .expect("554 5.7.1 Relay access denied");
    data(&mut c, &simple_message("routed")).expect("250");
    c.quit();

    let joe = server.new_dir("joe@example.test");
    let files = wait_for_files(&joe, 1, DELIVERY);
    let text = fs::read_to_string(&files[0]).expect("read the message");
    assert!(text.contains("Subject: routed"), "{text}");
    sink.wait_until("both relayed recipients", DELIVERY, |s| {
        s.rcpt_attempts().len() >= 2
    });
    let mut rcpts: Vec<String> = sink.rcpt_attempts().into_iter().map(|r| r.rcpt).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["someone@backup-host.test", "user@far.test"]);
    server
        .logs
        .wait_for(&["RCPT OK (router allows relaying)"], LOG_WAIT);
    server
        .logs
        .wait_for(&["RCPT denied (router)", "check=\"router\""], LOG_WAIT);
}

#[test]
fn a_spam_trap_refuses_the_whole_message_and_bans_the_client() {
    let tmp = root();
    let table = "<misterx@example.test> = spamtrap\n";
    let cfg = ConfigBuilder::new()
        .relay_clients(&["127.0.0.1"])
        .extra(&router_section(tmp.path(), table, "spamtrap_ban = \"1h\""));
    let server = Server::start(&cfg, tmp.path());
    let joe = server.new_dir("joe@example.test");

    let mut c = client_from("127.0.0.4", server.mx);
    c.ehlo("spammer.test").expect("250");
    c.send("MAIL FROM:<bulk@client.test>").expect("250");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    // the trap is not given away at RCPT
    c.send("RCPT TO:<MisterX@example.test>").expect("250");
    data(&mut c, &simple_message("trapped")).expect("550 5.7.1");
    server.logs.wait_for(
        &[
            "DATA refused (spamtrap)",
            "check=\"spamtrap\"",
            "MisterX@example.test is a spam trap",
        ],
        LOG_WAIT,
    );
    server.logs.wait_for(
        &["client banned", "client=127.0.0.4", "check=\"spamtrap\""],
        LOG_WAIT,
    );
    // the same client is refused from now on
    let again = client_from("127.0.0.5", server.mx);
    again.quit();
    let refused = support::net::tcp_connect_from("127.0.0.4", server.mx);
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(refused);
    std::io::BufRead::read_line(&mut reader, &mut line).expect("a reply");
    assert!(
        line.starts_with("421 4.7.1 Your address is temporarily banned"),
        "{line:?}"
    );

    // a trusted client that hits the trap is refused too, but not banned
    let mut c = client_from("127.0.0.1", server.mx);
    c.ehlo("inside.test").expect("250");
    c.send("MAIL FROM:<joe@example.test>").expect("250");
    c.send("RCPT TO:<misterx@example.test>").expect("250");
    data(&mut c, &simple_message("inside-trapped")).expect("550 5.7.1");
    // and the session goes on: the next message is delivered
    c.send("MAIL FROM:<joe@example.test>").expect("250");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    data(&mut c, &simple_message("after-trap")).expect("250");
    c.quit();
    let files = wait_for_files(&joe, 1, DELIVERY);
    std::thread::sleep(Duration::from_millis(300));
    let files_now = files_in(&joe);
    assert_eq!(files_now.len(), 1, "only the clean message: {files:?}");
    let text = fs::read_to_string(&files_now[0]).expect("read");
    assert!(text.contains("Subject: after-trap"), "{text}");
    assert_eq!(
        server.logs.count(&["client banned", "client=127.0.0.1"]),
        0,
        "{}",
        server.logs.text()
    );
}

#[test]
fn sender_and_recipient_bans_excludes_and_the_recipient_limit() {
    let tmp = root();
    let cfg = ConfigBuilder::new()
        .relay_clients(&["127.0.0.1"])
        .sender_keys(
            "ban = [\"*@spam.test\", \"promo*@bigcorp.test\"]\n\
             exclude = [ { hosts = [\"127.0.0.6\"], local_part = \"^[0-9]+$\" } ]",
        )
        .extra("[recipient]\nban = [\"*@competitor.test\"]\nmax_per_message = 3\n");
    let server = Server::start(&cfg, tmp.path());

    let mut c = client_from("127.0.0.1", server.mx);
    c.ehlo("inside.test").expect("250");
    c.send("MAIL FROM:<X@Spam.Test>").expect("550 5.7.1");
    c.send("MAIL FROM:<promo-2026@bigcorp.test>")
        .expect("550 5.7.1");
    c.send("MAIL FROM:<ceo@bigcorp.test>").expect("250");
    // a ban wins over the right to relay
    c.send("RCPT TO:<boss@competitor.test>").expect("550 5.7.1");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    c.send("RCPT TO:<joseph@example.test>").expect("250");
    c.send("RCPT TO:<postmaster@example.test>").expect("250");
    // recipient.max_per_message = 3
    c.send("RCPT TO:<anyone@other.test>").expect("452 4.5.3");
    c.send("RSET").expect("250");
    // sender.exclude applies only to its hosts
    c.send("MAIL FROM:<12345@client.test>").expect("250");
    c.quit();
    let mut c = client_from("127.0.0.6", server.mx);
    c.ehlo("client.test").expect("250");
    c.send("MAIL FROM:<12345@client.test>").expect("550 5.7.1");
    c.send("MAIL FROM:<joe12@client.test>").expect("250");
    c.quit();
    server
        .logs
        .wait_for(&["MAIL denied (sender_ban)", "*@spam.test"], LOG_WAIT);
    server.logs.wait_for(
        &["RCPT denied (recipient_ban)", "*@competitor.test"],
        LOG_WAIT,
    );
    server
        .logs
        .wait_for(&["MAIL denied (sender_exclude)", "127.0.0.6"], LOG_WAIT);
}

#[test]
fn reload_puts_a_new_router_table_in_service() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(&router_section(
        tmp.path(),
        "<old@example.test> = joe@example.test\n",
        "",
    ));
    let server = Server::start(&cfg, tmp.path());
    let config = server.config_path.display().to_string();
    let rcpt = |to: &str| {
        let mut c = client_from("127.0.0.2", server.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<a@client.test>").expect("250");
        let r = c.send(&format!("RCPT TO:<{to}>")).code();
        c.quit();
        r
    };
    assert_eq!(rcpt("old@example.test"), 250);
    assert_eq!(rcpt("new@example.test"), 550);

    fs::write(
        tmp.path().join("router.txt"),
        "; renamed\n<new@example.test> = joe@example.test\n<x@example.test> = spamtrap\n",
    )
    .expect("rewrite router.txt");
    let out = mxguard(&["reload", "--config", &config]).expect_success("reload");
    assert!(
        out.stdout.contains("router table: 2 records"),
        "{}",
        out.all()
    );
    assert_eq!(rcpt("new@example.test"), 250);
    assert_eq!(rcpt("old@example.test"), 550);

    // a broken table is refused, naming the file and line; the running one stays
    fs::write(
        tmp.path().join("router.txt"),
        "<new@example.test> = joe@example.test\nthis line is wrong\n",
    )
    .expect("rewrite router.txt");
    let out = mxguard(&["reload", "--config", &config]);
    assert!(!out.status.success(), "{}", out.all());
    assert!(out.all().contains("router.txt:2"), "{}", out.all());
    assert_eq!(rcpt("new@example.test"), 250);

    // SIGHUP does the same as `mxguard reload`
    fs::write(
        tmp.path().join("router.txt"),
        "<third@example.test> = joe@example.test\n",
    )
    .expect("rewrite router.txt");
    server.signal(SIGHUP);
    server.logs.wait_for(
        &["reload: configuration in service", "router_records=1"],
        LOG_WAIT,
    );
    assert_eq!(rcpt("third@example.test"), 250);
    assert_eq!(rcpt("new@example.test"), 550);
}

/// SIGHUP's number on Linux.
const SIGHUP: i32 = 1;

//! End-to-end tests of the connection-stage defenses: the real `mxguard`
//! binary, clients connected from distinct loopback addresses
//! (127.0.0.x), and an in-process DNS server (tests/support/dns.rs) for
//! the DNSBL and reverse DNS checks.
//!
//! For each check: a refused client (exact reply, connection closed, the
//! log line naming the check), an accepted one, and a whitelisted one.
//! Every test starts its own server and DNS on ports of the system's
//! choosing; every wait is bounded. Every client address is used by one
//! case only (except where a case needs the same address twice).
//!
//! What the tests assume of the log: a refusal at connection is an INFO
//! line `connection refused (CHECK)` with `client=IP` and `check=...`; a
//! refused HELO/EHLO is `HELO refused (CHECK)`; an automatic ban is
//! `client banned`; a DNSBL that does not answer is a WARN line
//! `DNSBL did not answer`.

mod support;

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::dns::{DeadDns, TestDns, Zones};
use support::net::{client_from, tcp_connect_from};
use support::outbound::{CliOutput, mxguard};
use support::{Client, ConfigBuilder, Server, simple_message, wait_for_files};

/// How long to wait for a log line that should already be there (or
/// about to be).
const LOG_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for one line from the server.
const READ_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Helpers

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-connect")
        .tempdir()
        .expect("a temporary directory")
}

/// The base configuration: the test DNS as the only nameserver (so the
/// reverse lookups every connection makes are answered at once, here),
/// with a 1s timeout.
fn base(dns: &str) -> ConfigBuilder {
    ConfigBuilder::new().nameserver(dns).dns_timeout("1s")
}

/// A bare connection that reads lines itself: for clients that must not
/// wait for the banner, or that are refused before it.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    #[track_caller]
    fn connect(ip: &str, addr: SocketAddr) -> Raw {
        let stream = tcp_connect_from(ip, addr);
        stream
            .set_read_timeout(Some(READ_WAIT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(READ_WAIT))
            .expect("set write timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the socket"));
        Raw { stream, reader }
    }

    /// One line, without its CRLF (which is required).
    fn try_line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let s = String::from_utf8_lossy(&buf).into_owned();
        match s.strip_suffix("\r\n") {
            Some(l) => Ok(l.to_string()),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line without CRLF: {s:?}"),
            )),
        }
    }

    #[track_caller]
    fn line(&mut self) -> String {
        self.try_line()
            .unwrap_or_else(|e| panic!("reading a line from the server: {e}"))
    }

    #[track_caller]
    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Asserts that the server closes the connection with nothing more
    /// (end of stream or a reset), within the read timeout.
    #[track_caller]
    fn expect_closed(&mut self) {
        let mut buf = [0u8; 512];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close, got error {e}"),
        }
    }
}

/// `client=IP ` as the log shows it (the space keeps 127.0.0.1 from
/// matching 127.0.0.10).
fn client_field(ip: &str) -> String {
    format!("client={ip} ")
}

/// Waits for the log line of a connection-stage refusal of `ip` by `check`.
#[track_caller]
fn wait_refusal_log(server: &Server, ip: &str, check: &str) -> String {
    let line = server.logs.wait_for(
        &[
            &format!("connection refused ({check})"),
            &client_field(ip),
            "check=",
        ],
        LOG_WAIT,
    );
    assert!(
        line.contains(&format!("check=\"{check}\"")) || line.contains(&format!("check={check} ")),
        "the refusal of {ip} does not name check {check}: {line}"
    );
    line
}

/// Connects from `ip`, expects exactly `reply` instead of the banner, then
/// the connection closed, and the log line naming `check`.
#[track_caller]
fn expect_refused(server: &Server, ip: &str, reply: &str, check: &str) {
    let mut c = Raw::connect(ip, server.mx);
    let line = c.line();
    assert_eq!(line, reply, "the reply to {ip} at connection");
    c.expect_closed();
    let log = wait_refusal_log(server, ip, check);
    assert!(
        log.contains(reply),
        "the log line does not quote the reply {reply:?}: {log}"
    );
}

/// Connects from `ip` and expects the 220 banner; returns the client.
#[track_caller]
fn expect_banner(server: &Server, ip: &str) -> Client {
    let c = client_from(ip, server.mx);
    assert!(
        c.banner.first().starts_with("220 "),
        "expected the banner for {ip}, got {:?}",
        c.banner.lines
    );
    assert_eq!(
        server
            .logs
            .count(&["connection refused", &client_field(ip)]),
        0,
        "{ip} was accepted but a refusal was logged:\n{}",
        server.logs.text()
    );
    c
}

/// QUIT, then waits for the server to close the connection.
#[track_caller]
fn quit_and_wait(mut c: Client) {
    c.send("QUIT").expect("221");
    c.expect_closed();
}

/// Connects from `ip` until the banner comes (a session that just ended
/// may still be counted for a moment); panics after `timeout` with the
/// last refusal.
#[track_caller]
fn banner_within(server: &Server, ip: &str, timeout: Duration) -> Raw {
    let deadline = Instant::now() + timeout;
    loop {
        let mut c = Raw::connect(ip, server.mx);
        let line = c.line();
        if line.starts_with("220 ") {
            return c;
        }
        if Instant::now() >= deadline {
            panic!("{ip} still refused after {timeout:?}: {line:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
fn cli(args: &[&str], server_config: &std::path::Path) -> CliOutput {
    let cfg = server_config.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--config", &cfg]);
    mxguard(&all).expect_success(&format!("mxguard {args:?}"))
}

/// The DNSBL query names the test DNS received (lowercase, final dot).
fn queried(dns: &TestDns) -> Vec<String> {
    dns.queries()
        .into_iter()
        .map(|(n, _)| n.to_lowercase())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Blacklist

#[test]
fn blacklist_inline_and_file_refused_with_reject_reply_whitelist_exempts() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    // Relative file names: resolved against the configuration's directory.
    fs::write(
        dir.path().join("blacklist.txt"),
        "; spammers\n127.0.0.11 ; from a file\n127.0.0.14\n",
    )
    .unwrap();
    fs::write(dir.path().join("whitelist.txt"), "127.0.0.14\n").unwrap();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
blacklist = ["127.0.0.10", "127.0.0.13"]
blacklist_file = "blacklist.txt"
whitelist = ["127.0.0.13"]
whitelist_file = "whitelist.txt"
reject_reply = "421 4.7.1 go away"
"#,
    );
    let server = Server::start(&cfg, dir.path());

    // Refused: inline entry, then a line of the file.
    expect_refused(&server, "127.0.0.10", "421 4.7.1 go away", "blacklist");
    expect_refused(&server, "127.0.0.11", "421 4.7.1 go away", "blacklist");

    // Accepted: not listed; the session works.
    let mut c = expect_banner(&server, "127.0.0.12");
    c.ehlo("client12.test");
    quit_and_wait(c);

    // Exempt: blacklisted and whitelisted (inline; by file).
    for ip in ["127.0.0.13", "127.0.0.14"] {
        let mut c = expect_banner(&server, ip);
        c.ehlo("friend.test");
        quit_and_wait(c);
    }
}

// ---------------------------------------------------------------------------
// 2. relay.clients_only

#[test]
fn clients_only_refuses_strangers_and_admits_relay_clients_and_whitelisted() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
whitelist = ["127.0.0.22"]

[relay]
clients = ["127.0.0.21"]
clients_only = true
"#,
    );
    let server = Server::start(&cfg, dir.path());

    // The default reject_reply.
    expect_refused(
        &server,
        "127.0.0.20",
        "554 5.7.1 Access denied",
        "clients_only",
    );
    for ip in ["127.0.0.21", "127.0.0.22"] {
        let mut c = expect_banner(&server, ip);
        c.ehlo("inside.test");
        quit_and_wait(c);
    }
}

// ---------------------------------------------------------------------------
// 3. DNSBL

#[test]
fn dnsbl_listed_client_refused_with_zone_reply_others_accepted() {
    let dns = TestDns::start(
        Zones::new()
            // Listed: refused.
            .a("2.0.0.127.bl.test", "127.0.0.2")
            // Answers outside `match`: not listed.
            .a("31.0.0.127.bl.test", "127.0.0.1")
            .a("35.0.0.127.bl.test", "127.255.255.254")
            // Listed only in a scoring zone: not refused.
            .a("32.0.0.127.score.test", "127.0.0.2")
            // Listed, but whitelisted / a relay client: never asked.
            .a("33.0.0.127.bl.test", "127.0.0.2")
            .a("34.0.0.127.bl.test", "127.0.0.2"),
    );
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
whitelist = ["127.0.0.33"]

[relay]
clients = ["127.0.0.34"]

[[dnsbl]]
zone = "bl.test"
match = ["127.0.0.2-127.0.0.255"]
reply = "554 5.7.1 Blocked: [%IP%] is listed at %ZONE%"

[[dnsbl]]
zone = "score.test"
score = 2.5
"#,
    );
    let server = Server::start(&cfg, dir.path());

    expect_refused(
        &server,
        "127.0.0.2",
        "554 5.7.1 Blocked: [127.0.0.2] is listed at bl.test",
        "dnsbl",
    );

    for ip in [
        "127.0.0.30", // not in any zone
        "127.0.0.31", // 127.0.0.1: outside match
        "127.0.0.35", // 127.255.255.254: outside match
        "127.0.0.32", // listed in a zone with score > 0
        "127.0.0.33", // whitelisted
        "127.0.0.34", // relay client
    ] {
        let mut c = expect_banner(&server, ip);
        c.ehlo("client.test");
        quit_and_wait(c);
    }

    let q = queried(&dns);
    for asked in [
        "2.0.0.127.bl.test.",
        "2.0.0.127.score.test.",
        "30.0.0.127.bl.test.",
        "31.0.0.127.bl.test.",
        "32.0.0.127.score.test.",
    ] {
        assert!(
            q.iter().any(|n| n == asked),
            "no DNSBL query {asked}; queries: {q:?}"
        );
    }
    for ip in ["33", "34"] {
        let skipped: Vec<&String> = q
            .iter()
            .filter(|n| n.starts_with(&format!("{ip}.0.0.127.")) && !n.ends_with(".arpa."))
            .collect();
        assert!(
            skipped.is_empty(),
            "127.0.0.{ip} (whitelisted or relay client) was looked up: {skipped:?}"
        );
    }

    // check-ip, through the running server.
    let out = cli(&["check-ip", "127.0.0.2"], &server.config_path).stdout;
    let lower = out.to_lowercase();
    for word in [
        "127.0.0.2",
        "blacklist",
        "whitelist",
        "ban",
        "dnsbl bl.test",
        "listed",
        "dnsbl score.test",
    ] {
        assert!(lower.contains(word), "check-ip lacks {word:?}:\n{out}");
    }
    assert!(
        out.lines().any(|l| l.contains("dnsbl bl.test")
            && l.contains("127.0.0.2")
            && l.contains("refused")),
        "check-ip does not show the listing at bl.test:\n{out}"
    );
    let out = cli(&["check-ip", "127.0.0.33"], &server.config_path).stdout;
    assert!(
        out.lines()
            .any(|l| l.contains("whitelist") && l.contains("yes")),
        "check-ip does not show 127.0.0.33 as whitelisted:\n{out}"
    );
    assert!(
        out.contains("accepted"),
        "check-ip does not accept 127.0.0.33:\n{out}"
    );
}

#[test]
fn dnsbl_that_does_not_answer_fails_open_and_is_logged() {
    let dns = TestDns::start(Zones::new().a("36.0.0.127.bl.test", "127.0.0.2"));
    dns.set_silent(true);
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[[dnsbl]]
zone = "bl.test"
"#,
    );
    let server = Server::start(&cfg, dir.path());
    let t = Instant::now();
    let mut c = expect_banner(&server, "127.0.0.36");
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "the banner took {waited:?} with dns.timeout = 1s"
    );
    c.ehlo("client36.test");
    quit_and_wait(c);
    let line = server.logs.wait_for(
        &["DNSBL did not answer", &client_field("127.0.0.36")],
        LOG_WAIT,
    );
    assert!(line.contains("WARN"), "not a warning: {line}");
    assert!(line.contains("bl.test"), "the zone is not named: {line}");
    assert!(
        queried(&dns).iter().any(|n| n == "36.0.0.127.bl.test."),
        "the silent DNS was not asked: {:?}",
        dns.queries()
    );
}

// ---------------------------------------------------------------------------
// 4. PTR
//
// These tests connect from a local address that is not a loopback one (the
// machine's own, e.g. on eth0), one server per case, so they also cover the
// resolver's ordinary reverse path (loopback addresses take a direct one,
// see loopback_ptr_queries_go_to_the_configured_nameservers); they are
// skipped, saying so, when there is no such address.

/// A local IPv4 address outside 127.0.0.0/8 on an interface that is up.
fn non_loopback_ipv4() -> Option<String> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list that we walk read-only and free
    // with freeifaddrs; ifa_addr is checked for null and its family
    // before the cast to sockaddr_in.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null()
                || i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET
                || ifa.ifa_flags & (libc::IFF_UP as u32) == 0
            {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() && !ip.is_unspecified() {
                found = Some(ip.to_string());
                break;
            }
        }
        libc::freeifaddrs(list);
    }
    found
}

/// The address for the PTR tests, or `None` (after saying why) to skip.
fn ptr_client_ip(test: &str) -> Option<String> {
    let ip = non_loopback_ipv4();
    if ip.is_none() {
        eprintln!("SKIPPED {test}: no local non-loopback IPv4 address to connect from");
    }
    ip
}

#[test]
fn loopback_ptr_queries_go_to_the_configured_nameservers() {
    // SPEC §2: with dns.nameservers set, 127.in-addr.arpa is asked there
    // too; no "localhost" is made up inside the resolver.
    let dns = TestDns::start(Zones::new().ptr("127.0.0.47", "mail47.client.test"));
    let dir = root();
    let cfg = base(&dns.nameserver()).extra("[access]\nptr = \"require\"\n");
    let server = Server::start(&cfg, dir.path());
    let mut c = expect_banner(&server, "127.0.0.47");
    c.ehlo("client47.test");
    c.send_message(
        "sender@client.test",
        &["joe@example.test"],
        &simple_message("ptr-47"),
    );
    quit_and_wait(c);
    let files = wait_for_files(
        &server.new_dir("joe@example.test"),
        1,
        Duration::from_secs(10),
    );
    let msg = support::read_string(&files[0]);
    assert!(
        msg.starts_with("Received: from client47.test (mail47.client.test [127.0.0.47])"),
        "the Received header:\n{msg}"
    );
    assert!(
        queried(&dns)
            .iter()
            .any(|n| n.ends_with("127.in-addr.arpa.")),
        "the reverse name of a loopback address did not go to the nameserver: {:?}",
        dns.queries()
    );
}

#[test]
fn ptr_require_refuses_clients_without_reverse_dns() {
    let Some(ip) = ptr_client_ip("ptr_require_refuses_clients_without_reverse_dns") else {
        return;
    };
    let access = |whitelisted: bool| {
        let mut s = String::from(
            "[access]\nptr = \"require\"\nreject_reply = \"550 5.7.25 Client host rejected: no reverse DNS\"\n",
        );
        if whitelisted {
            s.push_str(&format!("whitelist = [\"{ip}\"]\n"));
        }
        s
    };

    // No PTR: refused with reject_reply.
    let no_ptr = TestDns::start(Zones::new());
    let dir = root();
    let server = Server::start(
        &base(&no_ptr.nameserver()).extra(&access(false)),
        dir.path(),
    );
    expect_refused(
        &server,
        &ip,
        "550 5.7.25 Client host rejected: no reverse DNS",
        "ptr",
    );
    drop(server);

    // Whitelisted, no PTR: accepted.
    let dir = root();
    let server = Server::start(&base(&no_ptr.nameserver()).extra(&access(true)), dir.path());
    let mut c = expect_banner(&server, &ip);
    c.ehlo("friend.test");
    quit_and_wait(c);
    drop(server);

    // With a PTR: accepted, and the name goes into the Received header.
    let with_ptr = TestDns::start(Zones::new().ptr(&ip, "mail41.client.test"));
    let dir = root();
    let server = Server::start(
        &base(&with_ptr.nameserver()).extra(&access(false)),
        dir.path(),
    );
    let mut c = expect_banner(&server, &ip);
    c.ehlo("client41.test");
    c.send_message(
        "sender@client.test",
        &["joe@example.test"],
        &simple_message("ptr-41"),
    );
    quit_and_wait(c);
    let files = wait_for_files(
        &server.new_dir("joe@example.test"),
        1,
        Duration::from_secs(10),
    );
    let msg = support::read_string(&files[0]);
    let first = msg.lines().next().unwrap_or("");
    assert_eq!(
        first,
        format!("Received: from client41.test (mail41.client.test [{ip}])"),
        "the Received header:\n{msg}"
    );
}

#[test]
fn ptr_fcrdns_requires_a_forward_confirmed_name() {
    let Some(ip) = ptr_client_ip("ptr_fcrdns_requires_a_forward_confirmed_name") else {
        return;
    };
    let access = |whitelisted: bool| {
        let mut s = String::from("[access]\nptr = \"fcrdns\"\n");
        if whitelisted {
            s.push_str(&format!("whitelist = [\"{ip}\"]\n"));
        }
        s
    };
    // A PTR name that resolves elsewhere.
    let liar = TestDns::start(
        Zones::new()
            .ptr(&ip, "liar.client.test")
            .a("liar.client.test", "127.0.0.99"),
    );
    let dir = root();
    let server = Server::start(&base(&liar.nameserver()).extra(&access(false)), dir.path());
    expect_refused(&server, &ip, "554 5.7.1 Access denied", "ptr");
    let log = wait_refusal_log(&server, &ip, "ptr");
    assert!(
        log.contains("liar.client.test"),
        "the log does not name the PTR: {log}"
    );
    drop(server);

    // Whitelisted: not checked.
    let dir = root();
    let server = Server::start(&base(&liar.nameserver()).extra(&access(true)), dir.path());
    let mut c = expect_banner(&server, &ip);
    c.ehlo("friend.test");
    quit_and_wait(c);
    drop(server);

    // Forward-confirmed: accepted.
    let good = TestDns::start(
        Zones::new()
            .ptr(&ip, "good.client.test")
            .a("good.client.test", &ip),
    );
    let dir = root();
    let server = Server::start(&base(&good.nameserver()).extra(&access(false)), dir.path());
    let mut c = expect_banner(&server, &ip);
    c.ehlo("good.client.test");
    quit_and_wait(c);
}

#[test]
fn ptr_check_with_dead_dns_is_a_temporary_refusal() {
    let Some(ip) = ptr_client_ip("ptr_check_with_dead_dns_is_a_temporary_refusal") else {
        return;
    };
    let dead = DeadDns::start();
    for mode in ["require", "fcrdns"] {
        let dir = root();
        let cfg = base(&dead.nameserver()).extra(&format!("[access]\nptr = \"{mode}\"\n"));
        let server = Server::start(&cfg, dir.path());
        let t = Instant::now();
        expect_refused(
            &server,
            &ip,
            &format!("450 4.7.25 Client host rejected: cannot find your reverse hostname, [{ip}]"),
            "ptr",
        );
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "the refusal took {:?} with dns.timeout = 1s",
            t.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------
// 5. HELO/EHLO

#[test]
fn ehlo_block_closes_the_session_and_bad_helo_syntax_does_not() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
ehlo_block = ["ylmf-pc"]
whitelist = ["127.0.0.52"]
"#,
    );
    let server = Server::start(&cfg, dir.path());

    // Refused: any case, and as part of a longer name.
    for (ip, cmd) in [
        ("127.0.0.50", "EHLO YLMF-PC"),
        ("127.0.0.54", "HELO host.Ylmf-Pc.example"),
    ] {
        let mut c = expect_banner(&server, ip);
        c.send(cmd).expect("554 5.7.1");
        c.expect_closed();
        let line = server
            .logs
            .wait_for(&["HELO refused (ehlo_block)", &client_field(ip)], LOG_WAIT);
        assert!(line.contains("check="), "no check field: {line}");
    }

    // Accepted.
    let mut c = expect_banner(&server, "127.0.0.51");
    c.ehlo("mail.client.test");
    quit_and_wait(c);

    // Whitelisted: not checked.
    let mut c = expect_banner(&server, "127.0.0.52");
    c.ehlo("ylmf-pc");
    quit_and_wait(c);

    // Bad syntax: 501, and the session goes on.
    let mut c = expect_banner(&server, "127.0.0.53");
    c.send("EHLO -bad-").expect("501 5.5.2");
    server.logs.wait_for(
        &["HELO refused (helo_syntax)", &client_field("127.0.0.53")],
        LOG_WAIT,
    );
    c.ehlo("good.client.test");
    c.send("NOOP").expect("250");
    quit_and_wait(c);
}

// ---------------------------------------------------------------------------
// 6. Early talker

#[test]
fn early_talker_is_refused_patient_client_waits_whitelisted_does_not() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
early_talker = "1s"
whitelist = ["127.0.0.62"]
"#,
    );
    let server = Server::start(&cfg, dir.path());

    // Talks first: one refusal, nothing else, closed.
    let mut c = Raw::connect("127.0.0.60", server.mx);
    c.write(b"EHLO x\r\n");
    let line = c.line();
    assert!(
        line.starts_with("554 5.5.1 "),
        "expected 554 5.5.1 for an early talker, got {line:?}"
    );
    c.expect_closed();
    wait_refusal_log(&server, "127.0.0.60", "early_talker");

    // Patient: the banner after about a second.
    let t = Instant::now();
    let mut c = expect_banner(&server, "127.0.0.61");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "the banner came after {waited:?}, before early_talker = 1s"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the banner came after {waited:?}"
    );
    c.ehlo("patient.test");
    quit_and_wait(c);

    // Whitelisted: at once.
    let t = Instant::now();
    let c = expect_banner(&server, "127.0.0.62");
    let waited = t.elapsed();
    assert!(
        waited < Duration::from_millis(800),
        "a whitelisted client waited {waited:?} for the banner"
    );
    quit_and_wait(c);
}

// ---------------------------------------------------------------------------
// 7. Limits, bans, the command line

#[test]
fn connections_per_ip_limit() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
whitelist = ["127.0.0.72"]

[limits]
connections_per_ip = 2
"#,
    );
    let server = Server::start(&cfg, dir.path());

    let a = expect_banner(&server, "127.0.0.70");
    let b = expect_banner(&server, "127.0.0.70");
    expect_refused(
        &server,
        "127.0.0.70",
        "421 4.7.0 Too many connections from your address; try again later",
        "connection_limit",
    );
    // Another address is not affected.
    let other = expect_banner(&server, "127.0.0.71");
    // Whitelisted: three at once.
    let w: Vec<Client> = (0..3)
        .map(|_| client_from("127.0.0.72", server.mx))
        .collect();
    // Once one closes, the address is accepted again.
    quit_and_wait(a);
    let again = banner_within(&server, "127.0.0.70", Duration::from_secs(3));
    drop(again);
    drop(b);
    drop(other);
    drop(w);
}

#[test]
fn max_connections_limit() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
whitelist = ["127.0.0.77"]

[limits]
max_connections = 3
"#,
    );
    let server = Server::start(&cfg, dir.path());

    let open: Vec<Client> = ["127.0.0.73", "127.0.0.74", "127.0.0.75"]
        .iter()
        .map(|ip| expect_banner(&server, ip))
        .collect();
    expect_refused(
        &server,
        "127.0.0.76",
        "421 4.7.0 Too many connections; try again later",
        "connection_limit",
    );
    // Whitelisted: accepted over the limit.
    let w = expect_banner(&server, "127.0.0.77");
    quit_and_wait(w);
    let mut open = open.into_iter();
    quit_and_wait(open.next().unwrap());
    let again = banner_within(&server, "127.0.0.76", Duration::from_secs(3));
    drop(again);
}

/// Sends `n` unknown commands, each refused with a 5xx.
#[track_caller]
fn bad_commands(c: &mut Client, n: usize) {
    for i in 0..n {
        let r = c.send(&format!("XBOGUS{i}"));
        assert!(
            (500..600).contains(&r.code()),
            "an unknown command got {:?}",
            r.lines
        );
    }
}

/// Sends NOOP (ignoring a failed write: the server may have closed) and
/// returns what comes back: 250, or the 421 of a closed session.
fn noop_after_errors(c: &mut Client) -> io::Result<support::Reply> {
    let _ = std::io::Write::write_all(&mut c.stream, b"NOOP\r\n");
    c.try_read_reply()
}

#[test]
fn max_errors_bans_the_address_across_restarts_and_ban_cli_manages_bans() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
whitelist = ["127.0.0.82"]

[limits]
max_errors = 3
auto_ban = "1h"
"#,
    );
    let mut server = Server::start(&cfg, dir.path());

    // Three bad commands: 421 4.7.0, closed, banned.
    let mut c = expect_banner(&server, "127.0.0.80");
    c.ehlo("client80.test");
    bad_commands(&mut c, 3);
    c.read_reply().expect("421 4.7.0");
    c.expect_closed();
    server
        .logs
        .wait_for(&["client banned", &client_field("127.0.0.80")], LOG_WAIT);
    let banned_reply = "421 4.7.1 Your address is temporarily banned; try again later";
    expect_refused(&server, "127.0.0.80", banned_reply, "ban");
    // Another address is fine.
    let c = expect_banner(&server, "127.0.0.81");
    quit_and_wait(c);

    // Whitelisted: never banned (whether or not the session was closed).
    let mut c = expect_banner(&server, "127.0.0.82");
    c.ehlo("client82.test");
    bad_commands(&mut c, 3);
    let _ = noop_after_errors(&mut c);
    drop(c);
    let c = banner_within(&server, "127.0.0.82", Duration::from_secs(1));
    drop(c);
    assert_eq!(
        server
            .logs
            .count(&["client banned", &client_field("127.0.0.82")]),
        0,
        "a whitelisted client was banned:\n{}",
        server.logs.text()
    );

    // check-ip shows the ban.
    let out = cli(&["check-ip", "127.0.0.80"], &server.config_path).stdout;
    assert!(
        out.lines()
            .any(|l| l.contains("ban") && l.contains("127.0.0.80")),
        "check-ip does not show the ban:\n{out}"
    );
    assert!(out.contains("refused"), "check-ip:\n{out}");

    // Stopped: `ban list` reads the store directly.
    let config_path = server.config_path.clone();
    let data_dir = server.data_dir.clone();
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    drop(server);
    let out = cli(&["ban", "list"], &config_path).stdout;
    assert!(
        out.lines()
            .any(|l| l.contains("127.0.0.80") && l.contains("errors")),
        "`ban list` with the server stopped:\n{out}"
    );
    assert!(!out.contains("127.0.0.82"), "`ban list`:\n{out}");

    // The ban survives the restart.
    let server = Server::start_with(&config_path, data_dir, 1);
    expect_refused(&server, "127.0.0.80", banned_reply, "ban");
    let out = cli(&["ban", "list"], &config_path).stdout;
    assert!(out.contains("127.0.0.80"), "`ban list`:\n{out}");

    // Lifted by hand.
    let out = cli(&["ban", "remove", "127.0.0.80"], &config_path).stdout;
    assert!(out.contains("127.0.0.80"), "`ban remove`:\n{out}");
    let c = expect_banner_after_refusals(&server, "127.0.0.80");
    quit_and_wait(c);

    // Added by hand.
    cli(&["ban", "add", "127.0.0.9", "--for", "1h"], &config_path);
    expect_refused(&server, "127.0.0.9", banned_reply, "ban");
    let out = cli(&["ban", "list"], &config_path).stdout;
    assert!(out.contains("127.0.0.9"), "`ban list`:\n{out}");
    assert!(
        !out.contains("127.0.0.80"),
        "`ban list` after remove:\n{out}"
    );
}

/// Like [`expect_banner`], for an address refused earlier in the test.
#[track_caller]
fn expect_banner_after_refusals(server: &Server, ip: &str) -> Client {
    let c = client_from(ip, server.mx);
    assert!(
        c.banner.first().starts_with("220 "),
        "expected the banner for {ip}, got {:?}",
        c.banner.lines
    );
    c
}

/// `[limits]` says whitelisted clients are exempt from all of them, so a
/// whitelisted client is not dropped after `max_errors` failed commands.
#[test]
fn whitelisted_client_is_exempt_from_max_errors() {
    let dns = TestDns::start(Zones::new());
    let dir = root();
    let cfg = base(&dns.nameserver()).extra(
        r#"[access]
whitelist = ["127.0.0.83"]

[limits]
max_errors = 3
"#,
    );
    let server = Server::start(&cfg, dir.path());
    let mut c = expect_banner(&server, "127.0.0.83");
    c.ehlo("client83.test");
    bad_commands(&mut c, 3);
    let r = noop_after_errors(&mut c).expect("a reply to NOOP");
    assert!(
        r.first().starts_with("250"),
        "a whitelisted client was dropped after limits.max_errors failed commands \
         (docs/configuration.md, [limits]: \"Whitelisted clients are exempt from all of them\"); \
         NOOP got {:?}",
        r.lines
    );
    quit_and_wait(c);
}

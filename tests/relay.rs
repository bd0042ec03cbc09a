//! End-to-end tests of relay control: who may send mail through mxguard to
//! domains that are not its own, and who may use which MAIL FROM.
//!
//! - the open-relay battery: classic relay tricks from a stranger, each
//!   refused at RCPT, with a receiving server (tests/sinks/sink.py) as the
//!   smarthost so that anything that wrongly leaves is caught;
//! - every legitimate path (relay client, `domains.relay_to`, AUTH as an
//!   account with `relay = true`, POP-before-SMTP for `mobile` accounts,
//!   `relay.forward_from`) delivers to that sink, and the server logs why;
//! - domain literals (`user@[IP]`), `domains.domain_literals` and
//!   `domains.literal_addresses`;
//! - `[sender] spoofing` and `own_address_only`.
//!
//! The clients connect from other loopback addresses: 127.0.0.1 is the
//! relay client, 127.0.0.2 (and up) are strangers. Logins use Python's
//! smtplib (STARTTLS) and poplib (pop3s) with a certificate made by rcgen.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::net::client_from;
use support::outbound::mxguard;
use support::sink::{Sink, SinkMode};
use support::{
    Client, ConfigBuilder, Reply, Server, dot_stuff, find_message, parse_listening, toml_str,
    wait_for_files,
};

/// How long a delivery (local or to the sink) may take.
const DELIVERY: Duration = Duration::from_secs(15);
/// How long a Python client may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that is not in `relay.clients`.
const STRANGER: &str = "127.0.0.2";

/// Plain-text passwords (accepted with a check-config warning): the
/// argon2 path is tested in tests/auth_tls.rs, and a hash costs time here.
const ALICE_PW: &str = "alice-relay-pw";
const BOB_PW: &str = "bob-norelay-pw";
const MOB_PW: &str = "mobile-pw";
const FIXED_PW: &str = "fixed-pw";

// ---------------------------------------------------------------------------
// Helpers

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-relay")
        .tempdir()
        .expect("a temporary directory")
}

/// The base configuration: local domains example.test and other.test
/// (accounts joe, postmaster), relay client 127.0.0.1, relay_to
/// backup.test, and every relayed message sent to `sink` (smarthost, and
/// a route for backup.test).
fn base(sink: &Sink) -> ConfigBuilder {
    let hop = sink.addr().to_string();
    ConfigBuilder::new()
        .relay_clients(&["127.0.0.1"])
        .relay_to(&["backup.test"])
        .smarthost(&hop)
        .route("backup.test", &hop)
        .queue_retry(&["1s"])
        .delay_warning("0s")
}

/// A message whose subject is `subject`.
fn msg(subject: &str, to: &str) -> String {
    format!(
        "From: <sender@client.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\nBody of {subject}.\r\n"
    )
}

/// MAIL, RCPTs (each must be accepted), DATA; returns the queue id.
#[track_caller]
fn send_ok(c: &mut Client, from: &str, to: &[&str], subject: &str) -> String {
    c.send(&format!("MAIL FROM:<{from}>")).expect("250");
    for t in to {
        let r = c.send(&format!("RCPT TO:<{t}>"));
        assert_eq!(
            r.code(),
            250,
            "RCPT TO:<{t}> (MAIL FROM:<{from}>): {:?}",
            r.lines
        );
    }
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(&msg(subject, to[0])));
    c.send_raw(b".\r\n");
    c.read_reply().expect("250").queue_id()
}

/// Waits for a sink message whose text holds `subject`.
#[track_caller]
fn wait_sink_subject(sink: &Sink, subject: &str) -> support::sink::SinkMessage {
    let needle = format!("Subject: {subject}\r\n");
    sink.wait_until(&format!("a message with {needle:?}"), DELIVERY, |s| {
        s.messages().iter().any(|m| m.text().contains(&needle))
    });
    sink.messages()
        .into_iter()
        .find(|m| m.text().contains(&needle))
        .expect("found above")
}

/// The port of the listener with `role`, from the server's log.
fn listener_port(server: &Server, role: &str) -> u16 {
    server
        .logs
        .snapshot()
        .iter()
        .filter_map(|l| parse_listening(l))
        .find(|(_, r)| r == role)
        .map(|(a, _)| a.port())
        .unwrap_or_else(|| panic!("no {role} listener in the log:\n{}", server.logs.text()))
}

/// A server with TLS and the accounts that log in.
struct TlsServer {
    server: Server,
    cert_pem: PathBuf,
    submission: u16,
    pop3s: u16,
}

/// Starts `cfg` with a self-signed certificate (mx.example.test,
/// 127.0.0.1), a submission and a pop3s listener, and four accounts with
/// passwords: alice (relay = true), bob (relay = false), mob (mobile =
/// true) and fixed (mobile = false).
fn start_tls(cfg: ConfigBuilder, root: &Path) -> TlsServer {
    let ck = rcgen::generate_simple_self_signed(vec![
        "mx.example.test".to_string(),
        "127.0.0.1".to_string(),
    ])
    .expect("a certificate");
    let cert_pem = root.join("cert.pem");
    let key_pem = root.join("key.pem");
    fs::write(&cert_pem, ck.cert.pem()).expect("write the certificate");
    fs::write(&key_pem, ck.signing_key.serialize_pem()).expect("write the key");
    let extra = format!(
        "[tls]\ncertificate = {cert}\nkey = {key}\n\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3s\"\n\n\
         [[account]]\naddress = \"alice@example.test\"\npassword = {alice}\nrelay = true\n\n\
         [[account]]\naddress = \"bob@example.test\"\npassword = {bob}\n\n\
         [[account]]\naddress = \"mob@example.test\"\npassword = {mob}\nmobile = true\n\n\
         [[account]]\naddress = \"fixed@example.test\"\npassword = {fixed}\n",
        cert = toml_str(&cert_pem.display().to_string()),
        key = toml_str(&key_pem.display().to_string()),
        alice = toml_str(ALICE_PW),
        bob = toml_str(BOB_PW),
        mob = toml_str(MOB_PW),
        fixed = toml_str(FIXED_PW),
    );
    let cfg = cfg.with_submission().extra(&extra);
    let data_dir = root.join("data");
    let config_path = root.join("mxguard.toml");
    fs::write(&config_path, cfg.render(&data_dir)).expect("write the configuration");
    let server = Server::start_with(&config_path, data_dir, 3);
    let submission = server.submission.expect("a submission listener").port();
    let pop3s = listener_port(&server, "pop3s");
    TlsServer {
        server,
        cert_pem,
        submission,
        pop3s,
    }
}

/// Runs `python3 -c SCRIPT ARGS...` (bounded); returns its output.
#[track_caller]
fn python(script: &str, args: &[&str]) -> String {
    let mut child = Command::new(support::sink::python())
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python {args:?} did not finish within {TOOL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("python output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python {args:?} failed:\n{text}");
    text
}

/// smtplib from a chosen source address: EHLO, STARTTLS (certificate
/// checked), EHLO, AUTH when a user is given, MAIL, each RCPT, and DATA
/// when a recipient was accepted. Prints one line per reply:
/// `MAIL 250 ...`, `RCPT <addr> 554 ...`, `DATA 250 ...`.
const SMTPLIB: &str = r#"
import smtplib, ssl, sys
host, port, src, cafile, user, pw, mail_from, subject = sys.argv[1:9]
rcpts = sys.argv[9:]
ctx = ssl.create_default_context(cafile=cafile)
with smtplib.SMTP(host, int(port), local_hostname="python.example.net", timeout=10,
                  source_address=(src, 0)) as s:
    s.ehlo()
    s.starttls(context=ctx)
    s.ehlo()
    if user:
        s.login(user, pw)
        print("AUTH OK")
    code, text = s.mail(mail_from)
    print("MAIL", code, text.decode())
    if code != 250:
        sys.exit(0)
    accepted = 0
    for r in rcpts:
        code, text = s.rcpt(r)
        print("RCPT", r, code, text.decode())
        accepted += code == 250
    if accepted:
        body = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nsent with smtplib\r\n"
                % (mail_from, rcpts[0], subject))
        try:
            code, text = s.data(body)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        print("DATA", code, text.decode())
"#;

/// What [`SMTPLIB`] printed.
struct PyTranscript(String);

impl PyTranscript {
    /// The line for `what` (`"MAIL"`, `"RCPT <addr>"`, `"DATA"`).
    #[track_caller]
    fn line(&self, what: &str) -> &str {
        let prefix = format!("{what} ");
        self.0
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {what:?} in the smtplib transcript:\n{}", self.0))
    }

    /// The reply to `what`, without the `what`: `"250 2.1.5 Ok"`.
    #[track_caller]
    fn reply(&self, what: &str) -> &str {
        &self.line(what)[what.len() + 1..]
    }
}

/// One smtplib session on the submission listener (see [`SMTPLIB`]).
/// `login` is `(user, password)`; `from` `""` is the null sender.
fn smtplib(
    tls: &TlsServer,
    src: &str,
    login: Option<(&str, &str)>,
    from: &str,
    subject: &str,
    rcpts: &[&str],
) -> PyTranscript {
    let port = tls.submission.to_string();
    let cafile = tls.cert_pem.display().to_string();
    let (user, pw) = login.unwrap_or(("", ""));
    let mut args = vec!["127.0.0.1", &port, src, &cafile, user, pw, from, subject];
    args.extend_from_slice(rcpts);
    PyTranscript(python(SMTPLIB, &args))
}

/// poplib over pop3s from a chosen source address; prints `LOGIN OK` or
/// `LOGIN FAILED`.
const POPLIB: &str = r#"
import poplib, socket, ssl, sys
port, src, cafile, user, pw = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile)
class FromSource(poplib.POP3_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)
p = FromSource("127.0.0.1", int(port), context=ctx, timeout=10)
p.user(user)
try:
    p.pass_(pw)
except poplib.error_proto as e:
    print("LOGIN FAILED", e)
    sys.exit(0)
print("STAT", *p.stat())
p.quit()
print("LOGIN OK")
"#;

/// Logs in over pop3s from `src`; asserts that the login worked.
#[track_caller]
fn pop_login(tls: &TlsServer, src: &str, user: &str, pw: &str) {
    let port = tls.pop3s.to_string();
    let cafile = tls.cert_pem.display().to_string();
    let out = python(POPLIB, &[&port, src, &cafile, user, pw]);
    assert!(
        out.contains("LOGIN OK"),
        "POP3 login of {user} from {src}:\n{out}"
    );
    tls.server
        .logs
        .wait_for(&["POP3 login", &format!("client={src}"), user], DELIVERY);
}

/// From `src` on the mx listener: MAIL FROM, RCPT TO; returns the RCPT
/// reply (the session is closed).
#[track_caller]
fn rcpt_from(server: &Server, src: &str, from: &str, to: &str) -> Reply {
    let mut c = client_from(src, server.mx);
    c.ehlo("client.test");
    c.send(&format!("MAIL FROM:<{from}>")).expect("250");
    let r = c.send(&format!("RCPT TO:<{to}>"));
    c.quit();
    r
}

/// Whether the log has a `RCPT OK (<why>)` line for `rcpt`.
fn logged_relay(server: &Server, why: &str, rcpt: &str) -> bool {
    server
        .logs
        .any(|l| l.contains(&format!("RCPT OK ({why})")) && l.contains(rcpt))
}

// ---------------------------------------------------------------------------
// 1. The open-relay battery

/// One relay attempt: the MAIL FROM and the RCPT TO argument, as sent.
struct Attempt {
    from: &'static str,
    rcpt: &'static str,
    /// The reply the RCPT must start with, when it is known exactly.
    want: Option<&'static str>,
}

const fn attempt(rcpt: &'static str) -> Attempt {
    Attempt {
        from: "<spammer@spam.test>",
        rcpt,
        want: None,
    }
}

const BATTERY: &[Attempt] = &[
    Attempt {
        want: Some("554 5.7.1"),
        ..attempt("<x@far.test>")
    },
    attempt("<\"x@far.test\">"),
    attempt("<x%far.test@example.test>"),
    attempt("<x%far.test@[127.0.0.1]>"),
    attempt("<far.test!x@example.test>"),
    attempt("<@example.test:x@far.test>"),
    attempt("<@example.test,@far.test:x@far2.test>"),
    attempt("<x@far.test@example.test>"),
    attempt("<\"x%far.test\"@example.test>"),
    attempt("<\"far.test!x\"@example.test>"),
    attempt("<x@far.test.>"),
    attempt("<x@FAR.TEST>"),
    attempt("<x@[192.0.2.99]>"),
    attempt("<x@[IPv6:2001:db8::99]>"),
    attempt("<x%far.test@backup.test>"),
    attempt("<far.test!x@backup.test>"),
    attempt("<\"x@far.test\"@backup.test>"),
    attempt("<@backup.test:x@far.test>"),
    attempt("<x@sub.backup.test>"),
    attempt("<x@example.test.far.test>"),
    attempt("<x@far.test%example.test>"),
    attempt("<postmaster@far.test>"),
    attempt("<x@localhost>"),
    attempt("<x@127.0.0.1>"),
    attempt("<x@[127.0.0.2]>"),
    Attempt {
        from: "<joe@example.test>",
        rcpt: "<x@far.test>",
        want: Some("450 4.7.1"),
    },
    Attempt {
        from: "<Joseph@Example.Test>",
        rcpt: "<x@far.test>",
        want: Some("450 4.7.1"),
    },
    Attempt {
        from: "<>",
        rcpt: "<x@far.test>",
        want: Some("554 5.7.1"),
    },
    Attempt {
        from: "<x@far.test>",
        rcpt: "<y@far.test>",
        want: Some("554 5.7.1"),
    },
    Attempt {
        from: "<x@backup.test>",
        rcpt: "<y@far.test>",
        want: Some("554 5.7.1"),
    },
];

#[test]
fn open_relay_battery_is_refused_at_rcpt_and_nothing_leaves() {
    let tmp = root();
    let sink = Sink::start("127.0.0.12", SinkMode::Accept);
    let server = Server::start(&base(&sink), tmp.path());
    let mut failures = Vec::new();
    for a in BATTERY {
        // One session per attempt: each refusal counts toward
        // limits.max_errors, and a ban would hide the next attempts.
        let mut c = client_from(STRANGER, server.mx);
        c.ehlo("spam.test");
        let mail = c.send(&format!("MAIL FROM:{}", a.from));
        if mail.code() != 250 {
            failures.push(format!(
                "MAIL FROM:{} was refused ({:?}), the attempt was not made",
                a.from, mail.lines
            ));
            continue;
        }
        let r = c.send(&format!("RCPT TO:{}", a.rcpt));
        let what = format!("MAIL FROM:{} RCPT TO:{}", a.from, a.rcpt);
        if !(400..600).contains(&r.code()) {
            failures.push(format!("{what}: accepted: {:?}", r.lines));
        } else if let Some(w) = a.want
            && !r.first().starts_with(w)
        {
            failures.push(format!("{what}: expected {w:?}, got {:?}", r.lines));
        }
        if a.want == Some("450 4.7.1") && !r.text().contains("authenticate") {
            failures.push(format!(
                "{what}: the 450 does not say to authenticate: {:?}",
                r.lines
            ));
        }
        // If the recipient was wrongly taken, let the message go, so that
        // the sink sees it.
        let data = c.send("DATA");
        if data.code() == 354 {
            c.send_raw(&dot_stuff(&msg("leaked", "x@far.test")));
            c.send_raw(b".\r\n");
            let end = c.read_reply();
            failures.push(format!(
                "{what}: DATA accepted, end of data: {:?}",
                end.lines
            ));
        }
        c.quit();
    }

    // The server is fine afterwards: local mail from the stranger works.
    let mut c = client_from(STRANGER, server.mx);
    c.ehlo("spam.test");
    send_ok(
        &mut c,
        "someone@client.test",
        &["joe@example.test"],
        "after-battery",
    );
    c.quit();
    let files = wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(!find_message(&server.new_dir("joe@example.test"), "after-battery").is_empty());

    // Give anything wrongly queued a moment to reach the sink.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        failures.is_empty(),
        "relay attempts that were not refused:\n{}\nthe log:\n{}",
        failures.join("\n"),
        server.logs.text()
    );
    assert!(
        sink.messages().is_empty() && sink.connections() == 0,
        "mail left for the sink:\n{}",
        sink.log_text()
    );
    assert!(
        !server.logs.any(|l| l.contains("RCPT OK (")),
        "a relay was allowed:\n{}",
        server.logs.text()
    );
    // The plain attempt is logged as a relay refusal.
    server
        .logs
        .wait_for(&["RCPT denied (relay)", "x@far.test", STRANGER], DELIVERY);
}

// ---------------------------------------------------------------------------
// 2. The legitimate paths

#[test]
fn relay_client_and_relay_to_domain_are_delivered() {
    let tmp = root();
    let sink = Sink::start("127.0.0.13", SinkMode::Accept);
    let server = Server::start(&base(&sink), tmp.path());

    // The relay client (127.0.0.1) sends anywhere.
    let mut c = client_from("127.0.0.1", server.mx);
    c.ehlo("client.test");
    send_ok(
        &mut c,
        "me@client.test",
        &["x@far.test"],
        "from-relay-client",
    );
    c.quit();
    let m = wait_sink_subject(&sink, "from-relay-client");
    assert_eq!(m.rcpt_tos, vec!["x@far.test".to_string()]);
    assert_eq!(m.mail_from, "me@client.test");
    assert!(logged_relay(&server, "client address", "x@far.test"));

    // A stranger sends to the relay_to domain.
    let mut c = client_from(STRANGER, server.mx);
    c.ehlo("other-mx.test");
    send_ok(&mut c, "a@elsewhere.test", &["y@backup.test"], "to-backup");
    c.quit();
    let m = wait_sink_subject(&sink, "to-backup");
    assert_eq!(m.rcpt_tos, vec!["y@backup.test".to_string()]);
    assert!(logged_relay(&server, "relay_to allowed", "y@backup.test"));

    // ... but not further.
    let r = rcpt_from(&server, STRANGER, "a@elsewhere.test", "y@far.test");
    assert!(r.first().starts_with("554 5.7.1"), "{:?}", r.lines);
}

#[test]
fn authenticated_relay_over_starttls_is_delivered() {
    let tmp = root();
    let sink = Sink::start("127.0.0.14", SinkMode::Accept);
    let tls = start_tls(base(&sink), tmp.path());

    // alice (relay = true), from a stranger's address.
    let t = smtplib(
        &tls,
        STRANGER,
        Some(("alice@example.test", ALICE_PW)),
        "alice@example.test",
        "alice-relays",
        &["x@far.test"],
    );
    assert!(t.0.contains("AUTH OK"), "{}", t.0);
    assert!(t.reply("RCPT x@far.test").starts_with("250"), "{}", t.0);
    assert!(t.reply("DATA").starts_with("250"), "{}", t.0);
    let m = wait_sink_subject(&sink, "alice-relays");
    assert_eq!(m.rcpt_tos, vec!["x@far.test".to_string()]);
    assert_eq!(m.mail_from, "alice@example.test");
    assert!(
        logged_relay(&tls.server, "authenticated channel", "x@far.test"),
        "{}",
        tls.server.logs.text()
    );

    // bob (relay = false) logs in too, but may only send to local users.
    let t = smtplib(
        &tls,
        STRANGER,
        Some(("bob@example.test", BOB_PW)),
        "bob@example.test",
        "bob-tries",
        &["z@far.test", "joe@example.test"],
    );
    assert!(t.0.contains("AUTH OK"), "{}", t.0);
    assert!(
        t.reply("RCPT z@far.test").starts_with("554 5.7.1"),
        "{}",
        t.0
    );
    assert!(
        t.reply("RCPT joe@example.test").starts_with("250"),
        "{}",
        t.0
    );
    assert!(t.reply("DATA").starts_with("250"), "{}", t.0);
    wait_for_files(&tls.server.new_dir("joe@example.test"), 1, DELIVERY);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sink.rcpt_attempts_for("z@far.test").is_empty(),
        "{}",
        sink.log_text()
    );
}

#[test]
fn pop_before_smtp_lets_a_mobile_account_relay_from_its_address() {
    let tmp = root();
    let sink = Sink::start("127.0.0.15", SinkMode::Accept);
    let tls = start_tls(base(&sink), tmp.path());
    let server = &tls.server;

    // Before any POP login, 127.0.0.3 is a stranger.
    let r = rcpt_from(server, "127.0.0.3", "road@client.test", "x@far.test");
    assert!(r.first().starts_with("554 5.7.1"), "{:?}", r.lines);

    // mob (mobile = true) reads its mail from 127.0.0.3 ...
    pop_login(&tls, "127.0.0.3", "mob@example.test", MOB_PW);
    // ... then that address relays without AUTH.
    let mut c = client_from("127.0.0.3", server.mx);
    c.ehlo("laptop.client.test");
    send_ok(
        &mut c,
        "mob@example.test",
        &["x@far.test"],
        "pop-before-smtp",
    );
    c.quit();
    let m = wait_sink_subject(&sink, "pop-before-smtp");
    assert_eq!(m.rcpt_tos, vec!["x@far.test".to_string()]);
    assert!(
        logged_relay(server, "recent POP login", "x@far.test"),
        "{}",
        server.logs.text()
    );

    // Only that address: 127.0.0.5 is still a stranger.
    let r = rcpt_from(server, "127.0.0.5", "road@client.test", "x@far.test");
    assert!(r.first().starts_with("554 5.7.1"), "{:?}", r.lines);

    // fixed (mobile = false) logs in from 127.0.0.4: no right to relay.
    pop_login(&tls, "127.0.0.4", "fixed@example.test", FIXED_PW);
    let r = rcpt_from(server, "127.0.0.4", "road@client.test", "y@far.test");
    assert!(r.first().starts_with("554 5.7.1"), "{:?}", r.lines);
    // A failed login of the mobile account gives nothing either.
    let out = python(
        POPLIB,
        &[
            &tls.pop3s.to_string(),
            "127.0.0.6",
            &tls.cert_pem.display().to_string(),
            "mob@example.test",
            "wrong-password",
        ],
    );
    assert!(out.contains("LOGIN FAILED"), "{out}");
    let r = rcpt_from(server, "127.0.0.6", "road@client.test", "y@far.test");
    assert!(r.first().starts_with("554 5.7.1"), "{:?}", r.lines);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sink.rcpt_attempts_for("y@far.test").is_empty(),
        "{}",
        sink.log_text()
    );
}

#[test]
fn pop_before_smtp_right_ends_with_its_window() {
    let tmp = root();
    let sink = Sink::start("127.0.0.16", SinkMode::Accept);
    let tls = start_tls(
        base(&sink).relay_keys("pop_before_smtp = \"2s\""),
        tmp.path(),
    );
    let server = &tls.server;
    let start = Instant::now();
    pop_login(&tls, "127.0.0.3", "mob@example.test", MOB_PW);
    let r = rcpt_from(server, "127.0.0.3", "road@client.test", "x@far.test");
    // Within the window (unless this machine was too slow to tell).
    if start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(r.code(), 250, "{:?}\n{}", r.lines, server.logs.text());
    }
    std::thread::sleep(Duration::from_secs(3));
    let r = rcpt_from(server, "127.0.0.3", "road@client.test", "x@far.test");
    assert!(
        r.first().starts_with("554 5.7.1"),
        "3s after the POP login, with a 2s window: {:?}",
        r.lines
    );
    // A new login opens it again.
    pop_login(&tls, "127.0.0.3", "mob@example.test", MOB_PW);
    let mut c = client_from("127.0.0.3", server.mx);
    c.ehlo("laptop.client.test");
    send_ok(&mut c, "mob@example.test", &["x@far.test"], "second-window");
    c.quit();
    wait_sink_subject(&sink, "second-window");
}

#[test]
fn forward_from_relays_for_its_sender_domains_and_check_config_warns() {
    let tmp = root();
    let sink = Sink::start("127.0.0.17", SinkMode::Accept);
    let cfg = base(&sink).relay_keys("forward_from = [\"partner.test\"]");
    let server = Server::start(&cfg, tmp.path());

    let mut c = client_from(STRANGER, server.mx);
    c.ehlo("partner-mx.partner.test");
    send_ok(&mut c, "news@Partner.Test", &["x@far.test"], "forwarded");
    c.quit();
    let m = wait_sink_subject(&sink, "forwarded");
    assert_eq!(m.rcpt_tos, vec!["x@far.test".to_string()]);
    assert!(
        logged_relay(&server, "forward_from allowed", "x@far.test"),
        "{}",
        server.logs.text()
    );

    // Another sender domain, a subdomain, the null sender: refused.
    for from in ["news@other.partner.test", "news@notpartner.test", ""] {
        let r = rcpt_from(&server, STRANGER, from, "y@far.test");
        assert!(
            r.first().starts_with("554 5.7.1"),
            "MAIL FROM:<{from}>: {:?}",
            r.lines
        );
    }

    // check-config says that anyone can forge such a sender.
    let path = server.config_path.display().to_string();
    let out = mxguard(&["check-config", "--config", &path]);
    assert!(out.status.success(), "{}", out.all());
    let warning = out
        .all()
        .lines()
        .find(|l| l.contains("relay.forward_from"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no warning about relay.forward_from:\n{}", out.all()));
    assert!(warning.contains("partner.test"), "{warning}");
    assert!(warning.contains("mxguard.toml:"), "located: {warning}");
}

// ---------------------------------------------------------------------------
// 3. Domain literals

#[test]
fn domain_literals_of_this_server_are_local() {
    let tmp = root();
    let cfg = ConfigBuilder::new().domains_keys("literal_addresses = [\"192.0.2.5\"]");
    let server = Server::start(&cfg, tmp.path());

    let mut c = client_from(STRANGER, server.mx);
    c.ehlo("client.test");
    // The address the client connected to.
    send_ok(
        &mut c,
        "a@client.test",
        &["joe@[127.0.0.1]"],
        "literal-connected",
    );
    // One of literal_addresses (behind NAT).
    send_ok(
        &mut c,
        "a@client.test",
        &["joe@[192.0.2.5]"],
        "literal-listed",
    );
    // Any other literal is not ours.
    c.send("MAIL FROM:<a@client.test>").expect("250");
    for other in ["joe@[192.0.2.6]", "joe@[127.0.0.2]", "nobody@[127.0.0.1]"] {
        let r = c.send(&format!("RCPT TO:<{other}>"));
        assert!(
            (500..600).contains(&r.code()),
            "RCPT TO:<{other}>: {:?}",
            r.lines
        );
    }
    c.quit();
    let dir = server.new_dir("joe@example.test");
    wait_for_files(&dir, 2, DELIVERY);
    assert_eq!(find_message(&dir, "Subject: literal-connected").len(), 1);
    assert_eq!(find_message(&dir, "Subject: literal-listed").len(), 1);
}

#[test]
fn domain_literals_off_refuses_them() {
    let tmp = root();
    let cfg = ConfigBuilder::new().domains_keys("domain_literals = false");
    let server = Server::start(&cfg, tmp.path());
    for src in [STRANGER, "127.0.0.1"] {
        let r = rcpt_from(&server, src, "a@client.test", "joe@[127.0.0.1]");
        assert!(
            (500..600).contains(&r.code()),
            "from {src}, domain_literals = false: {:?}",
            r.lines
        );
    }
    // Plain local mail still works.
    let r = rcpt_from(&server, STRANGER, "a@client.test", "joe@example.test");
    assert_eq!(r.code(), 250, "{:?}", r.lines);
}

// ---------------------------------------------------------------------------
// 4. Sender rules

#[test]
fn spoofing_authenticated_only_and_own_address_only() {
    let tmp = root();
    let sink = Sink::start("127.0.0.18", SinkMode::Accept);
    let cfg = base(&sink).sender_keys("spoofing = \"authenticated-only\"\n");
    let tls = start_tls(cfg, tmp.path());
    let server = &tls.server;

    // A stranger may not use a local sender; neither may the relay client.
    for src in [STRANGER, "127.0.0.1"] {
        for from in ["joe@example.test", "JOE@Example.Test", "nobody@other.test"] {
            let mut c = client_from(src, server.mx);
            c.ehlo("client.test");
            let r = c.send(&format!("MAIL FROM:<{from}>"));
            assert!(
                r.first().starts_with("550 5.7.1"),
                "MAIL FROM:<{from}> from {src}: {:?}",
                r.lines
            );
            c.quit();
        }
    }
    server
        .logs
        .wait_for(&["MAIL denied (spoofing)", "joe@example.test"], DELIVERY);

    // The null sender and foreign senders are fine.
    let mut c = client_from(STRANGER, server.mx);
    c.ehlo("client.test");
    send_ok(&mut c, "", &["joe@example.test"], "bounce-to-joe");
    send_ok(
        &mut c,
        "a@client.test",
        &["joe@example.test"],
        "foreign-sender",
    );
    c.quit();
    wait_for_files(&server.new_dir("joe@example.test"), 2, DELIVERY);

    // Logged in, alice may send as herself ...
    let t = smtplib(
        &tls,
        STRANGER,
        Some(("alice@example.test", ALICE_PW)),
        "alice@example.test",
        "as-herself",
        &["joe@example.test"],
    );
    assert!(t.reply("MAIL").starts_with("250"), "{}", t.0);
    assert!(t.reply("DATA").starts_with("250"), "{}", t.0);
    // ... and with the null sender, but not as another account.
    let t = smtplib(
        &tls,
        STRANGER,
        Some(("alice@example.test", ALICE_PW)),
        "",
        "null-sender",
        &["joe@example.test"],
    );
    assert!(t.reply("MAIL").starts_with("250"), "{}", t.0);
    for other in ["bob@example.test", "joe@example.test", "x@far.test"] {
        let t = smtplib(
            &tls,
            STRANGER,
            Some(("alice@example.test", ALICE_PW)),
            other,
            "as-another",
            &["joe@example.test"],
        );
        assert!(
            t.reply("MAIL").starts_with("553 5.7.1"),
            "alice as {other}:\n{}",
            t.0
        );
    }
    wait_for_files(&server.new_dir("joe@example.test"), 4, DELIVERY);
    assert!(find_message(&server.new_dir("joe@example.test"), "as-another").is_empty());
}

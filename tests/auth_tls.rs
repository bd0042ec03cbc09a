//! STARTTLS, implicit TLS and SMTP AUTH with real clients: Python's
//! smtplib, swaks, openssl s_client, and a raw rustls client for what the
//! others cannot do (pipelining plaintext after STARTTLS).
//!
//! Every server here has a `submission` (STARTTLS, AUTH required) and a
//! `submissions` (implicit TLS) listener besides `mx`, a self-signed
//! certificate for mx.example.test and 127.0.0.1, and two accounts with
//! argon2 password hashes: alice (relay = true) and bob (relay = false).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::{BIN, find_message, maildir_new, parse_listening, toml_str, wait_for_files};

/// Standard base64 with padding (the test crate has no base64 dependency).
struct Base64;

impl Base64 {
    fn encode(&self, data: impl AsRef<[u8]>) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.as_ref().chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

const BASE64: Base64 = Base64;

const ALICE_PW: &str = "Tr0ub4dor&3-alice";
const BOB_PW: &str = "correct horse bob";
const DELIVERY: Duration = Duration::from_secs(10);
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn hashes() -> &'static (String, String) {
    static H: OnceLock<(String, String)> = OnceLock::new();
    H.get_or_init(|| {
        (
            mxguard::auth::hash_password(ALICE_PW.as_bytes()).unwrap(),
            mxguard::auth::hash_password(BOB_PW.as_bytes()).unwrap(),
        )
    })
}

/// A running `mxguard serve` with mx, submission and submissions
/// listeners; killed when dropped.
struct Mx {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    addrs: HashMap<String, SocketAddr>,
    data_dir: PathBuf,
    /// The PEM file of the server's certificate (the clients' trust anchor).
    cert_pem: PathBuf,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

impl Mx {
    /// `extra`: TOML appended to the configuration.
    fn start(root: &Path, extra: &str) -> Mx {
        let ck = rcgen::generate_simple_self_signed(vec![
            "mx.example.test".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert_pem = root.join("cert.pem");
        let key_pem = root.join("key.pem");
        std::fs::write(&cert_pem, ck.cert.pem()).unwrap();
        std::fs::write(&key_pem, ck.signing_key.serialize_pem()).unwrap();
        let data_dir = root.join("data");
        let (alice, bob) = hashes();
        let config = format!(
            r#"[server]
hostname = "mx.example.test"
data_dir = {data}

[[listener]]
address = "127.0.0.1:0"
role = "mx"

[[listener]]
address = "127.0.0.1:0"
role = "submission"

[[listener]]
address = "127.0.0.1:0"
role = "submissions"

[tls]
certificate = {cert}
key = {key}

[domains]
local = ["example.test"]

[[account]]
address = "alice@example.test"
password = {alice}
relay = true

[[account]]
address = "bob@example.test"
password = {bob}

[[account]]
address = "joe@example.test"
{extra}"#,
            data = toml_str(&data_dir.display().to_string()),
            cert = toml_str(&cert_pem.display().to_string()),
            key = toml_str(&key_pem.display().to_string()),
            alice = toml_str(alice),
            bob = toml_str(bob),
        );
        let config_path = root.join("mxguard.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the mxguard binary");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut buf = Vec::new();
                while let Ok(n) = r.read_until(b'\n', &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    logs.lock().unwrap().push(line);
                    buf.clear();
                }
            });
        }
        let mut mx = Mx {
            child,
            logs,
            addrs: HashMap::new(),
            data_dir,
            cert_pem,
            cert_der: ck.cert.der().clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: HashMap<String, SocketAddr> = mx
                .log_lines()
                .iter()
                .filter_map(|l| parse_listening(l))
                .map(|(a, r)| (r, a))
                .collect();
            if found.len() == 3 {
                mx.addrs = found;
                return mx;
            }
            if let Ok(Some(status)) = mx.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!("mxguard exited ({status}):\n{}", mx.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mxguard did not start:\n{}",
                mx.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn addr(&self, role: &str) -> SocketAddr {
        self.addrs[role]
    }

    fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    fn wait_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .log_lines()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log never shows a password, in clear or in base64.
    fn assert_no_secrets(&self) {
        let text = self.log_text();
        for pw in [ALICE_PW, BOB_PW, "wrong-password"] {
            assert!(!text.contains(pw), "password in the log:\n{text}");
            assert!(!text.contains(&BASE64.encode(pw)), "{text}");
        }
    }

    fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    }

    /// A TLS client connection over `tcp`, handshake done.
    fn tls_over(&self, mut tcp: TcpStream) -> TlsStream {
        let name = rustls::pki_types::ServerName::try_from("mx.example.test").unwrap();
        let mut conn = rustls::ClientConnection::new(self.tls_client_config(), name).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).expect("TLS handshake");
        }
        rustls::StreamOwned::new(conn, tcp)
    }
}

impl Drop for Mx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A line-oriented SMTP client over any stream.
struct Smtp<S: Read + Write> {
    r: BufReader<S>,
}

impl<S: Read + Write> Smtp<S> {
    fn new(s: S) -> Smtp<S> {
        Smtp {
            r: BufReader::new(s),
        }
    }

    fn write(&mut self, s: &str) {
        let w = self.r.get_mut();
        w.write_all(s.as_bytes()).unwrap();
        w.flush().unwrap();
    }

    /// One reply, every line; empty at end of stream.
    fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) => return lines,
                Ok(_) => {}
                Err(e) if lines.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return lines;
                }
                Err(e) => panic!("reading a reply: {e} (after {lines:?})"),
            }
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> Vec<String> {
        self.write(&format!("{line}\r\n"));
        self.reply()
    }

    /// The first line's code and enhanced code: "535 5.7.8".
    fn code(&mut self, line: &str) -> String {
        code_of(&self.cmd(line))
    }
}

fn code_of(reply: &[String]) -> String {
    reply
        .first()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp
}

/// Connects to the submission listener, STARTTLS, handshake, EHLO.
fn starttls_session(mx: &Mx) -> Smtp<TlsStream> {
    let mut c = Smtp::new(connect(mx.addr("submission")));
    assert!(c.reply()[0].starts_with("220 "));
    c.cmd("EHLO client.test");
    assert_eq!(code_of(&c.cmd("STARTTLS")), "220 2.0.0");
    assert!(c.r.buffer().is_empty());
    let mut c = Smtp::new(mx.tls_over(c.r.into_inner()));
    let ehlo = c.cmd("EHLO client.test");
    assert!(
        ehlo.contains(&"250 AUTH PLAIN LOGIN".to_string()),
        "{ehlo:?}"
    );
    c
}

fn plain(login: &str, pw: &str) -> String {
    BASE64.encode(format!("\0{login}\0{pw}"))
}

/// Runs a command with a bound; returns (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, what: &str) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; these tests need it"));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SMTPLIB_STARTTLS: &str = r#"
import smtplib, ssl, sys
host, port, cafile, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
msg = ("From: %s\r\nTo: joe@example.test\r\nSubject: via-starttls\r\n\r\nHello over TLS.\r\n" % user)
with smtplib.SMTP(host, port, local_hostname="python.example.net", timeout=10) as s:
    s.ehlo()
    if not s.has_extn("starttls"):
        sys.exit("STARTTLS not advertised")
    if s.has_extn("auth"):
        sys.exit("AUTH advertised before TLS")
    code, text = s.mail(user)
    if code != 530:
        sys.exit("MAIL before AUTH: %d %r" % (code, text))
    s.rset()
    s.starttls(context=ctx)
    s.ehlo()
    if "PLAIN" not in s.esmtp_features.get("auth", ""):
        sys.exit("AUTH PLAIN not advertised after STARTTLS: %r" % s.esmtp_features)
    s.login(user, pw)
    refused = s.sendmail(user, ["joe@example.test"], msg)
    if refused:
        sys.exit("refused: %r" % refused)
print("sent")
"#;

#[test]
fn smtplib_starttls_login_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(tmp.path(), "");
    let sub = mx.addr("submission");
    let (ok, out, err) = run_bounded(
        Command::new("python3")
            .args(["-c", SMTPLIB_STARTTLS])
            .arg(sub.ip().to_string())
            .arg(sub.port().to_string())
            .arg(&mx.cert_pem)
            .args(["alice@example.test", ALICE_PW]),
        "python3",
    );
    assert!(ok, "smtplib failed:\n{out}\n{err}\n{}", mx.log_text());
    assert_eq!(out.trim(), "sent");
    let joe = maildir_new(&mx.data_dir, "joe@example.test");
    wait_for_files(&joe, 1, DELIVERY);
    let found = find_message(&joe, "Subject: via-starttls");
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("with ESMTPSA id"), "{}", found[0]);
    mx.wait_log(&["AUTH OK", "check=\"auth\"", "alice@example.test"]);
    mx.assert_no_secrets();
}

const SMTPLIB_IMPLICIT: &str = r#"
import smtplib, ssl, sys
host, port, cafile, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
msg = ("From: %s\r\nTo: joe@example.test\r\nSubject: via-implicit-tls\r\n\r\nHello.\r\n" % user)
with smtplib.SMTP_SSL(host, port, local_hostname="python.example.net", timeout=10, context=ctx) as s:
    s.ehlo()
    if s.has_extn("starttls"):
        sys.exit("STARTTLS advertised on implicit TLS")
    if "LOGIN" not in s.esmtp_features.get("auth", ""):
        sys.exit("AUTH LOGIN not advertised: %r" % s.esmtp_features)
    code, text = s.mail(user)
    if code != 530:
        sys.exit("MAIL before AUTH: %d %r" % (code, text))
    s.rset()
    try:
        s.login(user, "wrong-password")
        sys.exit("a wrong password was accepted")
    except smtplib.SMTPAuthenticationError as e:
        if e.smtp_code != 535:
            sys.exit("wrong password: %r" % (e,))
    s.login(user, pw)
    refused = s.sendmail(user, ["joe@example.test"], msg)
    if refused:
        sys.exit("refused: %r" % refused)
print("sent")
"#;

#[test]
fn smtplib_implicit_tls_on_submissions() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(tmp.path(), "");
    let subs = mx.addr("submissions");
    let (ok, out, err) = run_bounded(
        Command::new("python3")
            .args(["-c", SMTPLIB_IMPLICIT])
            .arg(subs.ip().to_string())
            .arg(subs.port().to_string())
            .arg(&mx.cert_pem)
            .args(["bob@example.test", BOB_PW]),
        "python3",
    );
    assert!(ok, "smtplib failed:\n{out}\n{err}\n{}", mx.log_text());
    assert_eq!(out.trim(), "sent");
    let joe = maildir_new(&mx.data_dir, "joe@example.test");
    wait_for_files(&joe, 1, DELIVERY);
    let found = find_message(&joe, "Subject: via-implicit-tls");
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("with ESMTPSA id"), "{}", found[0]);
    mx.wait_log(&["AUTH failed", "check=\"auth\"", "bob@example.test"]);
    mx.assert_no_secrets();
}

fn swaks(mx: &Mx, args: &[&str]) -> (bool, String, String) {
    run_bounded(
        Command::new("swaks")
            .arg("--server")
            .arg(mx.addr("submission").to_string())
            .args(["--helo", "swaks.example.net", "--tls"])
            .args(args),
        "swaks",
    )
}

#[test]
fn swaks_auth_login_and_plain_and_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(tmp.path(), "");
    for (mech, subject) in [("LOGIN", "swaks-login"), ("PLAIN", "swaks-plain")] {
        let header = format!("Subject: {subject}");
        let (ok, out, err) = swaks(
            &mx,
            &[
                "--auth",
                mech,
                "--auth-user",
                "alice@example.test",
                "--auth-password",
                ALICE_PW,
                "--from",
                "alice@example.test",
                "--to",
                "joe@example.test",
                "--header",
                &header,
            ],
        );
        assert!(ok, "swaks {mech}:\n{out}\n{err}");
        assert!(out.contains("235 2.7.0"), "{out}");
        let joe = maildir_new(&mx.data_dir, "joe@example.test");
        let deadline = Instant::now() + DELIVERY;
        while find_message(&joe, &header).is_empty() {
            assert!(Instant::now() < deadline, "{subject} not delivered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // alice (relay = true) may send anywhere: the authenticated channel
    let (ok, out, err) = swaks(
        &mx,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            ALICE_PW,
            "--from",
            "alice@example.test",
            "--to",
            "someone@far.test",
            "--quit-after",
            "RCPT",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("<~  250 2.1.5"), "{out}");
    mx.wait_log(&["RCPT OK (authenticated channel)", "someone@far.test"]);
    // bob (relay = false) may only send to local recipients
    let (_, out, _) = swaks(
        &mx,
        &[
            "--auth",
            "LOGIN",
            "--auth-user",
            "bob@example.test",
            "--auth-password",
            BOB_PW,
            "--from",
            "bob@example.test",
            "--to",
            "someone@far.test",
            "--quit-after",
            "RCPT",
        ],
    );
    assert!(out.contains("235 2.7.0"), "{out}");
    assert!(out.contains("554 5.7.1 Relay access denied"), "{out}");
    mx.assert_no_secrets();
}

#[test]
fn openssl_s_client_starttls_auth_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(tmp.path(), "");
    let script = format!(
        "EHLO openssl.example.net\nAUTH PLAIN {}\nQUIT\n",
        plain("alice@example.test", ALICE_PW)
    );
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-quiet",
            "-connect",
        ])
        .arg(mx.addr("submission").to_string())
        .arg("-CAfile")
        .arg(&mx.cert_pem)
        .args([
            "-verify_return_error",
            "-verify_hostname",
            "mx.example.test",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    // Give the handshake time before the commands (s_client reads stdin
    // only once connected, but be gentle).
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        for line in script.lines() {
            let _ = stdin.write_all(format!("{line}\n").as_bytes());
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_millis(300));
        }
        std::thread::sleep(Duration::from_millis(500));
        drop(stdin);
    });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("250 AUTH PLAIN LOGIN"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("235 2.7.0 Authentication successful"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("221 2.0.0"), "{stdout}\n{stderr}");
}

#[test]
fn no_auth_in_plaintext_and_mail_needs_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(tmp.path(), "");
    let mut c = Smtp::new(connect(mx.addr("submission")));
    c.reply();
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert_eq!(
        c.cmd(&format!(
            "AUTH PLAIN {}",
            plain("alice@example.test", ALICE_PW)
        )),
        ["538 5.7.11 Encryption required for requested authentication mechanism"]
    );
    assert_eq!(c.code("AUTH LOGIN"), "538 5.7.11");
    assert_eq!(c.code("MAIL FROM:<alice@example.test>"), "530 5.7.0");
    // after STARTTLS: still 530 until AUTH, then accepted
    let mut c = starttls_session(&mx);
    assert_eq!(c.code("MAIL FROM:<alice@example.test>"), "530 5.7.0");
    assert_eq!(c.cmd("AUTH LOGIN"), ["334 VXNlcm5hbWU6"]);
    assert_eq!(
        c.cmd(&BASE64.encode("alice@example.test")),
        ["334 UGFzc3dvcmQ6"]
    );
    assert_eq!(c.code(&BASE64.encode(ALICE_PW)), "235 2.7.0");
    assert_eq!(c.code("MAIL FROM:<alice@example.test>"), "250 2.1.0");
    assert_eq!(c.code("QUIT"), "221 2.0.0");
    // the mx listener offers no AUTH, even over TLS
    let mut c = Smtp::new(connect(mx.addr("mx")));
    c.reply();
    c.cmd("EHLO client.test");
    c.cmd("STARTTLS");
    let mut c = Smtp::new(mx.tls_over(c.r.into_inner()));
    let ehlo = c.cmd("EHLO client.test");
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert_eq!(c.code("AUTH PLAIN"), "502 5.5.1");
}

#[test]
fn wrong_passwords_end_in_421_and_a_ban() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(
        tmp.path(),
        "\n[limits]\nmax_errors = 3\nauto_ban = \"1h\"\n",
    );
    let mut c = starttls_session(&mx);
    let guess = plain("alice@example.test", "wrong-password");
    assert_eq!(c.code(&format!("AUTH PLAIN {guess}")), "535 5.7.8");
    // an unknown account gets the same answer
    assert_eq!(
        c.code(&format!(
            "AUTH PLAIN {}",
            plain("nobody@example.test", "wrong-password")
        )),
        "535 5.7.8"
    );
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {guess}")),
        ["535 5.7.8 Authentication credentials invalid"]
    );
    assert_eq!(code_of(&c.reply()), "421 4.7.0");
    assert!(c.reply().is_empty(), "the connection stays open");
    mx.wait_log(&["client banned", "check=\"too_many_errors\""]);
    assert_eq!(mx.log_text().matches("AUTH failed").count(), 3);
    mx.wait_log(&["AUTH failed", "nobody@example.test"]);
    // the ban holds on every listener
    let mut c = Smtp::new(connect(mx.addr("submission")));
    let banner = c.reply();
    assert!(
        banner
            .first()
            .is_some_and(|l| l.starts_with('5') || l.starts_with('4')),
        "{banner:?}"
    );
    mx.assert_no_secrets();
}

#[test]
fn starttls_command_injection_is_not_executed() {
    let tmp = tempfile::tempdir().unwrap();
    let mx = Mx::start(tmp.path(), "");
    let mut c = Smtp::new(connect(mx.addr("submission")));
    c.reply();
    c.cmd("EHLO client.test");
    // One write: STARTTLS with a plaintext command behind it (CVE-2011-0411).
    c.write("STARTTLS\r\nRSET\r\nNOOP injected\r\n");
    assert_eq!(code_of(&c.reply()), "220 2.0.0");
    assert!(c.r.buffer().is_empty());
    let tcp = c.r.into_inner();
    let mut tls = mx.tls_over(tcp);
    // Nothing may come before our own command: RSET and NOOP were dropped.
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 512];
    match tls.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Ok(n) => panic!(
            "the server answered an injected command: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("{e}"),
    }
    tls.sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut c = Smtp::new(tls);
    // The session starts over: EHLO is needed again.
    assert_eq!(c.code("MAIL FROM:<alice@example.test>"), "503 5.5.1");
    let ehlo = c.cmd("EHLO client.test");
    assert!(
        ehlo.iter().any(|l| l.ends_with("AUTH PLAIN LOGIN")),
        "{ehlo:?}"
    );
    assert!(!ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    assert_eq!(c.code("STARTTLS"), "503 5.5.1");
    assert_eq!(c.code("NOOP"), "250 2.0.0");
    assert_eq!(c.code("QUIT"), "221 2.0.0");
}

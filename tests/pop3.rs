//! POP3 over loopback with Python's poplib: implicit TLS (pop3s), STLS on
//! the plain port, deletions only at QUIT, wrong passwords.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

const DELIVERY: Duration = Duration::from_secs(10);

/// Writes a self-signed certificate and key for localhost; returns the
/// TOML of the [tls] section.
fn tls_files(dir: &Path) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    fs::write(&cert, ck.cert.pem()).expect("write cert");
    fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    format!(
        "\n[tls]\ncertificate = {}\nkey = {}\n",
        toml_str(&cert.display().to_string()),
        toml_str(&key.display().to_string())
    )
}

fn start(dir: &Path) -> (Server, u16, u16) {
    let extra = format!(
        "{}\n[[account]]\naddress = \"pop@example.test\"\npassword = \"pop secret\"\n\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3\"\n\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"pop3s\"\n",
        tls_files(dir)
    );
    let cfg = ConfigBuilder::new().extra(&extra);
    let data_dir = dir.join("data");
    let config_path = dir.join("mxguard.toml");
    fs::write(&config_path, cfg.render(&data_dir)).expect("write the configuration");
    let server = Server::start_with(&config_path, data_dir, 3);
    let port = |role: &str| {
        server
            .logs
            .snapshot()
            .iter()
            .filter_map(|l| parse_listening(l))
            .find(|(_, r)| r == role)
            .map(|(a, _)| a.port())
            .unwrap_or_else(|| panic!("no {role} listener in the log:\n{}", server.logs.text()))
    };
    let (p, ps) = (port("pop3"), port("pop3s"));
    (server, p, ps)
}

fn python(script: &str, args: &[String]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const POP_SCRIPT: &str = r#"
import poplib, ssl, sys
mode, port, user, password, action = sys.argv[1:6]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if mode == "pop3s":
    p = poplib.POP3_SSL("127.0.0.1", int(port), context=ctx, timeout=10)
else:
    p = poplib.POP3("127.0.0.1", int(port), timeout=10)
    p.stls(context=ctx)
p.user(user)
try:
    p.pass_(password)
except poplib.error_proto as e:
    print("LOGIN FAILED", e)
    sys.exit(0)
count, size = p.stat()
print("STAT", count, size)
print("UIDL", [u.decode() for u in p.uidl()[1]])
resp, lines, octets = p.retr(1)
print("RETR1", b"\n".join(lines).decode(errors="replace"))
resp, lines, octets = p.top(2, 0)
print("TOP2", b"\n".join(lines).decode(errors="replace"))
if action == "delete-first":
    p.dele(1)
p.quit()
print("DONE")
"#;

fn deliver_two(server: &Server) {
    let mut c = server.client();
    c.ehlo("client.example.net");
    c.send_message(
        "a@client.test",
        &["pop@example.test"],
        &simple_message("first-pop"),
    );
    c.send_message(
        "a@client.test",
        &["pop@example.test"],
        &simple_message("second-pop"),
    );
    c.quit();
    wait_for_files(&server.new_dir("pop@example.test"), 2, DELIVERY);
}

#[test]
fn poplib_over_pop3s_reads_and_deletes_at_quit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, _, pop3s) = start(tmp.path());
    deliver_two(&server);
    let args = |action: &str| {
        vec![
            "pop3s".to_string(),
            pop3s.to_string(),
            "pop@example.test".into(),
            "pop secret".into(),
            action.into(),
        ]
    };
    let (ok, out) = python(POP_SCRIPT, &args("delete-first"));
    assert!(ok, "{out}");
    assert!(out.contains("STAT 2"), "{out}");
    assert!(out.contains("Subject: first-pop"), "{out}");
    assert!(
        out.contains("TOP2") && out.contains("Subject: second-pop"),
        "{out}"
    );
    assert!(out.contains("DONE"), "{out}");
    let left = files_in(&server.new_dir("pop@example.test"));
    assert_eq!(left.len(), 1, "the first message is deleted at QUIT");
    assert!(
        fs::read_to_string(&left[0])
            .unwrap_or_default()
            .contains("second-pop")
    );
    server
        .logs
        .wait_for(&["POP3 login", "pop@example.test"], DELIVERY);

    // a wrong password is refused and logged
    let mut bad = args("keep");
    bad[3] = "wrong".into();
    let (ok, out) = python(POP_SCRIPT, &bad);
    assert!(ok && out.contains("LOGIN FAILED"), "{out}");
    server
        .logs
        .wait_for(&["POP3 login failed", "pop@example.test"], DELIVERY);
}

#[test]
fn poplib_stls_on_the_plain_port_and_no_plaintext_login() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, pop3, _) = start(tmp.path());
    deliver_two(&server);
    // USER without TLS is refused (allow_plaintext_auth is false)
    let plain = r#"
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=10)
print("CAPA", p.capa())
try:
    p.user("pop@example.test")
    print("USER ACCEPTED")
except poplib.error_proto as e:
    print("USER REFUSED", e)
p.quit()
"#;
    let (ok, out) = python(plain, &[pop3.to_string()]);
    assert!(ok, "{out}");
    assert!(out.contains("USER REFUSED"), "{out}");
    assert!(out.contains("STLS"), "{out}");
    let (ok, out) = python(
        POP_SCRIPT,
        &[
            "pop3".into(),
            pop3.to_string(),
            "pop@example.test".into(),
            "pop secret".into(),
            "keep".into(),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("STAT 2") && out.contains("DONE"), "{out}");
    // nothing deleted without DELE
    assert_eq!(files_in(&server.new_dir("pop@example.test")).len(), 2);
}

#[test]
fn pop3_password_guessing_ends_in_a_ban() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, pop3, pop3s) = start(tmp.path());
    let guess = r#"
import poplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
for pw in ["a", "b", "c"]:
    try:
        p.user("pop@example.test")
        p.pass_(pw)
        print("LOGGED IN")
    except poplib.error_proto as e:
        print("REFUSED", e)
    except Exception as e:
        print("CLOSED", type(e).__name__)
        break
try:
    q = poplib.POP3("127.0.0.1", int(sys.argv[2]), timeout=10)
    print("GREETED", q.getwelcome())
except poplib.error_proto as e:
    print("BANNED", e)
"#;
    let (ok, out) = python(guess, &[pop3s.to_string(), pop3.to_string()]);
    assert!(ok, "{out}");
    assert!(!out.contains("LOGGED IN"), "{out}");
    assert!(
        out.contains("BANNED"),
        "the guesser must be refused afterwards:\n{out}"
    );
    server
        .logs
        .wait_for(&["client banned", "client=127.0.0.1"], DELIVERY);
}

//! Clients no one here wrote: swaks and Python's smtplib. Both must be
//! installed (CI installs them); a missing one fails the test.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const DELIVERY: Duration = Duration::from_secs(10);
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a command with a bound; returns (status, stdout, stderr).
fn run_bounded(cmd: &mut Command, what: &str) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {what}: {e}. Install it (Debian: apt-get install {what}); these tests need it")
        });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{what} did not finish within {TOOL_TIMEOUT:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn swaks_delivers_a_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let (status, out, err) = run_bounded(
        Command::new("swaks")
            .arg("--server")
            .arg(server.mx.to_string())
            .args(["--helo", "swaks.example.net"])
            .args(["--from", "someone@client.test"])
            .args(["--to", "joe@example.test"])
            .args(["--header", "Subject: from-swaks"])
            .args(["--body", "sent by swaks"]),
        "swaks",
    );
    assert!(status.success(), "swaks failed ({status}):\n{out}\n{err}");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let joe = server.new_dir("joe@example.test");
    wait_for_files(&joe, 1, DELIVERY);
    let found = find_message(&joe, "Subject: from-swaks");
    assert_eq!(found.len(), 1, "{:?}", messages_in(&joe));
    assert!(
        received_from(&found[0], "swaks.example.net"),
        "{}",
        found[0]
    );
    assert!(found[0].contains("sent by swaks"));
}

const SMTPLIB_SCRIPT: &str = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
msg = ("From: py@client.test\r\nTo: joe@example.test, postmaster@example.test\r\n"
       "Subject: from-smtplib\r\nMessage-ID: <smtplib@client.test>\r\n\r\n"
       "Hello from Python.\r\n.leading dot\r\n")
with smtplib.SMTP(host, port, local_hostname="python.example.net", timeout=10) as s:
    s.ehlo()
    if not s.has_extn("pipelining"):
        sys.exit("PIPELINING not advertised")
    refused = s.sendmail("py@client.test", ["joe@example.test", "postmaster@example.test"], msg)
    if refused:
        sys.exit("refused: %r" % refused)
print("sent")
"#;

#[test]
fn python_smtplib_sends_to_two_recipients() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let (status, out, err) = run_bounded(
        Command::new("python3")
            .args(["-c", SMTPLIB_SCRIPT])
            .arg(server.mx.ip().to_string())
            .arg(server.mx.port().to_string()),
        "python3",
    );
    assert!(status.success(), "smtplib failed ({status}):\n{out}\n{err}");
    assert_eq!(out.trim(), "sent");
    for account in ["joe@example.test", "postmaster@example.test"] {
        let dir = server.new_dir(account);
        wait_for_files(&dir, 1, DELIVERY);
        let found = find_message(&dir, "Subject: from-smtplib\r\n");
        assert_eq!(found.len(), 1, "{account}: {:?}", messages_in(&dir));
        assert!(
            found[0].ends_with("Hello from Python.\r\n.leading dot\r\n"),
            "dot-stuffing undone: {}",
            found[0]
        );
        assert!(
            received_from(&found[0], "python.example.net"),
            "{}",
            found[0]
        );
    }
}

//! `mxguard route ADDRESS [--from IP] [--auth USER]`: the router test,
//! offline. Each test writes its own configuration and router table into a
//! temporary directory and runs the binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mxguard");

/// A configuration with local domain example.test, relay.clients
/// 10.0.0.0/8, accounts ann@example.test (alias annie@example.test,
/// relay = false) and boss@example.test (relay = true), the router table
/// `router` in router.txt, and `extra` TOML appended.
struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn setup(router: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("mxguard.toml");
    let text = format!(
        r#"[server]
hostname = "mx.example.test"
data_dir = {data}

[[listener]]
address = "127.0.0.1:0"
role = "mx"

[domains]
local = ["example.test"]

[relay]
clients = ["10.0.0.0/8"]

[router]
file = "router.txt"

[[account]]
address = "ann@example.test"
aliases = ["annie@example.test"]

[[account]]
address = "boss@example.test"
relay = true
{extra}"#,
        data = toml_str(&data.display().to_string()),
    );
    fs::write(&config, text).expect("write mxguard.toml");
    fs::write(dir.path().join("router.txt"), router).expect("write router.txt");
    Setup { _dir: dir, config }
}

/// Runs `mxguard route ARGS --config CONFIG`, bounded in time.
fn route(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("route")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxguard");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "mxguard route {args:?} did not exit within 15s:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// The report of a run that must succeed (exit 0).
fn report(config: &Path, args: &[&str]) -> String {
    let out = route(config, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "route {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// The stderr of a run that must fail (exit 1, nothing on stdout).
fn failure(config: &Path, args: &[&str]) -> String {
    let out = route(config, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "route {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    stderr
}

/// The value of the line `key: ...` of a report.
fn field<'a>(report: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{report}"))
}

fn has_line(report: &str, line: &str) -> bool {
    report.lines().any(|l| l.trim() == line)
}

const JOE: &str = "; CommuniGate's example\n\
    <joe@example.test> = joe@other.test\n\
    NoRelay:other.test = mail.other.test\n\
    NoRelay:<*@client.test> = *@mail.client.test\n";

#[test]
fn communigate_joe_example_keeps_the_marker_for_a_stranger() {
    let s = setup(JOE, "");
    let r = report(&s.config, &["joe@example.test", "--from", "192.0.2.1"]);
    assert_eq!(field(&r, "address"), "joe@example.test", "{r}");
    assert_eq!(field(&r, "client"), "192.0.2.1 (not authenticated)", "{r}");
    assert!(
        field(&r, "router").ends_with("router.txt (3 records)"),
        "{r}"
    );
    assert!(
        has_line(
            &r,
            "line 2: joe@example.test -> joe@other.test (Relay: sets the relay marker)"
        ),
        "{r}"
    );
    assert!(
        has_line(
            &r,
            "line 3: joe@other.test -> joe@mail.other.test (NoRelay: marker kept)"
        ),
        "{r}"
    );
    assert_eq!(field(&r, "final address"), "joe@mail.other.test", "{r}");
    assert_eq!(field(&r, "relay marker"), "set", "{r}");
    assert_eq!(
        field(&r, "delivery"),
        "remote, to joe@mail.other.test via MX of mail.other.test",
        "{r}"
    );
    assert_eq!(
        field(&r, "relay"),
        "allowed (router allows relaying)",
        "{r}"
    );
    assert_eq!(
        field(&r, "as a sender"),
        "accepted without DNS (local or known to the router)",
        "{r}"
    );
    // With <> and without --from: the same routing.
    let r = report(&s.config, &["<joe@example.test>"]);
    assert!(field(&r, "client").starts_with("any address"), "{r}");
    assert_eq!(
        field(&r, "relay"),
        "allowed (router allows relaying)",
        "{r}"
    );
}

#[test]
fn norelay_record_needs_a_relay_client_or_login() {
    let s = setup(JOE, "");
    let stranger = report(&s.config, &["x@client.test", "--from", "192.0.2.1"]);
    assert!(
        has_line(
            &stranger,
            "line 4: x@client.test -> x@mail.client.test (NoRelay: marker not set)"
        ),
        "{stranger}"
    );
    assert_eq!(field(&stranger, "relay marker"), "not set", "{stranger}");
    assert_eq!(
        field(&stranger, "relay"),
        "denied: 554 5.7.1 Relay access denied",
        "{stranger}"
    );
    assert!(
        field(&stranger, "delivery").starts_with("refused at RCPT: 554 5.7.1"),
        "{stranger}"
    );

    let client = report(&s.config, &["x@client.test", "--from", "10.1.2.3"]);
    assert!(
        field(&client, "client").contains("in relay.clients"),
        "{client}"
    );
    assert_eq!(
        field(&client, "relay"),
        "allowed (client address)",
        "{client}"
    );
    assert_eq!(
        field(&client, "delivery"),
        "remote, to x@mail.client.test via MX of mail.client.test",
        "{client}"
    );

    let boss = report(
        &s.config,
        &[
            "x@client.test",
            "--from",
            "192.0.2.1",
            "--auth",
            "boss@example.test",
        ],
    );
    assert!(
        field(&boss, "client").contains("authenticated as boss@example.test"),
        "{boss}"
    );
    assert_eq!(
        field(&boss, "relay"),
        "allowed (authenticated channel)",
        "{boss}"
    );

    // An account without relay = true may not relay (an alias names it).
    let ann = report(
        &s.config,
        &[
            "x@client.test",
            "--from",
            "192.0.2.1",
            "--auth",
            "annie@example.test",
        ],
    );
    assert!(
        field(&ann, "client").contains("authenticated as ann@example.test"),
        "{ann}"
    );
    assert!(field(&ann, "relay").starts_with("denied: 554"), "{ann}");
}

#[test]
fn relayed_mail_shows_the_next_hop() {
    let s = setup(
        JOE,
        "\n[relay.routes]\n\"mail.client.test\" = \"10.9.9.9:2525\"\n",
    );
    let r = report(&s.config, &["x@client.test", "--from", "10.1.2.3"]);
    assert_eq!(
        field(&r, "delivery"),
        "remote, to x@mail.client.test via relay.routes 10.9.9.9:2525",
        "{r}"
    );
}

#[test]
fn error_target_is_refused_as_recipient_and_as_sender() {
    let s = setup("<*@spammer.test> = error\n", "");
    let r = report(&s.config, &["x@spammer.test", "--from", "10.1.2.3"]);
    assert!(has_line(&r, "line 1: routes to error"), "{r}");
    let delivery = field(&r, "delivery");
    assert!(
        delivery.starts_with("refused at RCPT: 550 5.7.1") && delivery.contains("[check router]"),
        "{r}"
    );
    assert!(delivery.contains("router line 1"), "{r}");
    let sender = field(&r, "as a sender");
    assert!(
        sender.starts_with("refused: 550 5.7.1") && sender.contains("[check router]"),
        "{r}"
    );
}

#[test]
fn spam_trap_accepts_rcpt_and_refuses_the_message() {
    let s = setup("<misterX@example.test> = spamtrap\n", "");
    let r = report(&s.config, &["MisterX@Example.Test"]);
    assert!(has_line(&r, "line 1: routes to spam trap"), "{r}");
    assert!(field(&r, "delivery").starts_with("spam trap"), "{r}");
    assert!(
        field(&r, "delivery").contains("RCPT accepted, message refused at end of DATA"),
        "{r}"
    );
    assert_eq!(field(&r, "relay"), "not needed (spam trap)", "{r}");
}

#[test]
fn local_alias_through_the_router() {
    let s = setup("<info@example.test> = annie@example.test\n", "");
    let r = report(&s.config, &["info@example.test", "--from", "192.0.2.1"]);
    assert!(
        has_line(
            &r,
            "line 1: info@example.test -> annie@example.test (Relay: sets the relay marker)"
        ),
        "{r}"
    );
    assert_eq!(field(&r, "final address"), "annie@example.test", "{r}");
    assert_eq!(
        field(&r, "delivery"),
        "local mailbox ann@example.test (alias)",
        "{r}"
    );
    assert_eq!(field(&r, "relay"), "not needed (local)", "{r}");

    // No record: an unknown local user is refused, relaying is moot.
    let r = report(&s.config, &["nobody@example.test"]);
    assert!(has_line(&r, "(no record applies)"), "{r}");
    assert!(
        field(&r, "delivery").starts_with("refused at RCPT: 550 5.1.1"),
        "{r}"
    );
    assert_eq!(field(&r, "relay"), "not needed (local)", "{r}");
}

#[test]
fn routing_loop_prints_the_steps_and_451() {
    let s = setup(
        "<a@loop.test> = b@loop.test\n<b@loop.test> = a@loop.test\n",
        "",
    );
    let r = report(&s.config, &["a@loop.test"]);
    assert!(
        has_line(
            &r,
            "line 1: a@loop.test -> b@loop.test (Relay: sets the relay marker)"
        ),
        "{r}"
    );
    assert!(
        r.lines()
            .any(|l| l.trim().starts_with("line 2: b@loop.test -> a@loop.test")),
        "{r}"
    );
    assert!(field(&r, "routing loop").contains("451 4.4.6"), "{r}");
    let delivery = field(&r, "delivery");
    assert!(
        delivery.starts_with("refused at RCPT: 451 4.4.6") && delivery.contains("[check router]"),
        "{r}"
    );
    assert!(field(&r, "as a sender").starts_with("refused: 451"), "{r}");
}

#[test]
fn bad_router_line_names_the_file_and_line() {
    let s = setup(
        "<ok@example.test> = ann@example.test\n; fine\nthis line is wrong\n",
        "",
    );
    let err = failure(&s.config, &["joe@example.test"]);
    assert!(err.contains("router.txt:3"), "{err}");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let s = setup(JOE, "");
    let err = failure(
        &s.config,
        &["joe@example.test", "--auth", "nobody@example.test"],
    );
    assert!(err.contains("nobody@example.test"), "{err}");
    assert!(err.contains("no such account"), "{err}");

    let err = failure(&s.config, &["joe@@example.test"]);
    assert!(err.contains("bad address"), "{err}");

    // a bad --from is a usage error (clap's status 2, like every subcommand)
    let out = route(&s.config, &["joe@example.test", "--from", "192.0.2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));

    let missing = s.config.with_file_name("missing.toml");
    let err = failure(&missing, &["joe@example.test"]);
    assert!(err.contains("missing.toml"), "{err}");
}

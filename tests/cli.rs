//! The command line: check-config's exit codes and messages, and serve's
//! error when a listener cannot bind.

mod support;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Runs the binary with a bound on its run time.
fn run(args: &[&str], config: &std::path::Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
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
                "mxguard {args:?} did not exit within 15s:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_config_rejects_an_unknown_key_with_file_line_and_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good = ConfigBuilder::new().render(&tmp.path().join("data"));
    // Line 2 holds "hostname = ..."; add a misspelt key as line 3.
    let mut lines: Vec<&str> = good.lines().collect();
    assert!(lines[1].starts_with("hostname"), "{good}");
    lines.insert(2, "hostnam = \"typo.example.test\"");
    let path = tmp.path().join("bad.toml");
    fs::write(&path, lines.join("\n")).expect("write bad.toml");
    let out = run(&["check-config"], &path);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:3:"),
        "file:line in the error: {stderr}"
    );
    assert!(stderr.contains("server.hostnam"), "the key: {stderr}");
    assert!(stderr.contains("unknown key"), "{stderr}");
    assert!(!stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn check_config_accepts_a_good_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("good.toml");
    fs::write(&path, ConfigBuilder::new().render(&tmp.path().join("data")))
        .expect("write good.toml");
    let out = run(&["check-config"], &path);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("good.toml: configuration OK"), "{stdout}");
    assert!(stdout.contains("2 local domains, 2 accounts"), "{stdout}");
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mxguard.toml");
    let out = run(&["check-config"], &example);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn serve_fails_naming_the_address_when_the_port_is_taken() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let addr = taken.local_addr().expect("local addr");
    let cfg = ConfigBuilder::new()
        .render(&tmp.path().join("data"))
        .replace("127.0.0.1:0", &addr.to_string());
    assert!(cfg.contains(&addr.to_string()));
    let path = tmp.path().join("taken.toml");
    fs::write(&path, cfg).expect("write taken.toml");
    let out = run(&["serve"], &path);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "the error names the address: {stderr}"
    );
    drop(taken);
}

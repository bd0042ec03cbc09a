//! `mxguard reload` (and SIGHUP) put a renewed TLS certificate in service
//! without a restart.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Writes a fresh self-signed certificate and key; returns its DER in hex.
fn write_cert(dir: &Path, name: &str) -> String {
    let ck = rcgen::generate_simple_self_signed(vec![name.into()]).expect("certificate");
    fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("write cert");
    fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).expect("write key");
    ck.cert.der().iter().map(|b| format!("{b:02x}")).collect()
}

/// The certificate the server shows after STARTTLS, as DER in hex.
fn served_cert(port: u16) -> String {
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.starttls(context=ctx)
print(s.sock.getpeercert(binary_form=True).hex())
s.quit()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn reload_and_sighup_renew_the_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = write_cert(tmp.path(), "first.test");
    let extra = format!(
        "\n[tls]\ncertificate = {}\nkey = {}\n",
        toml_str(&tmp.path().join("cert.pem").display().to_string()),
        toml_str(&tmp.path().join("key.pem").display().to_string())
    );
    let cfg = ConfigBuilder::new().with_submission().extra(&extra);
    let server = Server::start(&cfg, tmp.path());
    let port = server.submission.expect("submission listener").port();
    assert_eq!(served_cert(port), first);

    let second = write_cert(tmp.path(), "second.test");
    let out = Command::new(env!("CARGO_BIN_EXE_mxguard"))
        .args(["reload", "--config"])
        .arg(&server.config_path)
        .output()
        .expect("mxguard reload");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("reloaded"), "{text}");
    assert_eq!(
        served_cert(port),
        second,
        "the renewed certificate is served"
    );

    // A broken key is refused and the good certificate stays in service.
    fs::write(tmp.path().join("key.pem"), "not a key").expect("break the key");
    let out = Command::new(env!("CARGO_BIN_EXE_mxguard"))
        .args(["reload", "--config"])
        .arg(&server.config_path)
        .output()
        .expect("mxguard reload");
    assert!(!out.status.success());
    assert_eq!(served_cert(port), second);

    // SIGHUP does the same.
    let third = write_cert(tmp.path(), "third.test");
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_cert(port) != third {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

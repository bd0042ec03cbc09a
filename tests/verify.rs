//! End-to-end tests of `[verify]`: SPF, DKIM and DMARC of inbound mail
//! against a test DNS server started here, with messages signed here with
//! mail-auth's DKIM signer (an Ed25519 key made for the test).
//!
//! Domains of the test DNS:
//! - `good.test`: SPF allows 127.0.0.0/8, a DKIM key at
//!   `sel._domainkey.good.test`, DMARC p=reject;
//! - `bad.test`: SPF `-all`, DMARC p=reject;
//! - `quar.test`: SPF `-all`, DMARC p=quarantine.
//!
//! `[dkim_sign]`: mail of an authenticated session is signed with a key
//! made here, and the signature checked with mail-auth against the test
//! DNS.
//!
//! What the tests assume of the log: a refused message is `DATA refused
//! (verify)` with `check="verify"`.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use hickory_server::proto::rr::RecordType;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use support::dns::{TestDns, Zones};
use support::net::client_from;
use support::{Client, ConfigBuilder, Server, dot_stuff, files_in, wait_for_files};

const LOG_WAIT: Duration = Duration::from_secs(5);
const DELIVERY: Duration = Duration::from_secs(15);

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-verify")
        .tempdir()
        .expect("a temporary directory")
}

/// Standard base64 (for the DKIM key record).
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A fresh Ed25519 key: its PKCS#8 form and the DKIM key record.
fn dkim_key() -> (Vec<u8>, String) {
    let pkcs8 = Ed25519Key::generate_pkcs8().expect("an Ed25519 key");
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).expect("the key parses");
    let record = format!("v=DKIM1; k=ed25519; p={}", base64(&key.public_key()));
    (pkcs8, record)
}

fn zones(dkim_record: &str) -> Zones {
    Zones::new()
        .txt("good.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("sel._domainkey.good.test", dkim_record)
        .txt("_dmarc.good.test", "v=DMARC1; p=reject")
        .txt("bad.test", "v=spf1 -all")
        .txt("_dmarc.bad.test", "v=DMARC1; p=reject")
        .txt("quar.test", "v=spf1 -all")
        .txt("_dmarc.quar.test", "v=DMARC1; p=quarantine")
        // A HELO name whose SPF record allows no one.
        .txt("liar.test", "v=spf1 -all")
}

/// A message from `from` (CRLF line ends).
fn message(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <joe@example.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\nHello, this is {subject}.\r\n"
    )
}

/// `message` with a DKIM signature of good.test (selector `sel`) on top.
fn signed(pkcs8: &[u8], message: &str) -> String {
    let key = Ed25519Key::from_pkcs8_der(pkcs8).expect("the key parses");
    let signature = DkimSigner::from_key(key)
        .domain("good.test")
        .selector("sel")
        .headers(["From", "To", "Subject", "Message-ID"])
        .sign(message.as_bytes())
        .expect("the message is signed");
    format!("{}{message}", signature.to_header())
}

/// MAIL, RCPT joe@example.test, DATA and the message: the final reply.
fn send(c: &mut Client, from: &str, message: &str) -> support::Reply {
    c.send(&format!("MAIL FROM:<{from}>")).expect("250");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(message));
    c.send_raw(b".\r\n");
    c.read_reply()
}

/// The delivered message with `subject`, its header section unfolded.
fn delivered(server: &Server, subject: &str, count: usize) -> (String, String) {
    let dir = server.new_dir("joe@example.test");
    wait_for_files(&dir, count, DELIVERY);
    for f in files_in(&dir) {
        let text = fs::read_to_string(&f).expect("read the delivered message");
        if text.contains(&format!("Subject: {subject}\r\n")) {
            let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
            let unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ");
            return (text, unfolded);
        }
    }
    panic!(
        "no delivered message with subject {subject:?} in {}",
        dir.display()
    );
}

/// The value of header `name` in an unfolded header section (all of them).
fn header_values(unfolded: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}: ");
    unfolded
        .split("\r\n")
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn start(dns: &TestDns, verify: &str, tmp: &Path) -> Server {
    let cfg = ConfigBuilder::new()
        .nameserver(&dns.nameserver())
        .dns_timeout("1s")
        .extra(verify);
    Server::start(&cfg, tmp)
}

#[test]
fn spf_dkim_and_dmarc_results_and_dmarc_reject() {
    let (pkcs8, record) = dkim_key();
    let dns = TestDns::start(zones(&record));
    let tmp = root();
    let server = start(
        &dns,
        "[verify]\nspf = \"header\"\ndkim = \"header\"\ndmarc = \"enforce\"\n",
        tmp.path(),
    );
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");

    // Signed by the From domain, sent from an address its SPF allows.
    let good = signed(&pkcs8, &message("alice@good.test", "good"));
    send(&mut c, "alice@good.test", &good).expect("250");
    let (_, head) = delivered(&server, "good", 1);
    let ar = header_values(&head, "Authentication-Results");
    assert_eq!(ar.len(), 1, "one Authentication-Results header: {head}");
    let ar = &ar[0];
    assert!(ar.starts_with("mx.example.test;"), "authserv-id: {ar}");
    assert!(
        ar.contains("spf=pass (mx.example.test: domain of alice@good.test designates 127.0.0.2"),
        "{ar}"
    );
    assert!(ar.contains("smtp.mailfrom=alice@good.test"), "{ar}");
    assert!(
        ar.contains("dkim=pass header.d=good.test header.s=sel"),
        "{ar}"
    );
    assert!(ar.contains("dmarc=pass header.from=good.test"), "{ar}");
    // Right after our Received:.
    let names: Vec<&str> = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':').map(|(n, _)| n))
        .collect();
    assert_eq!(names.first(), Some(&"Received"), "{head}");
    assert_eq!(names.get(1), Some(&"Authentication-Results"), "{head}");

    // The same message, a signed header changed after signing: DKIM
    // fails, DMARC still passes on the aligned SPF pass. The client also
    // brings results in our name (removed, RFC 8601 section 5) and in
    // another server's (kept).
    let tampered = format!(
        "Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\n\
         Authentication-Results: relay.other.test; spf=pass smtp.mailfrom=x@other.test\r\n{}",
        signed(&pkcs8, &message("alice@good.test", "tampered"))
            .replace("<tampered@client.test>", "<forged@client.test>")
    );
    send(&mut c, "alice@good.test", &tampered).expect("250");
    let (_, head) = delivered(&server, "tampered", 2);
    let ar = header_values(&head, "Authentication-Results");
    assert_eq!(ar.len(), 2, "ours and relay.other.test's: {head}");
    assert!(ar[1].starts_with("relay.other.test;"), "{ar:?}");
    assert!(!head.contains("forged.test"), "{head}");
    let ar = ar.join("\n");
    assert!(ar.contains("dkim=fail"), "{ar}");
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");

    // The body changed: mail-auth calls a body hash mismatch neutral.
    let body = signed(&pkcs8, &message("alice@good.test", "body"))
        .replace("Hello, this is", "Hello, this was");
    send(&mut c, "alice@good.test", &body).expect("250");
    let (_, head) = delivered(&server, "body", 3);
    let ar = header_values(&head, "Authentication-Results").join("\n");
    assert!(
        ar.contains("dkim=neutral (body hash did not verify)"),
        "{ar}"
    );

    // From bad.test (p=reject) via an address its SPF refuses, signed by
    // another domain: DMARC fails, the message is refused.
    let forged = signed(&pkcs8, &message("ceo@bad.test", "forged"));
    let r = send(&mut c, "ceo@bad.test", &forged);
    assert_eq!(r.code(), 550, "{r:?}");
    assert!(r.first().starts_with("550 5.7.1"), "{r:?}");
    assert!(r.text().contains("DMARC"), "{r:?}");
    assert!(r.text().contains("bad.test"), "{r:?}");
    server
        .logs
        .wait_for(&["DATA refused (verify)", "check=\"verify\""], LOG_WAIT);

    // Unsigned mail without MAIL FROM: SPF of the HELO name; client.test
    // has no SPF record (nor a DMARC one).
    let bounce = message("mailer-daemon@client.test", "bounce");
    send(&mut c, "", &bounce).expect("250");
    let (_, head) = delivered(&server, "bounce", 4);
    let ar = header_values(&head, "Authentication-Results").join("\n");
    assert!(ar.contains("spf=none"), "{ar}");
    assert!(ar.contains("smtp.helo=client.test"), "{ar}");
    assert!(ar.contains("dkim=none"), "{ar}");
    assert!(ar.contains("dmarc=none"), "{ar}");
    c.quit();
}

#[test]
fn spf_reject_refuses_a_fail() {
    let (_, record) = dkim_key();
    let dns = TestDns::start(zones(&record));
    let tmp = root();
    let server = start(&dns, "[verify]\nspf = \"reject\"\n", tmp.path());
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    let r = send(&mut c, "x@bad.test", &message("x@bad.test", "spf-fail"));
    assert_eq!(r.code(), 550, "{r:?}");
    assert!(r.first().starts_with("550 5.7.23"), "{r:?}");
    assert!(r.text().contains("SPF"), "{r:?}");
    server
        .logs
        .wait_for(&["DATA refused (verify)", "check=\"verify\""], LOG_WAIT);

    // A pass is accepted, with only the SPF result in the header.
    send(&mut c, "x@good.test", &message("x@good.test", "spf-pass")).expect("250");
    let (_, head) = delivered(&server, "spf-pass", 1);
    let ar = header_values(&head, "Authentication-Results").join("\n");
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(!ar.contains("dkim="), "{ar}");
    assert!(!ar.contains("dmarc="), "{ar}");
    c.quit();
}

#[test]
fn scores_and_dmarc_quarantine() {
    let (_, record) = dkim_key();
    let dns = TestDns::start(zones(&record));
    let tmp = root();
    let server = start(
        &dns,
        "[verify]\nspf = \"score\"\ndkim = \"score\"\ndmarc = \"enforce\"\n",
        tmp.path(),
    );
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    // SPF fail (3.0) and no signature (0.5): under the tag threshold, but
    // quar.test asks for quarantine: flagged once.
    send(
        &mut c,
        "x@quar.test",
        &message("x@quar.test", "quarantined"),
    )
    .expect("250");
    let (_, head) = delivered(&server, "quarantined", 1);
    assert_eq!(
        header_values(&head, "X-Spam-Flag"),
        vec!["YES".to_string()],
        "{head}"
    );
    let status = header_values(&head, "X-Spam-Status").join("\n");
    assert!(status.contains("score=3.5"), "{status}");
    assert!(status.contains("spf_fail"), "{status}");
    assert!(status.contains("dkim_none"), "{status}");
    let ar = header_values(&head, "Authentication-Results").join("\n");
    assert!(ar.contains("spf=fail"), "{ar}");
    assert!(ar.contains("dmarc=fail"), "{ar}");
    assert!(ar.contains("policy.dmarc=quarantine"), "{ar}");
    // client.test has no SPF record: the HELO identity is none.
    assert!(ar.contains("spf=none"), "{ar}");
    assert!(ar.contains("smtp.helo=client.test"), "{ar}");
    c.quit();

    // A HELO name whose SPF refuses the client (1.0), a MAIL FROM that
    // passes, no signature (0.5); DMARC passes on the aligned SPF.
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("liar.test").expect("250");
    send(&mut c, "x@good.test", &message("x@good.test", "liar")).expect("250");
    let (_, head) = delivered(&server, "liar", 2);
    let status = header_values(&head, "X-Spam-Status").join("\n");
    assert!(status.contains("score=1.5"), "{status}");
    assert!(status.contains("spf_helo_fail"), "{status}");
    assert!(!status.contains("spf_fail"), "{status}");
    let ar = header_values(&head, "Authentication-Results").join("\n");
    assert!(ar.contains("smtp.mailfrom=x@good.test"), "{ar}");
    assert!(ar.contains("spf=fail"), "{ar}");
    assert!(ar.contains("smtp.helo=liar.test"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    c.quit();
}

#[test]
fn no_verify_section_no_queries_and_relay_clients_unverified() {
    let (_, record) = dkim_key();
    let dns = TestDns::start(zones(&record));
    let tmp = root();
    // Without [verify]: no header, no TXT query.
    let cfg = ConfigBuilder::new()
        .nameserver(&dns.nameserver())
        .dns_timeout("1s");
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    send(&mut c, "x@bad.test", &message("x@bad.test", "plain")).expect("250");
    let (_, head) = delivered(&server, "plain", 1);
    assert!(!head.contains("Authentication-Results"), "{head}");
    assert!(
        !dns.queries().iter().any(|(_, t)| *t == RecordType::TXT),
        "{:?}",
        dns.queries()
    );
    c.quit();
    drop(server);

    // With [verify] on, a relay client's mail is not verified.
    let tmp = root();
    let cfg = ConfigBuilder::new()
        .nameserver(&dns.nameserver())
        .dns_timeout("1s")
        .relay_clients(&["127.0.0.3"])
        .extra("[verify]\nspf = \"reject\"\ndkim = \"header\"\ndmarc = \"enforce\"\n");
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.3", server.mx);
    c.ehlo("client.test").expect("250");
    send(&mut c, "x@bad.test", &message("x@bad.test", "relayed")).expect("250");
    let (_, head) = delivered(&server, "relayed", 1);
    assert!(!head.contains("Authentication-Results"), "{head}");
    c.quit();
}

/// PEM of a PKCS#8 DER key.
fn pem(der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// Runs mail-auth's DKIM verification of `message` against `dns`.
fn verify_dkim(dns: &TestDns, message: &[u8]) -> Vec<(String, String)> {
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    };
    let addr = dns.addr();
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.use_hosts_file = ResolveHosts::Never;
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        addr.ip(),
        true,
        vec![udp, tcp],
    )]);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let auth = mail_auth::MessageAuthenticator::new(config, opts).expect("an authenticator");
        let parsed = mail_auth::AuthenticatedMessage::parse(message).expect("the message parses");
        auth.verify_dkim(&parsed)
            .await
            .iter()
            .map(|o| {
                (
                    format!("{:?}", o.result()),
                    o.signature().map(|s| s.d.clone()).unwrap_or_default(),
                )
            })
            .collect()
    })
}

#[test]
fn dkim_sign_signs_mail_of_authenticated_users() {
    let pkcs8 = Ed25519Key::generate_pkcs8().expect("an Ed25519 key");
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).expect("the key parses");
    let record = format!("v=DKIM1; k=ed25519; p={}", base64(&key.public_key()));
    signs_with(&pem(&pkcs8), &record, "a=ed25519-sha256");
}

#[test]
fn dkim_sign_with_an_rsa_key() {
    use std::process::Command;
    let tmp = root();
    let key = tmp.path().join("rsa.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("run openssl (scripts/test.sh installs it)");
    assert!(ok.status.success(), "{ok:?}");
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .expect("run openssl");
    assert!(public.status.success(), "{public:?}");
    let record = format!("v=DKIM1; k=rsa; p={}", base64(&public.stdout));
    let pem = fs::read_to_string(&key).expect("the RSA key");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    signs_with(&pem, &record, "a=rsa-sha256");
}

/// Mail of an authenticated user is signed with the key `pem` (whose
/// public half is `record`, published for sel._domainkey.example.test),
/// twice with the same key (parsed once), and a stranger's is not.
fn signs_with(pem: &str, record: &str, algorithm: &str) {
    let dns = TestDns::start(Zones::new().txt("sel._domainkey.example.test", record));
    let tmp = root();
    fs::write(tmp.path().join("dkim.pem"), pem).expect("write the DKIM key");
    let ck =
        rcgen::generate_simple_self_signed(vec!["mx.example.test".into()]).expect("a certificate");
    fs::write(tmp.path().join("cert.pem"), ck.cert.pem()).expect("write cert");
    fs::write(tmp.path().join("key.pem"), ck.signing_key.serialize_pem()).expect("write key");
    let cfg = ConfigBuilder::new()
        .nameserver(&dns.nameserver())
        .dns_timeout("1s")
        .with_submission()
        .extra(
            "[tls]\ncertificate = \"cert.pem\"\nkey = \"key.pem\"\nallow_plaintext_auth = true\n\n\
             [[account]]\naddress = \"alice@example.test\"\npassword = \"alice-pw\"\nrelay = true\n\n\
             [dkim_sign]\ndomain = \"example.test\"\nselector = \"sel\"\nkey = \"dkim.pem\"\n",
        );
    let server = Server::start(&cfg, tmp.path());
    let submission = server.submission.expect("a submission listener");
    let mut c = Client::connect(submission);
    c.ehlo("laptop.example.test").expect("250");
    let login = base64(b"\0alice@example.test\0alice-pw");
    c.send(&format!("AUTH PLAIN {login}")).expect("235");
    for (n, subject) in ["signed-out", "signed-again"].into_iter().enumerate() {
        let msg = message("alice@example.test", subject).replace(
            "To: <joe@example.test>",
            "To: <joe@example.test>\r\nDate: Sun, 22 Nov 2026 07:00:00 +0000",
        );
        send(&mut c, "alice@example.test", &msg).expect("250");
        let (raw, head) = delivered(&server, subject, n + 1);
        let sig = header_values(&head, "DKIM-Signature");
        assert_eq!(sig.len(), 1, "{head}");
        assert!(sig[0].contains("d=example.test"), "{}", sig[0]);
        assert!(sig[0].contains("s=sel"), "{}", sig[0]);
        assert!(sig[0].contains("c=relaxed/relaxed"), "{}", sig[0]);
        assert!(sig[0].contains(algorithm), "{}", sig[0]);
        let results = verify_dkim(&dns, raw.as_bytes());
        assert_eq!(
            results,
            vec![("Pass".to_string(), "example.test".to_string())],
            "{raw}"
        );
    }
    c.quit();

    // Mail from a stranger on the mx listener is not signed.
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    send(
        &mut c,
        "x@client.test",
        &message("x@client.test", "stranger"),
    )
    .expect("250");
    let (_, head) = delivered(&server, "stranger", 3);
    assert!(!head.contains("DKIM-Signature"), "{head}");
    c.quit();
}

#[test]
fn serve_refuses_a_dkim_key_the_crypto_library_refuses() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let tmp = root();
    // The form of a PKCS#8 Ed25519 key, without the key.
    fs::write(
        tmp.path().join("dkim.pem"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    )
    .expect("write the key");
    let cfg = ConfigBuilder::new()
        .extra("[dkim_sign]\ndomain = \"example.test\"\nselector = \"sel\"\nkey = \"dkim.pem\"\n");
    let path = tmp.path().join("mxguard.toml");
    fs::write(&path, cfg.render(&tmp.path().join("data"))).expect("write the configuration");
    let mut child = Command::new(support::BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxguard");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("mxguard serve did not exit on a bad DKIM key");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[dkim_sign] key") && stderr.contains("dkim.pem"),
        "{stderr}"
    );
}

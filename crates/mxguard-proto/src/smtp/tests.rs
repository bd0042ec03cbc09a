//! Session tests without sockets: transcripts in, replies and events out.

use super::*;
use crate::reply::Reply;

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.example.test".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        vrfy: VrfyPolicy::Ambiguous,
        expn: false,
        require_auth: false,
        starttls: false,
        auth: false,
        auth_mechanisms_without_tls: false,
        max_errors: None,
    }
}

/// Drives a session like the server would, deciding every event with a
/// small fixed policy: recipients named `unknown@…` are refused.
struct Harness {
    s: Session,
    message: Vec<u8>,
    events: Vec<String>,
    closed: bool,
    /// An Event::StartTls was seen (the test runs the "handshake").
    starttls: bool,
}

impl Harness {
    fn new(cfg: SessionConfig) -> Harness {
        let greeting = Reply::parse("220 mx.example.test ESMTP mxguard").unwrap();
        let mut h = Harness {
            s: Session::new(Arc::new(cfg), greeting),
            message: Vec::new(),
            events: Vec::new(),
            closed: false,
            starttls: false,
        };
        let first = h.drain();
        assert_eq!(first, vec!["220 mx.example.test ESMTP mxguard"]);
        h
    }

    fn drain(&mut self) -> Vec<String> {
        let mut replies = Vec::new();
        while let Some(o) = self.s.poll_output() {
            match o {
                Output::Reply(r) => replies.extend(r.to_wire().lines().map(String::from)),
                Output::Close => self.closed = true,
                Output::Event(e) => {
                    self.events
                        .push(format!("{e:?}").chars().take(40).collect());
                    let d = match e {
                        Event::Rcpt { to } if to.mailbox.local_part == "unknown" => Some(
                            Decision::Reject(Reply::parse("550 5.1.1 No such user").unwrap()),
                        ),
                        Event::Helo { name, .. } if name == "blocked" => {
                            Some(Decision::Close(Reply::parse("554 5.7.1 Go away").unwrap()))
                        }
                        Event::MessageData(d) => {
                            self.message.extend_from_slice(&d);
                            None
                        }
                        Event::MessageStart => {
                            self.message.clear();
                            None
                        }
                        Event::MessageAborted => None,
                        Event::StartTls => {
                            self.starttls = true;
                            None
                        }
                        Event::Auth {
                            login, password, ..
                        } => Some(if login == "alice" && password.as_bytes() == b"secret" {
                            Decision::Accept(None)
                        } else {
                            Decision::Reject(
                                Reply::parse("535 5.7.8 Authentication credentials invalid")
                                    .unwrap(),
                            )
                        }),
                        Event::MessageEnd { size } => Some(Decision::Accept(Some(
                            Reply::parse(&format!("250 2.0.0 Ok: {size} octets queued as Q1"))
                                .unwrap(),
                        ))),
                        Event::Vrfy(_) | Event::Expn(_) => Some(Decision::Accept(Some(
                            Reply::parse("250 2.1.5 <joe@example.test>").unwrap(),
                        ))),
                        _ => Some(Decision::Accept(None)),
                    };
                    if let Some(d) = d {
                        self.s.respond(d);
                    }
                }
            }
        }
        replies
    }

    fn send(&mut self, input: &str) -> Vec<String> {
        self.send_bytes(input.as_bytes())
    }

    fn send_bytes(&mut self, input: &[u8]) -> Vec<String> {
        self.s.handle_input(input);
        self.drain()
    }

    /// Replies' codes with enhanced codes, e.g. "250 2.1.0".
    fn codes(&mut self, input: &str) -> Vec<String> {
        self.send(input)
            .iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }
}

#[test]
fn full_transaction() {
    let mut h = Harness::new(config());
    let ehlo = h.send("EHLO client.test\r\n");
    let want = [
        "250-mx.example.test",
        "250-PIPELINING",
        "250-SIZE 10000",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ];
    assert_eq!(ehlo, want);
    assert_eq!(h.codes("MAIL FROM:<a@client.test>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes("RCPT TO:<joe@example.test>\r\n"), ["250 2.1.5"]);
    assert_eq!(h.codes("RCPT TO:<unknown@example.test>\r\n"), ["550 5.1.1"]);
    assert_eq!(h.codes("DATA\r\n"), ["354 End"]);
    assert_eq!(
        h.send("Subject: hi\r\n\r\n..leading dot\r\n.\r\n"),
        ["250 2.0.0 Ok: 29 octets queued as Q1"]
    );
    assert_eq!(h.message, b"Subject: hi\r\n\r\n.leading dot\r\n");
    assert_eq!(h.codes("QUIT\r\n"), ["221 2.0.0"]);
    assert!(h.closed);
}

#[test]
fn pipelined_group_is_answered_in_order() {
    let mut h = Harness::new(config());
    let replies = h.codes(
        "EHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<unknown@example.test>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        replies,
        [
            "250-mx.example.test",
            "250-PIPELINING",
            "250-SIZE 10000",
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250-SMTPUTF8",
            "250 CHUNKING",
            "250 2.1.0",
            "250 2.1.5",
            "550 5.1.1",
            "354 End",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
}

#[test]
fn out_of_order_commands() {
    let mut h = Harness::new(config());
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes("HELO c.test\r\n"), ["250 mx.example.test"]);
    assert_eq!(h.codes("RCPT TO:<a@example.test>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes("DATA\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes("DATA\r\n"), ["554 5.5.1"]);
    assert_eq!(h.codes("RSET\r\n"), ["250 2.0.0"]);
    assert_eq!(h.codes("RCPT TO:<a@example.test>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes("NOOP\r\n"), ["250 2.0.0"]);
    assert!(!h.closed);
}

#[test]
fn bad_lines_get_replies_and_session_goes_on() {
    let mut h = Harness::new(config());
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    assert_eq!(h.codes(&long), ["500 5.5.2"]);
    // a long line arriving in pieces
    assert_eq!(h.codes(&"y".repeat(400)), Vec::<String>::new());
    assert_eq!(h.codes(&"y".repeat(400)), Vec::<String>::new());
    assert_eq!(h.codes("\r\n"), ["500 5.5.2"]);
    assert_eq!(h.codes("NOOP\n"), ["500 5.5.2"]);
    assert_eq!(h.codes("NO\rOP\r\n"), ["500 5.5.2"]);
    assert_eq!(h.send_bytes(b"NOOP\0\r\n").len(), 1);
    assert_eq!(
        h.send_bytes(b"NOOP \xff\xfe\r\n")[0].split(' ').next(),
        Some("500")
    );
    assert_eq!(h.codes("FOO\r\n"), ["500 5.5.1"]);
    assert_eq!(h.codes("EHLO\r\n"), ["501 5.5.4"]);
    assert_eq!(h.codes("HELO c.test\r\n"), ["250 mx.example.test"]);
    assert_eq!(h.codes("MAIL FROM:a@b.test\r\n"), ["501 5.1.7"]);
    assert_eq!(h.codes("MAIL FROM:<a@b.test> FOO=BAR\r\n"), ["555 5.5.4"]);
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes("RCPT TO:<a@@example.test>\r\n"), ["501 5.1.3"]);
    assert_eq!(h.codes("NOOP\r\n"), ["250 2.0.0"]);
    assert!(!h.closed);
}

#[test]
fn oversized_message_is_read_to_its_end_then_refused() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\n");
    assert_eq!(
        h.codes("MAIL FROM:<a@b.test> SIZE=20000\r\n"),
        ["552 5.3.4"]
    );
    h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
    let line = format!("{}\r\n", "x".repeat(98));
    for _ in 0..200 {
        assert!(h.send(&line).is_empty());
    }
    assert_eq!(h.codes(".\r\n"), ["552 5.3.4"]);
    assert!(h.events.iter().any(|e| e.starts_with("MessageAborted")));
    // the connection is still usable
    h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\n");
    assert_eq!(h.codes("DATA\r\n"), ["354 End"]);
    assert_eq!(h.codes("small\r\n.\r\n"), ["250 2.0.0"]);
}

#[test]
fn smuggling_and_bare_line_ends_in_data() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
    // "\n.\n" must not end the message, so the MAIL after it is content.
    let r = h.send("hello\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@example.test>\r\n");
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(h.codes(".\r\n"), ["550 5.6.0"]);
    assert!(!h.events.iter().any(|e| e.contains("evil")));
    assert_eq!(h.codes("NOOP\r\n"), ["250 2.0.0"]);
}

#[test]
fn long_text_line_refused() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
    assert!(h.send(&"z".repeat(1500)).is_empty());
    assert!(h.send("\r\n").is_empty());
    assert_eq!(h.codes(".\r\n"), ["500 5.5.2"]);
}

#[test]
fn bdat_chunks() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\n");
    assert_eq!(
        h.send("BDAT 12\r\nSubject: x\r\n"),
        ["250 2.0.0 12 octets received"]
    );
    // chunk split across reads, with a pipelined command behind it
    assert!(h.send("BDAT 9 LAST\r\nhel").is_empty());
    assert_eq!(h.codes("lo\r\n\r\nNOOP\r\n"), ["250 2.0.0", "250 2.0.0"]);
    assert_eq!(h.message, b"Subject: x\r\nhello\r\n\r\n");
    // BDAT without a transaction: octets are consumed, then 503
    assert_eq!(h.codes("BDAT 6\r\nQUIT\r\n"), ["503 5.5.1"]);
    assert!(!h.closed);
    // DATA in the middle of BDAT is refused and the message dropped
    h.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nBDAT 3\r\nab\n");
    assert_eq!(h.codes("BDAT 0 LAST\r\n"), ["503 5.5.1"]);
}

#[test]
fn bdat_bare_lf_refused() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\n");
    assert_eq!(h.codes("BDAT 4 LAST\r\na\nb\n"), ["550 5.6.0"]);
    assert!(h.events.iter().any(|e| e.starts_with("MessageAborted")));
}

#[test]
fn recipients_capped() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    for _ in 0..3 {
        assert_eq!(h.codes("RCPT TO:<a@example.test>\r\n"), ["250 2.1.5"]);
    }
    assert_eq!(h.codes("RCPT TO:<a@example.test>\r\n"), ["452 4.5.3"]);
}

#[test]
fn vrfy_expn_policies() {
    let mut h = Harness::new(config());
    assert_eq!(h.codes("VRFY joe\r\n"), ["252 2.5.2"]);
    assert_eq!(h.codes("EXPN list\r\n"), ["502 5.5.1"]);
    let mut h = Harness::new(SessionConfig {
        vrfy: VrfyPolicy::Off,
        ..config()
    });
    assert_eq!(h.codes("VRFY joe\r\n"), ["502 5.5.1"]);
    let mut h = Harness::new(SessionConfig {
        vrfy: VrfyPolicy::On,
        expn: true,
        ..config()
    });
    assert_eq!(h.codes("VRFY joe\r\n"), ["250 2.1.5"]);
    assert_eq!(h.codes("EXPN joe\r\n"), ["250 2.1.5"]);
}

#[test]
fn submission_requires_auth() {
    let mut h = Harness::new(SessionConfig {
        require_auth: true,
        ..config()
    });
    h.send("EHLO c.test\r\n");
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["530 5.7.0"]);
}

#[test]
fn utf8_needs_smtputf8() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\n");
    assert_eq!(h.codes("MAIL FROM:<jürgen@b.test>\r\n"), ["553 5.6.7"]);
    assert_eq!(
        h.codes("MAIL FROM:<jürgen@b.test> SMTPUTF8\r\n"),
        ["250 2.1.0"]
    );
    assert_eq!(h.codes("RCPT TO:<jürgen@example.test>\r\n"), ["250 2.1.5"]);
}

#[test]
fn helo_refusal_closes() {
    let mut h = Harness::new(config());
    assert_eq!(h.codes("EHLO blocked\r\nNOOP\r\n"), ["554 5.7.1"]);
    assert!(h.closed);
    assert!(h.send("NOOP\r\n").is_empty());
}

#[test]
fn too_many_errors_close() {
    let mut h = Harness::new(SessionConfig {
        max_errors: Some(3),
        ..config()
    });
    let r = h.codes("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(r, ["500 5.5.1", "500 5.5.1", "500 5.5.1", "421 4.7.0"]);
    assert!(h.closed);
}

#[test]
fn timeout_and_eof() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\npartial");
    assert_eq!(h.s.timeout_kind(), TimeoutKind::Data);
    h.s.handle_timeout();
    assert_eq!(
        h.drain().iter().map(|l| &l[..9]).collect::<Vec<_>>(),
        ["421 4.4.2"]
    );
    assert!(h.closed);
    assert!(h.events.iter().any(|e| e.starts_with("MessageAborted")));
    let mut h = Harness::new(config());
    h.send(
        "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\npartial\r\n",
    );
    h.s.handle_eof();
    h.drain();
    assert!(h.closed);
    assert!(h.events.iter().any(|e| e.starts_with("MessageAborted")));
}

#[test]
fn shutdown_waits_for_message_end() {
    let mut h = Harness::new(config());
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<a@example.test>\r\nDATA\r\nbody\r\n");
    h.s.shutdown();
    assert!(h.drain().is_empty());
    assert!(!h.closed);
    assert_eq!(h.codes(".\r\n"), ["250 2.0.0", "421 4.3.2"]);
    assert!(h.closed);
    let mut h = Harness::new(config());
    h.s.shutdown();
    assert_eq!(h.drain().len(), 1);
    assert!(h.closed);
}

fn tls_config() -> SessionConfig {
    SessionConfig {
        starttls: true,
        auth: true,
        require_auth: true,
        ..config()
    }
}

fn b64(s: &[u8]) -> String {
    BASE64.encode(s)
}

const EHLO_BASE: [&str; 7] = [
    "250-mx.example.test",
    "250-PIPELINING",
    "250-SIZE 10000",
    "250-8BITMIME",
    "250-ENHANCEDSTATUSCODES",
    "250-SMTPUTF8",
    "250-CHUNKING",
];

#[test]
fn ehlo_offers_starttls_then_auth() {
    let mut h = Harness::new(tls_config());
    let mut want: Vec<&str> = EHLO_BASE.to_vec();
    want.push("250 STARTTLS");
    assert_eq!(h.send("EHLO c.test\r\n"), want);
    assert_eq!(h.codes("STARTTLS\r\n"), ["220 2.0.0"]);
    assert!(h.starttls);
    h.s.tls_started();
    assert!(h.s.tls());
    let mut want: Vec<&str> = EHLO_BASE.to_vec();
    want.push("250 AUTH PLAIN LOGIN");
    assert_eq!(h.send("EHLO c.test\r\n"), want);
    // once authenticated, AUTH is no longer offered
    h.send(&format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret")));
    assert_eq!(h.send("EHLO c.test\r\n"), {
        let mut w = EHLO_BASE.to_vec();
        w[6] = "250 CHUNKING";
        w
    });

    // allow_plaintext_auth: both before TLS
    let mut h = Harness::new(SessionConfig {
        auth_mechanisms_without_tls: true,
        ..tls_config()
    });
    let r = h.send("EHLO c.test\r\n");
    assert_eq!(&r[7..], ["250-STARTTLS", "250 AUTH PLAIN LOGIN"]);
    // an implicit-TLS listener: no STARTTLS, AUTH at once
    let mut h = Harness::new(SessionConfig {
        starttls: false,
        ..tls_config()
    });
    h.s.set_tls(true);
    assert_eq!(&h.send("EHLO c.test\r\n")[7..], ["250 AUTH PLAIN LOGIN"]);
    assert_eq!(h.codes("STARTTLS\r\n"), ["503 5.5.1"]);
    // the MX listener offers AUTH nowhere
    let mut h = Harness::new(SessionConfig {
        auth: false,
        require_auth: false,
        ..tls_config()
    });
    h.s.set_tls(true);
    assert_eq!(h.send("EHLO c.test\r\n").last().unwrap(), "250 CHUNKING");
    assert_eq!(
        h.codes("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        ["502 5.5.1"]
    );
}

#[test]
fn starttls_drops_pipelined_commands() {
    // RFC 3207 §4.2 / CVE-2011-0411: commands sent in the same packet as
    // STARTTLS must never be executed, before or after the handshake.
    let mut h = Harness::new(tls_config());
    let r = h.codes(
        "EHLO c.test\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@example.test>\r\n",
    );
    assert_eq!(r.last().unwrap(), "220 2.0.0");
    assert_eq!(r.len(), 9);
    assert!(h.starttls);
    // more plaintext before the handshake is ignored too
    assert!(h.send("NOOP\r\n").is_empty());
    h.s.tls_started();
    assert!(h.send("").is_empty());
    // the session starts over: no HELO, no transaction
    assert_eq!(h.codes("RCPT TO:<v@example.test>\r\n"), ["503 5.5.1"]);
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["503 5.5.1"]);
    assert!(
        !h.events
            .iter()
            .any(|e| e.contains("evil") || e.starts_with("Mail")),
        "{:?}",
        h.events
    );
    assert!(h.s.helo().is_none());
    assert_eq!(h.codes("EHLO c.test\r\n").len(), 8);
    assert_eq!(h.codes("NOOP\r\n"), ["250 2.0.0"]);
}

#[test]
fn starttls_refusals() {
    let mut h = Harness::new(config());
    assert_eq!(h.codes("STARTTLS\r\n"), ["502 5.5.1"]);
    let mut h = Harness::new(SessionConfig {
        require_auth: false,
        ..tls_config()
    });
    assert_eq!(h.codes("STARTTLS now\r\n"), ["501 5.5.4"]);
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(h.codes("STARTTLS\r\n"), ["503 5.5.1"]);
    assert!(!h.starttls);
    assert_eq!(h.codes("RSET\r\nSTARTTLS\r\n"), ["250 2.0.0", "220 2.0.0"]);
    h.s.tls_started();
    assert_eq!(h.codes("STARTTLS\r\n"), ["503 5.5.1"]);
    // without EHLO first it is fine too
    let mut h = Harness::new(tls_config());
    assert_eq!(h.codes("STARTTLS\r\n"), ["220 2.0.0"]);
}

#[test]
fn auth_plain() {
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    assert_eq!(h.codes("MAIL FROM:<alice@example.test>\r\n"), ["530 5.7.0"]);
    assert_eq!(
        h.send(&format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret"))),
        ["235 2.7.0 Authentication successful"]
    );
    assert!(h.s.authenticated());
    assert!(
        h.events
            .iter()
            .any(|e| e.starts_with("Auth { mechanism: Plain, login: \"alice\""))
    );
    assert_eq!(
        h.codes(&format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret"))),
        ["503 5.5.1"]
    );
    assert_eq!(h.codes("MAIL FROM:<alice@example.test>\r\n"), ["250 2.1.0"]);
    assert_eq!(h.codes("RCPT TO:<x@elsewhere.test>\r\n"), ["250 2.1.5"]);
    // authentication survives RSET and EHLO
    assert_eq!(h.codes("RSET\r\n"), ["250 2.0.0"]);
    h.send("EHLO c.test\r\n");
    assert_eq!(h.codes("MAIL FROM:<alice@example.test>\r\n"), ["250 2.1.0"]);

    // after a 334 prompt, with an authorization identity
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    assert_eq!(h.send("AUTH plain\r\n"), ["334 "]);
    assert_eq!(
        h.codes(&format!("{}\r\n", b64(b"alice\0alice\0secret"))),
        ["235 2.7.0"]
    );
    // an authorization identity other than the login is refused
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    assert_eq!(
        h.codes(&format!("AUTH PLAIN {}\r\n", b64(b"bob\0alice\0secret"))),
        ["535 5.7.8"]
    );
    assert!(!h.s.authenticated());
    // "=" is an empty initial response: not a valid PLAIN message
    assert_eq!(h.codes("AUTH PLAIN =\r\n"), ["501 5.5.2"]);
    assert_eq!(
        h.codes(&format!("AUTH PLAIN {}\r\n", b64(b"alice\0secret"))),
        ["501 5.5.2"]
    );
    assert!(!h.events.iter().any(|e| e.contains("secret")));
}

#[test]
fn auth_login() {
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    assert_eq!(h.send("AUTH LOGIN\r\n"), ["334 VXNlcm5hbWU6"]);
    assert_eq!(
        h.send(&format!("{}\r\n", b64(b"alice"))),
        ["334 UGFzc3dvcmQ6"]
    );
    assert_eq!(h.codes(&format!("{}\r\n", b64(b"secret"))), ["235 2.7.0"]);
    assert!(h.s.authenticated());
    assert!(
        h.events
            .iter()
            .any(|e| e.starts_with("Auth { mechanism: Login, login: \"alice\""))
    );
    // the user name as initial response, responses split across reads
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    assert_eq!(
        h.send(&format!("AUTH LOGIN {}\r\n", b64(b"alice"))),
        ["334 UGFzc3dvcmQ6"]
    );
    assert!(h.send("c2Vj").is_empty());
    assert_eq!(h.codes("cmV0\r\n"), ["235 2.7.0"]);
    // a wrong password
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    h.send("AUTH LOGIN\r\n");
    h.send(&format!("{}\r\n", b64(b"alice")));
    assert_eq!(h.codes(&format!("{}\r\n", b64(b"guess"))), ["535 5.7.8"]);
    assert_eq!(h.s.errors(), 1);
    assert!(!h.s.authenticated());
    assert_eq!(h.codes("MAIL FROM:<a@b.test>\r\n"), ["530 5.7.0"]);
}

#[test]
fn auth_cancel_and_bad_responses() {
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    h.send("AUTH LOGIN\r\n");
    assert_eq!(h.codes("*\r\n"), ["501 5.0.0"]);
    // the session reads commands again
    assert_eq!(h.codes("NOOP\r\n"), ["250 2.0.0"]);
    h.send("AUTH LOGIN\r\n");
    h.send(&format!("{}\r\n", b64(b"alice")));
    assert_eq!(h.codes("*\r\n"), ["501 5.0.0"]);
    assert_eq!(h.send("AUTH PLAIN\r\n"), ["334 "]);
    assert_eq!(h.codes("*\r\n"), ["501 5.0.0"]);
    assert_eq!(h.codes("AUTH PLAIN not*base64\r\n"), ["501 5.5.2"]);
    h.send("AUTH LOGIN\r\n");
    assert_eq!(h.codes("!!!!\r\n"), ["501 5.5.2"]);
    h.send("AUTH PLAIN\r\n");
    assert_eq!(h.codes("AUTH PLAIN\r\n"), ["501 5.5.2"]);
    assert_eq!(h.codes("AUTH CRAM-MD5\r\n"), ["504 5.5.4"]);
    assert_eq!(h.codes("AUTH\r\n"), ["501 5.5.4"]);
    assert_eq!(h.codes("AUTH PLAIN a b\r\n"), ["501 5.5.4"]);
    assert!(!h.s.authenticated());
    assert!(!h.closed);
}

#[test]
fn auth_order_and_encryption() {
    // no EHLO yet
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    assert_eq!(h.codes("AUTH PLAIN\r\n"), ["503 5.5.1"]);
    // not encrypted: 538 (RFC 4954 §6), nothing decoded
    let mut h = Harness::new(tls_config());
    h.send("EHLO c.test\r\n");
    assert_eq!(
        h.send(&format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret"))),
        ["538 5.7.11 Encryption required for requested authentication mechanism"]
    );
    assert_eq!(h.codes("AUTH LOGIN\r\n"), ["538 5.7.11"]);
    assert!(!h.events.iter().any(|e| e.starts_with("Auth")));
    // unless allowed
    let mut h = Harness::new(SessionConfig {
        auth_mechanisms_without_tls: true,
        ..tls_config()
    });
    h.send("EHLO c.test\r\n");
    assert_eq!(
        h.codes(&format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0secret"))),
        ["235 2.7.0"]
    );
    // during a transaction
    let mut h = Harness::new(SessionConfig {
        require_auth: false,
        ..tls_config()
    });
    h.s.set_tls(true);
    h.send("EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(h.codes("AUTH LOGIN\r\n"), ["503 5.5.1"]);
}

#[test]
fn auth_failures_count_toward_max_errors() {
    let mut h = Harness::new(SessionConfig {
        max_errors: Some(3),
        ..tls_config()
    });
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    for guess in ["a", "b"] {
        let line = format!(
            "AUTH PLAIN {}\r\n",
            b64(format!("\0alice\0{guess}").as_bytes())
        );
        assert_eq!(h.codes(&line), ["535 5.7.8"]);
    }
    let line = format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0c"));
    assert_eq!(h.codes(&line), ["535 5.7.8", "421 4.7.0"]);
    assert!(h.closed);
}

#[test]
fn auth_line_limits() {
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\n");
    // RFC 4954 §4: a 12288-octet AUTH line is fine (a long wrong password)
    let mut raw = b"\0alice\0".to_vec();
    raw.resize(9000, b'p');
    let line = format!("AUTH PLAIN {}\r\n", b64(&raw));
    assert!(line.len() <= 12288 && line.len() > 512);
    assert_eq!(h.codes(&line), ["535 5.7.8"]);
    // so is a response line, even in pieces
    h.send("AUTH PLAIN\r\n");
    let resp = format!("{}\r\n", b64(&raw));
    let (a, b) = resp.split_at(5000);
    assert!(h.send(a).is_empty());
    assert_eq!(h.codes(b), ["535 5.7.8"]);
    // longer is refused, and the session goes on
    let long = format!("AUTH PLAIN {}\r\n", "QUFB".repeat(3100));
    assert_eq!(h.codes(&long), ["500 5.5.2"]);
    h.send("AUTH LOGIN\r\n");
    assert!(h.send(&"QUFB".repeat(3100)).is_empty());
    assert_eq!(h.codes("\r\n"), ["500 5.5.2"]);
    assert_eq!(h.codes("NOOP\r\n"), ["250 2.0.0"]);
    // other commands keep the 512 limit
    assert_eq!(
        h.codes(&format!("NOOP {}\r\n", "x".repeat(600))),
        ["500 5.5.2"]
    );
}

#[test]
fn password_is_never_shown() {
    let p = Password::new(b"hunter2".to_vec());
    assert!(!format!("{p:?}").contains("hunter2"));
    let e = Event::Auth {
        mechanism: AuthMechanism::Plain,
        login: "alice".into(),
        password: p,
    };
    assert!(!format!("{e:?}").contains("hunter2"));
}

#[test]
fn eof_during_auth_is_no_message_abort() {
    let mut h = Harness::new(tls_config());
    h.s.set_tls(true);
    h.send("EHLO c.test\r\nAUTH LOGIN\r\n");
    assert_eq!(h.s.timeout_kind(), TimeoutKind::Command);
    assert!(h.s.is_idle());
    h.s.handle_eof();
    h.drain();
    assert!(h.closed);
    assert!(!h.events.iter().any(|e| e.starts_with("MessageAborted")));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: pseudo-random bytes biased to SMTP tokens.
    let tokens: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b.c>\r\n",
        b"RCPT TO:<d@e.f>\r\n",
        b"DATA\r\n",
        b"BDAT 3\r\n",
        b"BDAT 2 LAST\r\n",
        b".\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b".",
        b"RSET\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH LOGIN YWxpY2U=\r\n",
        b"AGFsaWNlAHNlY3JldA==\r\n",
        b"*\r\n",
        b"\xff",
        b"x",
    ];
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    for _ in 0..300 {
        let mut h = Harness::new(SessionConfig {
            max_errors: Some(50),
            ..tls_config()
        });
        for _ in 0..60 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let t = tokens[(seed % tokens.len() as u64) as usize];
            h.send_bytes(t);
            if std::mem::take(&mut h.starttls) {
                h.s.tls_started();
                h.drain();
            }
        }
        h.s.handle_eof();
        h.drain();
    }
}

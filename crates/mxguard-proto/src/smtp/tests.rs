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
}

impl Harness {
    fn new(cfg: SessionConfig) -> Harness {
        let greeting = Reply::parse("220 mx.example.test ESMTP mxguard").unwrap();
        let mut h = Harness {
            s: Session::new(Arc::new(cfg), greeting),
            message: Vec::new(),
            events: Vec::new(),
            closed: false,
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
        b"\xff",
        b"x",
    ];
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    for _ in 0..300 {
        let mut h = Harness::new(SessionConfig {
            max_errors: Some(50),
            ..config()
        });
        for _ in 0..60 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let t = tokens[(seed % tokens.len() as u64) as usize];
            h.send_bytes(t);
        }
        h.s.handle_eof();
        h.drain();
    }
}

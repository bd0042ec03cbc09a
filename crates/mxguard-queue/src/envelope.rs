//! The envelope at the head of each queue file, in a small line format:
//!
//! ```text
//! MXGUARD-QUEUE 1
//! id 19A2B3C4D5E6F0001
//! time 1795000000
//! from <sender@example.net>
//! client 192.0.2.1
//! helo mail.example.net
//! filter 2.5            (optional: after_accept programs still to run)
//! rcpt <joe@example.test> local joe@example.test
//! rcpt <ann@remote.test> remote - pending 2 1795000900 451 4.7.1 try later
//! (empty line, then the message exactly as it will be delivered)
//! ```
//!
//! A recipient line may carry its delivery state after the target: status,
//! attempts, next attempt (Unix seconds) and the last error to the end of
//! the line. Without them the recipient is pending with no attempt yet.
//!
//! # Security
//! Values come from the SMTP client (HELO name, addresses). They cannot
//! hold CR or LF (the session refuses such commands), and serialization
//! replaces any control character anyway, so a value can never forge a
//! line. Parsing a damaged file gives an error, never a panic.

use std::fmt::Write as _;

const MAGIC: &str = "MXGUARD-QUEUE 1";

/// Where a recipient's copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The Maildir of this account (its canonical address).
    Local { mailbox: String },
    /// Another server, found by route, smarthost or MX at delivery time.
    Remote,
}

/// Where a recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcptStatus {
    /// Not yet delivered; will be tried (again).
    Pending,
    Delivered,
    /// Failed for good; the sender has been (or will be) told.
    Failed,
}

impl RcptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Delivered => "delivered",
            RcptStatus::Failed => "failed",
        }
    }
}

/// One recipient of a queued message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in RCPT TO (without brackets).
    pub address: String,
    pub target: Target,
    pub status: RcptStatus,
    /// Delivery attempts that failed temporarily so far.
    pub attempts: u32,
    /// When to try next (Unix seconds); 0 = as soon as possible.
    pub next_attempt: u64,
    /// The last failure (a remote reply or a local error), for logs, the
    /// queue listing and bounces.
    pub last_error: String,
}

impl Recipient {
    /// A recipient not yet tried.
    pub fn new(address: String, target: Target) -> Recipient {
        Recipient {
            address,
            target,
            status: RcptStatus::Pending,
            attempts: 0,
            next_attempt: 0,
            last_error: String::new(),
        }
    }
}

/// The envelope of a queued message.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub id: String,
    /// Seconds since the Unix epoch when the message was accepted.
    pub received: u64,
    /// The reverse path without brackets; empty for `<>`.
    pub sender: String,
    pub client_ip: String,
    pub helo: String,
    pub recipients: Vec<Recipient>,
    /// A delay notice has been sent to the sender.
    pub warned: bool,
    /// The `after_accept` filter programs have yet to judge the message
    /// (before any delivery); the message score at acceptance.
    pub filter_score: Option<f64>,
}

/// Why an envelope could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("damaged queue envelope: {0}")]
pub struct EnvelopeError(pub String);

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn clean_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                '?'
            } else {
                c
            }
        })
        .collect()
}

impl Envelope {
    /// The header bytes, ending with the empty line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "id {}", clean_token(&self.id));
        let _ = writeln!(s, "time {}", self.received);
        let _ = writeln!(s, "from <{}>", clean_token(&self.sender));
        let _ = writeln!(s, "client {}", clean_token(&self.client_ip));
        let _ = writeln!(s, "helo {}", clean(&self.helo));
        if self.warned {
            let _ = writeln!(s, "warned 1");
        }
        if let Some(score) = self.filter_score.filter(|s| s.is_finite()) {
            let _ = writeln!(s, "filter {score}");
        }
        for r in &self.recipients {
            let (kind, mailbox) = match &r.target {
                Target::Local { mailbox } => ("local", clean_token(mailbox)),
                Target::Remote => ("remote", "-".to_string()),
            };
            let _ = write!(s, "rcpt <{}> {kind} {mailbox}", clean_token(&r.address));
            let fresh = r.status == RcptStatus::Pending
                && r.attempts == 0
                && r.next_attempt == 0
                && r.last_error.is_empty();
            if !fresh {
                let _ = write!(
                    s,
                    " {} {} {} {}",
                    r.status.as_str(),
                    r.attempts,
                    r.next_attempt,
                    clean(&r.last_error)
                );
            }
            s.push('\n');
        }
        s.push('\n');
        s.into_bytes()
    }

    /// Parses the header; returns the envelope and the offset of the message.
    pub fn parse(data: &[u8]) -> Result<(Envelope, usize), EnvelopeError> {
        let err = |m: &str| EnvelopeError(m.to_string());
        let end = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| err("no end of header"))?;
        let head = std::str::from_utf8(&data[..end]).map_err(|_| err("header is not UTF-8"))?;
        let mut lines = head.lines();
        if lines.next() != Some(MAGIC) {
            return Err(err("bad magic line"));
        }
        let mut env = Envelope {
            id: String::new(),
            received: 0,
            sender: String::new(),
            client_ip: String::new(),
            helo: String::new(),
            recipients: Vec::new(),
            warned: false,
            filter_score: None,
        };
        let bracketed = |v: &str| -> Result<String, EnvelopeError> {
            v.strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .map(String::from)
                .ok_or_else(|| err("address without brackets"))
        };
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "id" => env.id = value.to_string(),
                "time" => env.received = value.parse().map_err(|_| err("bad time"))?,
                "from" => env.sender = bracketed(value)?,
                "client" => env.client_ip = value.to_string(),
                "helo" => env.helo = value.to_string(),
                "warned" => env.warned = value == "1",
                "filter" => {
                    env.filter_score = Some(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|s| s.is_finite())
                            .ok_or_else(|| err("bad filter score"))?,
                    )
                }
                "rcpt" => {
                    let mut parts = value.splitn(7, ' ');
                    let address = bracketed(parts.next().unwrap_or(""))?;
                    let target = match (parts.next(), parts.next()) {
                        (Some("local"), Some(mailbox)) => Target::Local {
                            mailbox: mailbox.to_string(),
                        },
                        (Some("remote"), Some(_)) => Target::Remote,
                        _ => return Err(err("bad recipient target")),
                    };
                    let mut r = Recipient::new(address, target);
                    if let Some(status) = parts.next() {
                        r.status = match status {
                            "pending" => RcptStatus::Pending,
                            "delivered" => RcptStatus::Delivered,
                            "failed" => RcptStatus::Failed,
                            _ => return Err(err("bad recipient status")),
                        };
                        r.attempts = parts
                            .next()
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| err("bad attempts"))?;
                        r.next_attempt = parts
                            .next()
                            .and_then(|v| v.parse().ok())
                            .ok_or_else(|| err("bad next attempt"))?;
                        r.last_error = parts.next().unwrap_or("").to_string();
                    }
                    env.recipients.push(r);
                }
                // Unknown keys are skipped so an older mxguard can still
                // deliver what a newer one queued.
                _ => {}
            }
        }
        if env.id.is_empty() || env.recipients.is_empty() {
            return Err(err("missing id or recipients"));
        }
        Ok((env, end + 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let env = Envelope {
            id: "ABC".into(),
            received: 1795000000,
            sender: String::new(),
            client_ip: "192.0.2.1".into(),
            helo: "evil\r\nrcpt <x@y> local x@y".into(),
            recipients: vec![
                Recipient::new(
                    "Joe@example.test".into(),
                    Target::Local {
                        mailbox: "joe@example.test".into(),
                    },
                ),
                Recipient {
                    status: RcptStatus::Pending,
                    attempts: 2,
                    next_attempt: 1795000900,
                    last_error: "451 4.7.1 try later\r\nrcpt <x@y> local x@y".into(),
                    ..Recipient::new("ann@remote.test".into(), Target::Remote)
                },
            ],
            warned: true,
            filter_score: Some(2.5),
        };
        let mut bytes = env.to_bytes();
        bytes.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
        let (back, off) = Envelope::parse(&bytes).unwrap();
        assert_eq!(back.recipients[0], env.recipients[0]);
        assert_eq!(back.recipients[1].attempts, 2);
        assert_eq!(back.recipients[1].next_attempt, 1795000900);
        assert_eq!(
            back.recipients[1].last_error,
            "451 4.7.1 try later??rcpt <x@y> local x@y"
        );
        assert_eq!(back.recipients.len(), 2);
        assert!(back.warned);
        assert_eq!(back.filter_score, Some(2.5));
        assert_eq!(back.sender, "");
        assert!(!back.helo.contains('\n'));
        assert_eq!(&bytes[off..], b"Subject: x\r\n\r\nbody\r\n");
    }

    #[test]
    fn damaged_files_are_errors() {
        for bad in [
            &b""[..],
            b"junk",
            b"MXGUARD-QUEUE 1\nid x\n\n",
            b"MXGUARD-QUEUE 1\ntime x\n\n",
            b"\xff\xfe\n\n",
        ] {
            assert!(Envelope::parse(bad).is_err());
        }
    }
}

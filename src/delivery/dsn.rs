//! Delivery status notifications (RFC 3464 inside RFC 6522
//! multipart/report): the bounce that tells a sender which recipients
//! failed and why, and the one-time delay notice.
//!
//! Built here as a pure function; the tracker queues the result like any
//! other message, from `<>` (RFC 5321 §4.5.5), so a notification is never
//! answered with another one.
//!
//! # Security
//! Diagnostics quote remote servers' replies; they are stripped of control
//! characters and cut to a safe line length, so a reply cannot add header
//! lines or break the MIME structure.

use std::time::SystemTime;

use crate::server::trace::rfc5322_date;

/// Failure or delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Failed,
    Delayed,
}

/// One recipient to report.
pub struct Reported<'a> {
    pub address: &'a str,
    /// The remote reply or local error.
    pub diagnostic: &'a str,
}

/// What the notification is about.
pub struct Notice<'a> {
    pub kind: Kind,
    pub hostname: &'a str,
    /// The original message's queue id and arrival time (Unix seconds).
    pub queue_id: &'a str,
    pub arrival: u64,
    /// The original envelope sender, who receives the notice.
    pub sender: &'a str,
    pub recipients: Vec<Reported<'a>>,
    /// The original message's header section.
    pub original_headers: &'a [u8],
    /// The new message's id (used for Message-ID and the MIME boundary).
    pub notice_id: &'a str,
    pub now: SystemTime,
}

fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// The RFC 3463 status in a reply text (`550 5.1.1 ...` -> `5.1.1`).
fn status_of(diagnostic: &str, kind: Kind) -> String {
    for word in diagnostic.split(|c: char| c.is_whitespace() || c == ';' || c == ',') {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return word.to_string();
        }
    }
    match kind {
        Kind::Failed => "5.0.0".into(),
        Kind::Delayed => "4.0.0".into(),
    }
}

fn diagnostic_code(diagnostic: &str) -> String {
    let d = clean(diagnostic, 900);
    let is_reply = d.len() >= 3 && d.as_bytes()[..3].iter().all(u8::is_ascii_digit);
    if is_reply {
        format!("smtp; {d}")
    } else {
        format!("X-mxguard; {d}")
    }
}

/// The header section of a message (up to the empty line, at most 64 KiB).
pub fn header_section(message: &[u8]) -> &[u8] {
    let limit = message.len().min(64 * 1024);
    let head = &message[..limit];
    match head.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => &head[..p + 2],
        None => head,
    }
}

/// Builds the notification message.
pub fn build(n: &Notice<'_>) -> Vec<u8> {
    let boundary = format!("{}/{}", n.notice_id, n.hostname);
    let (subject, action, intro) = match n.kind {
        Kind::Failed => (
            "Undelivered Mail Returned to Sender",
            "failed",
            "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. The reasons are below.",
        ),
        Kind::Delayed => (
            "Delayed Mail (still being retried)",
            "delayed",
            "Your message could not be delivered yet to one or more\r\nrecipients. It will be tried again; you need not send it again.",
        ),
    };
    let mut m = String::with_capacity(2048 + n.original_headers.len());
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>\r\n",
        n.hostname
    ));
    m.push_str(&format!("To: <{}>\r\n", clean(n.sender, 300)));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(n.now)));
    m.push_str(&format!("Message-ID: <{}@{}>\r\n", n.notice_id, n.hostname));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    m.push_str(&format!(
        "This is the mail system at host {}.\r\n\r\n{intro}\r\n\r\n",
        n.hostname
    ));
    for r in &n.recipients {
        m.push_str(&format!(
            "<{}>: {}\r\n",
            clean(r.address, 300),
            clean(r.diagnostic, 900)
        ));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    m.push_str(&format!("Reporting-MTA: dns; {}\r\n", n.hostname));
    m.push_str(&format!("X-Mxguard-Queue-ID: {}\r\n", n.queue_id));
    let arrival = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(n.arrival);
    m.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(arrival)));
    for r in &n.recipients {
        m.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\n",
            clean(r.address, 300)
        ));
        m.push_str(&format!("Action: {action}\r\n"));
        m.push_str(&format!("Status: {}\r\n", status_of(r.diagnostic, n.kind)));
        m.push_str(&format!(
            "Diagnostic-Code: {}\r\n",
            diagnostic_code(r.diagnostic)
        ));
    }
    m.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(n.original_headers);
    if !n.original_headers.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_report() {
        let msg = b"Received: x\r\nSubject: hello\r\n\r\nbody\r\n";
        let out = build(&Notice {
            kind: Kind::Failed,
            hostname: "mx.example.test",
            queue_id: "Q1",
            arrival: 0,
            sender: "joe@example.test",
            recipients: vec![Reported {
                address: "x@remote.test",
                diagnostic: "550 5.1.1 <x@remote.test>: no such user\r\nInjected: yes",
            }],
            original_headers: header_section(msg),
            notice_id: "N1",
            now: SystemTime::UNIX_EPOCH,
        });
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains(
            "Diagnostic-Code: smtp; 550 5.1.1 <x@remote.test>: no such user  Injected: yes\r\n"
        ));
        assert!(!text.contains("\r\nInjected: yes"));
        assert!(text.contains("Subject: hello\r\n"));
        assert!(!text.contains("body"));
        assert!(text.contains("To: <joe@example.test>"));
        assert!(text.ends_with("--N1/mx.example.test--\r\n"));
        assert!(text.lines().all(|l| l.len() <= 998));
    }

    #[test]
    fn statuses() {
        assert_eq!(status_of("451 4.7.1 later", Kind::Delayed), "4.7.1");
        assert_eq!(status_of("connection refused", Kind::Failed), "5.0.0");
        assert_eq!(
            status_of("gave up; last error: 421 4.4.2 x", Kind::Failed),
            "4.4.2"
        );
        assert_eq!(
            diagnostic_code("connection refused"),
            "X-mxguard; connection refused"
        );
    }
}

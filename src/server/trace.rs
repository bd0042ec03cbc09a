//! Trace headers and banner text: the Received: header of RFC 5321 §4.4,
//! Message-ID and Date for submissions (RFC 6409 §8), and RFC 5322 dates.
//!
//! # Security
//! The HELO name and addresses come from the client; they hold no CR or LF
//! (the SMTP session refuses such lines) and are further stripped of
//! control characters here, so they cannot end the header early.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// An RFC 5322 date-time in UTC: `Sun, 22 Nov 2026 03:12:07 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MO[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// What the Received: header says about one transaction.
pub struct ReceivedFacts<'a> {
    pub helo: &'a str,
    pub client_ip: IpAddr,
    /// Reverse DNS name of the client, when known.
    pub client_name: Option<&'a str>,
    pub hide_client_ip: bool,
    pub hostname: &'a str,
    /// "SMTP" after HELO, "ESMTP" after EHLO (RFC 3848).
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// Named in a `for` clause only when the message has one recipient.
    pub single_recipient: Option<&'a str>,
    pub time: SystemTime,
}

/// The Received: header, folded, with its CRLF.
pub fn received_header(f: &ReceivedFacts<'_>) -> String {
    let mut from = format!("from {}", clean(f.helo));
    match (f.client_name, f.hide_client_ip) {
        (Some(name), false) => from.push_str(&format!(" ({} [{}])", clean(name), f.client_ip)),
        (Some(name), true) => from.push_str(&format!(" ({})", clean(name))),
        (None, false) => from.push_str(&format!(" ([{}])", f.client_ip)),
        (None, true) => {}
    }
    let mut h = format!(
        "Received: {from}\r\n\tby {} (mxguard) with {} id {}",
        f.hostname, f.protocol, f.queue_id
    );
    if let Some(r) = f.single_recipient {
        h.push_str(&format!("\r\n\tfor <{}>", clean(r)));
    }
    h.push_str(&format!("; {}\r\n", rfc5322_date(f.time)));
    h
}

/// Which of Message-ID and Date the header section lacks.
pub fn missing_origin_headers(message: &[u8]) -> (bool, bool) {
    let end = find_header_end(message);
    let mut has_id = false;
    let mut has_date = false;
    for line in message[..end].split(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or(&[]);
        if name.eq_ignore_ascii_case(b"message-id") {
            has_id = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
    }
    (!has_id, !has_date)
}

/// Offset of the empty line ending the header section (or the length).
fn find_header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len())
}

/// The banner text: `server.banner` with %LOCALDOMAIN% and %TIME%.
pub fn banner_text(template: Option<&str>, hostname: &str, now: SystemTime) -> String {
    match template {
        None => format!("{hostname} ESMTP mxguard"),
        Some(t) => t
            .replace("%LOCALDOMAIN%", hostname)
            .replace("%TIME%", &rfc5322_date(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_317_127);
        assert_eq!(rfc5322_date(t), "Sun, 22 Nov 2026 03:12:07 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn received() {
        let mut f = ReceivedFacts {
            helo: "client.test",
            client_ip: "192.0.2.1".parse().unwrap(),
            client_name: None,
            hide_client_ip: false,
            hostname: "mx.example.test",
            protocol: "ESMTP",
            queue_id: "Q1",
            single_recipient: Some("joe@example.test"),
            time: UNIX_EPOCH,
        };
        assert_eq!(
            received_header(&f),
            "Received: from client.test ([192.0.2.1])\r\n\tby mx.example.test (mxguard) with ESMTP id Q1\r\n\tfor <joe@example.test>; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        f.hide_client_ip = true;
        f.single_recipient = None;
        let h = received_header(&f);
        assert!(!h.contains("192.0.2.1"));
        assert!(h.starts_with("Received: from client.test\r\n\tby"));
    }

    #[test]
    fn origin_headers() {
        assert_eq!(
            missing_origin_headers(b"Subject: x\r\n\r\nDate: in body\r\n"),
            (true, true)
        );
        assert_eq!(
            missing_origin_headers(b"Message-ID: <a@b>\r\nDATE: x\r\n\r\nbody"),
            (false, false)
        );
        assert_eq!(
            missing_origin_headers(b"\r\nMessage-ID: <a@b>\r\n"),
            (true, true)
        );
    }

    #[test]
    fn banner() {
        assert_eq!(
            banner_text(None, "mx.test", UNIX_EPOCH),
            "mx.test ESMTP mxguard"
        );
        assert_eq!(
            banner_text(Some("%LOCALDOMAIN% ready %TIME%"), "mx.test", UNIX_EPOCH),
            "mx.test ready Thu, 01 Jan 1970 00:00:00 +0000"
        );
    }
}

//! Micro-benchmark of the end-of-DATA content rules: the cost of judging
//! one 50 KB MIME message (`mxguard_policy::content::judge_content`) with
//! 200 regex rules, as the server does it off the executor.
//!
//!     cargo run --release --example filter_cost            # 200 rules
//!     cargo run --release --example filter_cost -- 1000    # another count
//!
//! The rules (deterministic): a quarter on headers (Subject, From, To,
//! X-Mailer), half on the decoded body, the rest on the envelope and the
//! HELO name; each a regex with an alternation of a few words and a
//! `(?i)` flag, none of which fires, so every rule is evaluated (the
//! worst case: a message that passes). The message: multipart/alternative
//! with a quoted-printable text/plain part and a base64 text/html part,
//! plus a base64 application/pdf attachment, 50 KB in all, and an RFC 2047
//! encoded Subject. Each figure is the best of 5 passes of 200 messages.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use mxguard_config::Config;
use mxguard_policy::content::{MessageFacts, judge_content};

const WORDS: [&str; 16] = [
    "viagra",
    "lottery",
    "winner",
    "bitcoin",
    "prince",
    "inheritance",
    "casino",
    "replica",
    "pharmacy",
    "mortgage",
    "crypto",
    "urgent",
    "diploma",
    "weight",
    "loan",
    "bonus",
];

fn config(rules: usize) -> Config {
    let mut text = String::from(
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
         [domains]\nlocal = [\"example.test\"]\n[[account]]\naddress = \"joe@example.test\"\n",
    );
    for i in 0..rules {
        let w = |k: usize| WORDS[(i * 7 + k * 3) % WORDS.len()];
        let pattern = format!("(?i)\\b({}|{}|{}){}\\b", w(0), w(1), w(2), i);
        let target = match i % 8 {
            0 => "header = \"Subject\"".to_string(),
            1 => "on = \"from\"".to_string(),
            2..=5 => "on = \"body\"".to_string(),
            6 => "on = \"envelope_from\"".to_string(),
            _ => "on = \"helo\"".to_string(),
        };
        text.push_str(&format!(
            "[[filter]]\nname = \"RULE_{i}\"\n{target}\nmatches = '{pattern}'\nscore = 0.5\n"
        ));
    }
    match Config::parse(&text, Path::new("bench.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

/// About 50 KB: text and HTML alternatives and an attachment.
fn message() -> Vec<u8> {
    use std::fmt::Write as _;
    let mut plain = String::new();
    let mut html = String::from("<html><body>");
    for i in 0..175 {
        let _ = writeln!(
            plain,
            "Paragraph {i}: the quarterly report is attached; caf=C3=A9 meeting moved to Thursday."
        );
        let _ = write!(
            html,
            "<p class=\"x\">Paragraph {i}: the <b>quarterly</b> report is attached.</p>"
        );
    }
    html.push_str("</body></html>");
    let b64 = |data: &[u8]| {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (n, chunk) in data.chunks(3).enumerate() {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for k in 0..4 {
                if k <= chunk.len() {
                    out.push(T[((v >> (18 - 6 * k)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
            if n % 19 == 18 {
                out.push_str("\r\n");
            }
        }
        out
    };
    let attachment: Vec<u8> = (0..12_500u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut m = String::new();
    m.push_str("From: \"Report Bot\" <reports@client.test>\r\nTo: <joe@example.test>\r\n");
    m.push_str("Subject: =?UTF-8?B?UXVhcnRlcmx5IHJlcG9ydCDigJQgUTM=?=\r\n");
    m.push_str("Date: Sun, 22 Nov 2026 07:00:00 +0000\r\nMessage-ID: <bench@client.test>\r\n");
    m.push_str("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n");
    m.push_str("--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n");
    m.push_str("--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    m.push_str(&plain.replace('\n', "\r\n"));
    m.push_str("\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&b64(html.as_bytes()));
    m.push_str("\r\n--alt--\r\n--outer\r\nContent-Type: application/pdf; name=\"q3.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.push_str(&b64(&attachment));
    m.push_str("\r\n--outer--\r\n");
    m.into_bytes()
}

fn main() {
    let rules: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let t = Instant::now();
    let cfg = config(rules);
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let msg = message();
    let ip: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([192, 0, 2, 1]));
    let recipients = vec!["joe@example.test".to_string()];
    let facts = MessageFacts {
        sender: "reports@client.test",
        recipients: &recipients,
        client_ip: ip,
        helo: "mail.client.test",
        connect_score: 0.0,
        connect_reasons: &[],
    };
    let v = judge_content(&cfg, &msg, &facts);
    assert!(v.fired.is_empty(), "no rule should fire: {:?}", v.fired);
    let n = 200;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(judge_content(&cfg, black_box(&msg), &facts));
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    // The parse alone: a configuration with one body rule.
    let one = config(1);
    let mut parse = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(judge_content(&one, black_box(&msg), &facts));
        }
        parse = parse.min(t.elapsed().as_secs_f64() / n as f64);
    }
    println!(
        "message: {} bytes; {rules} rules loaded (regexes compiled) in {load_ms:.1} ms",
        msg.len()
    );
    println!("judge one message, {rules} rules: {:.0} µs", best * 1e6);
    println!(
        "judge one message, 1 rule (mostly the MIME parse): {:.0} µs",
        parse * 1e6
    );
    println!("messages/s on one core at {rules} rules: {:.0}", 1.0 / best);
}

//! End-to-end tests of the content rules (`[[filter]]`) and the message
//! score (`[scoring]`): the real binary over loopback, messages judged at
//! the end of DATA.
//!
//! What the tests assume of the log: a refused message is `DATA refused
//! (filter)` or `DATA refused (scoring)` with `check="filter"` or
//! `check="scoring"`; a discarded one is `message discarded (filter
//! RULE)`; a redirected one `message redirected (filter RULE)`.
//!
//! Clients connect from distinct loopback addresses where it matters;
//! every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use support::net::client_from;
use support::{
    Client, ConfigBuilder, Server, all_files_below, dot_stuff, files_in, find_message, messages_in,
    read, send_marker_and_wait, wait_for_files,
};

const LOG_WAIT: Duration = Duration::from_secs(5);
const DELIVERY: Duration = Duration::from_secs(15);

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-filters")
        .tempdir()
        .expect("a temporary directory")
}

/// MAIL, RCPT, DATA and `message`; returns the final reply.
fn send(c: &mut Client, to: &[&str], message: &str) -> support::Reply {
    c.send("MAIL FROM:<sender@client.test>").expect("250");
    for t in to {
        c.send(&format!("RCPT TO:<{t}>")).expect("250");
    }
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(message));
    c.send_raw(b".\r\n");
    c.read_reply()
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: <sender@client.test>\r\nTo: <joe@example.test>\r\nSubject: {subject}\r\nMessage-ID: <{}@client.test>\r\n\r\n{body}\r\n",
        subject.len()
    )
}

/// The header section of a delivered message, as lines (continuations
/// joined).
fn header_names(m: &str) -> Vec<String> {
    let head = m.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn rules_reject_discard_and_redirect() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "NO_CASINO"
on = "subject"
matches = '(?i)casino'
action = "reject"
reply = "554 5.7.1 No casinos here"

[[filter]]
name = "DROP_NEWSLETTER"
on = "subject"
matches = 'weekly newsletter'
action = "discard"

[[filter]]
name = "TO_POSTMASTER"
on = "body"
matches = 'for the postmaster'
action = "redirect:postmaster@example.test"

[[filter]]
name = "NEVER"
on = "helo"
matches = '^never\.test$'
action = "reject"
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");

    // reject: the reply of the rule, logged with the rule's name.
    let r = send(
        &mut c,
        &["joe@example.test"],
        &message("Best CASINO deals", "x"),
    );
    assert_eq!(r.first(), "554 5.7.1 No casinos here");
    let line = server
        .logs
        .wait_for(&["DATA refused (filter)", "check=\"filter\""], LOG_WAIT);
    assert!(line.contains("NO_CASINO"), "{line}");

    // discard: a 250 with a queue id, delivered nowhere.
    let r = send(
        &mut c,
        &["joe@example.test"],
        &message("Your weekly newsletter", "news"),
    );
    assert!(r.first().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    server.logs.wait_for(
        &[
            "message discarded (filter DROP_NEWSLETTER)",
            "check=\"filter\"",
        ],
        LOG_WAIT,
    );

    // redirect: every recipient replaced by postmaster (a local account).
    let r = send(
        &mut c,
        &["joe@example.test", "joseph@example.test"],
        &message("Redirected", "This one is for the postmaster."),
    );
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    server.logs.wait_for(
        &[
            "message redirected (filter TO_POSTMASTER)",
            "check=\"filter\"",
        ],
        LOG_WAIT,
    );

    // An ordinary message goes through, and the session goes on after a refusal.
    let r = send(&mut c, &["joe@example.test"], &message("Lunch", "at noon"));
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    c.quit();

    // Once the marker is in postmaster's Maildir, everything before it was delivered.
    send_marker_and_wait(&server, "marker-filters-1");
    let joe = messages_in(&server.new_dir("joe@example.test"));
    assert_eq!(
        joe.len(),
        1,
        "only the ordinary message reaches joe: {joe:?}"
    );
    assert!(joe[0].contains("Subject: Lunch"));
    let redirected = find_message(
        &server.new_dir("postmaster@example.test"),
        "Subject: Redirected",
    );
    assert_eq!(redirected.len(), 1, "one copy for the new recipient");
    for m in messages_in(&server.new_dir("postmaster@example.test")) {
        assert!(!m.contains("newsletter") && !m.contains("CASINO"), "{m}");
    }
}

#[test]
fn header_actions_and_scores_tag_the_message() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "EMPTY_TO"
header = "To"
matches = '^\s*$'
score = 3.0

[[filter]]
name = "NO_DATE"
header = "Date"
missing = true
score = 1.5
action = "header:X-Checked: no date"

[[filter]]
name = "FRIEND"
on = "envelope_from"
matches = '^friend@'
score = -10

[scoring]
tag_above = 4.0
reject_above = 20
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.3", server.mx);
    c.ehlo("client.test").expect("250");
    // EMPTY_TO + NO_DATE = 4.5: above tag_above.
    let spammy = "From: <sender@client.test>\r\nTo: \r\nSubject: tagged\r\n\r\nbody\r\n";
    let r = send(&mut c, &["joe@example.test"], spammy);
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    // NO_DATE only: 1.5, not tagged.
    let plain =
        "From: <sender@client.test>\r\nTo: <joe@example.test>\r\nSubject: untagged\r\n\r\nbody\r\n";
    let r = send(&mut c, &["joe@example.test"], plain);
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    c.quit();

    let files = wait_for_files(&server.new_dir("joe@example.test"), 2, DELIVERY);
    assert_eq!(files.len(), 2);
    let tagged = find_message(&server.new_dir("joe@example.test"), "Subject: tagged");
    assert_eq!(tagged.len(), 1);
    let m = &tagged[0];
    assert_eq!(
        header_names(m)[..5],
        [
            "Received",
            "X-Checked",
            "X-Spam-Flag",
            "X-Spam-Score",
            "X-Spam-Status"
        ],
        "added headers right after our Received:\n{m}"
    );
    assert!(m.contains("\r\nX-Checked: no date\r\n"), "{m}");
    assert!(m.contains("\r\nX-Spam-Flag: YES\r\n"), "{m}");
    assert!(m.contains("\r\nX-Spam-Score: 4.5\r\n"), "{m}");
    assert!(
        m.contains(
            "\r\nX-Spam-Status: Yes, score=4.5 tag=4.0 reject=20.0 tests=EMPTY_TO,NO_DATE\r\n"
        ),
        "{m}"
    );
    // The client's content follows, untouched.
    assert!(m.ends_with(spammy), "{m}");

    let untagged = find_message(&server.new_dir("joe@example.test"), "Subject: untagged");
    let m = &untagged[0];
    assert!(!m.contains("X-Spam-Flag"), "{m}");
    assert!(
        m.contains("\r\nX-Spam-Status: No, score=1.5 tag=4.0 reject=20.0 tests=NO_DATE\r\n"),
        "{m}"
    );
    server.logs.wait_for(
        &["message scored", "check=\"filter\"", "EMPTY_TO,NO_DATE"],
        LOG_WAIT,
    );
}

#[test]
fn encoded_subjects_and_bodies_are_caught() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "PILLS"
on = "body"
matches = '(?i)cheap\s+pills'
action = "reject"

[[filter]]
name = "LOTTERY"
on = "subject"
matches = 'You won the lottery'
action = "reject"
reply = "550 5.7.1 No lottery"
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.4", server.mx);
    c.ehlo("client.test").expect("250");

    // "Buy cheap pills now" in base64, in the second part of a multipart.
    let b64 = "From: <sender@client.test>\r\nTo: <joe@example.test>\r\nSubject: hello\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n\
        --sep\r\nContent-Type: text/plain\r\n\r\nHi there\r\n\
        --sep\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        QnV5IGNoZWFwIHBpbGxzIG5vdw==\r\n--sep--\r\n";
    let r = send(&mut c, &["joe@example.test"], b64);
    assert_eq!(r.first(), "550 5.7.1 Message rejected");
    server
        .logs
        .wait_for(&["DATA refused (filter)", "PILLS"], LOG_WAIT);

    // The same phrase in quoted-printable HTML.
    let qp = "From: <sender@client.test>\r\nTo: <joe@example.test>\r\nSubject: hello\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
        <p>Buy <b>che=\r\nap</b>=20pills</p>\r\n";
    let r = send(&mut c, &["joe@example.test"], qp);
    assert_eq!(r.first(), "550 5.7.1 Message rejected");

    // "You won the lottery" as an RFC 2047 encoded word.
    let subject = "From: <sender@client.test>\r\nTo: <joe@example.test>\r\n\
        Subject: =?UTF-8?B?WW91IHdvbiB0aGUgbG90dGVyeQ==?=\r\n\r\nclaim it\r\n";
    let r = send(&mut c, &["joe@example.test"], subject);
    assert_eq!(r.first(), "550 5.7.1 No lottery");
    server
        .logs
        .wait_for(&["DATA refused (filter)", "LOTTERY"], LOG_WAIT);
    c.quit();

    send_marker_and_wait(&server, "marker-filters-2");
    assert!(
        files_in(&server.new_dir("joe@example.test")).is_empty(),
        "nothing reaches joe"
    );
}

#[test]
fn reject_above_refuses_by_score_whitelist_is_exempt() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[access]
whitelist = ["127.0.0.6"]

[[filter]]
name = "BIG_MONEY"
on = "body"
matches = '(?i)million dollars'
score = 6

[[filter]]
name = "URGENT"
on = "subject"
matches = '(?i)urgent'
score = 5.5

[scoring]
reject_above = 10
headers = false
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.5", server.mx);
    c.ehlo("client.test").expect("250");
    let scam = message("URGENT reply needed", "Ten million dollars await you.");
    let r = send(&mut c, &["joe@example.test"], &scam);
    assert_eq!(r.first(), "550 5.7.1 Message rejected as spam (score 11.5)");
    let line = server
        .logs
        .wait_for(&["DATA refused (scoring)", "check=\"scoring\""], LOG_WAIT);
    assert!(line.contains("BIG_MONEY,URGENT"), "{line}");
    // One rule alone is below: tagged (default tag_above 5), no other header.
    let r = send(
        &mut c,
        &["joe@example.test"],
        &message("hello", "a million dollars"),
    );
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    c.quit();

    // A whitelisted client is neither filtered nor scored.
    let mut w = client_from("127.0.0.6", server.mx);
    w.ehlo("friend.test").expect("250");
    let r = send(
        &mut w,
        &["joe@example.test"],
        &message("URGENT: whitelisted", "million dollars"),
    );
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    w.quit();

    let files = wait_for_files(&server.new_dir("joe@example.test"), 2, DELIVERY);
    assert_eq!(files.len(), 2);
    let one = find_message(&server.new_dir("joe@example.test"), "Subject: hello");
    assert!(one[0].contains("\r\nX-Spam-Flag: YES\r\n"), "{}", one[0]);
    assert!(
        !one[0].contains("X-Spam-Status"),
        "headers = false: {}",
        one[0]
    );
    let white = find_message(&server.new_dir("joe@example.test"), "whitelisted");
    assert!(!white[0].contains("X-Spam"), "{}", white[0]);
}

#[test]
fn a_large_message_in_a_spool_file_gets_its_headers() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "BIG"
on = "body"
matches = 'line 00000001 '
action = "header:X-Big: yes"
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let mut big =
        "From: <big@client.test>\r\nSubject: big\r\nMessage-ID: <big@client.test>\r\n\r\n"
            .to_string();
    let mut i = 0u64;
    while big.len() < 3 * 1024 * 1024 {
        big.push_str(&format!(
            "line {i:08} abcdefghijklmnopqrstuvwxyz0123456789\r\n"
        ));
        i += 1;
    }
    let mut c = client_from("127.0.0.7", server.mx);
    c.ehlo("big.client.test").expect("250");
    let r = send(&mut c, &["joe@example.test"], &big);
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    c.quit();
    let f = wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
    let got = read(&f[0]);
    let text = String::from_utf8_lossy(&got);
    assert_eq!(
        header_names(&text)[..5],
        ["Received", "X-Big", "X-Spam-Score", "X-Spam-Status", "From"]
    );
    assert!(
        got.ends_with(big.as_bytes()),
        "the client's content, byte for byte"
    );
    // No spool file is left behind.
    let spool = server.data_dir.join("queue/spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_files_below(&spool).is_empty() {
        assert!(
            Instant::now() < deadline,
            "spool files left: {:?}",
            all_files_below(&spool)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn envelope_rules_tag_without_reading_the_message() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "ODD_HELO"
on = "helo"
matches = '^odd\.'
score = 2
action = "header:X-Odd-Helo: yes"

[[filter]]
name = "JOSEPH"
on = "envelope_to"
matches = '^joseph@'
action = "redirect:postmaster@example.test"
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.8", server.mx);
    c.ehlo("odd.client.test").expect("250");
    let r = send(&mut c, &["joseph@example.test"], &message("envelope", "x"));
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    c.quit();
    let f = wait_for_files(&server.new_dir("postmaster@example.test"), 1, DELIVERY);
    let m = String::from_utf8_lossy(&read(&f[0])).into_owned();
    assert_eq!(
        header_names(&m)[..5],
        [
            "Received",
            "X-Odd-Helo",
            "X-Spam-Score",
            "X-Spam-Status",
            "From"
        ],
        "{m}"
    );
    assert!(
        m.contains("X-Spam-Status: No, score=2.0 tag=5.0 reject=10.0 tests=ODD_HELO,JOSEPH\r\n"),
        "{m}"
    );
    server.logs.wait_for(
        &[
            "message redirected (filter JOSEPH)",
            "to=postmaster@example.test",
        ],
        LOG_WAIT,
    );
}

#[test]
fn a_clients_own_spam_headers_are_removed() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "NOTE"
on = "body"
matches = 'note'
score = 6
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    let forged = "From: <sender@client.test>\r\nX-Spam-Status: No, score=-20.0\r\n\ttests=TRUSTED\r\nX-Spam-Flag: NO\r\nSubject: forged\r\nX-Spam-Score: -20\r\nMessage-ID: <forged@client.test>\r\n\r\na note\r\n";
    // The same, over 1 MiB: spooled to a file, which is rewritten.
    let mut big = forged.replace("Subject: forged", "Subject: forged-big");
    while big.len() < 2 * 1024 * 1024 {
        big.push_str("filler line of a large note with forged spam headers\r\n");
    }
    let mut c = client_from("127.0.0.8", server.mx);
    c.ehlo("client.test").expect("250");
    for m in [forged, big.as_str()] {
        let r = send(&mut c, &["joe@example.test"], m);
        assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    }
    c.quit();
    let joe = server.new_dir("joe@example.test");
    wait_for_files(&joe, 2, DELIVERY);
    for subject in ["Subject: forged\r\n", "Subject: forged-big\r\n"] {
        let m = &find_message(&joe, subject)[0];
        let names = header_names(m);
        assert_eq!(
            names[..6],
            [
                "Received",
                "X-Spam-Flag",
                "X-Spam-Score",
                "X-Spam-Status",
                "From",
                "Subject"
            ],
            "{m:.600}"
        );
        assert_eq!(names.iter().filter(|n| n.starts_with("X-Spam")).count(), 3);
        assert!(m.contains("X-Spam-Flag: YES\r\n"), "{m:.600}");
        assert!(!m.contains("TRUSTED") && !m.contains("-20"), "{m:.600}");
    }
}

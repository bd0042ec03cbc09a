//! Bad input over a real socket: every case gets a clear reply, the session
//! goes on (a NOOP still gets 250), and nothing bad is delivered. Stalled
//! clients are cut off by the timeouts.

mod support;

use std::time::{Duration, Instant};

use support::*;

const DELIVERY: Duration = Duration::from_secs(10);

fn start() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    (tmp, server)
}

#[test]
fn command_line_over_512_octets_is_refused_and_session_goes_on() {
    let (_tmp, server) = start();
    let mut c = server.client();
    c.ehlo("long.example.net");
    // 513 octets with CRLF.
    let line = format!("NOOP {}", "x".repeat(506));
    assert_eq!(line.len() + 2, 513);
    c.send(&line).expect("500 5.5.2");
    // Much longer than any buffer, still one reply.
    let line = format!("MAIL FROM:<{}@client.test>", "a".repeat(100_000));
    c.send(&line).expect("500 5.5.2");
    c.send("NOOP").expect("250 2.0.0");
    // Exactly 512 octets is allowed.
    let line = format!("NOOP {}", "x".repeat(505));
    assert_eq!(line.len() + 2, 512);
    c.send(&line).expect("250");
    c.send("MAIL FROM:<a@b.test>").expect("250 2.1.0");
    c.quit();
}

#[test]
fn bare_lf_command_is_refused_and_session_goes_on() {
    let (_tmp, server) = start();
    let mut c = server.client();
    c.ehlo("lf.example.net");
    c.send_raw(b"NOOP\n");
    c.read_reply().expect("500 5.5.2");
    c.send_raw(b"NOOP\rNOOP\r\n");
    c.read_reply().expect("500 5.5.2");
    c.send("NOOP").expect("250 2.0.0");
    c.quit();
}

#[test]
fn nul_byte_in_command_is_refused_and_session_goes_on() {
    let (_tmp, server) = start();
    let mut c = server.client();
    c.ehlo("nul.example.net");
    c.send_raw(b"NO\0OP\r\n");
    c.read_reply().expect("500 5.5.2");
    c.send_raw(b"MAIL FROM:<a\0@b.test>\r\n");
    c.read_reply().expect("500 5.5.2");
    c.send("NOOP").expect("250 2.0.0");
    c.quit();
}

#[test]
fn commands_out_of_order_get_503_and_session_goes_on() {
    let (_tmp, server) = start();
    let mut c = server.client();
    c.send("MAIL FROM:<a@b.test>").expect("503 5.5.1");
    c.ehlo("order.example.net");
    c.send("RCPT TO:<joe@example.test>").expect("503 5.5.1");
    c.send("DATA").expect("503 5.5.1");
    c.send("NOOP").expect("250 2.0.0");
    c.send("MAIL FROM:<a@b.test>").expect("250 2.1.0");
    c.send("MAIL FROM:<a@b.test>").expect("503 5.5.1");
    c.send("NOOP").expect("250 2.0.0");
    c.quit();
}

#[test]
fn oversized_data_is_read_to_its_end_then_refused_552() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new().max_message_size("64KiB"), tmp.path());
    let mut c = server.client();
    let ehlo = c.ehlo("big.example.net");
    assert!(ehlo.text().contains("SIZE 65536"), "{ehlo:?}");
    // Declared too large: refused at MAIL.
    c.send("MAIL FROM:<a@b.test> SIZE=200000")
        .expect("552 5.3.4");
    c.send("MAIL FROM:<a@b.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    let mut body = b"Subject: too-big\r\n\r\n".to_vec();
    let line = format!("{}\r\n", "y".repeat(98));
    while body.len() < 200_000 {
        body.extend_from_slice(line.as_bytes());
    }
    c.send_raw(&body);
    c.send_raw(b".\r\n");
    c.read_reply().expect("552 5.3.4");
    c.send("NOOP").expect("250 2.0.0");
    // The connection is still usable for a new transaction.
    c.send_message(
        "a@b.test",
        &["joe@example.test"],
        &simple_message("after-big"),
    );
    c.quit();
    let joe = server.new_dir("joe@example.test");
    send_marker_and_wait(&server, "marker-big");
    let msgs = messages_in(&joe);
    assert_eq!(msgs.len(), 1, "only the small message is delivered");
    assert!(msgs[0].contains("Subject: after-big\r\n"));
}

#[test]
fn text_line_over_1000_octets_in_data_is_refused() {
    let (_tmp, server) = start();
    let mut c = server.client();
    c.ehlo("longline.example.net");
    c.send("MAIL FROM:<a@b.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    let mut body = b"Subject: long-line\r\n\r\n".to_vec();
    body.extend_from_slice("z".repeat(1500).as_bytes());
    body.extend_from_slice(b"\r\nnext line\r\n.\r\n");
    c.send_raw(&body);
    c.read_reply().expect("500 5.5.2");
    c.send("NOOP").expect("250 2.0.0");
    c.quit();
    send_marker_and_wait(&server, "marker-longline");
    assert_eq!(
        files_in(&server.new_dir("joe@example.test")),
        Vec::<std::path::PathBuf>::new(),
        "a message with a long line must not be delivered"
    );
}

#[test]
fn smtp_smuggling_is_refused_whole_and_nothing_is_delivered() {
    let (_tmp, server) = start();
    let mut c = server.client();
    c.ehlo("smuggle.example.net");
    c.send("MAIL FROM:<a@b.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    c.send_raw(
        b"Subject: smuggling\r\n\r\nhello\n.\n\
          MAIL FROM:<evil@x.test>\r\n\
          RCPT TO:<joseph@example.test>\r\n\
          DATA\r\n\
          Subject: smuggled\r\n\r\nevil\r\n",
    );
    c.send_raw(b"\r\n.\r\n");
    c.read_reply().expect("550 5.6.0");
    // The very next reply is the NOOP's: none of the smuggled commands ran.
    c.send("NOOP").expect("250 2.0.0 OK");
    c.quit();
    send_marker_and_wait(&server, "marker-smuggling");
    let all = all_files_below(&server.data_dir.join("mail"));
    assert_eq!(
        all.len(),
        1,
        "only the marker may be delivered, found {all:?}"
    );
    assert!(files_in(&server.new_dir("joe@example.test")).is_empty());
    assert!(
        !server.logs.any(|l| l.contains("evil@x.test")),
        "{}",
        server.logs.text()
    );
}

#[test]
fn silent_client_gets_421_after_command_timeout() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new().command_timeout("1s"), tmp.path());
    let mut c = server.client();
    let start = Instant::now();
    c.read_reply().expect("421 4.4.2");
    c.expect_closed();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    server
        .logs
        .wait_for(&["client stalled", "check=\"timeout\""], DELIVERY);
}

#[test]
fn client_stalling_in_data_gets_421_and_nothing_is_delivered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &ConfigBuilder::new()
            .command_timeout("30s")
            .data_timeout("1s"),
        tmp.path(),
    );
    let mut c = server.client();
    c.ehlo("stall.example.net");
    c.send("MAIL FROM:<a@b.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    c.send_raw(b"Subject: stalled\r\n\r\nhalf a mess");
    let start = Instant::now();
    c.read_reply().expect("421 4.4.2");
    c.expect_closed();
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    send_marker_and_wait(&server, "marker-stall");
    assert!(
        files_in(&server.new_dir("joe@example.test")).is_empty(),
        "a stalled message must not be delivered"
    );
}

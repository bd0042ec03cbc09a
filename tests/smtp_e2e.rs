//! End-to-end SMTP behaviour of a real `mxguard serve` process, driven over
//! loopback sockets by a transcript client.

mod support;

use std::time::Duration;

use support::*;

const DELIVERY: Duration = Duration::from_secs(10);

#[test]
fn delivered_message_lands_in_maildir_with_received_header() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let mut c = server.client();
    assert!(
        c.banner.first().starts_with("220 mx.example.test"),
        "banner: {:?}",
        c.banner
    );
    let ehlo = c.ehlo("client.example.net");
    assert!(ehlo.text().contains("PIPELINING"), "{ehlo:?}");
    let id = c.send_message(
        "sender@client.test",
        &["joe@example.test"],
        &simple_message("e2e-delivery"),
    );
    assert!(!id.is_empty());
    c.quit();

    let files = wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
    assert_eq!(files.len(), 1, "exactly one copy: {files:?}");
    let m = read_string(&files[0]);
    assert!(
        received_from(&m, "client.example.net"),
        "Received header: {m}"
    );
    let received_end = m.find("\r\nFrom:").expect("client headers after Received");
    let received = &m[..received_end];
    assert!(received.contains("by mx.example.test"), "{received}");
    assert!(received.contains(&format!(" id {id}")), "{received}");
    assert!(received.contains("for <joe@example.test>"), "{received}");
    assert!(
        m.ends_with("Subject: e2e-delivery\r\nMessage-ID: <e2e-delivery@client.test>\r\n\r\nHello, this is e2e-delivery.\r\n"),
        "content kept as sent: {m}"
    );
    server
        .logs
        .wait_for(&["delivered to Maildir", &id], DELIVERY);
    server.logs.wait_for(&["message queued", &id], DELIVERY);
}

#[test]
fn hide_client_ip_keeps_the_ip_out_of_received() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new().hide_client_ip(true), tmp.path());
    let mut c = server.client();
    c.ehlo("hidden.example.net");
    let id = c.send_message(
        "sender@client.test",
        &["joe@example.test"],
        &simple_message("hidden-ip"),
    );
    c.quit();
    let files = wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
    let m = read_string(&files[0]);
    // The reverse DNS name, if the resolver has one, may stay; the IP may not.
    let first = m.lines().next().unwrap_or("");
    assert!(
        first.starts_with("Received: from hidden.example.net"),
        "{m}"
    );
    assert!(!first.contains('['), "{m}");
    assert!(m.contains(&format!(" id {id}")), "{m}");
    assert!(!m.contains("127.0.0.1"), "client IP must be hidden: {m}");
}

#[test]
fn recipients_alias_catchall_postmaster_and_refusals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let joe = server.new_dir("joe@example.test");
    let pm = server.new_dir("postmaster@example.test");
    let mut c = server.client();
    c.ehlo("rcpt.example.net");

    // Refusals first, in their own transaction.
    c.send("MAIL FROM:<sender@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<nobody@example.test>").expect("550 5.1.1");
    c.send("RCPT TO:<joe@elsewhere.test>")
        .expect("554 5.7.1 Relay access denied");
    let r = c.send("RCPT TO:<joe%elsewhere.test@example.test>");
    assert!(r.code() >= 500, "percent hack must be refused: {r:?}");
    r.expect("550 5.1.1");
    c.send("RCPT TO:<elsewhere.test!joe@example.test>")
        .expect("550 5.1.1");
    c.send("RCPT TO:<@example.test:joe@elsewhere.test>")
        .expect("554 5.7.1");
    // No valid recipient: DATA is refused.
    c.send("DATA").expect("554 5.5.1");
    c.send("RSET").expect("250");

    c.send_message(
        "sender@client.test",
        &["joseph@example.test"],
        &simple_message("via-alias"),
    );
    c.send_message(
        "sender@client.test",
        &["anyone@other.test"],
        &simple_message("via-catchall"),
    );
    c.send_message(
        "sender@client.test",
        &["Postmaster"],
        &simple_message("bare-postmaster"),
    );
    c.quit();

    let joe_files = wait_for_files(&joe, 1, DELIVERY);
    let pm_files = wait_for_files(&pm, 2, DELIVERY);
    assert_eq!(joe_files.len(), 1, "{joe_files:?}");
    assert_eq!(pm_files.len(), 2, "{pm_files:?}");
    assert_eq!(find_message(&joe, "Subject: via-alias\r\n").len(), 1);
    assert_eq!(find_message(&pm, "Subject: via-catchall\r\n").len(), 1);
    assert_eq!(find_message(&pm, "Subject: bare-postmaster\r\n").len(), 1);
    // Nothing was created for refused recipients.
    let mailboxes: Vec<_> = std::fs::read_dir(server.data_dir.join("mail/example.test"))
        .expect("mail/example.test")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut mailboxes = mailboxes;
    mailboxes.sort();
    assert_eq!(mailboxes, ["joe", "postmaster"]);
    assert!(
        !server.data_dir.join("mail/elsewhere.test").exists()
            && !server.data_dir.join("mail/other.test").exists()
    );

    // Each refusal is one log line naming the check.
    let logs = &server.logs;
    logs.wait_for(
        &[
            "RCPT denied",
            "check=\"unknown_user\"",
            "nobody@example.test",
        ],
        DELIVERY,
    );
    logs.wait_for(
        &[
            "RCPT denied",
            "check=\"relay\"",
            "joe@elsewhere.test",
            "554 5.7.1",
        ],
        DELIVERY,
    );
    logs.wait_for(
        &[
            "RCPT denied",
            "check=\"unknown_user\"",
            "joe%elsewhere.test@example.test",
        ],
        DELIVERY,
    );
    logs.wait_for(
        &[
            "RCPT denied",
            "check=",
            "helo=rcpt.example.net",
            "127.0.0.1",
        ],
        DELIVERY,
    );
    assert_eq!(
        logs.count(&["RCPT denied"]),
        5,
        "one line per refused RCPT:\n{}",
        logs.text()
    );
}

#[test]
fn pipelined_commands_get_replies_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let mut c = server.client();
    c.send_raw(
        b"EHLO pipe.example.net\r\n\
          MAIL FROM:<sender@client.test>\r\n\
          RCPT TO:<joe@example.test>\r\n\
          RCPT TO:<nobody@example.test>\r\n\
          RCPT TO:<postmaster@example.test>\r\n\
          DATA\r\n",
    );
    let ehlo = c.read_reply().expect("250 mx.example.test");
    assert!(ehlo.text().contains("PIPELINING"), "{ehlo:?}");
    c.read_reply().expect("250 2.1.0");
    c.read_reply().expect("250 2.1.5");
    c.read_reply().expect("550 5.1.1");
    c.read_reply().expect("250 2.1.5");
    c.read_reply().expect("354");
    c.send_raw(&dot_stuff(&simple_message("pipelined-1")));
    c.send_raw(b".\r\n");
    c.read_reply().expect("250 2.0.0 Ok: queued as");

    // A whole transaction, message and QUIT included, in one write.
    let mut all =
        b"MAIL FROM:<sender@client.test>\r\nRCPT TO:<joseph@example.test>\r\nDATA\r\n".to_vec();
    all.extend_from_slice(&dot_stuff(&simple_message("pipelined-2")));
    all.extend_from_slice(b".\r\nQUIT\r\n");
    c.send_raw(&all);
    c.read_reply().expect("250 2.1.0");
    c.read_reply().expect("250 2.1.5");
    c.read_reply().expect("354");
    c.read_reply().expect("250 2.0.0 Ok: queued as");
    c.read_reply().expect("221 2.0.0");
    c.expect_closed();

    let joe = server.new_dir("joe@example.test");
    let pm = server.new_dir("postmaster@example.test");
    wait_for_files(&joe, 2, DELIVERY);
    wait_for_files(&pm, 1, DELIVERY);
    assert_eq!(find_message(&joe, "Subject: pipelined-1\r\n").len(), 1);
    assert_eq!(find_message(&joe, "Subject: pipelined-2\r\n").len(), 1);
    assert_eq!(find_message(&pm, "Subject: pipelined-1\r\n").len(), 1);
}

#[test]
fn bdat_chunks_are_delivered_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let mut c = server.client();
    let ehlo = c.ehlo("chunk.example.net");
    assert!(ehlo.text().contains("CHUNKING"), "{ehlo:?}");
    c.send("MAIL FROM:<sender@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    // A leading dot must stay as sent: BDAT content is not dot-stuffed.
    let chunk1: &[u8] =
        b"Subject: chunked\r\nMessage-ID: <chunked@client.test>\r\n\r\n.not unstuffed\r\nfirst ";
    let chunk2: &[u8] = b"half, second half\r\n.\r\nend\r\n";
    let mut cmd = format!("BDAT {}\r\n", chunk1.len()).into_bytes();
    cmd.extend_from_slice(chunk1);
    c.send_raw(&cmd);
    c.read_reply()
        .expect(&format!("250 2.0.0 {} octets received", chunk1.len()));
    let mut cmd = format!("BDAT {} LAST\r\n", chunk2.len()).into_bytes();
    cmd.extend_from_slice(chunk2);
    c.send_raw(&cmd);
    let id = c.read_reply().expect("250 2.0.0 Ok: queued as").queue_id();
    c.send("NOOP").expect("250");
    c.quit();

    let files = wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
    let m = read(&files[0]);
    let content = [chunk1, chunk2].concat();
    assert!(
        m.ends_with(&content),
        "content must be kept byte for byte: {:?}",
        String::from_utf8_lossy(&m)
    );
    let trace = String::from_utf8_lossy(&m[..m.len() - content.len()]).into_owned();
    assert!(
        trace.starts_with("Received: from chunk.example.net"),
        "{trace}"
    );
    assert!(trace.contains(&format!("id {id}")), "{trace}");
    assert!(trace.ends_with("\r\n"), "{trace}");
    // Only the Received header precedes the content: its continuation
    // lines all start with a tab.
    assert!(
        trace
            .trim_end_matches("\r\n")
            .split("\r\n")
            .skip(1)
            .all(|l| l.starts_with('\t')),
        "{trace}"
    );
}

#[test]
fn submission_listener_refuses_mail_without_auth() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new().with_submission(), tmp.path());
    let sub = server.submission.expect("a submission listener");
    assert_ne!(sub, server.mx);
    let mut c = Client::connect(sub);
    c.ehlo("user.example.net");
    c.send("MAIL FROM:<joe@example.test>").expect("530 5.7.0");
    c.send("RCPT TO:<joe@example.test>").expect("503 5.5.1");
    c.send("NOOP").expect("250");
    c.quit();
    // The mx listener of the same server still takes mail.
    let mut m = server.client();
    m.ehlo("mx.client.test");
    m.send("MAIL FROM:<sender@client.test>").expect("250 2.1.0");
    m.quit();
}

//! Messages over the 1 MiB spill threshold go through a spool file in
//! data_dir/queue/spool/: they must arrive byte for byte, and no spool file
//! may be left behind, whether the message is accepted, refused or cut off.

mod support;

use std::net::Shutdown;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const DELIVERY: Duration = Duration::from_secs(20);

/// A message of about `size` octets, CRLF lines, some starting with a dot.
fn big_message(subject: &str, size: usize) -> String {
    let mut m = format!(
        "From: <big@client.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n"
    );
    let mut i = 0u64;
    while m.len() < size {
        if i.is_multiple_of(997) {
            m.push_str(&format!(".dotted line {i}\r\n"));
        } else {
            m.push_str(&format!(
                "line {i:08} {}\r\n",
                "abcdefghijklmnopqrstuvwxyz0123456789"
            ));
        }
        i += 1;
    }
    m
}

fn body_after_received(m: &[u8]) -> &[u8] {
    // The Received header is the first header; its continuation lines start
    // with a tab. The client's content starts at the first other line.
    let mut pos = 0;
    loop {
        let nl = m[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("a complete header line")
            + pos
            + 1;
        if m.get(nl) != Some(&b'\t') {
            return &m[nl..];
        }
        pos = nl;
    }
}

/// Waits until the spool directory holds no file.
#[track_caller]
fn wait_spool_empty(data_dir: &Path) {
    let spool = data_dir.join("queue/spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = all_files_below(&spool);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("spool files left behind: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the spool directory holds `n` files (proof that a message
/// was spilled to disk).
#[track_caller]
fn wait_spool_count(data_dir: &Path, n: usize) {
    let spool = data_dir.join("queue/spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files = all_files_below(&spool);
        if files.len() == n {
            return;
        }
        if Instant::now() >= deadline {
            panic!("expected {n} spool files, found {files:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn message_over_one_mib_is_delivered_byte_for_byte_via_data_and_bdat() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let big = big_message("big-data", 3 * 1024 * 1024);
    let mut c = server.client();
    c.ehlo("big.example.net");
    c.send_message("big@client.test", &["joe@example.test"], &big);

    // The same size again, over BDAT, in two chunks.
    let big2 = big_message("big-bdat", 3 * 1024 * 1024);
    let (a, b) = big2.as_bytes().split_at(big2.len() / 2 + 7);
    c.send("MAIL FROM:<big@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<postmaster@example.test>")
        .expect("250 2.1.5");
    let mut cmd = format!("BDAT {}\r\n", a.len()).into_bytes();
    cmd.extend_from_slice(a);
    c.send_raw(&cmd);
    c.read_reply().expect("250 2.0.0");
    let mut cmd = format!("BDAT {} LAST\r\n", b.len()).into_bytes();
    cmd.extend_from_slice(b);
    c.send_raw(&cmd);
    c.read_reply().expect("250 2.0.0 Ok: queued as");
    c.quit();

    let f = wait_for_files(&server.new_dir("joe@example.test"), 1, DELIVERY);
    let got = read(&f[0]);
    assert!(
        body_after_received(&got) == big.as_bytes(),
        "DATA message differs: got {} octets after Received, sent {}",
        body_after_received(&got).len(),
        big.len()
    );
    let f = wait_for_files(&server.new_dir("postmaster@example.test"), 1, DELIVERY);
    let got = read(&f[0]);
    assert!(
        body_after_received(&got) == big2.as_bytes(),
        "BDAT message differs: got {} octets after Received, sent {}",
        body_after_received(&got).len(),
        big2.len()
    );
    wait_spool_empty(&server.data_dir);
}

#[test]
fn refused_or_abandoned_large_messages_leave_no_spool_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new().max_message_size("2MiB"), tmp.path());

    // Over the limit: read to the end, 552, nothing kept.
    let mut c = server.client();
    c.ehlo("toobig.example.net");
    c.send("MAIL FROM:<big@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(&big_message("too-big", 3 * 1024 * 1024)));
    c.send_raw(b".\r\n");
    c.read_reply().expect("552 5.3.4");
    c.send("NOOP").expect("250");

    // Over the spill threshold, under the limit, then RSET.
    c.send("MAIL FROM:<big@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    let part = big_message("rset-bdat", 1536 * 1024);
    let mut cmd = format!("BDAT {}\r\n", part.len()).into_bytes();
    cmd.extend_from_slice(part.as_bytes());
    c.send_raw(&cmd);
    c.read_reply().expect("250 2.0.0");
    wait_spool_count(&server.data_dir, 1);
    c.send("RSET").expect("250");
    c.quit();

    // Over the spill threshold, then the client goes away mid-DATA.
    let mut c = server.client();
    c.ehlo("gone.example.net");
    c.send("MAIL FROM:<big@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(&big_message("abandoned", 1536 * 1024)));
    wait_spool_count(&server.data_dir, 1);
    c.stream.shutdown(Shutdown::Both).expect("shutdown");
    drop(c);

    send_marker_and_wait(&server, "marker-large");
    wait_spool_empty(&server.data_dir);
    assert!(
        files_in(&server.new_dir("joe@example.test")).is_empty(),
        "no refused or abandoned message may be delivered"
    );
}

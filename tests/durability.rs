//! Durability: a 250 means the message is on disk and will be delivered,
//! across a crash, under concurrency and through a graceful stop.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn accepted_messages_survive_a_crash_and_are_delivered_after_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = ConfigBuilder::new();
    let data_dir = tmp.path().join("data");
    // A regular file where joe's Maildir should be: delivery fails and
    // the messages stay queued for a retry.
    let blocker = data_dir.join("mail/example.test/joe");
    fs::create_dir_all(blocker.parent().expect("parent")).expect("create mail/example.test");
    fs::write(&blocker, b"not a directory").expect("write the blocking file");

    let mut server = Server::start(&cfg, tmp.path());
    let mut c = server.client();
    c.ehlo("crash.example.net");
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut m = simple_message(&format!("durable-{i}"));
        if i == 2 {
            // Over 1 MiB: spooled to a file, then copied into the journal.
            for n in 0..30_000 {
                m.push_str(&format!(
                    "filler line {n:06} of a large durable message\r\n"
                ));
            }
            assert!(m.len() > 1024 * 1024);
        }
        ids.push(c.send_message("sender@client.test", &["joe@example.test"], &m));
    }
    c.quit();
    // Every message has been tried and failed.
    for id in &ids {
        server
            .logs
            .wait_for(&["delivery deferred", id], Duration::from_secs(10));
    }
    server.kill9();

    fs::remove_file(&blocker).expect("remove the blocking file");
    let server = Server::start_with(&server.config_path, data_dir, cfg.listener_count());
    let joe = server.new_dir("joe@example.test");
    wait_for_files(&joe, 3, Duration::from_secs(10));
    server.logs.wait_for(
        &["queue recovery: resuming delivery of messages left from the last run"],
        Duration::from_secs(5),
    );
    let msgs = messages_in(&joe);
    assert_eq!(msgs.len(), 3, "exactly the 3 queued messages");
    for (i, id) in ids.iter().enumerate() {
        let found: Vec<_> = msgs
            .iter()
            .filter(|m| m.contains(&format!("Message-ID: <durable-{i}@client.test>")))
            .collect();
        assert_eq!(found.len(), 1, "durable-{i} delivered once: {msgs:?}");
        assert!(found[0].contains(&format!("id {id}")), "{}", found[0]);
        if i == 2 {
            assert!(
                found[0].ends_with("filler line 029999 of a large durable message\r\n"),
                "the large message arrives whole ({} octets)",
                found[0].len()
            );
        }
    }
}

#[test]
fn two_hundred_messages_from_twenty_concurrent_clients_are_all_delivered() {
    const THREADS: usize = 20;
    const PER_THREAD: usize = 10;
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&ConfigBuilder::new(), tmp.path());
    let addr = server.mx;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.ehlo(&format!("load{t}.example.net"));
                let mut ids = Vec::new();
                for i in 0..PER_THREAD {
                    ids.push(c.send_message(
                        "sender@client.test",
                        &["joe@example.test"],
                        &simple_message(&format!("load-{t}-{i}")),
                    ));
                }
                c.quit();
                ids
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for h in handles {
        ids.extend(h.join().expect("a client thread failed"));
    }
    assert_eq!(ids.len(), THREADS * PER_THREAD, "distinct queue ids");
    let joe = server.new_dir("joe@example.test");
    wait_for_files(&joe, THREADS * PER_THREAD, Duration::from_secs(30));
    let msgs = messages_in(&joe);
    assert_eq!(msgs.len(), THREADS * PER_THREAD, "no duplicates");
    let subjects: BTreeSet<String> = msgs
        .iter()
        .filter_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .map(str::to_string)
        })
        .collect();
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            assert!(
                subjects.contains(&format!("load-{t}-{i}")),
                "load-{t}-{i} missing"
            );
        }
    }
}

#[test]
fn sigterm_lets_a_message_in_progress_finish_then_exits_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&ConfigBuilder::new(), tmp.path());
    let mut c = server.client();
    c.ehlo("graceful.example.net");
    c.send("MAIL FROM:<sender@client.test>").expect("250 2.1.0");
    c.send("RCPT TO:<joe@example.test>").expect("250 2.1.5");
    c.send("DATA").expect("354");
    c.send_raw(b"Subject: graceful\r\nMessage-ID: <graceful@client.test>\r\n\r\nfirst half\r\n");

    // An idle session is told to go at once.
    let mut idle = server.client();
    idle.ehlo("idle.example.net");

    server.signal(libc::SIGTERM);
    server.logs.wait_for(&["stopping"], Duration::from_secs(5));
    idle.read_reply().expect("421 4.3.2");
    idle.expect_closed();

    // No new connections once stopping.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect_timeout(&server.mx, Duration::from_secs(1)) {
            Err(_) => break,
            Ok(_) if Instant::now() >= deadline => {
                panic!("{} still accepts connections after SIGTERM", server.mx)
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }

    c.send_raw(b"second half\r\n.\r\n");
    let id = c.read_reply().expect("250 2.0.0 Ok: queued as").queue_id();
    // The session ends at the next command boundary.
    match c.try_read_reply() {
        Ok(r) => {
            r.expect("421 4.3.2");
            c.expect_closed();
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) => {}
        Err(e) => panic!("after the 250: {e}"),
    }

    let status = server.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        server.logs.text()
    );
    let msgs = messages_in(&server.new_dir("joe@example.test"));
    assert_eq!(
        msgs.len(),
        1,
        "the message finished during the stop is delivered"
    );
    assert!(msgs[0].contains(&format!("id {id}")));
    assert!(
        msgs[0].ends_with("\r\n\r\nfirst half\r\nsecond half\r\n"),
        "{}",
        msgs[0]
    );
}

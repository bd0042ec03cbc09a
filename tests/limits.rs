//! End-to-end tests of the volume limits, the tarpit and greylisting, each
//! run on the embedded state store and on a real Redis (started here);
//! then two mxguard nodes sharing one Redis, and a Redis that dies and
//! comes back while mail flows (fail open).
//!
//! Clients connect from distinct loopback addresses (127.0.0.x) so that
//! each case counts alone; 127.0.0.1 is a relay client where a case needs
//! one. Every wait is bounded.
//!
//! What the tests assume of the log: a refusal is `MAIL denied (CHECK)` or
//! `RCPT denied (CHECK)` with `check="..."`; a skipped check is `state
//! store unavailable`.

mod support;

use std::time::{Duration, Instant};

use support::net::client_from;
use support::outbound::mxguard;
use support::redis::Redis;
use support::{Client, ConfigBuilder, Server, dot_stuff, simple_message};

const LOG_WAIT: Duration = Duration::from_secs(5);

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-limits")
        .tempdir()
        .expect("a temporary directory")
}

/// The `[store]` section for a Redis at `url`.
fn redis_section(url: &str) -> String {
    format!("[store]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout = \"300ms\"\n")
}

/// Runs `case` with the embedded store, then with a fresh Redis.
fn on_each_backend(case: impl Fn(&str, &str)) {
    case("embedded", "");
    let redis = Redis::start();
    case("redis", &redis_section(&redis.url()));
}

/// One message from `c`, `MAIL` and every `RCPT` expected to pass.
#[track_caller]
fn send(c: &mut Client, from: &str, to: &[&str], subject: &str) {
    c.send(&format!("MAIL FROM:<{from}>")).expect("250");
    for t in to {
        c.send(&format!("RCPT TO:<{t}>")).expect("250");
    }
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(&simple_message(subject)));
    c.send_raw(b".\r\n");
    c.read_reply().expect("250");
}

#[test]
fn messages_per_hour_per_ip_and_exempt_clients() {
    on_each_backend(|backend, store| {
        let tmp = root();
        let cfg = ConfigBuilder::new().extra(&format!(
            "[limits]\nmessages_per_hour_per_ip = 2\nexempt = [\"127.0.0.4\"]\n{store}"
        ));
        let server = Server::start(&cfg, tmp.path());
        let mut c = client_from("127.0.0.2", server.mx);
        c.ehlo("client.test").expect("250");
        send(&mut c, "a@client.test", &["joe@example.test"], "one");
        send(&mut c, "a@client.test", &["joe@example.test"], "two");
        let r = c.send("MAIL FROM:<a@client.test>");
        assert_eq!(
            r.first(),
            "451 4.7.1 Too many messages from your address this hour; try again later",
            "{backend}"
        );
        c.quit();
        // the count outlives the session
        let mut c = client_from("127.0.0.2", server.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<a@client.test>").expect("451 4.7.1");
        c.quit();
        // another address has its own count; an exempt one has none
        for ip in ["127.0.0.3", "127.0.0.4", "127.0.0.4", "127.0.0.4"] {
            let mut c = client_from(ip, server.mx);
            c.ehlo("client.test").expect("250");
            send(&mut c, "b@client.test", &["joe@example.test"], ip);
            c.quit();
        }
        server.logs.wait_for(
            &[
                "MAIL denied (messages_per_hour_per_ip)",
                "client=127.0.0.2",
                "2 in the last hour",
            ],
            LOG_WAIT,
        );
        // mxguard check-ip shows the count and the exemption
        let config = server.config_path.display().to_string();
        let out =
            mxguard(&["check-ip", "127.0.0.2", "--config", &config]).expect_success("check-ip");
        assert!(
            out.stdout
                .contains("limits.messages_per_hour_per_ip: 2 of 2 in the last hour"),
            "{backend}: {}",
            out.stdout
        );
        let out =
            mxguard(&["check-ip", "127.0.0.4", "--config", &config]).expect_success("check-ip");
        assert!(
            out.stdout.contains("hourly limits:  exempt"),
            "{}",
            out.stdout
        );
    });
}

#[test]
fn recipients_per_hour_and_messages_per_hour_per_recipient() {
    on_each_backend(|backend, store| {
        let tmp = root();
        let cfg = ConfigBuilder::new().extra(&format!(
            "[limits]\nrecipients_per_hour = 3\nmessages_per_hour_per_recipient = 2\n{store}"
        ));
        let server = Server::start(&cfg, tmp.path());
        // recipients_per_hour, by client address, across sessions
        let mut c = client_from("127.0.0.5", server.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<a@client.test>").expect("250");
        c.send("RCPT TO:<joe@example.test>").expect("250");
        c.send("RCPT TO:<postmaster@example.test>").expect("250");
        c.quit();
        let mut c = client_from("127.0.0.5", server.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<a@client.test>").expect("250");
        c.send("RCPT TO:<x@other.test>").expect("250");
        let r = c.send("RCPT TO:<joseph@example.test>");
        assert_eq!(
            r.first(),
            "451 4.7.1 Too many recipients this hour; try again later",
            "{backend}"
        );
        c.quit();
        server.logs.wait_for(
            &["RCPT denied (recipients_per_hour)", "ip:127.0.0.5"],
            LOG_WAIT,
        );
        // messages_per_hour_per_recipient: joe takes two messages an hour,
        // whoever sends them; other mailboxes are not affected
        for ip in ["127.0.0.6", "127.0.0.7"] {
            let mut c = client_from(ip, server.mx);
            c.ehlo("client.test").expect("250");
            send(&mut c, "b@client.test", &["joe@example.test"], ip);
            c.quit();
        }
        let mut c = client_from("127.0.0.8", server.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<b@client.test>").expect("250");
        c.send("RCPT TO:<Joseph@example.test>")
            .expect("451 4.7.1 This recipient gets too much mail this hour; try again later");
        c.send("RCPT TO:<postmaster@example.test>").expect("250");
        c.quit();
        server.logs.wait_for(
            &[
                "RCPT denied (messages_per_hour_per_recipient)",
                "joe@example.test",
            ],
            LOG_WAIT,
        );
    });
}

#[test]
fn greylisting_delays_new_triplets_only() {
    on_each_backend(|backend, store| {
        let tmp = root();
        let cfg = ConfigBuilder::new()
            .relay_clients(&["127.0.0.1"])
            .extra(&format!(
                "[greylist]\nenabled = true\ndelay = \"2s\"\n{store}"
            ));
        let server = Server::start(&cfg, tmp.path());
        let mut c = client_from("127.0.0.9", server.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<new@client.test>").expect("250");
        let r = c.send("RCPT TO:<joe@example.test>");
        assert!(
            r.first().starts_with("451 4.7.1 Greylisted"),
            "{backend}: {:?}",
            r.lines
        );
        // too soon: still refused
        c.send("RCPT TO:<joe@example.test>").expect("451 4.7.1");
        let first = Instant::now();
        c.quit();
        // a relay client is never greylisted
        let mut inside = client_from("127.0.0.1", server.mx);
        inside.ehlo("inside.test").expect("250");
        send(
            &mut inside,
            "new@client.test",
            &["joe@example.test"],
            "inside",
        );
        inside.quit();
        std::thread::sleep(Duration::from_millis(2100).saturating_sub(first.elapsed()));
        // the retry, from another address of the same /24, passes
        let mut c = client_from("127.0.0.10", server.mx);
        c.ehlo("client.test").expect("250");
        send(&mut c, "new@client.test", &["joe@example.test"], "retried");
        // another sender is another triplet
        c.send("MAIL FROM:<other@client.test>").expect("250");
        c.send("RCPT TO:<joe@example.test>").expect("451 4.7.1");
        c.quit();
        server
            .logs
            .wait_for(&["RCPT denied (greylist)", "new triplet"], LOG_WAIT);
    });
}

#[test]
fn tarpit_slows_replies_past_the_threshold_without_holding_threads() {
    let tmp = root();
    let cfg = ConfigBuilder::new()
        .extra("[limits]\ntarpit_start = 2\ntarpit_delay = \"300ms\"\nexempt = [\"127.0.0.12\"]\n");
    let server = Server::start(&cfg, tmp.path());
    let timed = |c: &mut Client, to: &str| {
        let t = Instant::now();
        let r = c.send(&format!("RCPT TO:<{to}>"));
        (r.code(), t.elapsed())
    };
    let mut c = client_from("127.0.0.11", server.mx);
    c.ehlo("client.test").expect("250");
    c.send("MAIL FROM:<a@client.test>").expect("250");
    let mut delays = Vec::new();
    for to in [
        "joe@example.test",
        "postmaster@example.test",
        "a@other.test",
        "nobody@example.test", // refused replies wait too
        "b@other.test",
    ] {
        delays.push(timed(&mut c, to));
    }
    let codes: Vec<u16> = delays.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, vec![250, 250, 250, 550, 250]);
    let ms: Vec<u128> = delays.iter().map(|(_, d)| d.as_millis()).collect();
    assert!(ms[0] < 250 && ms[1] < 250, "{ms:?}");
    assert!((300..1000).contains(&ms[2]), "{ms:?}");
    assert!((600..1300).contains(&ms[3]), "{ms:?}");
    assert!((900..1600).contains(&ms[4]), "{ms:?}");
    // meanwhile another session is answered at once
    let mut other = client_from("127.0.0.13", server.mx);
    let t = Instant::now();
    other.ehlo("client.test").expect("250");
    assert!(t.elapsed() < Duration::from_millis(250));
    other.quit();
    c.quit();
    // an exempt address is never tarpitted
    let mut c = client_from("127.0.0.12", server.mx);
    c.ehlo("client.test").expect("250");
    c.send("MAIL FROM:<a@client.test>").expect("250");
    for i in 0..5 {
        let (code, d) = timed(&mut c, "joe@example.test");
        assert_eq!(code, 250);
        assert!(d < Duration::from_millis(250), "rcpt {i}: {d:?}");
    }
    c.quit();
    server.logs.wait_for(
        &[
            "RCPT replies delayed from now on (tarpit)",
            "client=127.0.0.11",
        ],
        LOG_WAIT,
    );
}

#[test]
fn two_nodes_share_counters_and_bans_through_redis() {
    let redis = Redis::start();
    let section = redis_section(&redis.url());
    let (ta, tb) = (root(), root());
    let cfg = ConfigBuilder::new().extra(&format!(
        "[limits]\nmessages_per_hour_per_ip = 3\n{section}"
    ));
    let a = Server::start(&cfg, ta.path());
    let b = Server::start(&cfg, tb.path());
    // three messages spread over both nodes reach the limit of 3
    for (node, subject) in [(&a, "a1"), (&b, "b1"), (&a, "a2")] {
        let mut c = client_from("127.0.0.20", node.mx);
        c.ehlo("client.test").expect("250");
        send(&mut c, "x@client.test", &["joe@example.test"], subject);
        c.quit();
    }
    for node in [&a, &b] {
        let mut c = client_from("127.0.0.20", node.mx);
        c.ehlo("client.test").expect("250");
        c.send("MAIL FROM:<x@client.test>").expect("451 4.7.1");
        c.quit();
    }
    // a ban made on node A refuses the address on node B
    let config_a = a.config_path.display().to_string();
    mxguard(&[
        "ban",
        "add",
        "127.0.0.21",
        "--for",
        "1h",
        "--config",
        &config_a,
    ])
    .expect_success("ban add on node A");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = support::net::tcp_connect_from("127.0.0.21", b.mx);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut stream), &mut line)
            .expect("a line");
        if line.starts_with("421 4.7.1 Your address is temporarily banned") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B still greets a client banned on node A: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_dead_redis_lets_mail_through_and_limits_resume_when_it_returns() {
    let mut redis = Redis::start();
    let port = redis.port;
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(&format!(
        "[limits]\nmessages_per_hour_per_ip = 2\n{}",
        redis_section(&redis.url())
    ));
    let server = Server::start(&cfg, tmp.path());
    let session = |expect_third: &str| {
        let mut c = client_from("127.0.0.30", server.mx);
        c.ehlo("client.test").expect("250");
        send(&mut c, "x@client.test", &["joe@example.test"], "m1");
        send(&mut c, "x@client.test", &["joe@example.test"], "m2");
        let t = Instant::now();
        c.send("MAIL FROM:<x@client.test>").expect(expect_third);
        c.quit();
        t.elapsed()
    };
    session("451 4.7.1");
    // Redis dies: the limit cannot be checked, and mail flows
    redis.stop();
    let mut c = client_from("127.0.0.30", server.mx);
    c.ehlo("client.test").expect("250");
    for i in 0..4 {
        let t = Instant::now();
        send(
            &mut c,
            "x@client.test",
            &["joe@example.test"],
            &format!("down{i}"),
        );
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "message {i}: {:?}",
            t.elapsed()
        );
    }
    c.quit();
    server
        .logs
        .wait_for(&["state store unavailable", "fail open"], LOG_WAIT);
    // Redis is back (empty): the server reconnects by itself and counts
    // again, so a new client reaches the limit of 2 after a few messages.
    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut c = client_from("127.0.0.31", server.mx);
    c.ehlo("client.test").expect("250");
    let mut sent = 0;
    loop {
        let r = c.send("MAIL FROM:<y@client.test>");
        if r.code() == 451 {
            break;
        }
        assert_eq!(r.code(), 250, "{:?}", r.lines);
        c.send("RCPT TO:<joe@example.test>").expect("250");
        c.send("DATA").expect("354");
        c.send_raw(&dot_stuff(&simple_message("probe")));
        c.send_raw(b".\r\n");
        c.read_reply().expect("250");
        sent += 1;
        assert!(
            Instant::now() < deadline,
            "limits did not resume after Redis came back ({sent} messages sent)"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.quit();
}

#[test]
fn a_stopping_server_does_not_wait_out_a_tarpit() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra("[limits]\ntarpit_start = 1\ntarpit_delay = \"60s\"\n");
    let mut server = Server::start(&cfg, tmp.path());
    let mut c = client_from("127.0.0.14", server.mx);
    c.ehlo("client.test").expect("250");
    c.send("MAIL FROM:<a@client.test>").expect("250");
    c.send("RCPT TO:<joe@example.test>").expect("250");
    // the second RCPT's reply is held for 60 s
    c.write_line("RCPT TO:<postmaster@example.test>");
    server
        .logs
        .wait_for(&["RCPT replies delayed from now on (tarpit)"], LOG_WAIT);
    let t = Instant::now();
    server.signal(15); // SIGTERM
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

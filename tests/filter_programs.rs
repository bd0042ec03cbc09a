//! End-to-end tests of external filter programs (`[[filter]] execute`):
//! the real binary over loopback, with small shell scripts written by the
//! tests as the programs.
//!
//! What the tests assume of the log: a program that gives no answer is
//! `DATA deferred (filter program failed)` with `check="filter"` and its
//! rule before the 250, and `after_accept filter program failed` after
//! it; a refusal after the 250 is `message refused after acceptance`.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::net::client_from;
use support::outbound::{queue_cmd, queue_list};
use support::{
    Client, ConfigBuilder, Server, dot_stuff, find_message, messages_in, wait_for_files,
};

const LOG_WAIT: Duration = Duration::from_secs(10);
const DELIVERY: Duration = Duration::from_secs(15);

fn root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mxguard-programs")
        .tempdir()
        .expect("a temporary directory")
}

/// Writes an executable `/bin/sh` script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// MAIL, RCPT, DATA and `message`; returns the final reply.
fn send(c: &mut Client, from: &str, to: &str, message: &str) -> support::Reply {
    c.send(&format!("MAIL FROM:<{from}>")).expect("250");
    c.send(&format!("RCPT TO:<{to}>")).expect("250");
    c.send("DATA").expect("354");
    c.send_raw(&dot_stuff(message));
    c.send_raw(b".\r\n");
    c.read_reply()
}

/// A message from sender@client.test to joe@example.test.
fn to_joe(c: &mut Client, subject: &str, body: &str) -> support::Reply {
    send(
        c,
        "sender@client.test",
        "joe@example.test",
        &message(subject, body),
    )
}

/// `r`, which must be a 250.
fn queued(r: support::Reply) -> support::Reply {
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    r
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: <sender@client.test>\r\nTo: <joe@example.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n{body}\r\n"
    )
}

/// The checker: its answer depends on a word in the message; it keeps a
/// copy of its input and environment in `dir`.
const CHECKER: &str = r#"
DIR="$(dirname "$0")"
cat > "$DIR/input.$$"
env | grep '^MXGUARD_\|^PATH=\|^HOME=' | sort > "$DIR/env.$$"
mv "$DIR/input.$$" "$DIR/input.last"
mv "$DIR/env.$$" "$DIR/env.last"
case "$(cat "$DIR/input.last")" in
  *REJECTME*) echo "REJECT 554 5.7.1 Refused by the checker" ;;
  *EXITONE*) echo "no reply here" ; exit 1 ;;
  *DISCARDME*) exit 2 ;;
  *SCOREME*) echo "SCORE 7.5" ;;
  *HEADERME*) echo "HEADER X-Checked: yes, by checker" ;;
  *CRASHME*) kill -SEGV $$ ;;
  *HANGME*) echo $$ > "$DIR/hang.pid" ; sleep 60 & sleep 60 ;;
  *GARBLE*) echo "MAYBE SO" ;;
  *) echo ACCEPT ;;
esac
"#;

#[test]
fn programs_before_the_250() {
    let tmp = root();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let checker = script(&bin, "checker", CHECKER);
    let cfg = ConfigBuilder::new().extra(&format!(
        r#"
[[filter]]
name = "CHECKER"
execute = ["{}", "--strict"]
timeout = "1500ms"
score = 0.5
reply = "550 5.7.1 The checker said no"

[[filter]]
name = "AFTER_CHECKER"
on = "subject"
matches = 'ordinary'
score = 1

[scoring]
tag_above = 5
reject_above = 50
"#,
        checker.display()
    ));
    let server = Server::start(&cfg, tmp.path());
    let joe = server.new_dir("joe@example.test");
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");

    // Accept: delivered; the program saw the message as it will be
    // delivered (our Received: first) and the envelope in its environment.
    let r = queued(to_joe(&mut c, "ordinary", "hello"));
    let queue_id = r.queue_id();
    let input = std::fs::read_to_string(bin.join("input.last")).expect("the program's input");
    assert!(input.starts_with("Received: from client.test"), "{input}");
    assert!(input.contains("\r\nSubject: ordinary\r\n"), "{input}");
    let env = std::fs::read_to_string(bin.join("env.last")).expect("the program's environment");
    for want in [
        "MXGUARD_CLIENT_IP=127.0.0.2",
        "MXGUARD_HELO=client.test",
        "MXGUARD_RECIPIENTS=joe@example.test",
        "MXGUARD_RULE=CHECKER",
        "MXGUARD_SENDER=sender@client.test",
        "MXGUARD_STAGE=before_accept",
        &format!("MXGUARD_QUEUE_ID={queue_id}"),
        "PATH=/usr/local/bin:/usr/bin:/bin",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in\n{env}");
    }
    assert!(!env.contains("HOME="), "the environment is cleared:\n{env}");

    // REJECT with the program's own reply.
    let r = to_joe(&mut c, "r1", "please REJECTME");
    assert_eq!(r.first(), "554 5.7.1 Refused by the checker");
    let line = server
        .logs
        .wait_for(&["DATA refused (filter)", "CHECKER"], LOG_WAIT);
    assert!(line.contains("check=\"filter\""), "{line}");

    // Exit 1: the rule's reply.
    let r = to_joe(&mut c, "r2", "EXITONE");
    assert_eq!(r.first(), "550 5.7.1 The checker said no");

    // Exit 2: 250, delivered nowhere.
    queued(to_joe(&mut c, "d1", "DISCARDME"));
    server
        .logs
        .wait_for(&["message discarded (filter CHECKER)"], LOG_WAIT);

    // SCORE: the rule's 0.5 plus 7.5 is above tag_above.
    queued(to_joe(&mut c, "s1", "SCOREME"));
    // HEADER: added to the message.
    queued(to_joe(&mut c, "h1", "HEADERME"));

    // No answer: a hang (killed at the timeout, children included), a
    // crash, an answer that is none: 451 4.3.0 each time, logged, and the
    // session goes on.
    for (word, why) in [
        ("HANGME", "did not finish within"),
        ("CRASHME", "killed by a signal"),
        ("GARBLE", "none of ACCEPT"),
    ] {
        let started = Instant::now();
        let r = to_joe(&mut c, word, word);
        assert_eq!(
            r.first(),
            "451 4.3.0 Temporary content filter failure; try again later",
            "{word}"
        );
        assert!(started.elapsed() < Duration::from_secs(6), "{word}");
        let line = server.logs.wait_for(
            &["DATA deferred (filter program failed)", "CHECKER", why],
            LOG_WAIT,
        );
        assert!(line.contains("check=\"filter\""), "{line}");
    }
    queued(to_joe(&mut c, "ordinary", "still here"));
    c.quit();

    // Delivered: the three accepted ones, the scored and the tagged.
    wait_for_files(&joe, 4, DELIVERY);
    let scored = find_message(&joe, "Subject: s1");
    assert_eq!(scored.len(), 1);
    assert!(scored[0].contains("X-Spam-Flag: YES\r\n"), "{}", scored[0]);
    assert!(scored[0].contains("X-Spam-Score: 8.0\r\n"), "{}", scored[0]);
    let tagged = find_message(&joe, "Subject: h1");
    assert!(
        tagged[0].contains("X-Checked: yes, by checker\r\n"),
        "{}",
        tagged[0]
    );
    let all = messages_in(&joe);
    assert_eq!(all.len(), 4, "nothing else delivered");
    for word in [
        "REJECTME",
        "EXITONE",
        "DISCARDME",
        "HANGME",
        "CRASHME",
        "GARBLE",
    ] {
        assert!(
            !all.iter().any(|m| m.contains(word)),
            "{word} was delivered"
        );
    }
    // The hung program's children are gone too: nothing is left in its
    // process group.
    let group = std::fs::read_to_string(bin.join("hang.pid")).expect("hang.pid");
    let group = group.trim();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid pgrp ...; a zombie is dead already
            // (this machine's init may not reap it).
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split(' ').collect())
                .unwrap_or_default();
            fields.get(2) == Some(&group) && fields.first() != Some(&"Z")
        })
        .collect();
    assert!(
        left.is_empty(),
        "left in the hung program's group: {left:?}"
    );
}

#[test]
fn a_missing_program_defers_and_check_config_says_so() {
    let tmp = root();
    let cfg = ConfigBuilder::new().extra(
        r#"
[[filter]]
name = "GONE"
execute = ["/nonexistent/mxguard-filter"]
"#,
    );
    let server = Server::start(&cfg, tmp.path());
    server.logs.wait_for(
        &[
            "/nonexistent/mxguard-filter",
            "every message it judges gets 451 4.3.0",
        ],
        LOG_WAIT,
    );
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    let r = to_joe(&mut c, "m1", "x");
    assert_eq!(
        r.first(),
        "451 4.3.0 Temporary content filter failure; try again later"
    );
    server.logs.wait_for(
        &[
            "DATA deferred (filter program failed)",
            "GONE",
            "cannot start /nonexistent/mxguard-filter",
        ],
        LOG_WAIT,
    );
    c.quit();
}

/// The after-250 checker: a word decides, as before.
const LATE_CHECKER: &str = r#"
DIR="$(dirname "$0")"
IN="$(cat)"
echo "$MXGUARD_STAGE $MXGUARD_SCORE" > "$DIR/late.env"
if [ -e "$DIR/broken" ]; then exit 9; fi
case "$IN" in
  *BOUNCEME*) echo "REJECT 550 5.7.1 Found to be spam after all" ;;
  *DROPME*) echo DISCARD ;;
  *TAGME*) echo "HEADER X-After: seen" ;;
  *) echo ACCEPT ;;
esac
"#;

#[test]
fn programs_after_the_250() {
    let tmp = root();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let late = script(&bin, "late", LATE_CHECKER);
    // A broken program at first: messages wait, then go once it is fixed.
    std::fs::write(bin.join("broken"), b"").expect("touch");
    let cfg = ConfigBuilder::new().queue_retry(&["1s"]).extra(&format!(
        r#"
[[filter]]
name = "LATE"
execute = ["{}"]
after_accept = true
timeout = "10m"
score = 1
"#,
        late.display()
    ));
    let server = Server::start(&cfg, tmp.path());
    let joe = server.new_dir("joe@example.test");
    let postmaster = server.new_dir("postmaster@example.test");
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    let r = queued(to_joe(&mut c, "waits", "a plain one"));
    let waiting = r.queue_id();
    server.logs.wait_for(
        &["after_accept filter program failed", "LATE", "exit code 9"],
        LOG_WAIT,
    );
    // Another held message, which the administrator deletes: listed as
    // held, gone for good once deleted.
    let doomed = queued(to_joe(&mut c, "doomed", "deleted while held")).queue_id();
    server
        .logs
        .wait_for(&["after_accept filter program failed", &doomed], LOG_WAIT);
    let list = queue_list(&server.config_path);
    for id in [&waiting, &doomed] {
        let line = list
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_default();
        assert!(line.contains("after_accept filters"), "{id}: {list}");
    }
    let out =
        queue_cmd(&server.config_path, &["delete", &doomed]).expect_success("mxguard queue delete");
    assert!(out.stdout.contains(&doomed), "{}", out.stdout);
    std::thread::sleep(Duration::from_millis(500));
    assert!(messages_in(&joe).is_empty(), "delivered unjudged");
    std::fs::remove_file(bin.join("broken")).expect("rm");
    wait_for_files(&joe, 1, DELIVERY);
    let late_env = std::fs::read_to_string(bin.join("late.env")).expect("late.env");
    assert_eq!(late_env.trim(), "after_accept 0.0");

    // Refused after the 250: the sender (a local account here) gets a
    // bounce naming the reason; nothing reaches joe.
    let r = send(
        &mut c,
        "postmaster@example.test",
        "joe@example.test",
        &message("late1", "BOUNCEME"),
    );
    assert!(r.first().starts_with("250 2.0.0"), "{r:?}");
    let refused = r.queue_id();
    let line = server.logs.wait_for(
        &["message refused after acceptance (filter)", &refused],
        LOG_WAIT,
    );
    assert!(line.contains("LATE"), "{line}");
    let bounce = wait_for_files(&postmaster, 1, DELIVERY);
    let bounce = String::from_utf8_lossy(&support::read(&bounce[0])).to_string();
    assert!(bounce.contains("Found to be spam after all"), "{bounce}");
    assert!(bounce.contains("joe@example.test"), "{bounce}");
    assert!(bounce.contains("Subject: late1"), "{bounce}");

    // Discarded after the 250; tagged after the 250 (re-queued with the
    // header, delivered once).
    queued(to_joe(&mut c, "late2", "DROPME"));
    server.logs.wait_for(
        &["message discarded after acceptance (filter LATE)"],
        LOG_WAIT,
    );
    queued(to_joe(&mut c, "late3", "TAGME"));
    c.quit();
    wait_for_files(&joe, 2, DELIVERY);
    std::thread::sleep(Duration::from_millis(500));
    let all = messages_in(&joe);
    assert_eq!(all.len(), 2, "{all:?}");
    let tagged = find_message(&joe, "Subject: late3");
    assert_eq!(tagged.len(), 1);
    assert!(
        tagged[0].starts_with("X-After: seen\r\nReceived: "),
        "{}",
        tagged[0]
    );
    assert!(find_message(&joe, "BOUNCEME").is_empty());
    assert!(find_message(&joe, "DROPME").is_empty());
    assert!(find_message(&joe, "deleted while held").is_empty());
    assert!(!queue_list(&server.config_path).contains(&doomed));
}

#[test]
fn held_messages_survive_a_crash() {
    let tmp = root();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let late = script(&bin, "late", LATE_CHECKER);
    std::fs::write(bin.join("broken"), b"").expect("touch");
    let cfg = ConfigBuilder::new().queue_retry(&["1h"]).extra(&format!(
        "\n[[filter]]\nname = \"LATE\"\nexecute = [\"{}\"]\nafter_accept = true\n",
        late.display()
    ));
    let mut server = Server::start(&cfg, tmp.path());
    let data_dir = server.data_dir.clone();
    let mut c = client_from("127.0.0.2", server.mx);
    c.ehlo("client.test").expect("250");
    let r = to_joe(&mut c, "held-small", "small");
    let small = r.queue_id();
    // Over 1 MiB: spooled, then read back from the journal for the program.
    let mut body = String::from("TAGME\r\n");
    for n in 0..30_000 {
        body.push_str(&format!("filler line {n:06} of a large held message\r\n"));
    }
    let r = to_joe(&mut c, "held-large", &body);
    let large = r.queue_id();
    c.quit();
    for id in [&small, &large] {
        server.logs.wait_for(
            &["after_accept filter program failed", id.as_str()],
            LOG_WAIT,
        );
    }
    server.kill9();

    std::fs::remove_file(bin.join("broken")).expect("rm");
    let server = Server::start_with(&server.config_path, data_dir, cfg.listener_count());
    let joe = server.new_dir("joe@example.test");
    wait_for_files(&joe, 2, DELIVERY);
    std::thread::sleep(Duration::from_millis(500));
    let all = messages_in(&joe);
    assert_eq!(all.len(), 2, "each delivered once");
    let large_msg = find_message(&joe, "Subject: held-large");
    assert_eq!(large_msg.len(), 1);
    assert!(large_msg[0].starts_with("X-After: seen\r\nReceived: "));
    assert!(
        large_msg[0]
            .trim_end()
            .ends_with("filler line 029999 of a large held message")
    );
}

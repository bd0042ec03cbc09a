use super::*;
use std::sync::mpsc::channel;

fn env(id: &str) -> Envelope {
    Envelope {
        id: id.into(),
        received: 1,
        sender: "a@b.test".into(),
        client_ip: "127.0.0.1".into(),
        helo: "c.test".into(),
        recipients: vec![Recipient::new(
            "joe@example.test".into(),
            Target::Local {
                mailbox: "joe@example.test".into(),
            },
        )],
        warned: false,
        filter_score: None,
    }
}

fn commit(q: &Queue, id: &str, body: &[u8]) -> QueuedMessage {
    let (tx, rx) = channel();
    q.commit(
        env(id),
        Body::Memory(body.to_vec()),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    rx.recv().unwrap().unwrap()
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect()
}

fn segments(dir: &Path) -> usize {
    segment_files(dir).len()
}

#[test]
fn committed_messages_survive_a_restart_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (q, pending, _) = Queue::open(dir.path()).unwrap();
    assert!(pending.is_empty());
    let a = commit(&q, "A", b"Subject: a\r\n\r\nA\r\n");
    let _b = commit(&q, "B", b"Subject: b\r\n\r\nB\r\n");
    q.delivered(a.loc);
    q.shutdown();
    let (q, pending, warnings) = Queue::open(dir.path()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].envelope.id, "B");
    assert_eq!(
        pending[0].content.to_vec().unwrap(),
        b"Subject: b\r\n\r\nB\r\n"
    );
    q.delivered(pending[0].loc);
    q.shutdown();
    let (q, pending, _) = Queue::open(dir.path()).unwrap();
    assert!(pending.is_empty());
    q.shutdown();
    // every fully delivered segment is gone: only the newest remains
    assert_eq!(segments(dir.path()), 1);
}

#[test]
fn torn_tail_is_cut_and_earlier_messages_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _, _) = Queue::open(dir.path()).unwrap();
    commit(&q, "A", b"one\r\n");
    commit(&q, "B", b"two\r\n");
    q.shutdown();
    let seg = segment_files(dir.path())
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the second record's write.
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    let (q, pending, warnings) = Queue::open(dir.path()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].envelope.id, "A");
    assert_eq!(warnings.len(), 1);
    q.shutdown();
    // and a damaged byte inside a record
    let mut data = fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 2] ^= 0xff;
    fs::write(&seg, data).unwrap();
    let (q, pending, warnings) = Queue::open(dir.path()).unwrap();
    assert!(pending.is_empty());
    assert_eq!(warnings.len(), 1);
    q.shutdown();
}

#[test]
fn concurrent_commits_share_flushes_and_all_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _, _) = Queue::open(dir.path()).unwrap();
    let (tx, rx) = channel();
    for i in 0..200 {
        let tx = tx.clone();
        q.commit(
            env(&format!("M{i}")),
            Body::Memory(format!("body {i}\r\n").into_bytes()),
            Box::new(move |r| tx.send(r.map(|m| m.envelope.id)).unwrap()),
        );
    }
    let mut ids: Vec<String> = (0..200).map(|_| rx.recv().unwrap().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    q.shutdown();
    let (q, pending, _) = Queue::open(dir.path()).unwrap();
    assert_eq!(pending.len(), 200);
    q.shutdown();
}

#[test]
fn segments_rotate_and_old_ones_are_removed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _, _) = Queue::open_with(dir.path(), 100).unwrap();
    let big = vec![b'x'; 200];
    let a = commit(&q, "A", &big);
    let b = commit(&q, "B", &big);
    let c = commit(&q, "C", &big);
    assert!(a.loc.segment < b.loc.segment && b.loc.segment < c.loc.segment);
    // B delivered first: its segment must stay while A's is live, or the
    // marker for A written after it could be lost with it.
    q.delivered(b.loc);
    commit(&q, "D", b"x");
    assert_eq!(segments(dir.path()), 4);
    q.delivered(a.loc);
    commit(&q, "E", b"x");
    q.delivered(c.loc);
    q.shutdown();
    let (q, pending, _) = Queue::open(dir.path()).unwrap();
    let ids: Vec<_> = pending.iter().map(|m| m.envelope.id.clone()).collect();
    assert_eq!(ids, ["D", "E"]);
    q.shutdown();
}

#[test]
fn ids_are_unique_and_ordered() {
    let ids: Vec<String> = (0..1000).map(|_| new_queue_id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 1000);
}

#[test]
fn spooled_bodies_are_copied_into_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _, _) = Queue::open(dir.path()).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| b"abcdefghij\r\n"[(i % 12) as usize])
        .collect();
    let spool = q.spool_path("BIG");
    fs::write(&spool, &big).unwrap();
    let (tx, rx) = channel();
    q.commit(
        env("BIG"),
        Body::File(spool.clone()),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    let small = commit(&q, "SMALL", b"small\r\n");
    let m = rx.recv().unwrap().unwrap();
    assert!(!spool.exists(), "spool file removed after commit");
    assert!(matches!(m.content, Content::Stored { .. }));
    assert_eq!(m.content.len(), big.len() as u64);
    assert_eq!(m.content.to_vec().unwrap(), big);
    assert_eq!(small.content.to_vec().unwrap(), b"small\r\n");
    q.shutdown();
    let (q, pending, warnings) = Queue::open(dir.path()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(pending.len(), 2);
    let big_back = pending.iter().find(|p| p.envelope.id == "BIG").unwrap();
    assert_eq!(big_back.content.to_vec().unwrap(), big);
    q.shutdown();
}

#[test]
fn a_missing_spool_file_fails_that_commit_only() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _, _) = Queue::open(dir.path()).unwrap();
    let (tx, rx) = channel();
    q.commit(
        env("GONE"),
        Body::File(q.spool_path("nope")),
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    );
    assert!(!rx.recv().unwrap());
    let ok = commit(&q, "OK", b"fine\r\n");
    q.shutdown();
    let (q, pending, _) = Queue::open(dir.path()).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].loc, ok.loc);
    q.shutdown();
}

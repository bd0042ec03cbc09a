//! mxguard's durable mail queue, with group commit.
//!
//! Accepted mail is appended to a journal of segment files in
//! `data_dir/queue/` (see [`journal`]) by one committer thread. Sessions
//! hand it their message with [`Queue::commit`]; the thread gathers every
//! commit that arrives while it is busy into one batch, writes the batch
//! and calls `fdatasync` once, then answers each commit. A session sends
//! its 250 only after that answer, so each message is on disk before the
//! client hears "accepted", while concurrent sessions share the cost of
//! the flush: one `fdatasync` costs about as much as writing a few hundred
//! small messages, so the accept rate grows with concurrency instead of
//! being capped by the disk's flush rate.
//!
//! When a message has been delivered, [`Queue::delivered`] appends a
//! marker (not flushed: losing it in a crash means one more delivery, never
//! a lost message). A segment file is removed once it and every older
//! segment hold no undelivered message. At start-up, [`Queue::open`]
//! replays the journal and returns every message not yet delivered.
//!
//! # Security
//! Envelope values come from SMTP clients; see [`envelope`] for how they
//! are kept from forging lines. Journal files are re-read after a crash and
//! parsed defensively.

mod content;
pub mod deferred;
pub mod envelope;
mod journal;
pub mod schedule;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

pub use content::{Body, Content};
pub use deferred::Deferred;
pub use envelope::{Envelope, RcptStatus, Recipient, Target};
pub use journal::RecordLoc;
pub use schedule::{Outcome, RetryPolicy};

/// A new segment is started past this size.
const MAX_SEGMENT: u64 = 64 * 1024 * 1024;
/// At most this many commits share one flush (bounds the batch's memory).
const MAX_BATCH: usize = 512;

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("writing the queue journal: {0}")]
    Write(io::Error),
    #[error("the queue is shut down")]
    Closed,
}

/// A message that is durably queued.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    pub loc: RecordLoc,
    pub envelope: Envelope,
    /// The message as it is delivered (trace headers included).
    pub content: Content,
}

type CommitReply = Box<dyn FnOnce(Result<QueuedMessage, QueueError>) + Send>;

enum Job {
    Commit {
        envelope: Envelope,
        body: Body,
        reply: CommitReply,
    },
    Delivered(RecordLoc),
    Stop,
}

/// Handle on the queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Job>,
    dir: PathBuf,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

static ID_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new queue id: microseconds since the epoch and a counter, in hex, so
/// ids sort by arrival and never repeat within a process.
pub fn new_queue_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff;
    format!("{micros:013X}{n:03X}")
}

impl Queue {
    /// Opens (creating if needed) the queue in `dir`, replays its journal
    /// and starts the committer. Returns the messages still to deliver.
    pub fn open(dir: &Path) -> Result<(Queue, Vec<QueuedMessage>, Vec<String>), QueueError> {
        Self::open_with(dir, MAX_SEGMENT)
    }

    fn open_with(
        dir: &Path,
        max_segment: u64,
    ) -> Result<(Queue, Vec<QueuedMessage>, Vec<String>), QueueError> {
        let dir_err = |source| QueueError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(dir_err)?;
        // Spool files of sessions that were cut off: their clients never
        // got a 250, so they will send again.
        let spool = dir.join("spool");
        let _ = fs::remove_dir_all(&spool);
        fs::create_dir_all(&spool).map_err(dir_err)?;
        let scan = journal::scan(dir).map_err(dir_err)?;
        let active = journal::ActiveSegment::create(dir, scan.next_seq).map_err(dir_err)?;
        let pending: Vec<QueuedMessage> = scan
            .pending
            .into_iter()
            .map(|r| QueuedMessage {
                loc: r.loc,
                envelope: r.envelope,
                content: r.content,
            })
            .collect();
        let mut live = scan.live;
        live.insert(active.seq, 0);
        let (tx, rx) = mpsc::channel();
        let mut committer = Committer {
            dir: dir.to_path_buf(),
            active,
            live,
            buf: Vec::new(),
            max_segment,
        };
        committer.collect_garbage();
        let thread = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(dir_err)?;
        Ok((
            Queue {
                tx,
                dir: dir.to_path_buf(),
                thread: Arc::new(Mutex::new(Some(thread))),
            },
            pending,
            scan.warnings,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where sessions spool large messages before committing them.
    pub fn spool_path(&self, queue_id: &str) -> PathBuf {
        self.dir.join("spool").join(queue_id)
    }

    /// Queues a message; `reply` runs on the committer thread once the
    /// message is durable (or the write failed).
    pub fn commit(&self, envelope: Envelope, body: Body, reply: CommitReply) {
        if let Err(mpsc::SendError(Job::Commit { reply, .. })) = self.tx.send(Job::Commit {
            envelope,
            body,
            reply,
        }) {
            reply(Err(QueueError::Closed));
        }
    }

    /// Records that every recipient of the message has been dealt with.
    pub fn delivered(&self, loc: RecordLoc) {
        let _ = self.tx.send(Job::Delivered(loc));
    }

    /// Writes what is pending and stops the committer thread.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Job::Stop);
        let handle = self.thread.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

struct Committer {
    dir: PathBuf,
    active: journal::ActiveSegment,
    /// Undelivered messages per segment.
    live: BTreeMap<u64, usize>,
    buf: Vec<u8>,
    max_segment: u64,
}

impl Committer {
    fn run(&mut self, rx: Receiver<Job>) {
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            stop = self.batch(jobs);
        }
        // Last markers, flushed so a clean stop never redelivers.
        let _ = self.active.file.sync_data();
    }

    /// Writes one batch; returns true when asked to stop.
    fn batch(&mut self, jobs: Vec<Job>) -> bool {
        if self.active.len > self.max_segment {
            self.rotate();
        }
        let start = self.active.len;
        self.buf.clear();
        let mut stop = false;
        let mut commits = Vec::new();
        let mut delivered = Vec::new();
        let mut failure: Option<io::Error> = None;
        for job in jobs {
            match job {
                Job::Commit {
                    envelope,
                    body,
                    reply,
                } => {
                    if failure.is_some() {
                        commits.push((RecordLoc::default(), envelope, None, reply, None));
                        continue;
                    }
                    let head = envelope.to_bytes();
                    let offset = self.active.len + self.buf.len() as u64;
                    let loc = RecordLoc {
                        segment: self.active.seq,
                        offset,
                    };
                    let body_at = offset + journal::HEADER as u64 + head.len() as u64;
                    match body {
                        Body::Memory(m) => {
                            journal::encode_record(
                                journal::KIND_MESSAGE,
                                &[&head, &m],
                                &mut self.buf,
                            );
                            commits.push((
                                loc,
                                envelope,
                                Some(Content::Memory(Arc::new(m))),
                                reply,
                                None,
                            ));
                        }
                        Body::File(path) => {
                            // Large: flush what is buffered, then stream the file.
                            let r = self.active.write(&self.buf).and_then(|()| {
                                self.buf.clear();
                                journal::append_file_record(&mut self.active, &head, &path)
                            });
                            match r {
                                Ok(len) => {
                                    let content = Content::Stored {
                                        path: journal::segment_path(&self.dir, self.active.seq),
                                        offset: body_at,
                                        len,
                                    };
                                    commits.push((loc, envelope, Some(content), reply, Some(path)));
                                }
                                Err(e) => {
                                    commits.push((loc, envelope, None, reply, Some(path)));
                                    failure = Some(e);
                                }
                            }
                        }
                    }
                }
                Job::Delivered(loc) => {
                    journal::encode_delivered(loc, &mut self.buf);
                    delivered.push(loc);
                }
                Job::Stop => stop = true,
            }
        }
        if failure.is_none() {
            let durable = !commits.is_empty();
            if let Err(e) = self
                .active
                .write(&self.buf)
                .and_then(|()| if durable { self.active.sync() } else { Ok(()) })
            {
                failure = Some(e);
            }
        }
        match failure {
            None => {
                *self.live.entry(self.active.seq).or_insert(0) += commits.len();
                for (loc, envelope, content, reply, spool) in commits {
                    if let Some(p) = spool {
                        let _ = fs::remove_file(p);
                    }
                    match content {
                        Some(content) => reply(Ok(QueuedMessage {
                            loc,
                            envelope,
                            content,
                        })),
                        None => reply(Err(QueueError::Closed)),
                    }
                }
                for loc in delivered {
                    if let Some(n) = self.live.get_mut(&loc.segment) {
                        *n = n.saturating_sub(1);
                    }
                }
                self.collect_garbage();
            }
            Some(e) => {
                tracing::error!(error = %e, "queue journal write failed");
                self.active.truncate(start);
                for (_, _, _, reply, spool) in commits {
                    if let Some(p) = spool {
                        let _ = fs::remove_file(p);
                    }
                    reply(Err(QueueError::Write(io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                }
                // Delivered markers are lost; those messages may be delivered
                // again after a restart, which is the safe direction.
                self.rotate();
            }
        }
        stop
    }

    fn rotate(&mut self) {
        match journal::ActiveSegment::create(&self.dir, self.active.seq + 1) {
            Ok(seg) => {
                let _ = self.active.file.sync_data();
                self.live.insert(seg.seq, 0);
                self.active = seg;
                self.collect_garbage();
            }
            Err(e) => tracing::error!(error = %e, "cannot start a new queue segment"),
        }
    }

    /// Removes the oldest segments while they hold nothing undelivered.
    /// Going oldest-first keeps every "delivered" marker that still matters.
    fn collect_garbage(&mut self) {
        while let Some((&seq, &n)) = self.live.iter().next() {
            if n > 0 || seq == self.active.seq {
                break;
            }
            let _ = fs::remove_file(journal::segment_path(&self.dir, seq));
            self.live.remove(&seq);
        }
    }
}

#[cfg(test)]
mod tests;

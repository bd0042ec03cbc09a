//! The delivery worker: takes durably queued messages and delivers each
//! recipient's copy, then marks the message delivered in the queue.
//!
//! It runs on its own thread (file IO and flushes block) and works in
//! batches: every message that is waiting when it wakes is delivered in one
//! [`maildir::Maildirs::deliver_batch`]. A copy that fails (disk full,
//! permissions) is retried after [`RETRY_AFTER`] without delivering the
//! copies that already succeeded again; the queue entry stays until every
//! copy is delivered, so a crash at any point means a later delivery,
//! never a lost message.

pub mod maildir;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mxguard_queue::{Content, Queue, QueuedMessage, Target};

use maildir::Maildirs;

/// How long a failed copy waits before the next attempt.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
const MAX_BATCH: usize = 256;

/// A message in the worker's hands, with the mailboxes still to serve.
struct Work {
    msg: QueuedMessage,
    mailboxes: BTreeSet<String>,
}

/// Handle to the worker thread.
pub struct Delivery {
    tx: Option<Sender<QueuedMessage>>,
    thread: Option<JoinHandle<()>>,
}

impl Delivery {
    /// Starts the worker; `mail_root` is `data_dir/mail`.
    pub fn start(mail_root: PathBuf, hostname: &str, queue: Queue) -> std::io::Result<Delivery> {
        let (tx, rx) = mpsc::channel();
        let maildirs = Maildirs::new(mail_root, hostname);
        let thread = std::thread::Builder::new()
            .name("delivery".into())
            .spawn(move || run(rx, maildirs, queue))?;
        Ok(Delivery {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands over a queued message.
    pub fn submit(&self, msg: QueuedMessage) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }

    /// A sender for other threads and tasks.
    pub fn sender(&self) -> Option<Sender<QueuedMessage>> {
        self.tx.clone()
    }

    /// Finishes the messages already handed over and stops. Copies waiting
    /// for a retry stay in the queue for the next start.
    pub fn stop(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<QueuedMessage>, mut maildirs: Maildirs, queue: Queue) {
    let mut retry: Vec<(Instant, Work)> = Vec::new();
    loop {
        let wait = retry
            .iter()
            .map(|(at, _)| at.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        let mut batch: Vec<Work> = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(m) => batch.push(Work::new(m)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(Work::new(m)),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = retry.into_iter().partition(|(at, _)| *at <= now);
        retry = later;
        batch.extend(due.into_iter().map(|(_, w)| w));
        if batch.is_empty() {
            continue;
        }
        for w in deliver(&mut maildirs, &queue, batch) {
            retry.push((Instant::now() + RETRY_AFTER, w));
        }
    }
}

impl Work {
    fn new(msg: QueuedMessage) -> Work {
        // One copy per mailbox, even when several RCPTs (an account and its
        // alias) lead to the same one.
        let mailboxes = msg
            .envelope
            .recipients
            .iter()
            .map(|r| match &r.target {
                Target::Local { mailbox } => mailbox.clone(),
            })
            .collect();
        Work { msg, mailboxes }
    }
}

/// Delivers a batch; returns the work that must be tried again.
fn deliver(maildirs: &mut Maildirs, queue: &Queue, batch: Vec<Work>) -> Vec<Work> {
    let mut items: Vec<(PathBuf, &Content)> = Vec::new();
    let mut owners: Vec<(usize, String)> = Vec::new();
    let mut failed: Vec<Vec<(String, String)>> = vec![Vec::new(); batch.len()];
    for (i, w) in batch.iter().enumerate() {
        for mb in &w.mailboxes {
            match maildirs.path_for(mb) {
                Ok(p) => {
                    items.push((p, &w.msg.content));
                    owners.push((i, mb.clone()));
                }
                Err(e) => failed[i].push((mb.clone(), e.to_string())),
            }
        }
    }
    let results = maildirs.deliver_batch(&items);
    drop(items);
    let mut done: Vec<Vec<String>> = vec![Vec::new(); batch.len()];
    for ((i, mb), r) in owners.into_iter().zip(results) {
        match r {
            Ok(()) => done[i].push(mb),
            Err(e) => failed[i].push((mb, e.to_string())),
        }
    }
    let mut again = Vec::new();
    for (i, mut w) in batch.into_iter().enumerate() {
        for mb in &done[i] {
            tracing::info!(
                queue_id = %w.msg.envelope.id,
                mailbox = %mb,
                size = w.msg.content.len(),
                "delivered to Maildir"
            );
            w.mailboxes.remove(mb);
        }
        for (mb, err) in &failed[i] {
            tracing::warn!(
                queue_id = %w.msg.envelope.id,
                mailbox = %mb,
                error = %err,
                retry_in = ?RETRY_AFTER,
                "Maildir delivery failed; will retry"
            );
        }
        if w.mailboxes.is_empty() {
            queue.delivered(w.msg.loc);
        } else {
            again.push(w);
        }
    }
    again
}

//! The local delivery worker: a thread that writes Maildir copies in
//! batches and reports each copy's outcome to the tracker.
//!
//! File IO and flushes block, so they run here rather than on the async
//! runtime; every job waiting when the thread wakes goes into one
//! [`Maildirs::deliver_batch`], which shares the flushes of a batch.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use mxguard_queue::{Content, Outcome};
use tokio::sync::mpsc::UnboundedSender;

use super::maildir::Maildirs;
use super::tracker::TrackerMsg;

const MAX_BATCH: usize = 256;

/// Copies of one message to write: (recipient index, account mailbox).
pub(crate) struct LocalJob {
    pub id: String,
    pub content: Content,
    pub copies: Vec<(usize, String)>,
}

/// Handle to the worker thread.
pub(crate) struct LocalWorker {
    tx: Option<Sender<LocalJob>>,
    thread: Option<JoinHandle<()>>,
}

impl LocalWorker {
    pub(crate) fn start(
        mail_root: PathBuf,
        hostname: &str,
        report: UnboundedSender<TrackerMsg>,
    ) -> std::io::Result<LocalWorker> {
        let (tx, rx) = mpsc::channel();
        let maildirs = Maildirs::new(mail_root, hostname);
        let thread = std::thread::Builder::new()
            .name("local-delivery".into())
            .spawn(move || run(rx, maildirs, report))?;
        Ok(LocalWorker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn sender(&self) -> Option<Sender<LocalJob>> {
        self.tx.clone()
    }

    /// Finishes the jobs already handed over, then stops.
    pub(crate) fn stop(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<LocalJob>, mut maildirs: Maildirs, report: UnboundedSender<TrackerMsg>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // One flat list of copies; `owner[i]` says whose copy `i` is.
        let mut items = Vec::new();
        let mut owner = Vec::new();
        let mut results: Vec<Vec<(usize, Outcome)>> = jobs.iter().map(|_| Vec::new()).collect();
        for (j, job) in jobs.iter().enumerate() {
            for (idx, mailbox) in &job.copies {
                match maildirs.path_for(mailbox) {
                    Ok(path) => {
                        items.push((path, &job.content));
                        owner.push((j, *idx, mailbox.as_str()));
                    }
                    Err(e) => results[j].push((
                        *idx,
                        Outcome::Temporary(format!("Maildir of {mailbox}: {e}")),
                    )),
                }
            }
        }
        let outcomes = maildirs.deliver_batch(&items);
        for ((j, idx, mailbox), r) in owner.into_iter().zip(outcomes) {
            let outcome = match r {
                Ok(()) => Outcome::Delivered(format!("delivered to Maildir of {mailbox}")),
                Err(e) => Outcome::Temporary(format!("Maildir delivery to {mailbox} failed: {e}")),
            };
            results[j].push((idx, outcome));
        }
        drop(items);
        for (job, results) in jobs.into_iter().zip(results) {
            let _ = report.send(TrackerMsg::Outcomes {
                id: job.id,
                results,
            });
        }
    }
}

//! Delivery: from the queue to Maildirs and to other servers.
//!
//! - [`tracker`]: owns every queued message's state, schedules retries,
//!   sends bounces and delay notices, answers `mxguard queue`.
//! - [`local`] and [`maildir`]: the Maildir worker thread.
//! - [`outbound`] and [`remote`]: next-hop choice (routes, smarthost, MX)
//!   and the SMTP client.
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`after_filter`]: the `after_accept` filter programs, which judge a
//!   held message before any delivery.
//!
//! A message is removed from the queue only once every recipient is
//! delivered or bounced; a crash at any point means a later delivery (at
//! worst a second copy), never a lost message.

mod after_filter;
pub mod dsn;
mod local;
pub mod maildir;
mod outbound;
pub mod remote;
mod tracker;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mxguard_config::Config;
use mxguard_queue::schedule::RetryPolicy;
use mxguard_queue::{Deferred, Queue, QueuedMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::facts::dns::Dns;
use local::LocalWorker;
use outbound::Outbound;
pub use tracker::Control;
use tracker::{Tracker, TrackerMsg};

/// The running delivery machinery.
pub struct Delivery {
    tx: mpsc::UnboundedSender<TrackerMsg>,
    task: JoinHandle<()>,
    local: LocalWorker,
}

/// A cheap handle for sessions and the control socket.
#[derive(Clone)]
pub struct DeliveryHandle {
    tx: mpsc::UnboundedSender<TrackerMsg>,
}

impl DeliveryHandle {
    /// Hands over a message that is durably queued.
    pub fn submit(&self, msg: QueuedMessage) {
        let _ = self.tx.send(TrackerMsg::New(msg));
    }

    /// Runs a `mxguard queue` request; returns the text to show.
    pub async fn control(&self, c: Control) -> String {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(TrackerMsg::Control(c, tx)).is_err() {
            return "mxguard is stopping\n".into();
        }
        rx.await.unwrap_or_else(|_| "mxguard is stopping\n".into())
    }
}

/// The retry policy of `[queue]`.
pub fn retry_policy(cfg: &Config) -> RetryPolicy {
    RetryPolicy {
        retry: cfg.queue.retry.clone(),
        max_age: cfg.queue.max_age,
        delay_warning: cfg.queue.delay_warning,
    }
}

impl Delivery {
    /// Starts delivery (inside the tokio runtime) with the messages the
    /// journal still holds and those in the deferred store.
    pub fn start(
        cfg: Arc<Config>,
        queue: Queue,
        pending: Vec<QueuedMessage>,
        own_addrs: Vec<SocketAddr>,
        dns: Dns,
    ) -> anyhow::Result<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        let data_dir = &cfg.server.data_dir;
        let local = LocalWorker::start(data_dir.join("mail"), &cfg.server.hostname, tx.clone())
            .context("cannot start the local delivery worker")?;
        let deferred = Deferred::open(queue.dir())
            .with_context(|| format!("cannot open {}/deferred", queue.dir().display()))?;
        let (stored, warnings) = deferred
            .load_all()
            .with_context(|| format!("cannot read {}/deferred", queue.dir().display()))?;
        for w in warnings {
            tracing::warn!("deferred queue: {w}");
        }
        if !stored.is_empty() || !pending.is_empty() {
            tracing::info!(
                deferred = stored.len(),
                journal = pending.len(),
                "queue recovery: resuming delivery of messages left from the last run"
            );
        }
        let outbound = Arc::new(Outbound::new(cfg.clone(), dns, own_addrs));
        outbound.start_reaper();
        let local_tx = local
            .sender()
            .ok_or_else(|| anyhow::anyhow!("local delivery worker is not running"))?;
        let mut tracker = Tracker::new(
            cfg.clone(),
            queue,
            deferred,
            retry_policy(&cfg),
            local_tx,
            outbound,
            tx.clone(),
        );
        tracker.adopt_deferred(stored);
        for m in pending {
            let _ = tx.send(TrackerMsg::New(m));
        }
        let task = tokio::spawn(tracker.run(rx));
        Ok(Delivery { tx, task, local })
    }

    pub fn handle(&self) -> DeliveryHandle {
        DeliveryHandle {
            tx: self.tx.clone(),
        }
    }

    /// Lets work in progress finish (bounded) and stops.
    pub async fn stop(self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(TrackerMsg::Stop(done_tx)).is_ok() {
            let _ = done_rx.await;
        }
        let _ = self.task.await;
        let local = self.local;
        let _ = tokio::task::spawn_blocking(move || local.stop()).await;
    }
}

//! The tracker: the one owner of every queued message's delivery state.
//!
//! Each message that is queued (by a session, by a bounce, or found at
//! start-up) comes here. The tracker sends its local copies to the Maildir
//! worker and its remote recipients, grouped by next hop, to outbound
//! tasks; each reports outcomes back. When all are in, the retry schedule
//! (`mxguard_queue::schedule`) says what each recipient's state is now:
//!
//! - every recipient done: the message leaves the queue;
//! - some recipients failed for good: one bounce to the sender (never to
//!   `<>`), quoting the reasons;
//! - some still pending: the message moves from the journal to the
//!   deferred store (one file and its envelope), which is updated after
//!   each later attempt, and waits for its next attempt here;
//! - pending past `queue.delay_warning`: one delay notice to the sender.
//!
//! The tracker also answers `mxguard queue` requests over the control
//! socket: list, show, flush and delete.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mxguard_config::Config;
use mxguard_policy::content::ContentAction;
use mxguard_queue::schedule::{self, Outcome, RetryPolicy};
use mxguard_queue::{
    Body, Content, Deferred, Envelope, Queue, QueuedMessage, RcptStatus, Recipient, RecordLoc,
    Target, new_queue_id,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::after_filter::{self, AfterResult};
use super::dsn;
use super::local::LocalJob;
use super::outbound::{Hop, Outbound, hop_for};

/// What the tracker is told.
pub(crate) enum TrackerMsg {
    /// A message durably queued in the journal.
    New(QueuedMessage),
    /// Outcomes of one delivery job: (recipient index, outcome).
    Outcomes {
        id: String,
        results: Vec<(usize, Outcome)>,
    },
    Control(Control, oneshot::Sender<String>),
    Stop(oneshot::Sender<()>),
    /// The `after_accept` programs judged a held message.
    Filtered {
        id: String,
        result: AfterResult,
    },
    /// A message re-queued with the headers they added (or why not).
    Requeued {
        old: String,
        result: Result<QueuedMessage, String>,
    },
}

/// A `mxguard queue` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    List,
    Show(String),
    Flush,
    Delete(String),
}

enum Origin {
    Journal(RecordLoc),
    Deferred,
}

struct Entry {
    env: Envelope,
    content: Content,
    origin: Origin,
    /// Delivery jobs out; 0 = waiting for the next attempt.
    outstanding: usize,
    /// Recipients that failed in the current round (to bounce).
    newly_failed: Vec<usize>,
    delete: bool,
}

pub(crate) struct Tracker {
    pub cfg: Arc<Config>,
    pub queue: Queue,
    pub deferred: Deferred,
    pub policy: RetryPolicy,
    pub local: Option<std::sync::mpsc::Sender<LocalJob>>,
    pub outbound: Arc<Outbound>,
    pub tx: UnboundedSender<TrackerMsg>,
    entries: HashMap<String, Entry>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

impl Tracker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: Arc<Config>,
        queue: Queue,
        deferred: Deferred,
        policy: RetryPolicy,
        local: std::sync::mpsc::Sender<LocalJob>,
        outbound: Arc<Outbound>,
        tx: UnboundedSender<TrackerMsg>,
    ) -> Tracker {
        Tracker {
            cfg,
            queue,
            deferred,
            policy,
            local: Some(local),
            outbound,
            tx,
            entries: HashMap::new(),
        }
    }

    /// Takes over the messages of the deferred store (at start-up). They
    /// are tried again at once: a restart is often how an administrator
    /// says the trouble is fixed.
    pub(crate) fn adopt_deferred(&mut self, stored: Vec<(Envelope, Content)>) {
        for (mut env, content) in stored {
            for r in env
                .recipients
                .iter_mut()
                .filter(|r| r.status == RcptStatus::Pending)
            {
                r.next_attempt = 0;
            }
            self.entries.insert(
                env.id.clone(),
                Entry {
                    env,
                    content,
                    origin: Origin::Deferred,
                    outstanding: 0,
                    newly_failed: Vec::new(),
                    delete: false,
                },
            );
        }
    }

    pub(crate) async fn run(mut self, mut rx: UnboundedReceiver<TrackerMsg>) {
        loop {
            let due = self.next_due();
            let sleep = match due {
                Some(at) => Duration::from_secs(at.saturating_sub(now_secs())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(TrackerMsg::Stop(done)) => {
                        self.stop(&mut rx).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(m) => self.handle(m).await,
                },
                _ = tokio::time::sleep(sleep) => self.dispatch_due(false),
            }
        }
    }

    /// Lets delivery jobs in flight report (bounded), then stops. What is
    /// not finished stays in the journal or the deferred store.
    async fn stop(&mut self, rx: &mut UnboundedReceiver<TrackerMsg>) {
        self.local.take();
        self.outbound.reap(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.entries.values().any(|e| e.outstanding > 0) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(TrackerMsg::Outcomes { id, results })) => self.outcomes(id, results).await,
                Ok(Some(TrackerMsg::Control(_, reply))) => {
                    let _ = reply.send("mxguard is stopping".into());
                }
                // The message stays held in the queue: judged again at
                // the next start.
                Ok(Some(
                    TrackerMsg::Filtered { id, .. } | TrackerMsg::Requeued { old: id, .. },
                )) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.outstanding = e.outstanding.saturating_sub(1);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.outstanding == 0)
            .filter_map(|e| schedule::next_attempt(&e.env))
            .min()
    }

    async fn handle(&mut self, msg: TrackerMsg) {
        match msg {
            TrackerMsg::New(m) => {
                let id = m.envelope.id.clone();
                if self.entries.contains_key(&id) {
                    // Already in the deferred store (a crash came between
                    // storing it and marking the journal record).
                    self.queue.delivered(m.loc);
                    return;
                }
                self.adopt_journal(m).await;
            }
            TrackerMsg::Outcomes { id, results } => self.outcomes(id, results).await,
            TrackerMsg::Control(c, reply) => {
                let answer = self.control(c).await;
                let _ = reply.send(answer);
            }
            TrackerMsg::Stop(done) => {
                let _ = done.send(());
            }
            TrackerMsg::Filtered { id, result } => self.filtered(id, result).await,
            TrackerMsg::Requeued { old, result } => self.requeued(old, result).await,
        }
    }

    /// Takes a message of the journal in hand and starts it.
    async fn adopt_journal(&mut self, m: QueuedMessage) {
        let id = m.envelope.id.clone();
        self.entries.insert(
            id.clone(),
            Entry {
                env: m.envelope,
                content: m.content,
                origin: Origin::Journal(m.loc),
                outstanding: 0,
                newly_failed: Vec::new(),
                delete: false,
            },
        );
        self.dispatch(&id).await;
    }

    /// Hands a held message to its `after_accept` programs.
    fn start_filter(&mut self, id: &str) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        e.outstanding += 1;
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        let env = e.env.clone();
        let content = e.content.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let result = after_filter::judge(&cfg, &env, &content).await;
            let _ = tx.send(TrackerMsg::Filtered { id, result });
        });
    }

    /// What the `after_accept` programs decided: deliver, bounce, discard,
    /// or (no answer) try again on the retry schedule.
    async fn filtered(&mut self, id: String, result: AfterResult) {
        let now = now_secs();
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.outstanding = e.outstanding.saturating_sub(1);
        if e.delete {
            // Deleted by the administrator meanwhile.
            if e.outstanding == 0 {
                self.finalize(&id).await;
            }
            return;
        }
        let verdict = match result {
            AfterResult::Failed { rule, why } => {
                tracing::warn!(queue_id = %id, check = "filter", rule = %rule, error = %why,
                    "after_accept filter program failed; delivery waits and it runs again later");
                let text = format!("451 4.3.0 content filter {rule} failed: {why}");
                for (i, r) in e.env.recipients.iter_mut().enumerate() {
                    if r.status == RcptStatus::Pending {
                        schedule::apply(
                            r,
                            Outcome::Temporary(text.clone()),
                            e.env.received,
                            now,
                            &self.policy,
                        );
                        if r.status == RcptStatus::Failed {
                            e.newly_failed.push(i);
                        }
                    }
                }
                if e.outstanding == 0 {
                    self.finalize(&id).await;
                }
                return;
            }
            AfterResult::Judged(v) => v,
        };
        let fired = if verdict.fired.is_empty() {
            "none".to_string()
        } else {
            verdict.fired.join(",")
        };
        let score = mxguard_policy::content::format_score(verdict.score);
        match verdict.action {
            ContentAction::Reject(v) => {
                tracing::info!(queue_id = %id, from = %e.env.sender, check = v.check.as_str(), rules = %fired,
                    score = %score, reason = %v.reason, reply = %v.reply,
                    "message refused after acceptance ({}); the sender is sent a bounce", v.check.as_str());
                let text = format!(
                    "{} (refused after acceptance by {})",
                    v.reply.to_wire().trim_end(),
                    v.reason
                );
                e.env.filter_score = None;
                for (i, r) in e.env.recipients.iter_mut().enumerate() {
                    if r.status == RcptStatus::Pending {
                        r.status = RcptStatus::Failed;
                        r.last_error = text.clone();
                        e.newly_failed.push(i);
                    }
                }
                if e.outstanding == 0 {
                    self.finalize(&id).await;
                }
            }
            ContentAction::Discard { rule } => {
                tracing::info!(queue_id = %id, from = %e.env.sender, check = "filter", rules = %fired,
                    score = %score, "message discarded after acceptance (filter {rule})");
                e.delete = true;
                if e.outstanding == 0 {
                    self.finalize(&id).await;
                }
            }
            ContentAction::Accept | ContentAction::Redirect { .. } => {
                if verdict.fired.is_empty() {
                    tracing::debug!(queue_id = %id, check = "filter", score = %score,
                        "after_accept filters passed the message");
                } else {
                    tracing::info!(queue_id = %id, from = %e.env.sender, check = "filter", rules = %fired,
                        score = %score, headers = verdict.add_headers.len(),
                        "after_accept filters passed the message");
                }
                e.env.filter_score = None;
                if verdict.add_headers.is_empty() {
                    self.dispatch(&id).await;
                } else {
                    self.requeue(&id, verdict.add_headers);
                }
            }
        }
    }

    /// Queues the message again with `headers` at its top (the queued
    /// content cannot change in place); the old copy goes when the new
    /// one is durable, so a crash in between means a second judgement,
    /// never a lost message.
    fn requeue(&mut self, id: &str, headers: Vec<(String, String)>) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        e.outstanding += 1;
        let env = e.env.clone();
        let content = e.content.clone();
        let queue = self.queue.clone();
        let tx = self.tx.clone();
        let old = id.to_string();
        tokio::task::spawn_blocking(move || {
            let body = match after_filter::with_headers(&content, &headers) {
                Ok(b) => b,
                Err(err) => {
                    let _ = tx.send(TrackerMsg::Requeued {
                        old,
                        result: Err(format!("reading the queued message: {err}")),
                    });
                    return;
                }
            };
            queue.commit(
                env,
                Body::Memory(body),
                Box::new(move |r| {
                    let _ = tx.send(TrackerMsg::Requeued {
                        old,
                        result: r.map_err(|e| e.to_string()),
                    });
                }),
            );
        });
    }

    async fn requeued(&mut self, old: String, result: Result<QueuedMessage, String>) {
        let Some(e) = self.entries.get_mut(&old) else {
            return;
        };
        e.outstanding = e.outstanding.saturating_sub(1);
        let deleted = e.delete;
        match result {
            Ok(m) => {
                if let Some(e) = self.entries.remove(&old) {
                    self.forget(e).await;
                }
                if deleted {
                    // Deleted by the administrator meanwhile: the new copy
                    // goes too.
                    self.queue.delivered(m.loc);
                    return;
                }
                self.adopt_journal(m).await;
            }
            Err(_) if deleted => self.finalize(&old).await,
            Err(why) => {
                tracing::error!(queue_id = %old, error = %why,
                    "cannot add the after_accept filters' headers; delivering without them");
                self.dispatch(&old).await;
            }
        }
    }

    /// Starts every waiting message whose time has come (`all`: every one).
    fn dispatch_due(&mut self, all: bool) {
        let now = now_secs();
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.outstanding == 0)
            .filter(|(_, e)| all || schedule::next_attempt(&e.env).is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.start_jobs(&id);
        }
    }

    async fn dispatch(&mut self, id: &str) {
        self.start_jobs(id);
        if self.entries.get(id).is_some_and(|e| e.outstanding == 0) {
            self.finalize(id).await;
        }
    }

    /// Hands the pending recipients of a message to the workers (or, while
    /// it is held for its `after_accept` programs, the message to them).
    fn start_jobs(&mut self, id: &str) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if e.env.filter_score.is_some()
            && e.env
                .recipients
                .iter()
                .any(|r| r.status == RcptStatus::Pending)
        {
            self.start_filter(id);
            return;
        }
        let mut copies = Vec::new();
        let mut groups: HashMap<Hop, Vec<(usize, String)>> = HashMap::new();
        for (i, r) in e.env.recipients.iter().enumerate() {
            if r.status != RcptStatus::Pending {
                continue;
            }
            match &r.target {
                Target::Local { mailbox } => copies.push((i, mailbox.clone())),
                Target::Remote => groups
                    .entry(hop_for(&self.cfg, domain_of(&r.address)))
                    .or_default()
                    .push((i, r.address.clone())),
            }
        }
        if !copies.is_empty() {
            let job = LocalJob {
                id: id.to_string(),
                content: e.content.clone(),
                copies,
            };
            match &self.local {
                Some(l) if l.send(job).is_ok() => e.outstanding += 1,
                _ => {}
            }
        }
        for (hop, rcpts) in groups {
            e.outstanding += 1;
            let outbound = self.outbound.clone();
            let tx = self.tx.clone();
            let id = id.to_string();
            let sender = e.env.sender.clone();
            let content = e.content.clone();
            tokio::spawn(async move {
                let results = outbound.deliver(&id, &sender, &rcpts, &content, &hop).await;
                let _ = tx.send(TrackerMsg::Outcomes { id, results });
            });
        }
    }

    async fn outcomes(&mut self, id: String, results: Vec<(usize, Outcome)>) {
        let now = now_secs();
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        for (i, outcome) in results {
            let Some(r) = e.env.recipients.get_mut(i) else {
                continue;
            };
            schedule::apply(r, outcome, e.env.received, now, &self.policy);
            log_outcome(&e.env.id, r);
            if r.status == RcptStatus::Failed {
                e.newly_failed.push(i);
            }
        }
        e.outstanding = e.outstanding.saturating_sub(1);
        if e.outstanding == 0 {
            self.finalize(&id).await;
        }
    }

    /// After a round of attempts: bounce, warn, and store or drop.
    async fn finalize(&mut self, id: &str) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if e.delete {
            let e = self.entries.remove(id);
            if let Some(e) = e {
                self.forget(e).await;
            }
            return;
        }
        let failed = std::mem::take(&mut e.newly_failed);
        let now = now_secs();
        let warn = schedule::needs_delay_warning(&e.env, now, &self.policy);
        if warn {
            e.env.warned = true;
        }
        let env = e.env.clone();
        let content = e.content.clone();
        if !failed.is_empty() {
            self.notify(dsn::Kind::Failed, &env, &content, &failed);
        }
        if warn {
            let pending: Vec<usize> = (0..env.recipients.len())
                .filter(|&i| env.recipients[i].status == RcptStatus::Pending)
                .collect();
            self.notify(dsn::Kind::Delayed, &env, &content, &pending);
        }
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if !e
            .env
            .recipients
            .iter()
            .any(|r| r.status == RcptStatus::Pending)
        {
            if let Some(e) = self.entries.remove(id) {
                tracing::info!(queue_id = %id, "message done: every recipient delivered or bounced");
                self.forget(e).await;
            }
            return;
        }
        let next = schedule::next_attempt(&e.env).unwrap_or(now);
        tracing::info!(queue_id = %id, next_attempt_in = ?Duration::from_secs(next.saturating_sub(now)), "message deferred");
        let deferred = self.deferred.clone();
        let env = e.env.clone();
        match e.origin {
            Origin::Journal(loc) => {
                let content = e.content.clone();
                let r = tokio::task::spawn_blocking(move || deferred.store(&env, &content)).await;
                match r {
                    Ok(Ok(stored)) => {
                        e.content = stored;
                        e.origin = Origin::Deferred;
                        self.queue.delivered(loc);
                    }
                    Ok(Err(err)) => {
                        tracing::error!(queue_id = %id, error = %err, "cannot move the message to the deferred store; it stays in the journal")
                    }
                    Err(err) => {
                        tracing::error!(queue_id = %id, error = %err, "deferred store task failed")
                    }
                }
            }
            Origin::Deferred => {
                let r = tokio::task::spawn_blocking(move || deferred.write_envelope(&env)).await;
                if !matches!(r, Ok(Ok(()))) {
                    tracing::error!(queue_id = %id, "cannot update the deferred envelope; the next attempt may repeat copies");
                }
            }
        }
    }

    /// Removes a finished (or deleted) message from its storage.
    async fn forget(&self, e: Entry) {
        match e.origin {
            Origin::Journal(loc) => self.queue.delivered(loc),
            Origin::Deferred => {
                let deferred = self.deferred.clone();
                let id = e.env.id.clone();
                let r = tokio::task::spawn_blocking(move || deferred.remove(&id)).await;
                if !matches!(r, Ok(Ok(()))) {
                    tracing::error!(queue_id = %e.env.id, "cannot remove the message from the deferred store");
                }
            }
        }
    }

    /// Queues a bounce or delay notice about `which` recipients.
    fn notify(&self, kind: dsn::Kind, env: &Envelope, content: &Content, which: &[usize]) {
        if env.sender.is_empty() {
            tracing::info!(queue_id = %env.id, kind = ?kind, "no notice sent: the sender is <> (RFC 5321 4.5.5)");
            return;
        }
        let head = content.head(64 * 1024).unwrap_or_default();
        let notice_id = new_queue_id();
        let reported: Vec<dsn::Reported<'_>> = which
            .iter()
            .filter_map(|&i| env.recipients.get(i))
            .map(|r| dsn::Reported {
                address: &r.address,
                diagnostic: &r.last_error,
            })
            .collect();
        let text = dsn::build(&dsn::Notice {
            kind,
            hostname: &self.cfg.server.hostname,
            queue_id: &env.id,
            arrival: env.received,
            sender: &env.sender,
            recipients: reported,
            original_headers: dsn::header_section(&head),
            notice_id: &notice_id,
            now: SystemTime::now(),
        });
        let target = match self.cfg.account_for(&env.sender) {
            Some(a) => Target::Local {
                mailbox: a.address.clone(),
            },
            None if self.cfg.is_local_domain(domain_of(&env.sender)) => {
                tracing::warn!(queue_id = %env.id, sender = %env.sender, "no notice sent: the sender is in a local domain but no account");
                return;
            }
            None => Target::Remote,
        };
        let notice_env = Envelope {
            id: notice_id.clone(),
            received: now_secs(),
            sender: String::new(),
            client_ip: "127.0.0.1".into(),
            helo: self.cfg.server.hostname.clone(),
            recipients: vec![Recipient::new(env.sender.clone(), target)],
            warned: false,
            filter_score: None,
        };
        tracing::info!(queue_id = %env.id, notice = %notice_id, kind = ?kind, to = %env.sender, "sending a delivery status notification");
        let tx = self.tx.clone();
        let original = env.id.clone();
        self.queue.commit(
            notice_env,
            Body::Memory(text),
            Box::new(move |r| match r {
                Ok(m) => {
                    let _ = tx.send(TrackerMsg::New(m));
                }
                Err(e) => tracing::error!(queue_id = %original, error = %e, "cannot queue the delivery status notification"),
            }),
        );
    }

    async fn control(&mut self, c: Control) -> String {
        match c {
            Control::List => {
                if self.entries.is_empty() {
                    return "queue is empty\n".into();
                }
                let mut ids: Vec<&String> = self.entries.keys().collect();
                ids.sort();
                let mut out = String::new();
                for id in ids {
                    if let Some(e) = self.entries.get(id) {
                        out.push_str(&describe(e, false));
                    }
                }
                out.push_str(&format!("{} message(s)\n", self.entries.len()));
                out
            }
            Control::Show(id) => match self.entries.get(&id) {
                Some(e) => describe(e, true),
                None => format!("no message {id} in the queue\n"),
            },
            Control::Flush => {
                let mut n = 0;
                for e in self.entries.values_mut().filter(|e| e.outstanding == 0) {
                    for r in e
                        .env
                        .recipients
                        .iter_mut()
                        .filter(|r| r.status == RcptStatus::Pending)
                    {
                        r.next_attempt = 0;
                    }
                    n += 1;
                }
                self.dispatch_due(true);
                format!("flushed: {n} waiting message(s) are being tried now\n")
            }
            Control::Delete(id) => {
                let Some(e) = self.entries.get_mut(&id) else {
                    return format!("no message {id} in the queue\n");
                };
                tracing::info!(queue_id = %id, "message deleted by the administrator; no bounce sent");
                if e.outstanding > 0 {
                    e.delete = true;
                    return format!("{id}: will be deleted when the attempt in progress ends\n");
                }
                if let Some(e) = self.entries.remove(&id) {
                    self.forget(e).await;
                }
                format!("deleted {id}\n")
            }
        }
    }
}

fn log_outcome(id: &str, r: &Recipient) {
    match r.status {
        RcptStatus::Delivered => {
            tracing::info!(queue_id = %id, rcpt = %r.address, result = %r.last_error, "delivered")
        }
        RcptStatus::Failed => {
            tracing::info!(queue_id = %id, rcpt = %r.address, error = %r.last_error, "delivery failed for good")
        }
        RcptStatus::Pending => {
            tracing::info!(queue_id = %id, rcpt = %r.address, attempts = r.attempts, error = %r.last_error, "delivery deferred")
        }
    }
}

fn describe(e: &Entry, full: bool) -> String {
    let now = now_secs();
    let state = match (e.env.filter_score.is_some(), e.outstanding > 0) {
        (true, true) => "being judged by the after_accept filters",
        (true, false) => "held for the after_accept filters",
        (false, true) => "in flight",
        (false, false) => "deferred",
    };
    let sender = if e.env.sender.is_empty() {
        "<>"
    } else {
        &e.env.sender
    };
    let mut out = format!(
        "{}  {} bytes  age {}  from {}  ({})\n",
        e.env.id,
        e.content.len(),
        human(now.saturating_sub(e.env.received)),
        sender,
        state
    );
    if full {
        out.push_str(&format!(
            "  client {} helo {}\n",
            e.env.client_ip, e.env.helo
        ));
    }
    for r in &e.env.recipients {
        out.push_str(&format!(
            "  {}  {}  attempts {}",
            r.address,
            r.status.as_str(),
            r.attempts
        ));
        if r.status == RcptStatus::Pending && r.next_attempt > 0 {
            out.push_str(&format!(
                "  next in {}",
                human(r.next_attempt.saturating_sub(now))
            ));
        }
        if !r.last_error.is_empty() {
            out.push_str(&format!("  last: {}", r.last_error));
        }
        out.push('\n');
    }
    out
}

fn human(secs: u64) -> String {
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 7200 {
        format!("{}m", secs / 60)
    } else if secs < 172_800 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86_400)
    }
}

//! The running server: listeners, the queue, the delivery worker, and a
//! graceful stop.
//!
//! [`Server::bind`] opens the queue (replaying what a previous run left),
//! starts the delivery worker and binds every listener; [`Server::run`]
//! accepts connections until the stop signal, then stops listening, lets
//! sessions finish the message they are in (up to [`GRACE`]), flushes the
//! queue and returns.

mod auth_check;
pub mod connect;
mod content;
pub mod control;
mod forged;
mod limits;
mod pop3;
mod popauth;
mod smtp;
pub mod tls;
pub mod trace;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use mxguard_config::{Config, Role, StoreBackend, VrfyMode};
use mxguard_proto::smtp::{SessionConfig, VrfyPolicy};
use mxguard_queue::Queue;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::delivery::{Delivery, DeliveryHandle};
use crate::facts::dns::Dns;
use connect::ConnCounter;
use mxguard_store::{EmbeddedStore, StateStore};

/// How long sessions in flight may take to finish once a stop is asked.
pub const GRACE: Duration = Duration::from_secs(30);

/// The configuration in service. `mxguard reload` replaces it whole; each
/// session keeps the one it started with.
pub struct LiveConfig {
    current: RwLock<Arc<Config>>,
}

impl LiveConfig {
    pub fn new(config: Arc<Config>) -> LiveConfig {
        LiveConfig {
            current: RwLock::new(config),
        }
    }

    /// The configuration new sessions start with.
    pub fn get(&self) -> Arc<Config> {
        // A poisoned lock still holds a whole Arc: the last one set.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, config: Arc<Config>) {
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
    }
}

/// What every connection of one listener shares.
pub(crate) struct ListenerCtx {
    pub config: Arc<LiveConfig>,
    pub role: Role,
    pub session: Arc<SessionConfig>,
    pub queue: Queue,
    pub delivery: DeliveryHandle,
    pub dns: Dns,
    pub store: Arc<dyn StateStore>,
    pub conns: Arc<ConnCounter>,
    /// The certificate, when `[tls]` is configured.
    pub tls: Option<Arc<tls::TlsState>>,
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    config: Arc<Config>,
    live: Arc<LiveConfig>,
    listeners: Vec<(TcpListener, Arc<ListenerCtx>)>,
    queue: Queue,
    delivery: Delivery,
    control: tokio::net::UnixListener,
    store: Arc<dyn StateStore>,
    dns: Dns,
    tls: Option<Arc<tls::TlsState>>,
}

impl Server {
    /// Opens the queue, starts delivery (of what was left queued, too) and
    /// binds the listeners.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let config = Arc::new(config);
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
        let queue_dir = data_dir.join("queue");
        let (queue, pending, warnings) = Queue::open(&queue_dir)
            .with_context(|| format!("cannot open the queue in {}", queue_dir.display()))?;
        for w in warnings {
            tracing::warn!("queue recovery: {w}");
        }
        let mut bound = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.address).await.with_context(|| {
                format!("cannot listen on {} (role {})", l.address, l.role.as_str())
            })?;
            bound.push((listener, l.role));
        }
        let own: Vec<SocketAddr> = bound
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect();
        let control = control::bind(&data_dir).with_context(|| {
            format!("cannot create the control socket in {}", data_dir.display())
        })?;
        let dns =
            Dns::from_config(&config.dns).context("cannot set up the DNS resolver of [dns]")?;
        let store = open_store(&config)?;
        let conns = Arc::new(ConnCounter::default());
        let tls_state = match &config.tls {
            Some(t) => Some(Arc::new(
                tls::TlsState::load(t).context("cannot load the [tls] certificate")?,
            )),
            None => None,
        };
        if let Some(ds) = &config.dkim_sign {
            auth_check::check_key(ds).context("cannot use the [dkim_sign] key")?;
        }
        let live = Arc::new(LiveConfig::new(config.clone()));
        let delivery = Delivery::start(config.clone(), queue.clone(), pending, own, dns.clone())?;
        let mut listeners = Vec::new();
        for (listener, role) in bound {
            let session = Arc::new(SessionConfig {
                hostname: config.server.hostname.clone(),
                max_message_size: config.server.max_message_size,
                max_recipients: config.recipient.max_per_message,
                vrfy: match config.smtp.vrfy {
                    VrfyMode::Ambiguous => VrfyPolicy::Ambiguous,
                    VrfyMode::Off => VrfyPolicy::Off,
                    VrfyMode::On => VrfyPolicy::On,
                },
                expn: config.smtp.expn == mxguard_config::ExpnMode::On,
                require_auth: matches!(role, Role::Submission | Role::Submissions),
                starttls: config.tls.is_some() && !role.implicit_tls(),
                auth: role.takes_logins(),
                auth_mechanisms_without_tls: config
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.allow_plaintext_auth),
                max_errors: Some(config.limits.max_errors),
            });
            let ctx = Arc::new(ListenerCtx {
                config: live.clone(),
                role,
                session,
                queue: queue.clone(),
                delivery: delivery.handle(),
                dns: dns.clone(),
                store: store.clone(),
                conns: conns.clone(),
                tls: tls_state.clone(),
            });
            listeners.push((listener, ctx));
        }
        Ok(Server {
            config,
            live,
            listeners,
            queue,
            delivery,
            control,
            store,
            dns,
            tls: tls_state,
        })
    }

    /// The bound addresses (port 0 in the configuration becomes the real one).
    pub fn local_addrs(&self) -> Vec<(SocketAddr, Role)> {
        self.listeners
            .iter()
            .filter_map(|(l, ctx)| l.local_addr().ok().map(|a| (a, ctx.role)))
            .collect()
    }

    /// Serves until `stop` completes, then stops gracefully.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each connection holds a clone; when all are dropped, all are done.
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let mut accept_tasks = Vec::new();
        for (listener, ctx) in self.listeners {
            if let Ok(a) = listener.local_addr() {
                tracing::info!(address = %a, role = ctx.role.as_str(), "listening");
            }
            let stop_rx = stop_rx.clone();
            let alive_tx = alive_tx.clone();
            accept_tasks.push(tokio::spawn(accept_loop(listener, ctx, stop_rx, alive_tx)));
        }
        drop(alive_tx);
        let control_ctx = control::ControlCtx {
            delivery: self.delivery.handle(),
            store: self.store.clone(),
            config: self.live.clone(),
            dns: self.dns.clone(),
            tls: self.tls.clone(),
        };
        let hup_task = tokio::spawn(reload_on_sighup(
            self.live.clone(),
            self.tls.clone(),
            stop_rx.clone(),
        ));
        let control_task = tokio::spawn(control::serve(self.control, control_ctx, stop_rx.clone()));
        let purge_task = tokio::spawn(purge_expired(self.store.clone(), stop_rx.clone()));
        stop.await;
        tracing::info!("stopping: no new connections; sessions finish their message");
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        if tokio::time::timeout(GRACE, alive_rx.recv()).await.is_err() {
            tracing::warn!(grace = ?GRACE, "sessions still open after the grace period are cut");
        }
        let _ = control_task.await;
        let _ = hup_task.await;
        let _ = purge_task.await;
        let _ = std::fs::remove_file(control::socket_path(&self.config.server.data_dir));
        self.delivery.stop().await;
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || queue.shutdown())
            .await
            .context("stopping the queue")?;
        tracing::info!(hostname = %self.config.server.hostname, "stopped");
        Ok(())
    }
}

/// The state store of `[store]`: the embedded file in data_dir, or Redis
/// (which may be down now: the store connects when it can, and checks
/// that need it are skipped meanwhile).
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(match &config.store.backend {
        StoreBackend::Embedded => {
            let path = config.server.data_dir.join(mxguard_store::FILE_NAME);
            Arc::new(
                EmbeddedStore::open(&path)
                    .with_context(|| format!("cannot open the state store {}", path.display()))?,
            )
        }
        StoreBackend::Redis { url } => Arc::new(
            mxguard_store::RedisStore::open(url, config.store.timeout)
                .with_context(|| "cannot use the Redis state store of [store]".to_string())?,
        ),
    })
}

/// SIGHUP does what `mxguard reload` does.
async fn reload_on_sighup(
    config: Arc<LiveConfig>,
    tls: Option<Arc<tls::TlsState>>,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use `mxguard reload`");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP received");
                let _ = control::reload(&config, tls.as_deref());
            }
            _ = stop.changed() => break,
        }
    }
}

/// How often expired bans, counters and greylist entries are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(300);

/// Deletes expired entries from the state store now and then (they are
/// ignored meanwhile; this only keeps the file small).
async fn purge_expired(store: Arc<dyn StateStore>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {
                let store = store.clone();
                let now = mxguard_store::unix_now();
                match tokio::task::spawn_blocking(move || store.purge_expired(now)).await {
                    Ok(Ok(n)) if n > 0 => tracing::debug!(entries = n, "state store: expired entries deleted"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "state store: purging expired entries failed"),
                    Err(e) => tracing::warn!(error = %e, "state store: the purge task failed"),
                }
            }
            _ = stop.changed() => break,
        }
    }
}

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let ctx = ctx.clone();
                    let stop = stop.clone();
                    let alive = alive.clone();
                    let id = format!("{:06X}", SESSION_COUNTER.fetch_add(1, Ordering::Relaxed));
                    tokio::spawn(async move {
                        if ctx.role.is_pop3() {
                            pop3::serve(stream, peer, id, ctx).await;
                        } else {
                            smtp::serve(stream, peer, id, ctx, stop).await;
                        }
                        drop(alive);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

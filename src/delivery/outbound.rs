//! Remote delivery: finding the next hop and carrying one message's
//! recipients for that hop over SMTP.
//!
//! The next hop of a domain is `[relay] routes` for it, else
//! `[relay] smarthost`, else its MX hosts in preference order, each tried
//! at every address, falling back to the domain's own A/AAAA records when
//! it has no MX (RFC 5321 §5.1). A domain that does not exist, or
//! publishes a null MX (RFC 7505), fails permanently; DNS trouble and
//! unreachable hosts are temporary. Connections are kept for reuse by the
//! next message to the same address for a short while.
//!
//! # Security
//! Addresses and replies come from DNS and remote servers. A hop that
//! resolves to one of our own listening addresses is refused as a loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxguard_config::{Config, NextHop};
use mxguard_queue::{Content, Outcome};
use tokio::sync::Semaphore;

use super::remote::client::{ClientConfig, ClientError, RcptOutcome, SmtpClient};
use crate::facts::dns::{Dns, DnsError};

/// At most this many outbound transactions at once.
const MAX_CONCURRENT: usize = 64;
/// At most this many at once to one destination (Postfix's
/// default_destination_concurrency_limit), which also lets the idle
/// connections serve the next messages instead of opening new ones.
const PER_DESTINATION: usize = 20;
/// An idle connection is closed after this long.
const IDLE: Duration = Duration::from_secs(10);

/// Where a domain's mail goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Hop {
    /// A configured host (route or smarthost): its A/AAAA addresses.
    Host(String, u16),
    /// The domain's MX hosts.
    Mx(String),
}

impl std::fmt::Display for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hop::Host(h, p) => write!(f, "{h}:{p}"),
            Hop::Mx(d) => write!(f, "MX of {d}"),
        }
    }
}

/// Ends a connection politely (RFC 5321 §4.1.1.10: QUIT before closing),
/// without making anyone wait for it.
fn say_goodbye(c: SmtpClient) {
    tokio::spawn(c.quit());
}

/// The next hop for a recipient domain.
pub(crate) fn hop_for(cfg: &Config, domain: &str) -> Hop {
    let host = |h: &NextHop| Hop::Host(h.host.clone(), h.port);
    if let Some(r) = cfg.route_for(domain) {
        host(r)
    } else if let Some(s) = &cfg.relay.smarthost {
        host(s)
    } else {
        Hop::Mx(domain.to_ascii_lowercase())
    }
}

/// Shared state of remote delivery.
pub(crate) struct Outbound {
    cfg: Arc<Config>,
    dns: Dns,
    client: ClientConfig,
    limit: Semaphore,
    per_hop: Mutex<HashMap<Hop, Arc<Semaphore>>>,
    idle: Mutex<HashMap<SocketAddr, Vec<(SmtpClient, Instant)>>>,
    own: Vec<SocketAddr>,
}

impl Outbound {
    pub(crate) fn new(cfg: Arc<Config>, dns: Dns, own: Vec<SocketAddr>) -> Outbound {
        let client = ClientConfig {
            helo_name: cfg.server.hostname.clone(),
            timeouts: Default::default(),
            starttls: true,
        };
        Outbound {
            cfg,
            dns,
            client,
            limit: Semaphore::new(MAX_CONCURRENT),
            per_hop: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            own,
        }
    }

    /// Addresses to try for a hop, in order; `Err` is the outcome for every
    /// recipient when there is nowhere to go.
    async fn addresses(&self, hop: &Hop) -> Result<Vec<SocketAddr>, Outcome> {
        let temp = |e: DnsError| Outcome::Temporary(e.to_string());
        match hop {
            Hop::Host(host, port) => match self.dns.socket_addrs(host, *port).await {
                Ok(a) => Ok(a),
                Err(e @ DnsError::Temporary(..)) => Err(temp(e)),
                // A configured next hop that does not resolve is a
                // configuration problem the administrator can fix: keep the
                // mail and retry.
                Err(e) => Err(Outcome::Temporary(format!("next hop {host}: {e}"))),
            },
            Hop::Mx(domain) => {
                let port = self.cfg.relay.mx_port;
                let hosts = match self.dns.mx(domain).await {
                    Ok(mx) => {
                        if mx.iter().any(|m| m.exchange == ".") {
                            return Err(Outcome::Permanent(format!(
                                "556 5.1.10 {domain} accepts no mail (null MX, RFC 7505)"
                            )));
                        }
                        mx.into_iter().map(|m| m.exchange).collect()
                    }
                    Err(DnsError::NoRecords(..)) => vec![domain.clone()],
                    Err(DnsError::NoDomain(_)) => {
                        return Err(Outcome::Permanent(format!(
                            "550 5.1.2 {domain}: domain not found"
                        )));
                    }
                    Err(e) => return Err(temp(e)),
                };
                let mut out = Vec::new();
                let mut last = None;
                for h in &hosts {
                    match self.dns.socket_addrs(h, port).await {
                        Ok(a) => out.extend(a),
                        Err(e) => last = Some(e),
                    }
                }
                if out.is_empty() {
                    return Err(match last {
                        Some(DnsError::NoDomain(_)) | Some(DnsError::NoRecords(..))
                            if hosts.len() == 1 && hosts[0] == *domain =>
                        {
                            Outcome::Permanent(format!(
                                "550 5.1.2 {domain}: no MX and no address records"
                            ))
                        }
                        Some(e) => temp(e),
                        None => {
                            Outcome::Temporary(format!("{domain}: no usable mail server address"))
                        }
                    });
                }
                Ok(out)
            }
        }
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SmtpClient> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < IDLE {
                return Some(c);
            }
            say_goodbye(c);
        }
        None
    }

    fn put_idle(&self, addr: SocketAddr, c: SmtpClient) {
        let Ok(mut idle) = self.idle.lock() else {
            return say_goodbye(c);
        };
        let list = idle.entry(addr).or_default();
        if list.len() < PER_DESTINATION {
            list.push((c, Instant::now()));
        } else {
            say_goodbye(c);
        }
    }

    /// Closes (with QUIT) the idle connections older than [`IDLE`]; all of
    /// them when `all`.
    pub(crate) fn reap(&self, all: bool) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        for list in idle.values_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|(_, since)| all || since.elapsed() >= IDLE);
            *list = keep;
            for (c, _) in old {
                say_goodbye(c);
            }
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Closes idle connections every few seconds while `self` lives.
    pub(crate) fn start_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 2).await;
                match weak.upgrade() {
                    Some(o) => o.reap(false),
                    None => break,
                }
            }
        });
    }

    /// Delivers one message to the recipients `rcpts` (index, address),
    /// all for `hop`. Returns one outcome per recipient.
    pub(crate) async fn deliver(
        &self,
        queue_id: &str,
        sender: &str,
        rcpts: &[(usize, String)],
        content: &Content,
        hop: &Hop,
    ) -> Vec<(usize, Outcome)> {
        let all = |o: Outcome| {
            rcpts
                .iter()
                .map(|(i, _)| (*i, o.clone()))
                .collect::<Vec<_>>()
        };
        let hop_limit = match self.per_hop.lock() {
            Ok(mut m) => m
                .entry(hop.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(PER_DESTINATION)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(PER_DESTINATION)),
        };
        let Ok(_hop_permit) = hop_limit.acquire().await else {
            return all(Outcome::Temporary("delivery is shutting down".into()));
        };
        let Ok(_permit) = self.limit.acquire().await else {
            return all(Outcome::Temporary("delivery is shutting down".into()));
        };
        let addrs = match self.addresses(hop).await {
            Ok(a) => a,
            Err(o) => return all(o),
        };
        if let Some(a) = addrs.iter().find(|a| self.own.contains(a)) {
            return all(Outcome::Temporary(format!(
                "mail for {hop} loops back to myself ({a}); check [relay] routes, smarthost and MX records"
            )));
        }
        let addresses: Vec<String> = rcpts.iter().map(|(_, a)| a.clone()).collect();
        let mut last_error = String::from("no address to try");
        for addr in addrs {
            let mut client = match self.take_idle(addr) {
                Some(mut c) => match c.reset().await {
                    Ok(()) => c,
                    Err(_) => match SmtpClient::connect(addr, &self.client).await {
                        Ok(c) => c,
                        Err(e) => {
                            last_error = format!("{addr}: {e}");
                            continue;
                        }
                    },
                },
                None => match SmtpClient::connect(addr, &self.client).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::info!(queue_id, next_hop = %hop, address = %addr, error = %e, "cannot deliver here; next address");
                        last_error = format!("{addr}: {e}");
                        continue;
                    }
                },
            };
            match client.send(sender, &addresses, content).await {
                Ok(result) => {
                    let out = rcpts
                        .iter()
                        .zip(result.rcpts)
                        .map(|((i, _), r)| {
                            let o = match r {
                                RcptOutcome::Delivered(reply) => {
                                    Outcome::Delivered(format!("{addr} said: {reply}"))
                                }
                                RcptOutcome::Failed(reply) if reply.is_permanent() => {
                                    Outcome::Permanent(format!("{reply} (from {addr})"))
                                }
                                RcptOutcome::Failed(reply) => {
                                    Outcome::Temporary(format!("{reply} (from {addr})"))
                                }
                            };
                            (*i, o)
                        })
                        .collect();
                    if client.is_usable() {
                        self.put_idle(addr, client);
                    }
                    return out;
                }
                // Refused before sending (too large, 8-bit or UTF-8 the
                // server cannot take): the same at every address.
                Err(ClientError::Refused(reply)) => {
                    let o = if reply.is_permanent() {
                        Outcome::Permanent(format!("{reply} (for {addr})"))
                    } else {
                        Outcome::Temporary(format!("{reply} (for {addr})"))
                    };
                    if client.is_usable() {
                        self.put_idle(addr, client);
                    }
                    return all(o);
                }
                Err(e) => {
                    last_error = format!("{addr}: {e}");
                    tracing::info!(queue_id, next_hop = %hop, address = %addr, error = %e, "transaction failed; next address");
                }
            }
        }
        all(Outcome::Temporary(last_error))
    }
}

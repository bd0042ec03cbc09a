//! The connection stage: everything decided before the banner.
//!
//! In order: the whitelist (which skips every check here), bans, the
//! blacklist, `relay.clients_only`, connection limits; then, at the same
//! time, the DNSBL zones and the reverse DNS of the client (and the
//! early-talker wait, in the driver). The first refusal wins; a DNS
//! failure never turns into a 5xx (RFC 2505 §2), and a DNSBL that does not
//! answer counts as "not listed" and is logged, so a dead DNSBL never stops
//! mail.
//!
//! # Security
//! Runs for every connection, before anything is read from the client: the
//! list and ban lookups cost a binary search each, and the DNS lookups are
//! bounded by `dns.timeout` and cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mxguard_config::{Config, PtrMode};
use mxguard_policy::Verdict;
use mxguard_policy::connect::{
    DnsblAnswer, ListResult, PtrFacts, check_connection_limits, check_dnsbl, check_lists,
    check_ptr, dnsbl_query_name,
};
use mxguard_store::StateStore;

use crate::facts::dns::{Dns, DnsError};

/// Open connections, in total and per client address.
#[derive(Default)]
pub(crate) struct ConnCounter {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Counts one connection while it lives.
pub(crate) struct ConnGuard<'a> {
    counter: &'a ConnCounter,
    ip: IpAddr,
}

impl ConnCounter {
    /// Counts a new connection; returns the guard and the counts including it.
    pub(crate) fn open(&self, ip: IpAddr) -> (ConnGuard<'_>, usize, usize) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let from_ip = match self.per_ip.lock() {
            Ok(mut m) => {
                let n = m.entry(ip).or_insert(0);
                *n += 1;
                *n
            }
            Err(_) => 1,
        };
        (ConnGuard { counter: self, ip }, total, from_ip)
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.counter.total.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut m) = self.counter.per_ip.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What the connection stage learned about an accepted client.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientFacts {
    pub whitelisted: bool,
    /// Reverse DNS names (for the Received: header).
    pub ptr_names: Vec<String>,
    /// Score from DNSBLs and the PTR check, for content scoring.
    pub score: f64,
    pub score_reasons: Vec<String>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The list checks: quick, no DNS. `Ok(true)` means whitelisted.
pub(crate) fn check_lists_and_limits(
    cfg: &Config,
    store: &dyn StateStore,
    ip: IpAddr,
    total: usize,
    from_ip: usize,
) -> Result<bool, Verdict> {
    let ban = match store.banned(ip, now_secs()) {
        Ok(b) => b,
        Err(e) => {
            // Fail open: a store problem must not stop mail.
            tracing::warn!(client = %ip, error = %e, "ban lookup failed; treating as not banned");
            None
        }
    };
    if check_lists(cfg, ip, ban.as_ref().map(|b| b.reason.as_str()))? == ListResult::Whitelisted {
        return Ok(true);
    }
    check_connection_limits(cfg, total, from_ip)?;
    Ok(false)
}

/// The DNS checks: DNSBLs and reverse DNS, all at once.
pub(crate) async fn check_dns(
    cfg: &Config,
    dns: &Dns,
    ip: IpAddr,
    whitelisted: bool,
) -> Result<ClientFacts, Verdict> {
    let mut facts = ClientFacts {
        whitelisted,
        ..ClientFacts::default()
    };
    // Relay clients and whitelisted hosts are not looked up in DNSBLs.
    let skip_dnsbl = whitelisted || cfg.is_relay_client(ip);
    let dnsbl = async {
        if skip_dnsbl {
            return Vec::new();
        }
        let queries = cfg.dnsbl.iter().map(|z| async move {
            match dns.dnsbl(&dnsbl_query_name(ip, &z.zone)).await {
                Ok(a) if a.is_empty() => DnsblAnswer::NotListed,
                Ok(a) => DnsblAnswer::Listed(a),
                Err(e) => DnsblAnswer::Failed(e.to_string()),
            }
        });
        futures_util::future::join_all(queries).await
    };
    let ptr = async {
        match dns.ptr(ip).await {
            Ok(names) => {
                let mut confirmed = false;
                if cfg.access.ptr == PtrMode::Fcrdns || cfg.access.ptr == PtrMode::Score {
                    for n in names.iter().take(5) {
                        match dns.resolves_to(n, ip).await {
                            Ok(true) => {
                                confirmed = true;
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => return PtrFacts::TempFail(e.to_string()),
                        }
                    }
                } else {
                    confirmed = true;
                }
                PtrFacts::Names { names, confirmed }
            }
            Err(DnsError::NoDomain(_)) | Err(DnsError::NoRecords(..)) => PtrFacts::NoPtr,
            Err(e) => PtrFacts::TempFail(e.to_string()),
        }
    };
    let (answers, ptr) = tokio::join!(dnsbl, ptr);
    if let PtrFacts::Names { names, .. } = &ptr {
        facts.ptr_names = names.clone();
    }
    if whitelisted {
        return Ok(facts);
    }
    if !answers.is_empty() {
        let out = check_dnsbl(cfg, ip, &answers);
        for f in &out.failures {
            tracing::warn!(client = %ip, error = %f, "DNSBL did not answer; counted as not listed");
        }
        if let Some(v) = out.verdict {
            return Err(v);
        }
        if out.score > 0.0 {
            facts.score += out.score;
            facts.score_reasons.extend(out.hits);
        }
    }
    let ptr_score = check_ptr(cfg, ip, &ptr)?;
    if ptr_score > 0.0 {
        facts.score += ptr_score;
        facts.score_reasons.push("ptr".into());
    }
    Ok(facts)
}

/// `mxguard check-ip`: every list, ban, DNSBL answer and reverse DNS fact
/// that applies to an address, and what the connection stage would do.
pub async fn check_ip_report(
    cfg: &Config,
    dns: &Dns,
    store: &dyn StateStore,
    ip: IpAddr,
) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!("{ip}\n");
    out.push_str(&format!(
        "  whitelist:      {}\n",
        yes(cfg.is_whitelisted(ip))
    ));
    out.push_str(&format!(
        "  blacklist:      {}\n",
        yes(cfg.is_blacklisted(ip))
    ));
    out.push_str(&format!(
        "  relay client:   {}\n",
        yes(cfg.is_relay_client(ip))
    ));
    match store.banned(ip, now_secs()) {
        Ok(Some(b)) => out.push_str(&format!(
            "  ban:            {} for {} more seconds ({})\n",
            b.net,
            b.until.saturating_sub(now_secs()),
            b.reason
        )),
        Ok(None) => out.push_str("  ban:            none\n"),
        Err(e) => out.push_str(&format!("  ban:            cannot tell: {e}\n")),
    }
    out.push_str(&rate_report(cfg, store, ip));
    for z in &cfg.dnsbl {
        let q = dnsbl_query_name(ip, &z.zone);
        let line = match dns.dnsbl(&q).await {
            Ok(a) if a.is_empty() => "not listed".to_string(),
            Ok(a) => {
                let counted = a.iter().any(|x| z.matches.contains(IpAddr::V4(*x)));
                let shown: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                format!(
                    "answers {} ({})",
                    shown.join(", "),
                    if !counted {
                        "outside `match`: not listed"
                    } else if z.score > 0.0 {
                        "listed: adds to the score"
                    } else {
                        "listed: refused"
                    }
                )
            }
            Err(e) => format!("no answer ({e}): counted as not listed"),
        };
        out.push_str(&format!("  dnsbl {}: {line}\n", z.zone));
    }
    match dns.ptr(ip).await {
        Ok(names) => {
            let mut shown = Vec::new();
            for n in names {
                let fc = match dns.resolves_to(&n, ip).await {
                    Ok(true) => "forward-confirmed",
                    Ok(false) => "does not resolve back",
                    Err(_) => "forward lookup failed",
                };
                shown.push(format!("{n} ({fc})"));
            }
            out.push_str(&format!("  reverse DNS:    {}\n", shown.join(", ")));
        }
        Err(e) => out.push_str(&format!("  reverse DNS:    {e}\n")),
    }
    let verdict = match check_lists_and_limits(cfg, store, ip, 1, 1) {
        Err(v) => Err(v),
        Ok(w) => check_dns(cfg, dns, ip, w).await.map(|_| ()),
    };
    match verdict {
        Ok(()) => out.push_str("  at connect:     accepted\n"),
        Err(v) => out.push_str(&format!(
            "  at connect:     refused by {}: {}\n",
            v.check.as_str(),
            v.reply
        )),
    }
    out
}

/// The `check-ip` lines of the volume limits: exemption, and the address's
/// messages and recipients in the last hour against their limits.
fn rate_report(cfg: &Config, store: &dyn StateStore, ip: IpAddr) -> String {
    use mxguard_policy::limits::{Rate, client_key, current_count, recipients_id};
    if cfg.is_whitelisted(ip) || cfg.limits.exempt.contains(ip) {
        return "  hourly limits:  exempt\n".into();
    }
    let counters = super::limits::StoreCounters(store);
    let mut out = String::new();
    for (rate, id) in [
        (Rate::MessagesPerIp, client_key(ip)),
        (Rate::RecipientsPerHour, recipients_id(None, ip)),
    ] {
        let limit = rate.limit(cfg);
        if limit == 0 {
            continue;
        }
        let count = match current_count(&counters, rate, &id, now_secs()) {
            Ok(n) => n.to_string(),
            Err(e) => format!("cannot tell ({})", e.0),
        };
        out.push_str(&format!(
            "  {}: {count} of {limit} in the last hour\n",
            rate.name()
        ));
    }
    out
}

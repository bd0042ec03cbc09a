//! The connection stage: who may talk to us at all, decided before and
//! around the banner and at HELO/EHLO.
//!
//! The server applies these in the order of `AccessConfig`'s documentation:
//! [`check_lists`] (whitelist, ban, blacklist, `relay.clients_only`), then
//! [`check_connection_limits`], then, from DNS answers gathered all at once,
//! [`check_dnsbl`] and [`check_ptr`]; [`early_talker_verdict`] if the client
//! talked before the banner; [`check_helo`] at HELO/EHLO; and
//! [`too_many_errors_verdict`] when a session runs out of
//! `limits.max_errors`. A whitelisted client skips every one of them.
//!
//! Everything here is pure: the server does the DNS queries and counts the
//! connections, and hands the results in as facts ([`DnsblAnswer`],
//! [`PtrFacts`]). A DNS failure never yields a 5xx (RFC 2505 §2): a DNSBL that
//! does not answer counts as "not listed" (and is reported for the log), and
//! a reverse lookup that fails temporarily gets 450 4.7.25, or nothing in
//! score mode.
//!
//! # Security
//!
//! Everything looked at here is chosen by the client or by whoever runs its
//! DNS: the HELO name, the PTR names, the DNSBL answers. None of it is
//! trusted: the HELO name is checked for syntax by hand, byte by byte, with
//! no allocation proportional to its length beyond the lowercase copy made
//! for `ehlo_block`; names are quoted with `{:?}` in log reasons (control
//! characters escaped) and at most five PTR names are shown; a DNSBL answer
//! counts only if it falls in the zone's `match` ranges (so a zone that
//! starts answering everything with a wildcard, or a hijacked resolver,
//! cannot make itself refuse mail unless its answers are the listed ones);
//! and text that reaches the client goes through
//! [`Reply::substitute`](mxguard_proto::Reply::substitute),
//! which strips control characters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mxguard_config::{Config, PtrMode};

use crate::{CheckId, Verdict};

/// What [`check_lists`] found for a client it lets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListResult {
    /// In `access.whitelist`: skip every further check of this module (ban,
    /// limits, DNSBL, PTR, early talker, HELO).
    Whitelisted,
    /// Passed the lists; the other checks apply.
    Checked,
}

/// The list checks, in order: whitelist (wins over everything), an active
/// ban (`ban`: its reason, from the state store), `access.blacklist`, then
/// `relay.clients_only`. A ban's reason goes to the log only: it may name
/// a spam trap the client must not learn of.
pub fn check_lists(cfg: &Config, ip: IpAddr, ban: Option<&str>) -> Result<ListResult, Verdict> {
    if cfg.is_whitelisted(ip) {
        return Ok(ListResult::Whitelisted);
    }
    if let Some(why) = ban {
        return Err(Verdict::refuse(
            421,
            (4, 7, 1),
            "Your address is temporarily banned; try again later",
            CheckId::Banned,
            format!("{ip} is banned: {why}"),
        ));
    }
    let ip_text = ip.to_string();
    if cfg.is_blacklisted(ip) {
        return Err(Verdict {
            reply: cfg.access.reject_reply.substitute(&[("IP", &ip_text)]),
            check: CheckId::Blacklist,
            reason: format!("{ip} is in access.blacklist (or access.blacklist_file)"),
        });
    }
    if cfg.relay.clients_only && !cfg.is_relay_client(ip) {
        return Err(Verdict {
            reply: cfg.access.reject_reply.substitute(&[("IP", &ip_text)]),
            check: CheckId::ClientsOnly,
            reason: format!("relay.clients_only is set and {ip} is not in relay.clients"),
        });
    }
    Ok(ListResult::Checked)
}

/// The connection limits. `total_open` and `open_from_ip` count the open
/// sessions *including* the one being decided; it is refused when either
/// exceeds its limit (`limits.connections_per_ip` is checked first, its
/// text being the more useful to the client).
pub fn check_connection_limits(
    cfg: &Config,
    total_open: usize,
    open_from_ip: usize,
) -> Result<(), Verdict> {
    let limits = &cfg.limits;
    if open_from_ip > limits.connections_per_ip {
        return Err(Verdict::refuse(
            421,
            (4, 7, 0),
            "Too many connections from your address; try again later",
            CheckId::ConnectionLimit,
            format!(
                "{open_from_ip} connections from this address, limits.connections_per_ip is {}",
                limits.connections_per_ip
            ),
        ));
    }
    if total_open > limits.max_connections {
        return Err(Verdict::refuse(
            421,
            (4, 7, 0),
            "Too many connections; try again later",
            CheckId::ConnectionLimit,
            format!(
                "{total_open} connections open, limits.max_connections is {}",
                limits.max_connections
            ),
        ));
    }
    Ok(())
}

/// The name to look up in a DNSBL `zone` for `ip`: the IPv4 octets
/// reversed (`4.3.2.1.zone.`), or the 32 nibbles of an IPv6 address
/// reversed (RFC 5782 §2.4). An IPv4-mapped IPv6 address is looked up as
/// IPv4. The name is absolute (final dot), whether or not `zone` has one.
pub fn dnsbl_query_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 1);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0x0f, byte >> 4] {
                    name.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    name.push('.');
                }
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

/// What one DNSBL zone answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsblAnswer {
    /// A records (whether they count depends on the zone's `match`).
    Listed(Vec<Ipv4Addr>),
    /// NXDOMAIN or no A record.
    NotListed,
    /// Timeout, SERVFAIL, refused...: counted as not listed.
    Failed(String),
}

/// The result of all DNSBL zones together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsblOutcome {
    /// The refusal, from the first zone in configuration order that lists
    /// the client and has `score = 0`.
    pub verdict: Option<Verdict>,
    /// The sum of the scores of the listing zones with `score > 0`.
    pub score: f64,
    /// Every zone that lists the client, as `zone=answer`
    /// (`"bl.example.net=127.0.0.2"`), in configuration order.
    pub hits: Vec<String>,
    /// Zones that did not answer, as `zone: error`, for the log.
    pub failures: Vec<String>,
}

/// Decides from the DNSBL `answers`, one per `cfg.dnsbl` zone in the same
/// order. An answer lists the client only if one of its addresses is in the
/// zone's `match` ranges. A zone with no answer in `answers` (a shorter
/// slice) counts as failed.
pub fn check_dnsbl(cfg: &Config, ip: IpAddr, answers: &[DnsblAnswer]) -> DnsblOutcome {
    let mut out = DnsblOutcome::default();
    for (i, zone) in cfg.dnsbl.iter().enumerate() {
        let addrs = match answers.get(i) {
            Some(DnsblAnswer::Listed(addrs)) => addrs,
            Some(DnsblAnswer::NotListed) => continue,
            Some(DnsblAnswer::Failed(e)) => {
                out.failures.push(format!("{}: {e}", zone.zone));
                continue;
            }
            None => {
                out.failures.push(format!("{}: no answer", zone.zone));
                continue;
            }
        };
        let Some(hit) = addrs.iter().find(|a| zone.is_listed_answer(**a)) else {
            continue;
        };
        out.hits.push(format!("{}={hit}", zone.zone));
        if zone.score > 0.0 {
            out.score += zone.score;
        } else if out.verdict.is_none() {
            out.verdict = Some(Verdict {
                reply: zone.reply_for(ip),
                check: CheckId::Dnsbl,
                reason: format!("{ip} listed at {} ({hit})", zone.zone),
            });
        }
    }
    out
}

/// What the reverse DNS of the client showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PtrFacts {
    /// PTR names were found. `confirmed`: one of them resolves back to the
    /// client's address (forward-confirmed reverse DNS).
    Names { names: Vec<String>, confirmed: bool },
    /// NXDOMAIN, or no PTR record.
    NoPtr,
    /// The lookup failed (timeout, SERVFAIL...), reverse or forward.
    TempFail(String),
}

/// The reverse DNS check (`access.ptr`). Returns the score to add (score
/// mode), or the refusal. A temporary DNS failure is 450 4.7.25 in the
/// refusing modes and no score in score mode: never a 5xx.
pub fn check_ptr(cfg: &Config, ip: IpAddr, facts: &PtrFacts) -> Result<f64, Verdict> {
    let mode = cfg.access.ptr;
    let (no_ptr, unconfirmed) = match facts {
        PtrFacts::Names { names, .. } if names.is_empty() => (true, true),
        PtrFacts::Names { confirmed, .. } => (false, !confirmed),
        PtrFacts::NoPtr => (true, true),
        PtrFacts::TempFail(e) => {
            return match mode {
                PtrMode::Off | PtrMode::Score => Ok(0.0),
                PtrMode::Require | PtrMode::Fcrdns => Err(Verdict::refuse(
                    450,
                    (4, 7, 25),
                    &format!("Client host rejected: cannot find your reverse hostname, [{ip}]"),
                    CheckId::Ptr,
                    format!("reverse DNS of {ip} failed: {e:?}"),
                )),
            };
        }
    };
    let fails = match mode {
        PtrMode::Off => false,
        PtrMode::Require => no_ptr,
        PtrMode::Fcrdns | PtrMode::Score => no_ptr || unconfirmed,
    };
    if !fails {
        return Ok(0.0);
    }
    if mode == PtrMode::Score {
        return Ok(cfg.access.ptr_score);
    }
    // A permanent PTR refusal uses the administrator's reply (SPEC §4:
    // configurable, 554 5.7.1 by default); the log says what was wrong.
    let ip_text = ip.to_string();
    let reply = cfg
        .access
        .reject_reply
        .substitute(&[("IP", ip_text.as_str())]);
    if no_ptr {
        return Err(Verdict {
            reply,
            check: CheckId::Ptr,
            reason: format!("no PTR record for {ip} (access.ptr = {mode})"),
        });
    }
    let shown: Vec<&String> = match facts {
        PtrFacts::Names { names, .. } => names.iter().take(5).collect(),
        _ => Vec::new(),
    };
    Err(Verdict {
        reply,
        check: CheckId::Ptr,
        reason: format!("no PTR name of {ip} resolves back to it: {shown:?} (access.ptr = {mode})"),
    })
}

/// A refused HELO/EHLO: the verdict, and whether the connection is then
/// closed (`ehlo_block`) or the client may try again (syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeloRefusal {
    pub verdict: Verdict,
    pub close: bool,
}

/// The HELO/EHLO name checks: `access.ehlo_block` (554 5.7.1, then close),
/// then syntax (501 5.5.2): a domain name or an address literal
/// ([`is_valid_helo_name`]). `ip` is only named in the log reason: a name
/// that does not match the client's address is not refused (NAT, RFC 5321
/// §4.1.4).
pub fn check_helo(cfg: &Config, name: &str, ip: IpAddr) -> Result<(), HeloRefusal> {
    if let Some(entry) = cfg.access.ehlo_blocked(name) {
        return Err(HeloRefusal {
            verdict: Verdict::refuse(
                554,
                (5, 7, 1),
                "Access denied",
                CheckId::EhloBlock,
                format!("HELO name {name:?} from {ip} contains {entry:?} (access.ehlo_block)"),
            ),
            close: true,
        });
    }
    if !is_valid_helo_name(name) {
        return Err(HeloRefusal {
            verdict: Verdict::refuse(
                501,
                (5, 5, 2),
                "Invalid HELO name",
                CheckId::HeloSyntax,
                format!(
                    "HELO name {name:?} from {ip} is neither a domain name nor an address literal"
                ),
            ),
            close: false,
        });
    }
    Ok(())
}

/// Whether `name` is acceptable in HELO/EHLO: an address literal
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), or a domain name of at most 255
/// characters whose labels are 1 to 63 letters, digits, hyphens or
/// underscores (common in Windows host names), not starting or ending with
/// a hyphen, and not all digits (a bare `192.0.2.1` must be written as a
/// literal). A single label (`localhost`, `mypc`) is allowed; a final dot
/// is not.
pub fn is_valid_helo_name(name: &str) -> bool {
    if let Some(inner) = name.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return false;
        };
        return match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                inner[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ => inner.parse::<Ipv4Addr>().is_ok(),
        };
    }
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut all_numeric = true;
    for label in name.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty() || bytes.len() > 63 {
            return false;
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return false;
        }
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return false;
        }
        all_numeric &= bytes.iter().all(u8::is_ascii_digit);
    }
    !all_numeric
}

/// The refusal of a client that sent data before the banner
/// (`access.early_talker`); the connection is then closed.
pub fn early_talker_verdict() -> Verdict {
    Verdict::refuse(
        554,
        (5, 5, 1),
        "Protocol error: talked before the greeting",
        CheckId::EarlyTalker,
        "the client sent data before the banner (access.early_talker)".into(),
    )
}

/// The reply that ends a session after `max` errors (`limits.max_errors`);
/// the connection is then closed.
pub fn too_many_errors_verdict(max: u32) -> Verdict {
    Verdict::refuse(
        421,
        (4, 7, 0),
        "Too many errors; closing the connection",
        CheckId::TooManyErrors,
        format!("{max} failed commands or recipients (limits.max_errors)"),
    )
}

#[cfg(test)]
mod tests;

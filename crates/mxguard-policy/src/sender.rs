//! Who may use which MAIL FROM (`[sender] spoofing`, `own_address_only`).
//!
//! `MAIL FROM:<>` is never refused (RFC 2505 §2 6a), and by default
//! (`spoofing = "anyone"`) neither is a sender in a local domain (6b).
//! `authenticated-only` keeps local-domain senders for authenticated
//! sessions; `authorized-only` also lets `relay.clients` use them. With
//! `own_address_only`, an authenticated user may send only as one of its
//! own addresses or aliases.

use mxguard_config::{Config, Spoofing};
use mxguard_proto::address::parse_mailbox;

use mxguard_proto::Reply;

use crate::pattern;
use crate::recipient::{Client, address_for_routing, routing_loop, steps_text};
use crate::router::{RouteEnd, route};
use crate::{CheckId, Verdict};

/// The address as the accounts know it: quotes removed, and `user@[IP]`
/// of one of our own addresses read as `user@` the first local domain
/// (the form RCPT TO addresses are routed in).
fn canonical(cfg: &Config, from: &str, client: &Client<'_>) -> String {
    parse_mailbox(from)
        .ok()
        .and_then(|mb| address_for_routing(cfg, &mb, client))
        .unwrap_or_else(|| from.to_string())
}

/// What a MAIL FROM still needs once the checks without network pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderCheck {
    /// Nothing: accept it.
    Accept,
    /// `sender.verify_domain`: ask the DNS whether this domain (lowercase)
    /// can receive mail, then decide with [`judge_sender_domain`].
    VerifyDomain(String),
}

/// What the DNS says of a return path's domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainAnswer {
    /// It has an MX record, or (without MX) an A or AAAA record.
    MailServers,
    /// Its only MX is the null MX of RFC 7505 ("0 .").
    NullMx,
    /// NXDOMAIN: the name does not exist.
    NoSuchDomain,
    /// The name exists but has no MX, A nor AAAA record.
    NoRecords,
    /// No answer: a timeout, SERVFAIL, a refused query (the reason).
    Unavailable(String),
}

/// Decides a MAIL FROM, in this order: the null sender is always taken
/// (RFC 2505 §2 6a); `sender.ban`; `sender.exclude`; the router table (an
/// address routed to `error` is refused); `[sender] spoofing` and
/// `own_address_only`; then, for clients that neither authenticated nor
/// are trusted (`relay.clients`, `access.whitelist`), whether the domain
/// must be checked in the DNS (`sender.verify_domain`): not when it is
/// local, a domain literal, or known to the router. A client that logged
/// in over POP3 lately (POP-before-SMTP) counts as authenticated here.
pub fn check_sender(
    cfg: &Config,
    from: Option<&str>,
    client: &Client<'_>,
) -> Result<SenderCheck, Verdict> {
    let Some(raw) = from else {
        return Ok(SenderCheck::Accept);
    };
    let from = canonical(cfg, raw, client);
    let from = from.as_str();
    let (local, domain) = from.rsplit_once('@').unwrap_or((from, ""));
    if let Some(p) = pattern::first_match(&cfg.sender.ban, from) {
        return Err(Verdict::refuse(
            550,
            (5, 7, 1),
            &format!("<{raw}>: Sender address rejected: banned"),
            CheckId::SenderBan,
            format!("{from} matches sender.ban {p:?}"),
        ));
    }
    if let Some((i, e)) = cfg
        .sender
        .exclude
        .iter()
        .enumerate()
        .find(|(_, e)| e.hosts.contains(client.ip) && e.local_part.is_match(local))
    {
        return Err(Verdict::refuse(
            550,
            (5, 7, 1),
            &format!("<{raw}>: Sender address rejected: not accepted from your network"),
            CheckId::SenderExclude,
            format!(
                "the local part {local:?} matches sender.exclude[{i}] {:?} and {} is in its hosts",
                e.local_part.as_str(),
                client.ip
            ),
        ));
    }
    let routed = route(&cfg.router.records, from).map_err(|e| routing_loop(from, &e))?;
    if let RouteEnd::Error { line } = routed.end {
        return Err(Verdict::refuse(
            550,
            (5, 7, 1),
            &format!("<{raw}>: Sender address rejected"),
            CheckId::Router,
            format!(
                "the sender {from} routes to error (router line {line}){}",
                steps_text(&routed.steps)
            ),
        ));
    }
    check_spoofing(cfg, from, client)?;
    let trusted = client.account.is_some()
        || client.recent_pop
        || client.whitelisted
        || cfg.is_relay_client(client.ip);
    let known = cfg.is_local_domain(domain)
        || domain.starts_with('[')
        || !routed.steps.is_empty()
        || routed.end != RouteEnd::Address;
    if !cfg.sender.verify_domain || trusted || known || domain.is_empty() {
        return Ok(SenderCheck::Accept);
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    Ok(SenderCheck::VerifyDomain(domain.to_ascii_lowercase()))
}

/// Decides a return path whose domain was looked up for
/// `sender.verify_domain`. A domain that does not exist gets
/// `sender.unknown_domain_reply` (4xx unless the administrator chose 5xx,
/// RFC 2505 §2.9); a DNS failure always gets 451 4.4.3, never a 5xx
/// (RFC 2505 §4).
pub fn judge_sender_domain(
    cfg: &Config,
    from: &str,
    domain: &str,
    answer: &DomainAnswer,
) -> Result<(), Verdict> {
    let (reply, reason) = match answer {
        DomainAnswer::MailServers => return Ok(()),
        DomainAnswer::NullMx => (
            // RFC 7505 §4.2: a domain that declares it takes no mail.
            Reply::fixed(
                550,
                5,
                7,
                27,
                &format!("<{from}>: Sender address rejected: {domain} accepts no mail (null MX)"),
            ),
            format!("{domain} publishes a null MX (RFC 7505)"),
        ),
        DomainAnswer::NoSuchDomain => (
            cfg.sender.unknown_domain_reply.clone(),
            format!("{domain} does not exist (NXDOMAIN)"),
        ),
        DomainAnswer::NoRecords => (
            cfg.sender.unknown_domain_reply.clone(),
            format!("{domain} has no MX, A nor AAAA record"),
        ),
        DomainAnswer::Unavailable(why) => (
            Reply::fixed(
                451,
                4,
                4,
                3,
                &format!(
                    "<{from}>: Sender address rejected: cannot check {domain} now; try again later"
                ),
            ),
            format!("cannot look up {domain}: {why}"),
        ),
    };
    Err(Verdict {
        reply,
        check: CheckId::SenderDomain,
        reason,
    })
}

/// `[sender] spoofing` and `own_address_only`.
fn check_spoofing(cfg: &Config, from: &str, client: &Client<'_>) -> Result<(), Verdict> {
    let (client_ip, account) = (client.ip, client.account);
    if let Some(a) = account
        && cfg.sender.own_address_only
    {
        let owner = cfg.account_for(from).map(|o| o.address.as_str());
        if owner != Some(a.address.as_str()) {
            return Err(Verdict::refuse(
                553,
                (5, 7, 1),
                &format!("Sender address rejected: <{from}> is not yours"),
                CheckId::Spoofing,
                format!(
                    "{} authenticated but sends as {from} (sender.own_address_only)",
                    a.address
                ),
            ));
        }
        return Ok(());
    }
    let domain = from.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !cfg.is_local_domain(domain) {
        return Ok(());
    }
    let allowed = match cfg.sender.spoofing {
        Spoofing::Anyone => true,
        Spoofing::AuthenticatedOnly => account.is_some() || client.recent_pop,
        Spoofing::AuthorizedOnly => {
            account.is_some() || client.recent_pop || cfg.is_relay_client(client_ip)
        }
    };
    if allowed {
        return Ok(());
    }
    Err(Verdict::refuse(
        550,
        (5, 7, 1),
        "Sender address rejected: log in to send from a local address",
        CheckId::Spoofing,
        format!(
            "{from} is in a local domain and the client is not {} (sender.spoofing = {})",
            if cfg.sender.spoofing == Spoofing::AuthenticatedOnly {
                "authenticated"
            } else {
                "authenticated nor a relay client"
            },
            cfg.sender.spoofing.as_str()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn config(sender: &str) -> Config {
        let text = format!(
            r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
[relay]
clients = ["10.0.0.0/8"]
[sender]
{sender}
[[account]]
address = "joe@example.test"
aliases = ["joseph@example.test"]
[[account]]
address = "ann@example.test"
"#
        );
        Config::parse(&text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn table() {
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        // (sender config, MAIL FROM, client, authenticated as, refusal code)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            IpAddr,
            Option<&'a str>,
            Option<u16>,
        );
        let cases: &[Case<'_>] = &[
            ("", None, stranger, None, None),
            ("", Some("joe@example.test"), stranger, None, None),
            (
                "spoofing = \"authenticated-only\"",
                Some("joe@example.test"),
                stranger,
                None,
                Some(550),
            ),
            (
                "spoofing = \"authenticated-only\"",
                Some("joe@example.test"),
                client,
                None,
                Some(550),
            ),
            (
                "spoofing = \"authenticated-only\"",
                Some("x@far.test"),
                stranger,
                None,
                None,
            ),
            (
                "spoofing = \"authenticated-only\"",
                None,
                stranger,
                None,
                None,
            ),
            (
                "spoofing = \"authorized-only\"",
                Some("joe@example.test"),
                client,
                None,
                None,
            ),
            (
                "spoofing = \"authorized-only\"",
                Some("joe@example.test"),
                stranger,
                None,
                Some(550),
            ),
            (
                "spoofing = \"authenticated-only\"",
                Some("joe@example.test"),
                stranger,
                Some("joe@example.test"),
                None,
            ),
            (
                "",
                Some("joseph@example.test"),
                stranger,
                Some("joe@example.test"),
                None,
            ),
            (
                "",
                Some("ann@example.test"),
                stranger,
                Some("joe@example.test"),
                Some(553),
            ),
            (
                "",
                Some("x@far.test"),
                stranger,
                Some("joe@example.test"),
                Some(553),
            ),
            ("", None, stranger, Some("joe@example.test"), None),
            (
                "own_address_only = false",
                Some("x@far.test"),
                stranger,
                Some("joe@example.test"),
                None,
            ),
        ];
        for (sender, from, ip, auth, want) in cases {
            let cfg = config(sender);
            let account = auth.and_then(|a| cfg.account_for(a));
            let client = Client {
                account,
                ..Client::at(*ip)
            };
            let got = check_sender(&cfg, *from, &client).err().map(|v| {
                assert_eq!(v.check, CheckId::Spoofing);
                v.reply.code()
            });
            assert_eq!(
                got, *want,
                "[sender] {sender}; from {from:?} ip {ip} auth {auth:?}"
            );
        }
    }
}

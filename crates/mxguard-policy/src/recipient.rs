//! Where an RCPT TO address goes: the relay decision, in one place.
//!
//! A recipient in one of `domains.local` (or `user@[IP]` for one of our
//! addresses, with `domains.domain_literals`) must be an account or an alias
//! (550 5.1.1 otherwise), or falls to the domain's catchall. The bare
//! `<Postmaster>` of RFC 5321 §4.1.1.3 goes to `postmaster@` the first local
//! domain. A recipient elsewhere is relayed only when (first reason wins):
//! its domain is in `domains.relay_to` (we are its backup MX); the client's
//! address is in `relay.clients`; the client authenticated as an account
//! with `relay = true`; the client's address logged in over POP3 lately for
//! a `mobile` account (POP-before-SMTP); the sender's domain is in
//! `relay.forward_from`; or `relay.relay_for_clients_only` is false. A
//! stranger whose MAIL FROM is one of our accounts is told to log in
//! (450 4.7.1, CommuniGate's mobile-user rule); any other stranger gets
//! 554 5.7.1 Relay access denied. With no rule, the server relays for no one.
//!
//! An address with more than one route (`user%host@local`, `host!user@local`,
//! a source route, a quoted local part holding `@` or `%`) is looked up as
//! written: it names no account, so it is refused, never passed on.

use std::net::IpAddr;

use mxguard_config::{Account, Config};
use mxguard_proto::{Mailbox, Path};

use crate::pattern;
use crate::router::{RouteEnd, RouteLoop, RouteStep, route};
use crate::{CheckId, Verdict};

/// How a local recipient was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Account,
    Alias,
    Catchall,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Account => "account",
            Via::Alias => "alias",
            Via::Catchall => "catchall",
        }
    }
}

/// An accepted recipient: the account whose Maildir receives the copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRecipient {
    /// The account's canonical address (lowercase).
    pub mailbox: String,
    pub via: Via,
}

/// Why a recipient outside our domains may be relayed (SPEC §5 wording).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayReason {
    /// The router table set the "may relay" marker (`Relay:`, `RelayAll:`).
    Router,
    /// The domain is in `domains.relay_to`.
    RelayTo,
    /// The client's address is in `relay.clients`.
    ClientAddress,
    /// The client authenticated (AUTH) as an account with `relay = true`.
    Authenticated,
    /// The address logged in over POP3 lately for a `mobile` account.
    RecentPop,
    /// The sender's domain is in `relay.forward_from`.
    ForwardFrom,
    /// `relay.relay_for_clients_only = false`: everyone may relay.
    OpenRelay,
}

impl RelayReason {
    /// The text of the log line: `RCPT OK (relay_to allowed)`.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayReason::Router => "router allows relaying",
            RelayReason::RelayTo => "relay_to allowed",
            RelayReason::ClientAddress => "client address",
            RelayReason::Authenticated => "authenticated channel",
            RelayReason::RecentPop => "recent POP login",
            RelayReason::ForwardFrom => "forward_from allowed",
            RelayReason::OpenRelay => "relay_for_clients_only = false",
        }
    }
}

/// Where an accepted recipient goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Local(LocalRecipient),
    /// To another server, as `address` (the address after routing, as it
    /// goes in the next RCPT TO).
    Relay {
        address: String,
        reason: RelayReason,
    },
    /// A spam trap (router line `line`): the RCPT is accepted, the message
    /// is refused whole at the end of DATA.
    SpamTrap {
        line: usize,
    },
}

/// What is known of the client when it gives MAIL FROM or RCPT TO.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// The address the client connected to (for `user@[IP]`).
    pub local_ip: IpAddr,
    /// The account it authenticated as.
    pub account: Option<&'a Account>,
    /// Its address logged in over POP3 for a `mobile` account lately.
    pub recent_pop: bool,
    /// It is in `access.whitelist`.
    pub whitelisted: bool,
    /// The MAIL FROM address (`None` for `<>`).
    pub sender: Option<&'a str>,
}

impl<'a> Client<'a> {
    /// A client known only by its address (tests, tools).
    pub fn at(ip: IpAddr) -> Client<'a> {
        Client {
            ip,
            local_ip: ip,
            account: None,
            recent_pop: false,
            whitelisted: false,
            sender: None,
        }
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// Whether `user@[IP]` names this server (`domains.domain_literals`).
fn is_our_literal(cfg: &Config, mb: &Mailbox, client: &Client<'_>) -> bool {
    match mb.domain_literal_ip() {
        Some(ip) => {
            cfg.domains.domain_literals
                && (ip == client.local_ip || cfg.domains.literal_addresses.contains(&ip))
        }
        None => false,
    }
}

/// The address the router and the accounts see: the local part unquoted,
/// `user@[one of our addresses]` and the bare `<Postmaster>` read in the
/// first local domain. `None` when that domain is needed and there is none.
pub fn address_for_routing(cfg: &Config, mb: &Mailbox, client: &Client<'_>) -> Option<String> {
    let local = mb.local_part_unquoted();
    if mb.is_bare_postmaster() || is_our_literal(cfg, mb, client) {
        return cfg.domains.local.first().map(|d| format!("{local}@{d}"));
    }
    Some(format!("{local}@{}", mb.domain))
}

/// Decides one RCPT TO: the recipient bans, then the router table, then
/// the accounts (a local domain) or the relay decision (any other).
pub fn route_recipient(cfg: &Config, to: &Path, client: &Client<'_>) -> Result<Route, Verdict> {
    let mb = &to.mailbox;
    let shown = mb.to_string();
    // A source route names hosts to pass the message through: never
    // followed (RFC 5321 §3.3 lets a server refuse them).
    if !to.route.is_empty() {
        return Err(relay_denied(&shown));
    }
    let Some(address) = address_for_routing(cfg, mb, client) else {
        return Err(relay_denied(&shown));
    };
    if let Some(p) = pattern::first_match(&cfg.recipient.ban, &address) {
        return Err(Verdict::refuse(
            550,
            (5, 7, 1),
            &format!("<{shown}>: Recipient address rejected: banned"),
            CheckId::RecipientBan,
            format!("{address} matches recipient.ban {p:?}"),
        ));
    }
    let routed = route(&cfg.router.records, &address).map_err(|e| routing_loop(&address, &e))?;
    match routed.end {
        RouteEnd::Error { line } => {
            return Err(Verdict::refuse(
                550,
                (5, 7, 1),
                &format!("<{shown}>: Recipient address rejected"),
                CheckId::Router,
                format!(
                    "{address} routes to error (router line {line}){}",
                    steps_text(&routed.steps)
                ),
            ));
        }
        RouteEnd::SpamTrap { line } => return Ok(Route::SpamTrap { line }),
        RouteEnd::Address => {}
    }
    // Unrouted addresses keep the client's spelling (local parts may be
    // case-sensitive elsewhere); routed ones are the table's.
    let (final_local, domain) = match routed.address.rsplit_once('@') {
        Some((l, d)) if !routed.steps.is_empty() => (l.to_string(), d.to_string()),
        _ => match address.rsplit_once('@') {
            Some((l, d)) => (l.to_string(), d.to_string()),
            None => (address.clone(), String::new()),
        },
    };
    if cfg.is_local_domain(&domain) {
        return local_recipient(cfg, &final_local, &domain, &shown).map(Route::Local);
    }
    let next = if routed.steps.is_empty() {
        shown.clone()
    } else {
        format!("{}@{domain}", quote_local_part(&final_local))
    };
    if domain.is_empty() || domain.starts_with('[') {
        return Err(relay_denied(&next));
    }
    if routed.may_relay {
        return Ok(Route::Relay {
            address: next,
            reason: RelayReason::Router,
        });
    }
    // Only the plain form of an address is relayed: a percent hack or a
    // bang path in the local part would let a permission to relay be bent
    // into routing through a third party. Only RelayAll: allows those.
    if final_local.contains(['%', '!', '@']) {
        return Err(relay_denied(&next));
    }
    let reason = if cfg.is_relay_to_domain(&domain) {
        Some(RelayReason::RelayTo)
    } else if cfg.is_relay_client(client.ip) {
        Some(RelayReason::ClientAddress)
    } else if client.account.is_some_and(|a| a.relay) {
        Some(RelayReason::Authenticated)
    } else if client.recent_pop {
        Some(RelayReason::RecentPop)
    } else if client
        .sender
        .is_some_and(|s| cfg.is_forward_from_domain(domain_of(s)))
    {
        Some(RelayReason::ForwardFrom)
    } else if !cfg.relay.relay_for_clients_only {
        Some(RelayReason::OpenRelay)
    } else {
        None
    };
    if let Some(reason) = reason {
        return Ok(Route::Relay {
            address: next,
            reason,
        });
    }
    // CommuniGate's mobile-user rule: one of our own users on the road.
    if client.account.is_none() && client.sender.is_some_and(|s| cfg.account_for(s).is_some()) {
        return Err(Verdict::refuse(
            450,
            (4, 7, 1),
            "Relay access denied: try to authenticate first",
            CheckId::Relay,
            format!(
                "{next} is not local and the client is not allowed to relay; the sender {} is a local account that did not log in",
                client.sender.unwrap_or("")
            ),
        ));
    }
    Err(relay_denied(&next))
}

/// ` (via line 2: a -> b, ...)` for log lines; empty without steps.
pub fn steps_text(steps: &[RouteStep]) -> String {
    if steps.is_empty() {
        return String::new();
    }
    let list: Vec<String> = steps
        .iter()
        .map(|s| format!("line {}: {} -> {}", s.line, s.from, s.to))
        .collect();
    format!(" (via {})", list.join(", "))
}

/// The router sends an address round in circles: the table needs fixing,
/// so the client may try again later (4xx), and the loop is logged.
pub fn routing_loop(address: &str, e: &RouteLoop) -> Verdict {
    Verdict::refuse(
        451,
        (4, 4, 6),
        "Routing loop detected; try again later",
        CheckId::Router,
        format!("{address}: {e}"),
    )
}

/// A local part as it must be written in an address: as is when it is a
/// dot-atom (RFC 5321 §4.1.2), quoted otherwise.
fn quote_local_part(local: &str) -> String {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    if dot_atom {
        return local.to_string();
    }
    let mut out = String::with_capacity(local.len() + 2);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decides a recipient in a local domain: an account, an alias of one, or
/// the domain's catchall.
fn local_recipient(
    cfg: &Config,
    local: &str,
    domain: &str,
    shown: &str,
) -> Result<LocalRecipient, Verdict> {
    let address = format!("{local}@{domain}");
    if let Some(account) = cfg.account_for(&address) {
        let via = if account.address.eq_ignore_ascii_case(&address) {
            Via::Account
        } else {
            Via::Alias
        };
        return Ok(LocalRecipient {
            mailbox: account.address.clone(),
            via,
        });
    }
    if let Some(account) = cfg.catchall_for(domain).and_then(|t| cfg.account_for(t)) {
        return Ok(LocalRecipient {
            mailbox: account.address.clone(),
            via: Via::Catchall,
        });
    }
    let also = if shown.eq_ignore_ascii_case(&address) {
        String::new()
    } else {
        format!(" (routed to {address})")
    };
    Err(Verdict::refuse(
        550,
        (5, 1, 1),
        &format!("<{shown}>: Recipient address rejected: no such user here"),
        CheckId::UnknownUser,
        format!("no account, alias or catchall for {address}{also}"),
    ))
}

fn relay_denied(shown: &str) -> Verdict {
    Verdict::refuse(
        554,
        (5, 7, 1),
        "Relay access denied",
        CheckId::Relay,
        format!(
            "{shown} is not in a local domain nor in relay_to, and the client is neither in relay.clients nor authenticated as an account with relay = true"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxguard_proto::address::parse_path;

    fn reason(r: Result<Route, Verdict>) -> Option<RelayReason> {
        match r {
            Ok(Route::Relay { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    const CONFIG: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test", "other.test"]
catchall = { "other.test" = "joe@example.test" }
[[account]]
address = "joe@example.test"
aliases = ["Joseph@example.test", "postmaster@example.test"]
"#;

    #[test]
    fn table() {
        let cfg = Config::parse(CONFIG, std::path::Path::new("t.toml")).unwrap();
        // Ok((mailbox, via)) or Err((reply code, check))
        type Want = Result<(&'static str, Via), (u16, CheckId)>;
        let cases: &[(&str, Want)] = &[
            ("<joe@example.test>", Ok(("joe@example.test", Via::Account))),
            ("<JOE@Example.Test>", Ok(("joe@example.test", Via::Account))),
            (
                "<\"joe\"@example.test>",
                Ok(("joe@example.test", Via::Account)),
            ),
            (
                "<joseph@example.test>",
                Ok(("joe@example.test", Via::Alias)),
            ),
            ("<Postmaster>", Ok(("joe@example.test", Via::Alias))),
            (
                "<anyone@other.test>",
                Ok(("joe@example.test", Via::Catchall)),
            ),
            ("<nobody@example.test>", Err((550, CheckId::UnknownUser))),
            ("<joe@elsewhere.test>", Err((554, CheckId::Relay))),
            (
                "<joe%elsewhere.test@example.test>",
                Err((550, CheckId::UnknownUser)),
            ),
            (
                "<elsewhere.test!joe@example.test>",
                Err((550, CheckId::UnknownUser)),
            ),
            (
                "<\"joe@elsewhere.test\"@example.test>",
                Err((550, CheckId::UnknownUser)),
            ),
            (
                "<@example.test:joe@elsewhere.test>",
                Err((554, CheckId::Relay)),
            ),
            (
                "<@example.test:joe@example.test>",
                Err((554, CheckId::Relay)),
            ),
            ("<joe@[127.0.0.1]>", Err((554, CheckId::Relay))),
        ];
        for (input, want) in cases {
            let path = parse_path(input, true).unwrap().unwrap();
            let got =
                route_recipient(&cfg, &path, &Client::at("192.0.2.1".parse().unwrap())).map(|r| {
                    match r {
                        Route::Local(l) => l,
                        other => panic!("{input}: {other:?}"),
                    }
                });
            match (got, want) {
                (Ok(r), Ok((mb, via))) => {
                    assert_eq!(r.mailbox, *mb, "{input}");
                    assert_eq!(r.via, *via, "{input}");
                }
                (Err(v), Err((code, check))) => {
                    assert_eq!(v.reply.code(), *code, "{input}");
                    assert_eq!(v.check, *check, "{input}");
                }
                (got, _) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn disabled_catchalls() {
        let text = CONFIG.replace("[[account]]", "disable_catchalls = true\n[[account]]");
        let cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let path = parse_path("<anyone@other.test>", false).unwrap().unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            route_recipient(&cfg, &path, &Client::at(ip))
                .unwrap_err()
                .check,
            CheckId::UnknownUser
        );
    }

    #[test]
    fn relay_paths() {
        let text = CONFIG.replace(
            "[[account]]",
            "relay_to = [\"backup.test\"]\n[relay]\nclients = [\"10.0.0.0/8\"]\n[[account]]",
        );
        let cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        let route = |addr: &str, ip| {
            route_recipient(
                &cfg,
                &parse_path(addr, true).unwrap().unwrap(),
                &Client::at(ip),
            )
        };
        assert_eq!(
            reason(route("<x@backup.test>", stranger)),
            Some(RelayReason::RelayTo)
        );
        assert_eq!(
            reason(route("<x@Backup.Test>", stranger)),
            Some(RelayReason::RelayTo)
        );
        assert_eq!(
            reason(route("<x@far.test>", client)),
            Some(RelayReason::ClientAddress)
        );
        assert_eq!(
            route("<x@far.test>", stranger).unwrap_err().check,
            CheckId::Relay
        );
        // multi-route forms are never relayed, even for a relay client
        for bad in [
            "<x%far.test@backup.test>",
            "<far.test!x@backup.test>",
            "<\"x@far.test\"@backup.test>",
            "<@backup.test:x@far.test>",
            "<x%evil.test@far.test>",
        ] {
            assert_eq!(
                route(bad, client).unwrap_err().check,
                CheckId::Relay,
                "{bad}"
            );
        }
        // a local recipient stays local for a relay client
        assert!(matches!(
            route("<joe@example.test>", client),
            Ok(Route::Local(_))
        ));
    }

    #[test]
    fn authenticated_relay() {
        let text = CONFIG.replace("aliases = [", "relay = true\naliases = [")
            + "[[account]]\naddress = \"ann@example.test\"\n";
        let cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let joe = cfg.account_for("joe@example.test").unwrap();
        let ann = cfg.account_for("ann@example.test").unwrap();
        assert!(joe.relay && !ann.relay);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let route = |addr: &str, account| {
            route_recipient(
                &cfg,
                &parse_path(addr, true).unwrap().unwrap(),
                &Client {
                    account,
                    ..Client::at(ip)
                },
            )
        };
        assert_eq!(
            reason(route("<x@far.test>", Some(joe))),
            Some(RelayReason::Authenticated)
        );
        assert_eq!(RelayReason::Authenticated.as_str(), "authenticated channel");
        // without relay = true: local recipients only
        assert_eq!(
            route("<x@far.test>", Some(ann)).unwrap_err().check,
            CheckId::Relay
        );
        assert!(matches!(
            route("<joe@example.test>", Some(ann)),
            Ok(Route::Local(_))
        ));
        // multi-route forms are still refused
        assert_eq!(
            route("<x%evil.test@far.test>", Some(joe))
                .unwrap_err()
                .check,
            CheckId::Relay
        );
        assert_eq!(
            route("<x@far.test>", None).unwrap_err().check,
            CheckId::Relay
        );
    }

    #[test]
    fn more_relay_paths_and_literals() {
        let text = CONFIG.replace(
            "[[account]]",
            "literal_addresses = [\"192.0.2.5\"]\n[relay]\nforward_from = [\"partner.test\"]\n[[account]]",
        );
        let cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let ours: IpAddr = "198.51.100.7".parse().unwrap();
        let path = |a: &str| parse_path(a, true).unwrap().unwrap();
        let base = Client {
            local_ip: ours,
            ..Client::at(ip)
        };
        let route = |a: &str, c: &Client<'_>| route_recipient(&cfg, &path(a), c);
        // POP-before-SMTP
        let pop = Client {
            recent_pop: true,
            ..base
        };
        assert_eq!(
            reason(route("<x@far.test>", &pop)),
            Some(RelayReason::RecentPop)
        );
        // forward_from
        let fwd = Client {
            sender: Some("boss@partner.test"),
            ..base
        };
        assert_eq!(
            reason(route("<x@far.test>", &fwd)),
            Some(RelayReason::ForwardFrom)
        );
        // a stranger sending as one of our accounts is told to log in
        let local_sender = Client {
            sender: Some("joe@example.test"),
            ..base
        };
        let v = route("<x@far.test>", &local_sender).unwrap_err();
        assert_eq!((v.reply.code(), v.check), (450, CheckId::Relay));
        // other strangers: 554
        let other = Client {
            sender: Some("x@elsewhere.test"),
            ..base
        };
        assert_eq!(route("<x@far.test>", &other).unwrap_err().reply.code(), 554);
        // domain literals: the address connected to, and literal_addresses
        assert!(matches!(
            route("<joe@[198.51.100.7]>", &base),
            Ok(Route::Local(_))
        ));
        assert!(matches!(
            route("<joe@[192.0.2.5]>", &base),
            Ok(Route::Local(_))
        ));
        assert_eq!(
            route("<joe@[192.0.2.99]>", &base).unwrap_err().check,
            CheckId::Relay
        );
        assert_eq!(
            route("<nobody@[192.0.2.5]>", &base).unwrap_err().check,
            CheckId::UnknownUser
        );
        // relay_for_clients_only = false opens everything (check-config warns)
        let open = CONFIG.replace(
            "[[account]]",
            "[relay]\nrelay_for_clients_only = false\n[[account]]",
        );
        let cfg = Config::parse(&open, std::path::Path::new("t.toml")).unwrap();
        assert_eq!(
            reason(route_recipient(&cfg, &path("<x@far.test>"), &base)),
            Some(RelayReason::OpenRelay)
        );
        // with domain_literals = false, our literal is not local
        let nolit = CONFIG.replace("[[account]]", "domain_literals = false\n[[account]]");
        let cfg = Config::parse(&nolit, std::path::Path::new("t.toml")).unwrap();
        assert!(route_recipient(&cfg, &path("<joe@[198.51.100.7]>"), &base).is_err());
    }
}

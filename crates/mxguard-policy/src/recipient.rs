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
use mxguard_proto::Path;

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
    Relay(RelayReason),
}

/// What is known of the client when it gives RCPT TO.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// The address the client connected to (for `user@[IP]`).
    pub local_ip: IpAddr,
    /// The account it authenticated as.
    pub account: Option<&'a Account>,
    /// Its address logged in over POP3 for a `mobile` account lately.
    pub recent_pop: bool,
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
            sender: None,
        }
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// Whether `user@[IP]` names this server (`domains.domain_literals`).
fn is_our_literal(cfg: &Config, to: &Path, client: &Client<'_>) -> bool {
    match to.mailbox.domain_literal_ip() {
        Some(ip) => {
            cfg.domains.domain_literals
                && (ip == client.local_ip || cfg.domains.literal_addresses.contains(&ip))
        }
        None => false,
    }
}

/// Decides one RCPT TO.
pub fn route_recipient(cfg: &Config, to: &Path, client: &Client<'_>) -> Result<Route, Verdict> {
    let mb = &to.mailbox;
    if to.route.is_empty() && is_our_literal(cfg, to, client) {
        // user@[our address] is user@ our first local domain.
        let Some(domain) = cfg.domains.local.first() else {
            return Err(relay_denied(&mb.to_string()));
        };
        let mut local = to.clone();
        local.mailbox.domain = domain.clone();
        return local_recipient(cfg, &local).map(Route::Local);
    }
    let remote = to.route.is_empty()
        && !mb.is_bare_postmaster()
        && mb.domain_literal_ip().is_none()
        && !mb.domain.starts_with('[')
        && !cfg.is_local_domain(&mb.domain);
    if remote {
        // Only the plain form of an address is relayed: a percent hack or a
        // bang path in the local part would let a permission to relay be
        // bent into routing through a third party, so refuse those too.
        let local = mb.local_part_unquoted();
        if local.contains(['%', '!', '@']) {
            return Err(relay_denied(&mb.to_string()));
        }
        let reason = if cfg.is_relay_to_domain(&mb.domain) {
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
        if let Some(r) = reason {
            return Ok(Route::Relay(r));
        }
        // CommuniGate's mobile-user rule: one of our own users on the road.
        if client.account.is_none() && client.sender.is_some_and(|s| cfg.account_for(s).is_some()) {
            return Err(Verdict::refuse(
                450,
                (4, 7, 1),
                "Relay access denied: try to authenticate first",
                CheckId::Relay,
                format!(
                    "{} is not local and the client is not allowed to relay; the sender {} is a local account that did not log in",
                    mb,
                    client.sender.unwrap_or("")
                ),
            ));
        }
    }
    local_recipient(cfg, to).map(Route::Local)
}

/// Decides a recipient that must be local.
fn local_recipient(cfg: &Config, to: &Path) -> Result<LocalRecipient, Verdict> {
    let mb = &to.mailbox;
    let domain = if mb.is_bare_postmaster() {
        match cfg.domains.local.first() {
            Some(d) => d.clone(),
            None => return Err(relay_denied(&mb.to_string())),
        }
    } else {
        mb.domain.clone()
    };
    let shown = format!("{}@{}", mb.local_part, domain);
    if !to.route.is_empty() || !cfg.is_local_domain(&domain) {
        return Err(relay_denied(&shown));
    }
    let local = mb.local_part_unquoted();
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
    if let Some(account) = cfg.catchall_for(&domain).and_then(|t| cfg.account_for(t)) {
        return Ok(LocalRecipient {
            mailbox: account.address.clone(),
            via: Via::Catchall,
        });
    }
    Err(Verdict::refuse(
        550,
        (5, 1, 1),
        &format!("<{shown}>: Recipient address rejected: no such user here"),
        CheckId::UnknownUser,
        format!("no account, alias or catchall for {address}"),
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
                        Route::Relay(_) => panic!("{input}: relayed"),
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
            route("<x@backup.test>", stranger),
            Ok(Route::Relay(RelayReason::RelayTo))
        );
        assert_eq!(
            route("<x@Backup.Test>", stranger),
            Ok(Route::Relay(RelayReason::RelayTo))
        );
        assert_eq!(
            route("<x@far.test>", client),
            Ok(Route::Relay(RelayReason::ClientAddress))
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
            route("<x@far.test>", Some(joe)),
            Ok(Route::Relay(RelayReason::Authenticated))
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
            route("<x@far.test>", &pop),
            Ok(Route::Relay(RelayReason::RecentPop))
        );
        // forward_from
        let fwd = Client {
            sender: Some("boss@partner.test"),
            ..base
        };
        assert_eq!(
            route("<x@far.test>", &fwd),
            Ok(Route::Relay(RelayReason::ForwardFrom))
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
            route_recipient(&cfg, &path("<x@far.test>"), &base),
            Ok(Route::Relay(RelayReason::OpenRelay))
        );
        // with domain_literals = false, our literal is not local
        let nolit = CONFIG.replace("[[account]]", "domain_literals = false\n[[account]]");
        let cfg = Config::parse(&nolit, std::path::Path::new("t.toml")).unwrap();
        assert!(route_recipient(&cfg, &path("<joe@[198.51.100.7]>"), &base).is_err());
    }
}

//! `mxguard route ADDRESS [--from IP] [--auth USER]`: how an address is
//! routed and whether it may be relayed, record by record (like
//! CommuniGate's router test).
//!
//! Offline: it reads the configuration (and the router table it names),
//! and asks the same policy functions the SMTP session asks, without a
//! running server and without DNS. Only the client's address and login are
//! known; POP-before-SMTP and `relay.forward_from` (which depend on the
//! session) are taken as absent.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use mxguard_config::{Account, Config, RelayPrefix, RouterRecord};
use mxguard_policy::Verdict;
use mxguard_policy::recipient::{
    Client, Route, address_for_routing, route_recipient, routing_loop,
};
use mxguard_policy::router::{RouteEnd, RouteStep, is_multi_route, route};
use mxguard_policy::sender::{SenderCheck, check_sender};
use mxguard_proto::Path;
use mxguard_proto::address::parse_path;

/// What was asked on the command line.
#[derive(Clone, Debug)]
pub struct Query {
    /// The address, with or without `<>`.
    pub address: String,
    /// The client's address (`--from`); `None`: any, taken as 0.0.0.0.
    pub from: Option<IpAddr>,
    /// The account the client authenticated as (`--auth`).
    pub auth: Option<String>,
}

/// `writeln!` to a `String`, which cannot fail.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Returns the process exit code: 0 once the report is printed, whatever
/// it says; 1 for a bad configuration, address or `--auth` account.
pub fn run(query: &Query, config: Option<PathBuf>) -> i32 {
    let path = match super::config_path(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match report(&cfg, query) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: cannot write the report: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The address as a path: `<>` added when missing.
fn parse_address(arg: &str) -> Result<Path, String> {
    let trimmed = arg.trim();
    let bracketed = if trimmed.starts_with('<') {
        trimmed.to_string()
    } else {
        format!("<{trimmed}>")
    };
    match parse_path(&bracketed, true) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(format!(
            "{arg:?}: the null address <> is routed nowhere; give an address like joe@example.test"
        )),
        Err(e) => Err(format!("bad address {arg:?}: {e}")),
    }
}

/// The report, one fact a line; `Err` for a bad address or `--auth`.
pub fn report(cfg: &Config, query: &Query) -> Result<String, String> {
    let path = parse_address(&query.address)?;
    let account: Option<&Account> = match &query.auth {
        Some(user) => Some(cfg.account_for(user.trim()).ok_or_else(|| {
            format!("--auth {user:?}: no such account (neither an account address nor an alias)")
        })?),
        None => None,
    };
    let ip = query.from.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // `user@[IP]` is local when IP is the address connected to: offline,
    // take the first listener's.
    let local_ip = cfg
        .listeners
        .first()
        .map(|l| l.address.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let client = Client {
        ip,
        local_ip,
        account,
        recent_pop: false,
        whitelisted: cfg.is_whitelisted(ip),
        sender: None,
    };

    let mut out = String::new();
    let shown = path.mailbox.to_string();
    let routing = address_for_routing(cfg, &path.mailbox, &client);
    say!(
        out,
        "address: {}",
        address_line(&path, &shown, routing.as_deref())
    );
    say!(out, "client: {}", client_line(cfg, query.from, &client));
    match &cfg.router.file {
        Some(f) => {
            let n = cfg.router.records.len();
            say!(
                out,
                "router: {} ({n} record{})",
                f.display(),
                if n == 1 { "" } else { "s" }
            );
        }
        None => say!(out, "router: none ([router] file not set)"),
    }

    match &routing {
        Some(address) if path.route.is_empty() => trace(&mut out, cfg, address),
        Some(_) => say!(out, "  (not routed: a source route is never followed)"),
        None => say!(out, "  (not routed: no local domain to read it in)"),
    }

    let decided = route_recipient(cfg, &path, &client);
    say!(out, "delivery: {}", delivery_line(cfg, &decided));
    say!(
        out,
        "relay: {}",
        relay_line(cfg, &decided, routing.as_deref())
    );
    say!(
        out,
        "as a sender: {}",
        sender_line(cfg, &path, &shown, &client)
    );
    Ok(out)
}

fn address_line(path: &Path, shown: &str, routing: Option<&str>) -> String {
    let mut s = if path.route.is_empty() {
        shown.to_string()
    } else {
        format!("<@{}:{shown}>", path.route.join(",@"))
    };
    match routing {
        Some(r) if r != shown => {
            let _ = write!(s, " (read as {r})");
        }
        Some(_) => {}
        None => s.push_str(" (no local domain to read it in)"),
    }
    s
}

fn client_line(cfg: &Config, from: Option<IpAddr>, client: &Client<'_>) -> String {
    let mut notes = Vec::new();
    let mut s = match from {
        Some(ip) => ip.to_string(),
        None => {
            notes.push("not given with --from".to_string());
            notes.push("taken as 0.0.0.0".to_string());
            "any address".to_string()
        }
    };
    notes.push(match client.account {
        Some(a) => format!(
            "authenticated as {}{}",
            a.address,
            if a.relay { ", relay = true" } else { "" }
        ),
        None => "not authenticated".to_string(),
    });
    if from.is_some() && cfg.is_relay_client(client.ip) {
        notes.push("in relay.clients".to_string());
    }
    if from.is_some() && client.whitelisted {
        notes.push("in access.whitelist".to_string());
    }
    let _ = write!(s, " ({})", notes.join("; "));
    s
}

/// The router's steps, the final address and the relay marker.
fn trace(out: &mut String, cfg: &Config, address: &str) {
    let records: &[RouterRecord] = &cfg.router.records;
    let (steps, result) = match route(&cfg.router.records, address) {
        Ok(r) => (r.steps.clone(), Ok(r)),
        Err(e) => (e.steps.clone(), Err(e)),
    };
    let mut marker = false;
    for s in &steps {
        let note = step_note(records, s, &mut marker);
        say!(out, "  line {}: {} -> {} ({note})", s.line, s.from, s.to);
    }
    match result {
        Ok(r) => {
            match r.end {
                RouteEnd::Error { line: n } => {
                    say!(out, "  line {n}: routes to error");
                }
                RouteEnd::SpamTrap { line: n } => {
                    say!(out, "  line {n}: routes to spam trap");
                }
                RouteEnd::Address if r.steps.is_empty() => {
                    say!(out, "  (no record applies)");
                }
                RouteEnd::Address => {}
            }
            // Unrouted addresses keep their spelling, as in the session.
            let last = if r.steps.is_empty() {
                address
            } else {
                r.address.as_str()
            };
            say!(out, "final address: {last}");
            say!(
                out,
                "relay marker: {}",
                if r.may_relay { "set" } else { "not set" }
            );
        }
        Err(e) => {
            say!(
                out,
                "routing loop: {} rewrites without an end ({})",
                e.steps.len(),
                routing_loop(address, &e).reply
            );
            say!(out, "final address: none (routing loop)");
        }
    }
}

/// What a rewrite did to the relay marker, as `route` decides it.
fn step_note(records: &[RouterRecord], step: &RouteStep, marker: &mut bool) -> String {
    let Some(r) = records.iter().find(|r| r.line == step.line) else {
        return "record not found".to_string();
    };
    match r.prefix {
        RelayPrefix::Relay if is_multi_route(&step.from) => {
            if *marker {
                "Relay: multi-route address, marker kept".to_string()
            } else {
                "Relay: multi-route address, marker not set (only RelayAll: sets it)".to_string()
            }
        }
        RelayPrefix::Relay => {
            *marker = true;
            "Relay: sets the relay marker".to_string()
        }
        RelayPrefix::RelayAll => {
            *marker = true;
            "RelayAll: sets the relay marker".to_string()
        }
        RelayPrefix::NoRelay if *marker => "NoRelay: marker kept".to_string(),
        RelayPrefix::NoRelay => "NoRelay: marker not set".to_string(),
    }
}

fn refusal(v: &Verdict) -> String {
    format!("{} [check {}]: {}", v.reply, v.check.as_str(), v.reason)
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

fn delivery_line(cfg: &Config, decided: &Result<Route, Verdict>) -> String {
    match decided {
        Ok(Route::Local(l)) => format!("local mailbox {} ({})", l.mailbox, l.via.as_str()),
        Ok(Route::Relay { address, .. }) => {
            let domain = domain_of(address);
            // As the delivery's next-hop choice: routes, smarthost, MX.
            let hop = if let Some(h) = cfg.route_for(domain) {
                format!("relay.routes {h}")
            } else if let Some(h) = &cfg.relay.smarthost {
                format!("smarthost {h}")
            } else {
                format!("MX of {}", domain.to_ascii_lowercase())
            };
            format!("remote, to {address} via {hop}")
        }
        Ok(Route::SpamTrap { line }) => {
            format!("spam trap (router line {line}): RCPT accepted, message refused at end of DATA")
        }
        Err(v) => format!("refused at RCPT: {}", refusal(v)),
    }
}

fn relay_line(cfg: &Config, decided: &Result<Route, Verdict>, routing: Option<&str>) -> String {
    match decided {
        Ok(Route::Local(_)) => "not needed (local)".to_string(),
        Ok(Route::Relay { reason, .. }) => format!("allowed ({})", reason.as_str()),
        Ok(Route::SpamTrap { .. }) => "not needed (spam trap)".to_string(),
        Err(v) if v.check == mxguard_policy::CheckId::Relay => format!("denied: {}", v.reply),
        Err(v) => {
            let local = routing.is_some_and(|a| cfg.is_local_domain(domain_of(a)));
            if local {
                "not needed (local)".to_string()
            } else {
                format!("not decided (refused first by check {})", v.check.as_str())
            }
        }
    }
}

fn sender_line(cfg: &Config, path: &Path, shown: &str, client: &Client<'_>) -> String {
    if path.mailbox.is_bare_postmaster() {
        return "not a valid MAIL FROM (a bare <Postmaster> is a recipient only)".to_string();
    }
    match check_sender(cfg, Some(shown), client) {
        Ok(SenderCheck::VerifyDomain(d)) => format!(
            "needs DNS: the domain {d} must have an MX, A or AAAA record (sender.verify_domain)"
        ),
        Ok(SenderCheck::Accept) => {
            let domain = domain_of(shown);
            let known = cfg.is_local_domain(domain)
                || domain.starts_with('[')
                || route(&cfg.router.records, shown)
                    .is_ok_and(|r| !r.steps.is_empty() || r.end != RouteEnd::Address);
            let trusted =
                client.account.is_some() || client.whitelisted || cfg.is_relay_client(client.ip);
            if known {
                "accepted without DNS (local or known to the router)".to_string()
            } else if !cfg.sender.verify_domain {
                "accepted (sender.verify_domain = false: the domain is not checked)".to_string()
            } else if trusted {
                "accepted without DNS (the client is authenticated or trusted)".to_string()
            } else {
                "accepted".to_string()
            }
        }
        Err(v) => format!("refused: {}", refusal(&v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_or_without_brackets() {
        assert_eq!(
            parse_address("joe@example.test")
                .unwrap()
                .mailbox
                .to_string(),
            "joe@example.test"
        );
        assert_eq!(
            parse_address(" <joe@example.test> ")
                .unwrap()
                .mailbox
                .to_string(),
            "joe@example.test"
        );
        assert!(parse_address("").unwrap_err().contains("null address"));
        assert!(parse_address("joe@@x").unwrap_err().contains("bad address"));
        assert!(parse_address("<joe@x.test").unwrap_err().contains("<>"));
    }
}

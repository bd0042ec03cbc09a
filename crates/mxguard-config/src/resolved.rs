//! The resolved layer: from [`RawConfig`] to [`Config`], with defaults,
//! conversions, cross-checks, indexes and warnings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::DeTable;

use crate::iplist::{self, IpRange};
use crate::locate::{self, Segment};
use crate::raw::{self, RawConfig};
use crate::units::{parse_duration, parse_size};

mod filters;
mod limits;
mod rules;
mod verify;
use crate::{
    AccessConfig, Account, Config, ConfigError, DEFAULT_DNSBL_REPLY, DnsConfig, DnsblConfig,
    DomainsConfig, ExpnMode, IpList, LimitsConfig, ListenerConfig, NextHop, PtrMode, QueueConfig,
    RelayConfig, Reply, Role, Secret, ServerConfig, SmtpConfig, TlsConfig, VrfyMode,
};

const DEFAULT_DATA_DIR: &str = "./data";
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25_000_000;
/// RFC 5321 §4.5.3.1.7: the minimum message size a server must accept.
const MIN_USEFUL_MESSAGE_SIZE: u64 = 64 * 1024;
/// Room left in a 512-octet reply line for the banner after `220 ` and
/// CRLF, with a margin for the expansion of macros.
const MAX_BANNER_LEN: usize = 400;
const SUPPORTED_ROLES: &str = "mx, submission, submissions, pop3, pop3s";
const FUTURE_ROLES: &[&str] = &["admin"];
/// A relay client range with more addresses than a `/8` (IPv4) is linted.
const WIDE_V4: u128 = 1 << 24;
/// A relay client range with more addresses than a `/32` (IPv6) is linted.
const WIDE_V6: u128 = 1 << 96;
/// An early talker pause longer than this is linted: clients may give up.
const LONG_EARLY_TALKER: Duration = Duration::from_secs(10);
/// At most this many "also in the whitelist" warnings, then a summary.
const MAX_OVERLAP_WARNINGS: usize = 10;
/// The longest IP address written in a reply (`%IP%`).
const LONGEST_IP: &str = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
/// A reply line, CRLF included, is at most 512 octets (RFC 5321 §4.5.3.1.5).
const MAX_REPLY_LINE: usize = 512;
const PTR_MODES: &str = "off, require, fcrdns, score";
const SPOOFING_MODES: &str = "anyone, authenticated-only, authorized-only";
const NEXT_HOP_FORMS: &str = "a host like \"mail.example.test\", \"mail.example.test:587\", \"[192.0.2.1]\", \"192.0.2.1:25\" or \"[2001:db8::1]:25\"";

/// Parses and resolves `text`, the content of `path`.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cx = Cx { text, path };
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if let Some(e) = syntax_errors.first() {
        return Err(cx.syntax_error(e, doc.get_ref()));
    }
    if let Some((span, key, message)) = check_shapes(doc.get_ref()) {
        return Err(cx.error(span, &key, message));
    }
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(cx.serde_error(&e, doc.get_ref())),
    };
    cx.resolve(raw)
}

/// What every error needs: the text (for line numbers) and the file name.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Cx<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = locate::line_col(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            key: if key.is_empty() {
                "(top level)".to_string()
            } else {
                key.to_string()
            },
            message: message.into(),
        }
    }

    /// `file:line:column: key: message`, for warnings.
    fn located(&self, span: Range<usize>, key: &str, message: &str) -> String {
        let (line, column) = locate::line_col(self.text, span.start);
        format!("{}:{line}:{column}: {key}: {message}", self.path.display())
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        locate::line_col(self.text, span.start).0
    }

    fn syntax_error(&self, e: &toml::de::Error, doc: &DeTable<'_>) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let mut path = locate::syntax_path(self.text, offset);
        if path.is_empty() {
            // The document as recovered by the parser may hold a better
            // guess, unless it made up an empty key.
            path = locate::path_at(doc, offset)
                .filter(|p| !p.contains(&Segment::Key(String::new())))
                .unwrap_or_default();
        }
        let message = one_line(e.message());
        self.error(
            offset..offset,
            &locate::format_path(&path),
            format!("invalid TOML: {message}"),
        )
    }

    fn serde_error(&self, e: &toml::de::Error, doc: &DeTable<'_>) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let path = locate::path_at(doc, offset).unwrap_or_default();
        let message = serde_message(e.message(), &path);
        self.error(offset..offset, &locate::format_path(&path), message)
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let server = self.server(raw.server, &mut warnings)?;
        let tls = self.tls(raw.tls, &mut warnings)?;
        let listeners = self.listeners(raw.listeners, tls.as_ref(), &mut warnings)?;
        let (local, local_spans, disable_catchalls) = self.local_domains(raw.domains.as_ref())?;
        let (accounts, account_index, address_spans) =
            self.accounts(raw.accounts, &local, &mut warnings)?;
        let catchall = self.catchalls(raw.domains.as_ref(), &local, &address_spans)?;
        let relay_to = self.relay_to(raw.domains.as_ref(), &local)?;
        let (domain_literals, literal_addresses) =
            self.domain_literals(raw.domains.as_ref(), &mut warnings)?;
        let dns = self.dns(raw.dns)?;
        let smtp = self.smtp(raw.smtp, &mut warnings)?;
        let clients_only_span = raw
            .relay
            .as_ref()
            .and_then(|r| r.get_ref().clients_only.as_ref())
            .map(Spanned::span);
        let relay = self.relay(raw.relay, &local, &server, &listeners, &mut warnings)?;
        let access = self.access(raw.access, &mut warnings)?;
        let queue = self.queue(raw.queue, &mut warnings)?;
        let dnsbl = self.dnsbls(raw.dnsbls, &mut warnings)?;
        let limits = self.limits(raw.limits, &mut warnings)?;
        let sender = self.sender(raw.sender, &mut warnings)?;
        let recipient = self.recipient(raw.recipient, &mut warnings)?;
        let router = self.router(raw.router, &mut warnings)?;
        let greylist = self.greylist(raw.greylist, &mut warnings)?;
        let store = self.store(raw.store, &mut warnings)?;
        let verify = self.verify(raw.verify)?;
        let dkim_sign = self.dkim_sign(raw.dkim_sign)?;
        let catchall_for_filters = if disable_catchalls {
            BTreeMap::new()
        } else {
            catchall.clone()
        };
        let filters = self.filters(
            raw.filters,
            &local,
            &account_index,
            &catchall_for_filters,
            &mut warnings,
        )?;
        let rspamd = self.rspamd(raw.rspamd)?;
        let mut scoring = self.scoring(raw.scoring, &mut warnings)?;
        scoring.active |= !filters.is_empty()
            || rspamd.is_some()
            || dnsbl.iter().any(|z| z.score > 0.0)
            || access.ptr == PtrMode::Score
            || verify.scores();

        let forward_from_set: HashSet<String> = relay.forward_from.iter().cloned().collect();
        let local_set: HashSet<String> = local.iter().cloned().collect();
        let relay_to_set: HashSet<String> = relay_to.iter().cloned().collect();
        let domains = DomainsConfig {
            local,
            catchall,
            disable_catchalls,
            relay_to,
            domain_literals,
            literal_addresses,
        };

        // Lints that need several sections.
        if let Some(span) = clients_only_span
            && relay.clients_only
            && relay.clients.is_empty()
            && access.whitelist.is_empty()
        {
            warnings.push(self.located(
                span,
                "relay.clients_only",
                "relay.clients and access.whitelist are empty: every connection is refused",
            ));
        }
        let domains_span = raw.domains.as_ref().map_or(0..0, |d| d.span());
        if domains.local.is_empty()
            && let Some((span, _)) = listeners.iter().find(|(_, l)| l.role == Role::Mx)
        {
            warnings.push(self.located(
                span.clone(),
                "domains.local",
                "there is no local domain: the mx listener refuses every recipient",
            ));
        }
        if !listeners.is_empty() && listeners.iter().all(|(_, l)| l.role != Role::Mx) {
            warnings.push(self.located(
                0..0,
                "listener",
                "there is no mx listener: this server receives no mail from other servers",
            ));
        }
        if domains.disable_catchalls && !domains.catchall.is_empty() {
            warnings.push(self.located(
                domains_span.clone(),
                "domains.catchall",
                "catchalls are configured but ignored, because domains.disable_catchalls is true",
            ));
        }
        for (domain, span) in domains.local.iter().zip(&local_spans) {
            let has_catchall =
                !domains.disable_catchalls && domains.catchall.contains_key(domain.as_str());
            let has_address = account_index
                .keys()
                .any(|a| a.rsplit_once('@').is_some_and(|(_, d)| d == domain));
            if !has_catchall && !has_address {
                warnings.push(self.located(
                    span.clone(),
                    "domains.local",
                    &format!(
                        "no account, alias or catchall in {domain:?}: every recipient there is refused"
                    ),
                ));
            }
        }

        Ok(Config {
            path: self.path.to_path_buf(),
            server,
            listeners: listeners.into_iter().map(|(_, l)| l).collect(),
            tls,
            domains,
            accounts,
            dns,
            smtp,
            relay,
            queue,
            access,
            dnsbl,
            limits,
            sender,
            recipient,
            router,
            greylist,
            verify,
            dkim_sign,
            store,
            filters,
            scoring,
            rspamd,
            account_index,
            local_set,
            relay_to_set,
            forward_from_set,
            warnings,
        })
    }

    /// `domains.relay_to`, lowercased; none of them local.
    fn relay_to(
        &self,
        raw: Option<&Spanned<raw::RawDomains>>,
        local: &[String],
    ) -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        let Some(list) = raw.and_then(|r| r.get_ref().relay_to.as_ref()) else {
            return Ok(out);
        };
        for (i, domain) in list.get_ref().iter().enumerate() {
            let key = format!("domains.relay_to[{i}]");
            check_domain(domain.get_ref()).map_err(|m| self.error(domain.span(), &key, m))?;
            let lower = domain.get_ref().to_lowercase();
            if let Some(j) = out.iter().position(|d| *d == lower) {
                return Err(self.error(
                    domain.span(),
                    &key,
                    format!("{lower:?} is listed twice (also domains.relay_to[{j}])"),
                ));
            }
            if let Some(j) = local.iter().position(|d| *d == lower) {
                return Err(self.error(
                    domain.span(),
                    &key,
                    format!(
                        "{lower:?} is also in domains.local (domains.local[{j}]): a domain is either delivered here or relayed on, not both"
                    ),
                ));
            }
            out.push(lower);
        }
        Ok(out)
    }

    /// `domains.domain_literals` and `domains.literal_addresses`.
    fn domain_literals(
        &self,
        raw: Option<&Spanned<raw::RawDomains>>,
        warnings: &mut Vec<String>,
    ) -> Result<(bool, Vec<IpAddr>), ConfigError> {
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Ok((true, Vec::new()));
        };
        let enabled = raw.domain_literals.as_ref().is_none_or(|b| *b.get_ref());
        let mut out: Vec<IpAddr> = Vec::new();
        let Some(list) = &raw.literal_addresses else {
            return Ok((enabled, out));
        };
        for (i, entry) in list.get_ref().iter().enumerate() {
            let key = format!("domains.literal_addresses[{i}]");
            let text = entry.get_ref();
            let expected = "expected an IP address like \"192.0.2.1\" or \"2001:db8::1\"";
            let ip = match text.parse::<IpAddr>() {
                Ok(ip) => ip.to_canonical(),
                Err(_) => {
                    let hint = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                        Some(inner) if inner.parse::<IpAddr>().is_ok() => {
                            format!(" (write it without brackets: {inner:?})")
                        }
                        _ if IpRange::parse(text.trim()).is_ok() => {
                            " (one address, not a CIDR block or range)".to_string()
                        }
                        _ => String::new(),
                    };
                    return Err(self.error(
                        entry.span(),
                        &key,
                        format!("{expected}, got {text:?}{hint}"),
                    ));
                }
            };
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(self.error(
                    entry.span(),
                    &key,
                    format!("{expected}, got {text:?} (not the address of a host)"),
                ));
            }
            if let Some(j) = out.iter().position(|a| *a == ip) {
                return Err(self.error(
                    entry.span(),
                    &key,
                    format!("{ip} is listed twice (also domains.literal_addresses[{j}])"),
                ));
            }
            out.push(ip);
        }
        if !enabled && !out.is_empty() {
            warnings.push(self.located(
                list.span(),
                "domains.literal_addresses",
                "ignored: domains.domain_literals is false, so no user@[IP] recipient is local",
            ));
        }
        Ok((enabled, out))
    }

    fn relay(
        &self,
        raw: Option<Spanned<raw::RawRelay>>,
        local: &[String],
        server: &ServerConfig,
        listeners: &[(Range<usize>, ListenerConfig)],
        warnings: &mut Vec<String>,
    ) -> Result<RelayConfig, ConfigError> {
        let mut relay = RelayConfig::default();
        let Some(raw) = raw else {
            return Ok(relay);
        };
        let relay_span = raw.span();
        let raw = raw.into_inner();

        if let Some(port) = &raw.mx_port {
            relay.mx_port = port_value(port.get_ref())
                .map_err(|m| self.error(port.span(), "relay.mx_port", m))?;
        }

        // Client IP addresses, from the configuration and from the file.
        let mut ranges: Vec<IpRange> = Vec::new();
        let mut open_relay_said = false;
        if let Some(list) = &raw.clients {
            for (i, entry) in list.get_ref().iter().enumerate() {
                let key = format!("relay.clients[{i}]");
                let text = entry.get_ref().trim();
                let range = IpRange::parse(text)
                    .map_err(|m| self.error(entry.span(), &key, format!("{text:?}: {m}")))?;
                if let Some((open, lint)) = client_lint(text, &range) {
                    open_relay_said |= open;
                    warnings.push(self.located(entry.span(), &key, &lint));
                }
                ranges.push(range);
            }
        }
        if let Some(file) = &raw.clients_file {
            let key = "relay.clients_file";
            let name = file.get_ref();
            if name.is_empty() {
                return Err(self.error(file.span(), key, "expected a file name, got \"\""));
            }
            let (path, entries) = self.list_file(file, key)?;
            for entry in entries {
                if let Some((open, lint)) = client_lint(&entry.text, &entry.range) {
                    open_relay_said |= open;
                    warnings.push(format!("{}:{}: {key}: {lint}", path.display(), entry.line));
                }
                ranges.push(entry.range);
            }
            relay.clients_file = Some(path);
        }
        relay.clients = IpList::from_ranges(ranges);
        if let Some(only) = &raw.clients_only {
            relay.clients_only = *only.get_ref();
        }
        if let Some(only) = &raw.relay_for_clients_only {
            relay.relay_for_clients_only = *only.get_ref();
            if !relay.relay_for_clients_only {
                warnings.push(self.located(
                    only.span(),
                    "relay.relay_for_clients_only",
                    "relay.relay_for_clients_only = false: this server is an open relay (ANY client may send mail to ANY address through it)",
                ));
            }
        }
        if let Some(list) = &raw.forward_from {
            for (i, domain) in list.get_ref().iter().enumerate() {
                let key = format!("relay.forward_from[{i}]");
                let name = domain
                    .get_ref()
                    .strip_suffix('.')
                    .unwrap_or(domain.get_ref());
                check_domain(name).map_err(|m| self.error(domain.span(), &key, m))?;
                let lower = name.to_lowercase();
                if let Some(j) = relay.forward_from.iter().position(|d| *d == lower) {
                    return Err(self.error(
                        domain.span(),
                        &key,
                        format!("{lower:?} is listed twice (also relay.forward_from[{j}])"),
                    ));
                }
                if local.contains(&lower) {
                    warnings.push(self.located(
                        domain.span(),
                        &key,
                        &format!(
                            "{lower:?} is in domains.local: spammers forge senders in a server's own domains first, so anyone may relay through this server"
                        ),
                    ));
                }
                relay.forward_from.push(lower);
            }
            if !relay.forward_from.is_empty() {
                let names: Vec<String> = relay
                    .forward_from
                    .iter()
                    .map(|d| format!("{d:?}"))
                    .collect();
                warnings.push(self.located(
                    list.span(),
                    "relay.forward_from",
                    &format!(
                        "relay.forward_from lets anyone who forges a sender in these domains relay ({})",
                        names.join(", ")
                    ),
                ));
            }
        }
        if let Some(window) = &raw.pop_before_smtp {
            let d = duration_value(window.get_ref())
                .map_err(|m| self.error(window.span(), "relay.pop_before_smtp", m))?;
            relay.pop_before_smtp = (!d.is_zero()).then_some(d);
        }
        if let Some(max) = &raw.pop_before_smtp_max {
            let usize_max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
            let n = count_value(max.get_ref(), usize_max)
                .map_err(|m| self.error(max.span(), "relay.pop_before_smtp_max", m))?;
            relay.pop_before_smtp_max = usize::try_from(n).unwrap_or(usize::MAX);
            warnings.push(self.located(
                max.span(),
                "relay.pop_before_smtp_max",
                "no longer used: POP-before-SMTP addresses live in the state store and expire after relay.pop_before_smtp",
            ));
        }
        if !open_relay_said {
            for (all, which) in [
                (relay.clients.covers_all_v4(), "0.0.0.0/0"),
                (relay.clients.covers_all_v6(), "::/0"),
            ] {
                if all {
                    warnings.push(self.located(
                        relay_span.clone(),
                        "relay.clients",
                        &format!(
                            "relay.clients holds {which}: this server is an open relay (its entries together cover every address)"
                        ),
                    ));
                }
            }
        }

        if let Some(smarthost) = &raw.smarthost
            && !smarthost.get_ref().is_empty()
        {
            let key = "relay.smarthost";
            let hop = parse_next_hop(smarthost.get_ref(), relay.mx_port)
                .map_err(|m| self.error(smarthost.span(), key, m))?;
            if let Some(lint) = loop_lint(&hop, server, listeners) {
                warnings.push(self.located(smarthost.span(), key, &lint));
            }
            relay.smarthost = Some(hop);
        }

        if let Some(routes) = &raw.routes {
            let mut entries: Vec<_> = routes.get_ref().iter().collect();
            entries.sort_by_key(|(domain, _)| domain.span().start);
            for (domain, hop) in entries {
                let path = [
                    Segment::Key("relay".into()),
                    Segment::Key("routes".into()),
                    Segment::Key(domain.get_ref().clone()),
                ];
                let key = locate::format_path(&path);
                check_domain(domain.get_ref()).map_err(|m| self.error(domain.span(), &key, m))?;
                let lower = domain.get_ref().to_lowercase();
                if local.contains(&lower) {
                    return Err(self.error(
                        domain.span(),
                        &key,
                        format!(
                            "{lower:?} is in domains.local: its mail is delivered to the mailboxes here, a route would never be used"
                        ),
                    ));
                }
                if relay.routes.contains_key(&lower) {
                    return Err(self.error(
                        domain.span(),
                        &key,
                        format!("{lower:?} has two routes (domain names are case-insensitive)"),
                    ));
                }
                let next = parse_next_hop(hop.get_ref(), relay.mx_port)
                    .map_err(|m| self.error(hop.span(), &key, m))?;
                if let Some(lint) = loop_lint(&next, server, listeners) {
                    warnings.push(self.located(hop.span(), &key, &lint));
                }
                relay.routes.insert(lower, next);
            }
        }
        Ok(relay)
    }

    /// Reads the IP list file named by `file` (relative to the
    /// configuration's directory); an unreadable file is an error at `key`.
    fn list_file(
        &self,
        file: &Spanned<String>,
        key: &str,
    ) -> Result<(PathBuf, Vec<iplist::FileEntry>), ConfigError> {
        let name = file.get_ref();
        if name.contains('\0') {
            return Err(self.error(file.span(), key, "a path cannot contain a NUL character"));
        }
        let path = self
            .path
            .parent()
            .map_or_else(|| PathBuf::from(name), |dir| dir.join(name));
        let entries = iplist::read_file(&path).map_err(|e| match e {
            ConfigError::Io { path, source } => self.error(
                file.span(),
                key,
                format!("cannot read the IP list {}: {source}", path.display()),
            ),
            other => other,
        })?;
        Ok((path, entries))
    }

    /// The entries of an IP list key and of its file (`""` is no file):
    /// each with where it is written, for warnings (`file:line: key` or
    /// `file:line:column: key[i]`).
    fn ip_list_entries(
        &self,
        list: Option<&Spanned<Vec<Spanned<String>>>>,
        list_key: &str,
        file: Option<&Spanned<String>>,
        file_key: &str,
    ) -> Result<Vec<(String, String, IpRange)>, ConfigError> {
        let mut out = Vec::new();
        if let Some(list) = list {
            for (i, entry) in list.get_ref().iter().enumerate() {
                let key = format!("{list_key}[{i}]");
                let text = entry.get_ref().trim();
                let range = IpRange::parse(text)
                    .map_err(|m| self.error(entry.span(), &key, format!("{text:?}: {m}")))?;
                let (line, column) = locate::line_col(self.text, entry.span().start);
                let at = format!("{}:{line}:{column}: {key}", self.path.display());
                out.push((at, text.to_string(), range));
            }
        }
        if let Some(file) = file
            && !file.get_ref().is_empty()
        {
            let (path, entries) = self.list_file(file, file_key)?;
            for entry in entries {
                let at = format!("{}:{}: {file_key}", path.display(), entry.line);
                out.push((at, entry.text, entry.range));
            }
        }
        Ok(out)
    }

    fn access(
        &self,
        raw: Option<Spanned<raw::RawAccess>>,
        warnings: &mut Vec<String>,
    ) -> Result<AccessConfig, ConfigError> {
        let mut access = AccessConfig::default();
        let Some(raw) = raw else {
            return Ok(access);
        };
        let access_span = raw.span();
        let raw = raw.into_inner();

        let white = self.ip_list_entries(
            raw.whitelist.as_ref(),
            "access.whitelist",
            raw.whitelist_file.as_ref(),
            "access.whitelist_file",
        )?;
        access.whitelist = IpList::from_ranges(white.iter().map(|(_, _, r)| *r));
        let black = self.ip_list_entries(
            raw.blacklist.as_ref(),
            "access.blacklist",
            raw.blacklist_file.as_ref(),
            "access.blacklist_file",
        )?;
        access.blacklist = IpList::from_ranges(black.iter().map(|(_, _, r)| *r));

        let mut overlaps = 0usize;
        if !access.whitelist.is_empty() {
            for (at, text, range) in &black {
                if let Some(both) = access.whitelist.overlap(range) {
                    overlaps += 1;
                    if overlaps <= MAX_OVERLAP_WARNINGS {
                        let which = if both == *range {
                            String::new()
                        } else {
                            format!(" ({both} at least)")
                        };
                        warnings.push(format!(
                            "{at}: {text:?} is also in access.whitelist{which}: the whitelist wins, a whitelisted address is never refused as blacklisted"
                        ));
                    }
                }
            }
        }
        if overlaps > MAX_OVERLAP_WARNINGS {
            warnings.push(self.located(
                access_span.clone(),
                "access.blacklist",
                &format!(
                    "{} more blacklist entries are also in access.whitelist (the whitelist wins)",
                    overlaps - MAX_OVERLAP_WARNINGS
                ),
            ));
        }
        for (list, name, what) in [
            (
                &access.whitelist,
                "access.whitelist",
                "no client is ever checked (blacklist, DNSBL, PTR, limits, bans)",
            ),
            (
                &access.blacklist,
                "access.blacklist",
                "every client that is not whitelisted is refused",
            ),
        ] {
            for (all, which) in [
                (list.covers_all_v4(), "0.0.0.0/0"),
                (list.covers_all_v6(), "::/0"),
            ] {
                if all {
                    warnings.push(self.located(
                        access_span.clone(),
                        name,
                        &format!("{name} holds {which}: {what}"),
                    ));
                }
            }
        }

        if let Some(reply) = &raw.reject_reply {
            access.reject_reply = self.refusal_reply(reply, "access.reject_reply", &[])?;
        }

        if let Some(ptr) = &raw.ptr {
            let key = "access.ptr";
            access.ptr = match ptr.get_ref().as_str() {
                "off" => PtrMode::Off,
                "require" => PtrMode::Require,
                "fcrdns" => PtrMode::Fcrdns,
                "score" => PtrMode::Score,
                other => {
                    return Err(self.error(
                        ptr.span(),
                        key,
                        format!("expected one of: {PTR_MODES}, got {other:?}"),
                    ));
                }
            };
            if matches!(access.ptr, PtrMode::Require | PtrMode::Fcrdns) {
                warnings.push(self.located(
                    ptr.span(),
                    key,
                    &format!(
                        "{:?} refuses legitimate servers whose reverse DNS is missing or wrong (RFC 2505 asks for care: \"score\" only counts against them)",
                        access.ptr.as_str()
                    ),
                ));
            }
        }
        if let Some(score) = &raw.ptr_score {
            let key = "access.ptr_score";
            access.ptr_score =
                score_value(score.get_ref()).map_err(|m| self.error(score.span(), key, m))?;
            if access.ptr != PtrMode::Score {
                warnings.push(self.located(
                    score.span(),
                    key,
                    &format!(
                        "ignored: access.ptr is {:?}, the score is used only with \"score\"",
                        access.ptr.as_str()
                    ),
                ));
            } else if access.ptr_score == 0.0 {
                warnings.push(self.located(score.span(), key, "is 0: the PTR check has no effect"));
            }
        }

        if let Some(list) = &raw.ehlo_block {
            for (i, entry) in list.get_ref().iter().enumerate() {
                let key = format!("access.ehlo_block[{i}]");
                let text = entry.get_ref();
                if text.trim().is_empty() {
                    return Err(self.error(
                        entry.span(),
                        &key,
                        "expected part of a HELO name like \"ylmf-pc\", got an empty string (it would block every client)",
                    ));
                }
                if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
                    return Err(self.error(
                        entry.span(),
                        &key,
                        format!(
                            "expected part of a HELO name like \"ylmf-pc\", got {text:?} ({c:?} never appears in a HELO name)"
                        ),
                    ));
                }
                let lower = text.to_lowercase();
                if !access.ehlo_block.contains(&lower) {
                    access.ehlo_block.push(lower);
                }
            }
        }

        if let Some(wait) = &raw.early_talker {
            let key = "access.early_talker";
            access.early_talker =
                duration_value(wait.get_ref()).map_err(|m| self.error(wait.span(), key, m))?;
            if access.early_talker > LONG_EARLY_TALKER {
                warnings.push(self.located(
                    wait.span(),
                    key,
                    &format!(
                        "{} before the banner is long: some clients give up waiting (1s to 6s is enough to catch early talkers)",
                        crate::format_duration(access.early_talker)
                    ),
                ));
            }
        }
        Ok(access)
    }

    /// A reply written by the administrator for a refusal: parsed, 4xx or
    /// 5xx, printable ASCII, and short enough for one reply line once
    /// `vars` are substituted.
    fn refusal_reply(
        &self,
        value: &Spanned<String>,
        key: &str,
        vars: &[(&str, &str)],
    ) -> Result<Reply, ConfigError> {
        let text = value.get_ref();
        let example = "expected a reply like \"554 5.7.1 Access denied\"";
        let bad = |why: String| {
            self.error(
                value.span(),
                key,
                format!("{example}, got {text:?} ({why})"),
            )
        };
        if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(bad(format!(
                "{c:?}: printable ASCII on one line only, control characters and line breaks would corrupt the SMTP reply"
            )));
        }
        let reply = Reply::parse(text).map_err(|e| match e {
            mxguard_proto::ReplyError::Unparsable(_) => {
                bad("a 3-digit code, an optional enhanced code like 5.7.1, then text".into())
            }
            other => bad(other.to_string()),
        })?;
        if reply.code() < 400 {
            return Err(bad(format!(
                "{} is not a refusal: use a 4xx (try again later) or 5xx (permanent) code",
                reply.code()
            )));
        }
        let wire = reply.substitute(vars).to_wire();
        if wire.len() > MAX_REPLY_LINE {
            return Err(bad(format!(
                "the reply line would be {} octets long, at most {MAX_REPLY_LINE} are allowed",
                wire.len()
            )));
        }
        Ok(reply)
    }

    fn dnsbls(
        &self,
        raw: Option<Spanned<Vec<Spanned<raw::RawDnsbl>>>>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<DnsblConfig>, ConfigError> {
        let raw = raw.map(Spanned::into_inner).unwrap_or_default();
        let mut out: Vec<DnsblConfig> = Vec::with_capacity(raw.len());
        let mut lines: Vec<usize> = Vec::with_capacity(raw.len());
        for (i, dnsbl) in raw.into_iter().enumerate() {
            let span = dnsbl.span();
            let dnsbl = dnsbl.into_inner();
            let mut config = DnsblConfig::default();

            let key = format!("dnsbl[{i}].zone");
            let Some(zone) = dnsbl.zone else {
                return Err(self.error(
                    span,
                    &key,
                    "missing required key (the DNS zone of the list, like \"bl.example.net\")",
                ));
            };
            let name = zone.get_ref().strip_suffix('.').unwrap_or(zone.get_ref());
            check_domain(name).map_err(|m| self.error(zone.span(), &key, m))?;
            let lower = name.to_lowercase();
            if let Some(j) = out.iter().position(|d| d.zone == lower) {
                return Err(self.error(
                    zone.span(),
                    &key,
                    format!(
                        "{lower:?} is listed twice (also dnsbl[{j}], line {})",
                        lines[j]
                    ),
                ));
            }
            config.zone = lower;

            if let Some(list) = &dnsbl.matches {
                if list.get_ref().is_empty() {
                    return Err(self.error(
                        list.span(),
                        &format!("dnsbl[{i}].match"),
                        "expected at least one answer, like [\"127.0.0.2-127.0.0.255\"] (leave it out for the default 127.0.0.2-127.255.255.255)",
                    ));
                }
                let mut ranges = Vec::new();
                for (j, entry) in list.get_ref().iter().enumerate() {
                    let key = format!("dnsbl[{i}].match[{j}]");
                    let text = entry.get_ref().trim();
                    let range = IpRange::parse(text)
                        .map_err(|m| self.error(entry.span(), &key, format!("{text:?}: {m}")))?;
                    if !matches!(range, IpRange::V4(..)) {
                        return Err(self.error(
                            entry.span(),
                            &key,
                            format!(
                                "{text:?}: expected an IPv4 address, CIDR or range: DNSBL answers are A records, like 127.0.0.2"
                            ),
                        ));
                    }
                    ranges.push(range);
                }
                config.matches = IpList::from_ranges(ranges);
            }

            let reply_key = format!("dnsbl[{i}].reply");
            let vars = [("IP", LONGEST_IP), ("ZONE", config.zone.as_str())];
            match &dnsbl.reply {
                Some(reply) => {
                    config.reply = self.refusal_reply(reply, &reply_key, &vars)?;
                }
                None => {
                    let default = Spanned::new(span.clone(), DEFAULT_DNSBL_REPLY.to_string());
                    config.reply =
                        self.refusal_reply(&default, &format!("dnsbl[{i}].zone"), &vars)?;
                }
            }

            if let Some(score) = &dnsbl.score {
                let key = format!("dnsbl[{i}].score");
                config.score =
                    score_value(score.get_ref()).map_err(|m| self.error(score.span(), &key, m))?;
                if config.score > 0.0
                    && let Some(reply) = &dnsbl.reply
                {
                    warnings.push(self.located(
                        reply.span(),
                        &reply_key,
                        &format!(
                            "never sent: dnsbl[{i}].score is greater than 0, so a listed client is scored, not refused"
                        ),
                    ));
                }
            }
            lines.push(self.line_of(&span));
            out.push(config);
        }
        Ok(out)
    }

    fn limits(
        &self,
        raw: Option<Spanned<raw::RawLimits>>,
        warnings: &mut Vec<String>,
    ) -> Result<LimitsConfig, ConfigError> {
        let mut limits = LimitsConfig::default();
        let Some(raw) = raw else {
            return Ok(limits);
        };
        let raw = raw.into_inner();
        let count = |value: &Spanned<toml::Value>, key: &str, max: u64| {
            count_value(value.get_ref(), max).map_err(|m| self.error(value.span(), key, m))
        };
        let usize_max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
        if let Some(v) = &raw.max_connections {
            let n = count(v, "limits.max_connections", usize_max)?;
            limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(v) = &raw.connections_per_ip {
            let n = count(v, "limits.connections_per_ip", usize_max)?;
            limits.connections_per_ip = usize::try_from(n).unwrap_or(usize::MAX);
            if limits.connections_per_ip > limits.max_connections {
                warnings.push(self.located(
                    v.span(),
                    "limits.connections_per_ip",
                    &format!(
                        "{} is more than limits.max_connections ({}): one client may take every connection",
                        limits.connections_per_ip, limits.max_connections
                    ),
                ));
            }
        }
        if let Some(v) = &raw.max_errors {
            let n = count(v, "limits.max_errors", u64::from(u32::MAX))?;
            limits.max_errors = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(v) = &raw.auto_ban {
            let d = duration_value(v.get_ref())
                .map_err(|m| self.error(v.span(), "limits.auto_ban", m))?;
            limits.auto_ban = (!d.is_zero()).then_some(d);
        }
        self.rate_limits(&raw, &mut limits, warnings)?;
        Ok(limits)
    }

    fn queue(
        &self,
        raw: Option<Spanned<raw::RawQueue>>,
        warnings: &mut Vec<String>,
    ) -> Result<QueueConfig, ConfigError> {
        let mut queue = QueueConfig::default();
        let Some(raw) = raw else {
            return Ok(queue);
        };
        let raw = raw.into_inner();
        if let Some(retry) = raw.retry {
            if retry.get_ref().is_empty() {
                return Err(self.error(
                    retry.span(),
                    "queue.retry",
                    "expected at least one wait, like [\"5m\", \"30m\", \"2h\"]",
                ));
            }
            queue.retry = retry
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, wait)| self.positive_duration(wait, &format!("queue.retry[{i}]")))
                .collect::<Result<_, _>>()?;
        }
        let mut max_age_span = None;
        if let Some(max_age) = raw.max_age {
            queue.max_age = self.positive_duration(&max_age, "queue.max_age")?;
            max_age_span = Some(max_age.span());
        }
        let mut warning_span = None;
        if let Some(delay) = raw.delay_warning {
            let d = duration_value(delay.get_ref())
                .map_err(|m| self.error(delay.span(), "queue.delay_warning", m))?;
            queue.delay_warning = (!d.is_zero()).then_some(d);
            warning_span = Some(delay.span());
        }
        if let Some(delay) = queue.delay_warning
            && delay >= queue.max_age
        {
            let (span, key) = match (&warning_span, &max_age_span) {
                (Some(span), _) => (span.clone(), "queue.delay_warning"),
                (None, Some(span)) => (span.clone(), "queue.max_age"),
                (None, None) => (0..0, "queue"),
            };
            warnings.push(self.located(
                span,
                key,
                &format!(
                    "the delay notice ({}) is never sent: queue.max_age ({}) bounces the message first (\"0s\" disables the notice)",
                    crate::format_duration(delay),
                    crate::format_duration(queue.max_age)
                ),
            ));
        }
        if let (Some(span), Some(first)) = (max_age_span, queue.retry.first())
            && queue.max_age <= *first
        {
            warnings.push(self.located(
                span,
                "queue.max_age",
                &format!(
                    "{} is not longer than the first retry wait ({}): a recipient that fails once is bounced without a second attempt",
                    crate::format_duration(queue.max_age),
                    crate::format_duration(*first)
                ),
            ));
        }
        Ok(queue)
    }

    fn server(
        &self,
        raw: Option<Spanned<raw::RawServer>>,
        warnings: &mut Vec<String>,
    ) -> Result<ServerConfig, ConfigError> {
        let Some(raw) = raw else {
            return Err(self.error(
                0..0,
                "server",
                "missing required table [server] (with at least hostname = \"mx.example.test\")",
            ));
        };
        let span = raw.span();
        let raw = raw.into_inner();

        let Some(hostname) = raw.hostname else {
            return Err(self.error(
                span,
                "server.hostname",
                "missing required key (the name of this server, like \"mx.example.test\")",
            ));
        };
        let key = "server.hostname";
        check_domain(hostname.get_ref()).map_err(|m| self.error(hostname.span(), key, m))?;
        if !hostname.get_ref().contains('.') {
            warnings.push(self.located(
                hostname.span(),
                key,
                &format!(
                    "{:?} has no dot: other servers expect a fully qualified name like \"mx.example.test\"",
                    hostname.get_ref()
                ),
            ));
        }

        let data_dir = match raw.data_dir {
            None => PathBuf::from(DEFAULT_DATA_DIR),
            Some(dir) => {
                let key = "server.data_dir";
                if dir.get_ref().is_empty() {
                    return Err(self.error(dir.span(), key, "expected a directory, got \"\""));
                }
                if dir.get_ref().contains('\0') {
                    return Err(self.error(
                        dir.span(),
                        key,
                        "a path cannot contain a NUL character",
                    ));
                }
                PathBuf::from(dir.into_inner())
            }
        };

        let banner = match raw.banner {
            None => None,
            Some(banner) => {
                let key = "server.banner";
                let text = banner.get_ref();
                if text.trim().is_empty() {
                    return Err(self.error(
                        banner.span(),
                        key,
                        "must not be empty (leave it out for the default \"<hostname> ESMTP mxguard\")",
                    ));
                }
                if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
                    return Err(self.error(
                        banner.span(),
                        key,
                        format!(
                            "expected printable ASCII on one line, got {c:?} (control characters and line breaks would corrupt the SMTP reply)"
                        ),
                    ));
                }
                if text.len() > MAX_BANNER_LEN {
                    return Err(self.error(
                        banner.span(),
                        key,
                        format!(
                            "is {} characters long, at most {MAX_BANNER_LEN} fit in an SMTP reply line",
                            text.len()
                        ),
                    ));
                }
                Some(banner.into_inner())
            }
        };

        let max_message_size = match raw.max_message_size {
            None => DEFAULT_MAX_MESSAGE_SIZE,
            Some(v) => {
                let key = "server.max_message_size";
                let size = size_value(v.get_ref()).map_err(|m| self.error(v.span(), key, m))?;
                if size == 0 {
                    return Err(self.error(v.span(), key, "must be greater than 0"));
                }
                if size < MIN_USEFUL_MESSAGE_SIZE {
                    warnings.push(self.located(
                        v.span(),
                        key,
                        &format!(
                            "{size} bytes is less than the 64KiB every SMTP server must accept (RFC 5321 §4.5.3.1.7)"
                        ),
                    ));
                }
                size
            }
        };

        Ok(ServerConfig {
            hostname: hostname.into_inner(),
            data_dir,
            banner,
            max_message_size,
            hide_client_ip: raw.hide_client_ip.is_some_and(Spanned::into_inner),
        })
    }

    /// `[tls]`: both files named, resolved against the configuration's
    /// directory, and readable (their content is the server's business).
    fn tls(
        &self,
        raw: Option<Spanned<raw::RawTls>>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<TlsConfig>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let span = raw.span();
        let raw = raw.into_inner();
        let certificate = self.pem_file(
            raw.certificate.as_ref(),
            &span,
            "tls.certificate",
            "certificate chain",
            "/etc/mxguard/cert.pem",
        )?;
        let key = self.pem_file(
            raw.key.as_ref(),
            &span,
            "tls.key",
            "private key",
            "/etc/mxguard/key.pem",
        )?;
        let allow_plaintext_auth = match &raw.allow_plaintext_auth {
            Some(allow) if *allow.get_ref() => {
                warnings.push(self.located(
                    allow.span(),
                    "tls.allow_plaintext_auth",
                    "AUTH is offered on unencrypted connections too: passwords may cross the network in clear text",
                ));
                true
            }
            _ => false,
        };
        Ok(Some(TlsConfig {
            certificate,
            key,
            allow_plaintext_auth,
        }))
    }

    /// A PEM file of `[tls]`: required, relative to the configuration's
    /// directory, and a readable file.
    fn pem_file(
        &self,
        value: Option<&Spanned<String>>,
        table_span: &Range<usize>,
        key: &str,
        what: &str,
        example: &str,
    ) -> Result<PathBuf, ConfigError> {
        let Some(value) = value else {
            return Err(self.error(
                table_span.clone(),
                key,
                format!("missing required key (the PEM file of the {what}, like {example:?})"),
            ));
        };
        let name = value.get_ref();
        if name.is_empty() {
            return Err(self.error(
                value.span(),
                key,
                format!("expected the PEM file of the {what}, got \"\""),
            ));
        }
        if name.contains('\0') {
            return Err(self.error(value.span(), key, "a path cannot contain a NUL character"));
        }
        let path = self
            .path
            .parent()
            .map_or_else(|| PathBuf::from(name), |dir| dir.join(name));
        let opened = std::fs::File::open(&path).and_then(|f| f.metadata());
        match opened {
            Ok(meta) if meta.is_file() => Ok(path),
            Ok(_) => Err(self.error(
                value.span(),
                key,
                format!(
                    "{} is not a file (expected the PEM file of the {what})",
                    path.display()
                ),
            )),
            Err(e) => Err(self.error(
                value.span(),
                key,
                format!("cannot read the {what} {}: {e}", path.display()),
            )),
        }
    }

    /// The listeners, each with the span of its `[[listener]]` header.
    fn listeners(
        &self,
        raw: Option<Spanned<Vec<Spanned<raw::RawListener>>>>,
        tls: Option<&TlsConfig>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<(Range<usize>, ListenerConfig)>, ConfigError> {
        let (span, raw) = match raw {
            None => (0..0, Vec::new()),
            Some(raw) => (raw.span(), raw.into_inner()),
        };
        if raw.is_empty() {
            return Err(self.error(
                span,
                "listener",
                "at least one [[listener]] is required, like: [[listener]] address = \"0.0.0.0:25\" role = \"mx\"",
            ));
        }
        let mut out: Vec<(Range<usize>, ListenerConfig)> = Vec::new();
        for (i, listener) in raw.into_iter().enumerate() {
            let span = listener.span();
            let listener = listener.into_inner();

            let key = format!("listener[{i}].address");
            let Some(address) = listener.address else {
                return Err(self.error(
                    span,
                    &key,
                    "missing required key (an IP address and port, like \"0.0.0.0:25\")",
                ));
            };
            let addr: SocketAddr = address.get_ref().parse().map_err(|_| {
                self.error(
                    address.span(),
                    &key,
                    format!(
                        "expected an IP address and port like \"0.0.0.0:25\" or \"[::1]:2525\", got {:?}",
                        address.get_ref()
                    ),
                )
            })?;

            let role_key = format!("listener[{i}].role");
            let Some(role) = listener.role else {
                return Err(self.error(
                    span,
                    &role_key,
                    format!("missing required key (one of: {SUPPORTED_ROLES})"),
                ));
            };
            let role_span = role.span();
            let role = match (Role::from_name(role.get_ref()), role.get_ref().as_str()) {
                (Some(known), _) => known,
                (None, other) if FUTURE_ROLES.contains(&other) => {
                    return Err(self.error(
                        role.span(),
                        &role_key,
                        format!(
                            "role {other:?} is not supported by this version of mxguard (supported: {SUPPORTED_ROLES})"
                        ),
                    ));
                }
                (None, other) => {
                    return Err(self.error(
                        role.span(),
                        &role_key,
                        format!("expected one of: {SUPPORTED_ROLES}, got {other:?}"),
                    ));
                }
            };

            // Port 0 asks the system for a free port: two of them never clash.
            if addr.port() != 0 {
                if let Some((j, (first, _))) =
                    out.iter().enumerate().find(|(_, (_, l))| l.address == addr)
                {
                    return Err(self.error(
                        address.span(),
                        &key,
                        format!(
                            "{addr} is already used by listener[{j}] (line {})",
                            self.line_of(first)
                        ),
                    ));
                }
                if let Some((j, (_, other))) = out.iter().enumerate().find(|(_, (_, l))| {
                    l.address.port() == addr.port()
                        && l.address.is_ipv4() == addr.is_ipv4()
                        && (l.address.ip().is_unspecified() || addr.ip().is_unspecified())
                }) {
                    warnings.push(self.located(
                        address.span(),
                        &key,
                        &format!(
                            "{addr} overlaps listener[{j}] ({}), which listens on the same port: binding both may fail",
                            other.address
                        ),
                    ));
                }
            }
            if role.implicit_tls() && tls.is_none() {
                return Err(self.error(
                    role_span,
                    &role_key,
                    format!(
                        "role {:?} speaks TLS from the first byte and needs a [tls] section (certificate and key)",
                        role.as_str()
                    ),
                ));
            }
            if role.takes_logins() && tls.is_none() {
                warnings.push(self.located(
                    span.clone(),
                    &role_key,
                    &format!(
                        "a {} listener without [tls]: AUTH will not be offered: clients cannot log in (add [tls] with a certificate and key)",
                        role.as_str()
                    ),
                ));
            }
            out.push((
                span,
                ListenerConfig {
                    address: addr,
                    role,
                },
            ));
        }
        Ok(out)
    }

    /// `domains.local` (lowercased, with spans) and `disable_catchalls`.
    #[allow(clippy::type_complexity)]
    fn local_domains(
        &self,
        raw: Option<&Spanned<raw::RawDomains>>,
    ) -> Result<(Vec<String>, Vec<Range<usize>>, bool), ConfigError> {
        let Some(raw) = raw else {
            return Ok((Vec::new(), Vec::new(), false));
        };
        let raw = raw.get_ref();
        let mut local: Vec<String> = Vec::new();
        let mut spans: Vec<Range<usize>> = Vec::new();
        if let Some(list) = &raw.local {
            for (i, domain) in list.get_ref().iter().enumerate() {
                let key = format!("domains.local[{i}]");
                check_domain(domain.get_ref()).map_err(|m| self.error(domain.span(), &key, m))?;
                let lower = domain.get_ref().to_lowercase();
                if let Some(j) = local.iter().position(|d| *d == lower) {
                    return Err(self.error(
                        domain.span(),
                        &key,
                        format!("{lower:?} is listed twice (also domains.local[{j}])"),
                    ));
                }
                local.push(lower);
                spans.push(domain.span());
            }
        }
        let disable = raw.disable_catchalls.as_ref().is_some_and(|b| *b.get_ref());
        Ok((local, spans, disable))
    }

    /// The accounts, the index of their addresses and aliases, and where each
    /// address or alias is written (for the catchall check's messages).
    #[allow(clippy::type_complexity)]
    fn accounts(
        &self,
        raw: Option<Spanned<Vec<Spanned<raw::RawAccount>>>>,
        local: &[String],
        warnings: &mut Vec<String>,
    ) -> Result<
        (
            Vec<Account>,
            HashMap<String, usize>,
            HashMap<String, String>,
        ),
        ConfigError,
    > {
        let raw = raw.map(Spanned::into_inner).unwrap_or_default();
        let mut accounts = Vec::with_capacity(raw.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        // Address -> (key path, line) of its first use.
        let mut first_use: HashMap<String, (String, usize)> = HashMap::new();
        for (i, account) in raw.into_iter().enumerate() {
            let span = account.span();
            let account = account.into_inner();
            let key = format!("account[{i}].address");
            let Some(address) = account.address else {
                return Err(self.error(
                    span,
                    &key,
                    "missing required key (like address = \"alice@example.test\")",
                ));
            };
            let mut entries = vec![(key, address)];
            if let Some(aliases) = account.aliases {
                for (j, alias) in aliases.into_inner().into_iter().enumerate() {
                    entries.push((format!("account[{i}].aliases[{j}]"), alias));
                }
            }
            let mut lowered = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let lower = self.local_address(&value, &key, local)?;
                if let Some((other, line)) = first_use.get(&lower) {
                    return Err(self.error(
                        value.span(),
                        &key,
                        format!("{lower:?} is already used by {other} (line {line})"),
                    ));
                }
                first_use.insert(lower.clone(), (key, self.line_of(&value.span())));
                index.insert(lower.clone(), i);
                lowered.push(lower);
            }
            let mut lowered = lowered.into_iter();
            let address = lowered.next().unwrap_or_default();
            let password = match &account.password {
                None => None,
                Some(value) => {
                    let key = format!("account[{i}].password");
                    let secret = password_value(value.get_ref())
                        .map_err(|m| self.error(value.span(), &key, m))?;
                    if matches!(secret, Secret::Plain(_)) {
                        warnings.push(self.located(
                            value.span(),
                            &key,
                            &format!(
                                "the password of {address:?} is in plain text: anyone who can read this file can log in as that account (store the hash printed by `mxguard passwd`)"
                            ),
                        ));
                    }
                    Some(secret)
                }
            };
            let mut flag = |value: &Option<Spanned<bool>>, name: &str, what: &str| {
                let on = value.as_ref().is_some_and(|v| *v.get_ref());
                if on
                    && password.is_none()
                    && let Some(value) = value
                {
                    warnings.push(self.located(
                        value.span(),
                        &format!("account[{i}].{name}"),
                        &format!(
                            "{address:?} has no password: it can never log in, so it never {what}"
                        ),
                    ));
                }
                on
            };
            let relay = flag(&account.relay, "relay", "relays");
            let mobile = flag(
                &account.mobile,
                "mobile",
                "relays from an address remembered after a POP3 login",
            );
            accounts.push(Account {
                address,
                aliases: lowered.collect(),
                password,
                relay,
                mobile,
            });
        }
        let used = first_use.into_iter().map(|(a, (k, _))| (a, k)).collect();
        Ok((accounts, index, used))
    }

    /// Checks that `value` is an address in a local domain; returns it
    /// lowercased.
    fn local_address(
        &self,
        value: &Spanned<String>,
        key: &str,
        local: &[String],
    ) -> Result<String, ConfigError> {
        let (_, domain) =
            check_address(value.get_ref()).map_err(|m| self.error(value.span(), key, m))?;
        let lower = value.get_ref().to_lowercase();
        let domain = domain.to_lowercase();
        if !local.contains(&domain) {
            return Err(self.error(
                value.span(),
                key,
                format!("the domain {domain:?} of {lower:?} is not in domains.local"),
            ));
        }
        Ok(lower)
    }

    fn catchalls(
        &self,
        raw: Option<&Spanned<raw::RawDomains>>,
        local: &[String],
        addresses: &HashMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        let Some(map) = raw.and_then(|r| r.get_ref().catchall.as_ref()) else {
            return Ok(out);
        };
        // In file order, so that the second of two clashing entries is the
        // one pointed at.
        let mut entries: Vec<_> = map.get_ref().iter().collect();
        entries.sort_by_key(|(domain, _)| domain.span().start);
        for (domain, address) in entries {
            let path = [
                Segment::Key("domains".into()),
                Segment::Key("catchall".into()),
                Segment::Key(domain.get_ref().clone()),
            ];
            let key = locate::format_path(&path);
            check_domain(domain.get_ref()).map_err(|m| self.error(domain.span(), &key, m))?;
            let lower_domain = domain.get_ref().to_lowercase();
            if !local.contains(&lower_domain) {
                return Err(self.error(
                    domain.span(),
                    &key,
                    format!(
                        "{lower_domain:?} is not in domains.local: a catchall is for a local domain"
                    ),
                ));
            }
            if out.contains_key(&lower_domain) {
                return Err(self.error(
                    domain.span(),
                    &key,
                    format!(
                        "{lower_domain:?} has two catchalls (domain names are case-insensitive)"
                    ),
                ));
            }
            check_address(address.get_ref()).map_err(|m| self.error(address.span(), &key, m))?;
            let lower = address.get_ref().to_lowercase();
            if !addresses.contains_key(&lower) {
                return Err(self.error(
                    address.span(),
                    &key,
                    format!("{lower:?} is not the address or an alias of an [[account]]"),
                ));
            }
            out.insert(lower_domain, lower);
        }
        Ok(out)
    }

    fn dns(&self, raw: Option<Spanned<raw::RawDns>>) -> Result<DnsConfig, ConfigError> {
        let mut dns = DnsConfig::default();
        let Some(raw) = raw else {
            return Ok(dns);
        };
        let raw = raw.into_inner();
        if let Some(list) = raw.nameservers {
            for (i, server) in list.get_ref().iter().enumerate() {
                let key = format!("dns.nameservers[{i}]");
                let text = server.get_ref();
                let addr = text
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                    .ok_or_else(|| {
                        self.error(
                            server.span(),
                            &key,
                            format!(
                                "expected an IP address, with an optional port, like \"127.0.0.1:5353\" or \"::1\", got {text:?}"
                            ),
                        )
                    })?;
                if addr.port() == 0 {
                    return Err(self.error(
                        server.span(),
                        &key,
                        "port 0 is not a valid port for a nameserver",
                    ));
                }
                dns.nameservers.push(addr);
            }
        }
        if let Some(timeout) = raw.timeout {
            dns.timeout = self.positive_duration(&timeout, "dns.timeout")?;
        }
        Ok(dns)
    }

    fn smtp(
        &self,
        raw: Option<Spanned<raw::RawSmtp>>,
        warnings: &mut Vec<String>,
    ) -> Result<SmtpConfig, ConfigError> {
        let mut smtp = SmtpConfig::default();
        let Some(raw) = raw else {
            return Ok(smtp);
        };
        let raw = raw.into_inner();
        if let Some(vrfy) = raw.vrfy {
            smtp.vrfy = match vrfy.get_ref().as_str() {
                "ambiguous" => VrfyMode::Ambiguous,
                "off" => VrfyMode::Off,
                "on" => {
                    warnings.push(self.located(
                        vrfy.span(),
                        "smtp.vrfy",
                        "\"on\" tells anyone which addresses exist (RFC 2505 §2.11 recommends \"ambiguous\")",
                    ));
                    VrfyMode::On
                }
                other => {
                    return Err(self.error(
                        vrfy.span(),
                        "smtp.vrfy",
                        format!("expected one of: ambiguous, off, on, got {other:?}"),
                    ));
                }
            };
        }
        if let Some(expn) = raw.expn {
            smtp.expn = match expn.get_ref().as_str() {
                "off" => ExpnMode::Off,
                "on" => {
                    warnings.push(self.located(
                        expn.span(),
                        "smtp.expn",
                        "\"on\" tells anyone which addresses exist and where they lead (RFC 2505 §2.11)",
                    ));
                    ExpnMode::On
                }
                other => {
                    return Err(self.error(
                        expn.span(),
                        "smtp.expn",
                        format!("expected one of: off, on, got {other:?}"),
                    ));
                }
            };
        }
        if let Some(timeouts) = raw.timeouts {
            let timeouts = timeouts.into_inner();
            if let Some(command) = timeouts.command {
                smtp.command_timeout = self.positive_duration(&command, "smtp.timeouts.command")?;
            }
            if let Some(data) = timeouts.data {
                smtp.data_timeout = self.positive_duration(&data, "smtp.timeouts.data")?;
            }
        }
        Ok(smtp)
    }

    fn positive_duration(
        &self,
        value: &Spanned<toml::Value>,
        key: &str,
    ) -> Result<Duration, ConfigError> {
        let d = duration_value(value.get_ref()).map_err(|m| self.error(value.span(), key, m))?;
        if d.is_zero() {
            return Err(self.error(value.span(), key, "must be greater than 0"));
        }
        Ok(d)
    }
}

/// Checks that the sections are tables and the `[[...]]` sections arrays of
/// tables, before serde sees them: serde would accept a struct written as an
/// array of its values in order (`timeouts = ["5m", "10m"]`), and says
/// confusing things about the rest.
fn check_shapes(doc: &DeTable<'_>) -> Option<(Range<usize>, String, String)> {
    use toml::de::DeValue;
    let describe = |v: &DeValue<'_>| match v {
        DeValue::Table(_) => "a table",
        DeValue::Array(_) => "an array",
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
    };
    let table = |value: &Spanned<DeValue<'_>>, key: &str| {
        (!value.get_ref().is_table()).then(|| {
            (
                value.span(),
                key.to_string(),
                format!(
                    "expected a table ([{key}]), got {}",
                    describe(value.get_ref())
                ),
            )
        })
    };
    for key in [
        "server", "tls", "domains", "dns", "smtp", "relay", "queue", "access", "limits",
    ] {
        if let Some(value) = doc.get(key)
            && let Some(problem) = table(value, key)
        {
            return Some(problem);
        }
    }
    if let Some(timeouts) = doc
        .get("smtp")
        .and_then(|smtp| smtp.get_ref().as_table())
        .and_then(|smtp| smtp.get("timeouts"))
        && let Some(problem) = table(timeouts, "smtp.timeouts")
    {
        return Some(problem);
    }
    for key in ["listener", "account", "dnsbl"] {
        let Some(value) = doc.get(key) else { continue };
        let expected = format!("expected an array of tables ([[{key}]])");
        let Some(items) = value.get_ref().as_array() else {
            let got = describe(value.get_ref());
            return Some((
                value.span(),
                key.to_string(),
                format!("{expected}, got {got}"),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            if !item.get_ref().is_table() {
                let got = describe(item.get_ref());
                return Some((
                    item.span(),
                    format!("{key}[{i}]"),
                    format!("{expected}, got {got} in the array"),
                ));
            }
        }
    }
    None
}

/// A lint for one relay client entry, and whether it says "open relay".
fn client_lint(text: &str, range: &IpRange) -> Option<(bool, String)> {
    let open = |all: &str| {
        Some((
            true,
            format!("relay.clients holds {all}: this server is an open relay"),
        ))
    };
    if let IpRange::V6(a, b) = *range
        && a == Ipv6Addr::UNSPECIFIED
        && b == Ipv6Addr::from(u128::MAX)
    {
        return open("::/0");
    }
    if range.v4_part() == Some((0, u32::MAX)) {
        return open("0.0.0.0/0");
    }
    let count = range.span() + 1;
    let (wide, limit) = if range.is_mapped_v4() {
        (count > WIDE_V4, "/8")
    } else {
        (count > WIDE_V6, "/32")
    };
    wide.then(|| {
        (
            false,
            format!(
                "{text:?} is wider than a {limit} ({count} addresses): every host in it may relay through this server to anywhere"
            ),
        )
    })
}

/// A lint when `hop` is one of this server's own listeners: relayed mail
/// would come straight back.
fn loop_lint(
    hop: &NextHop,
    server: &ServerConfig,
    listeners: &[(Range<usize>, ListenerConfig)],
) -> Option<String> {
    let (i, listener) = listeners.iter().enumerate().find_map(|(i, (_, l))| {
        let same_host = match hop.ip() {
            Some(ip) => {
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                // 0.0.0.0 is every IPv4 address of this host; [::] is
                // every address, IPv4 too on a dual-stack system.
                let listens_everywhere =
                    l.address.ip().is_unspecified() && (l.address.is_ipv6() || ip.is_ipv4());
                ip == l.address.ip()
                    || (listens_everywhere && (ip.is_loopback() || ip.is_unspecified()))
            }
            None => {
                hop.host.eq_ignore_ascii_case(&server.hostname)
                    || hop.host.eq_ignore_ascii_case("localhost")
            }
        };
        (same_host && hop.port == l.address.port()).then_some((i, l))
    })?;
    Some(format!(
        "{hop} is this server's own listener[{i}] ({}): mail relayed there comes back here, in a loop",
        listener.address
    ))
}

/// Parses a next hop: `host`, `host:port`, `[ip]`, `[ip]:port`, `ip`
/// (IPv4), `ip:port` (IPv4) or `[ipv6]:port`; `default_port` when none is
/// written.
fn parse_next_hop(text: &str, default_port: u16) -> Result<NextHop, String> {
    let bad = |why: String| format!("expected {NEXT_HOP_FORMS}, got {text:?} ({why})");
    if text.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(bad("no closing ]".into()));
        };
        let ip: IpAddr = inside
            .parse()
            .map_err(|_| bad(format!("{inside:?} is not an IP address")))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(bad(format!("unexpected {after:?} after ]"))),
            },
        };
        (ip.to_string(), port)
    } else if text.parse::<Ipv6Addr>().is_ok() {
        return Err(bad(format!(
            "write an IPv6 address in brackets, \"[{text}]\" or \"[{text}]:25\""
        )));
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(bad(
                "write an IPv6 address in brackets, like \"[2001:db8::1]:25\"".into(),
            ));
        }
        let host = match host.parse::<Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                check_domain(host).map_err(|_| bad(format!("{host:?} is not a host name")))?;
                host.to_lowercase()
            }
        };
        (host, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(bad(format!(
                    "the port must be a number from 1 to 65535, got {p:?}"
                )));
            }
        },
    };
    Ok(NextHop { host, port })
}

/// An account's `password`: an argon2 PHC hash, checked to be usable, or
/// plain text. A string that looks like a hash of another scheme
/// (`$6$...`, `$2b$...`, `$scrypt$...`) is refused rather than taken for a
/// plain-text password.
fn password_value(text: &str) -> Result<Secret, String> {
    use argon2::password_hash::phc::PasswordHash;
    if text.is_empty() {
        return Err(
            "expected a hash from `mxguard passwd` (or a password), got \"\" (leave the key out for an account that cannot log in)"
                .to_string(),
        );
    }
    if text.starts_with("$argon2") {
        let bad = |why: String| {
            format!(
                "not a valid argon2 hash ({why}): paste the whole line printed by `mxguard passwd`"
            )
        };
        let hash = PasswordHash::new(text).map_err(|e| bad(e.to_string()))?;
        argon2::Algorithm::try_from(hash.algorithm.as_str())
            .map_err(|_| bad(format!("unknown algorithm {:?}", hash.algorithm.as_str())))?;
        if let Some(version) = hash.version {
            argon2::Version::try_from(version)
                .map_err(|_| bad(format!("unknown version {version}")))?;
        }
        argon2::Params::try_from(&hash).map_err(|e| bad(format!("parameters: {e}")))?;
        if hash.salt.is_none() || hash.hash.is_none() {
            return Err(bad("the salt or the hash is missing".into()));
        }
        return Ok(Secret::Argon2(text.to_string()));
    }
    if let Some(rest) = text.strip_prefix('$')
        && let Some((scheme, _)) = rest.split_once('$')
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "looks like a {scheme:?} password hash: only argon2 hashes are supported (make one with `mxguard passwd`)"
        ));
    }
    Ok(Secret::Plain(text.to_string()))
}

/// A score: a TOML integer or number, finite, 0 or more.
fn score_value(value: &toml::Value) -> Result<f64, String> {
    let bad = || {
        format!(
            "expected a score of 0 or more, like 1.5, got {}",
            describe(value)
        )
    };
    let score = match value {
        // Scores are small: the conversion is exact for them.
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        _ => return Err(bad()),
    };
    if !score.is_finite() || score < 0.0 {
        return Err(bad());
    }
    Ok(score)
}

/// A count: a TOML integer from 1 to `max`.
fn count_value(value: &toml::Value, max: u64) -> Result<u64, String> {
    match value {
        toml::Value::Integer(n) => match u64::try_from(*n) {
            Ok(n) if n > 0 && n <= max => Ok(n),
            Ok(0) => Err("must be greater than 0".to_string()),
            Ok(_) => Err(format!("expected a whole number from 1 to {max}, got {n}")),
            Err(_) => Err(format!("expected a whole number greater than 0, got {n}")),
        },
        other => Err(format!(
            "expected a whole number greater than 0, got {}",
            describe(other)
        )),
    }
}

/// A port number: a TOML integer from 1 to 65535.
fn port_value(value: &toml::Value) -> Result<u16, String> {
    let bad = || {
        format!(
            "expected a port number from 1 to 65535, got {}",
            describe(value)
        )
    };
    match value {
        toml::Value::Integer(n) => match u16::try_from(*n) {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// A size written as a string with a unit, or as a TOML integer (bytes).
pub(super) fn size_value(value: &toml::Value) -> Result<u64, String> {
    match value {
        toml::Value::String(s) => parse_size(s),
        toml::Value::Integer(n) => {
            u64::try_from(*n).map_err(|_| format!("expected a size like \"25MB\", got {n}"))
        }
        other => Err(format!(
            "expected a size like \"25MB\", got {}",
            describe(other)
        )),
    }
}

/// A duration written as a string with a unit. A TOML integer is refused
/// with a hint, since the unit it would be in is anybody's guess.
fn duration_value(value: &toml::Value) -> Result<Duration, String> {
    match value {
        toml::Value::String(s) => parse_duration(s),
        toml::Value::Integer(n) => Err(format!(
            "expected a duration like \"5m\" (units ms, s, m, h, d), got {n}: \
             a bare number is ambiguous, write a string with a unit (\"{n}s\" for seconds)"
        )),
        other => Err(format!(
            "expected a duration like \"5m\" (units ms, s, m, h, d), got {}",
            describe(other)
        )),
    }
}

/// How a TOML value is named in an error.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

/// Checks that `d` is a plausible domain name: dot-separated labels of
/// letters, digits and hyphens (internationalized letters allowed), not an IP
/// address.
pub(crate) fn check_domain(d: &str) -> Result<(), String> {
    let bad =
        |why: String| format!("expected a domain name like \"example.test\", got {d:?} ({why})");
    if d.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if d.len() > 253 {
        return Err(bad("longer than 253 characters".into()));
    }
    if d.ends_with('.') {
        return Err(bad("write it without the final dot".into()));
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err(bad("empty label".into()));
        }
        if label.len() > 63 {
            return Err(bad(format!("label {label:?} is longer than 63 characters")));
        }
        if let Some(c) = label.chars().find(|&c| {
            !(c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()))
        }) {
            return Err(bad(format!("{c:?} is not allowed in a domain name")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad(format!("label {label:?} starts or ends with a hyphen")));
        }
    }
    if d.parse::<IpAddr>().is_ok()
        || d.rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad("an IP address is not a domain name".into()));
    }
    Ok(())
}

/// Checks that `a` is a plausible `local@domain` address (dot-atom local
/// part, at most 64 characters); returns its two parts.
pub(crate) fn check_address(a: &str) -> Result<(&str, &str), String> {
    let bad =
        |why: String| format!("expected an address like \"alice@example.test\", got {a:?} ({why})");
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Err(bad("no @".into()));
    };
    if local.is_empty() {
        return Err(bad("nothing before the @".into()));
    }
    if local.len() > 64 {
        return Err(bad(
            "the part before the @ is longer than 64 characters".into()
        ));
    }
    if let Some(c) = local.chars().find(|&c| {
        !(c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~.".contains(c)
            || (!c.is_ascii() && c.is_alphanumeric()))
    }) {
        return Err(bad(format!("{c:?} is not allowed before the @")));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(bad("misplaced dot before the @".into()));
    }
    check_domain(domain).map_err(|_| bad(format!("{domain:?} is not a domain name")))?;
    Ok((local, domain))
}

/// A multi-line parser message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns serde's wording into the configuration's: "unknown key (expected
/// one of: ...)", "expected X, got Y", tables and arrays instead of maps and
/// sequences.
fn serde_message(message: &str, path: &[Segment]) -> String {
    let message = one_line(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let expected: Vec<&str> = rest
            .split_once(", expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let expected = match expected.len() {
            0 => "this table has no keys".to_string(),
            1 => format!("expected: {}", expected[0]),
            _ => format!("expected one of: {}", expected.join(", ")),
        };
        // The table the key is in, without array indexes.
        let table: Vec<&str> = path
            .iter()
            .take(path.len().saturating_sub(1))
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect();
        let table = table.join(".");
        let later = raw::NOT_YET_SUPPORTED
            .iter()
            .any(|(t, names)| *t == table && names.contains(&name));
        return if later {
            format!("unknown key: not supported by this version of mxguard ({expected})")
        } else {
            format!("unknown key ({expected})")
        };
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, got {}",
            serde_expected(expected),
            serde_got(got)
        );
    }
    message
}

/// serde's name of what was expected, in the configuration's words. It
/// never contains text from the file.
fn serde_expected(s: &str) -> String {
    // "struct RawTimeouts": the raw layer's names mean nothing to the reader.
    if s.starts_with("struct Raw") {
        return "a table".to_string();
    }
    s.replace("a map", "a table")
        .replace("a sequence", "an array")
        .replace("a boolean", "a boolean (true or false)")
}

/// serde's description of what was found (`map`, `string "x"`), in the
/// configuration's words; only the leading type name is touched, since the
/// rest is text from the file.
fn serde_got(s: &str) -> String {
    for (serde, ours) in [
        ("map", "table"),
        ("sequence", "array"),
        ("floating point", "number"),
    ] {
        if let Some(rest) = s.strip_prefix(serde) {
            return format!("{ours}{rest}");
        }
    }
    s.to_string()
}

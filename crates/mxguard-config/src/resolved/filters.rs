//! `[[filter]]` (content rules) and `[scoring]`.

use std::collections::{BTreeMap, HashMap};

use toml::Spanned;

use std::time::Duration;

use mxguard_proto::Reply;

use super::{Cx, check_address, describe, duration_value, size_value};
use crate::raw;
use crate::{
    ConfigError, DEFAULT_FILTER_MAX_RUNNING, DEFAULT_FILTER_REPLY, DEFAULT_FILTER_TIMEOUT,
    FilterAction, FilterCondition, FilterProgram, FilterRule, FilterTarget, FilterTest,
    RspamdConfig, ScoringConfig,
};

/// The longest wait for a program or rspamd before the 250. The client's
/// own timeout after the final dot is 10 minutes (RFC 5321 §4.5.3.2.6).
const MAX_BEFORE_250_TIMEOUT: Duration = Duration::from_secs(300);

/// `http://host[:port][/path]`: the host (a name, an IPv4 address or a
/// bracketed IPv6 one), the port (default 80) and the path without its
/// trailing `/`.
fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("only http:// (rspamd listens on loopback or a private network)".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("no user or password in the URL".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("an unclosed [")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port {p:?}"))?,
        None => 80,
    };
    if path.contains(['?', '#', ' ']) {
        return Err("no query or fragment".into());
    }
    Ok((host, port, path.to_string()))
}

/// The longest rule name (it goes into logs and `X-Spam-Status`).
const MAX_NAME_LEN: usize = 64;
/// The longest header line a `header:` action may add, name included.
const MAX_HEADER_LINE: usize = 998;
const ACTIONS: &str = "accept, reject, discard, redirect:ADDR, header:NAME: VALUE";

/// A number that may be negative: a TOML integer or float, finite.
fn signed_number(value: &toml::Value, example: &str) -> Result<f64, String> {
    let n = match value {
        // Scores are small: the conversion is exact for them.
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(format!(
                "expected a number like {example}, got {}",
                describe(other)
            ));
        }
    };
    if !n.is_finite() {
        return Err(format!("expected a number like {example}, got {n}"));
    }
    Ok(n)
}

/// A header field name (RFC 5322 §2.2: printable ASCII but `:`).
fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a header name cannot be empty".into());
    }
    if name.len() > 76 {
        return Err("a header name longer than 76 characters".into());
    }
    if let Some(c) = name.chars().find(|c| !('!'..='~').contains(c) || *c == ':') {
        return Err(format!("{c:?} is not allowed in a header name"));
    }
    Ok(())
}

impl Cx<'_> {
    /// `[[filter]]`, in file order. `local`, `accounts` and `catchall` (the
    /// catchalls in force) check that a `redirect:` to a local address has
    /// somewhere to go.
    pub(super) fn filters(
        &self,
        raw: Option<Spanned<Vec<Spanned<raw::RawFilter>>>>,
        local: &[String],
        accounts: &HashMap<String, usize>,
        catchall: &BTreeMap<String, String>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<FilterRule>, ConfigError> {
        let raw = raw.map(Spanned::into_inner).unwrap_or_default();
        let mut out: Vec<FilterRule> = Vec::with_capacity(raw.len());
        let mut lines: Vec<usize> = Vec::with_capacity(raw.len());
        for (i, entry) in raw.into_iter().enumerate() {
            let span = entry.span();
            let entry = entry.into_inner();
            let prefix = format!("filter[{i}]");

            // name
            let key = format!("{prefix}.name");
            let Some(name) = &entry.name else {
                return Err(self.error(
                    span,
                    &key,
                    "missing required key (a name like \"EMPTY_TO\", used in logs and X-Spam-Status)",
                ));
            };
            let text = name.get_ref();
            if text.is_empty()
                || text.len() > MAX_NAME_LEN
                || !text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(self.error(
                    name.span(),
                    &key,
                    format!(
                        "expected a name like \"EMPTY_TO\" (letters, digits, _, - and ., at most {MAX_NAME_LEN}), got {text:?}"
                    ),
                ));
            }
            if let Some(j) = out.iter().position(|r| r.name.eq_ignore_ascii_case(text)) {
                return Err(self.error(
                    name.span(),
                    &key,
                    format!(
                        "{text:?} is used twice (also filter[{j}], line {})",
                        lines[j]
                    ),
                ));
            }

            let test = match &entry.execute {
                Some(execute) => {
                    FilterTest::Execute(self.filter_program(&entry, execute, &prefix, warnings)?)
                }
                None => {
                    if let Some(t) = &entry.timeout {
                        return Err(self.error(
                            t.span(),
                            &format!("{prefix}.timeout"),
                            "only an execute rule has a timeout",
                        ));
                    }
                    if let Some(m) = &entry.max_running {
                        return Err(self.error(
                            m.span(),
                            &format!("{prefix}.max_running"),
                            "only an execute rule has max_running",
                        ));
                    }
                    if let Some(a) = &entry.after_accept {
                        return Err(self.error(
                            a.span(),
                            &format!("{prefix}.after_accept"),
                            "only an execute rule can run after the 250 (a pattern costs microseconds: it runs before)",
                        ));
                    }
                    let target = self.filter_target(&entry, &prefix, span.clone())?;
                    let condition =
                        self.filter_condition(&entry, &prefix, &target, span.clone())?;
                    FilterTest::Match { target, condition }
                }
            };

            let score = match &entry.score {
                Some(v) => signed_number(v.get_ref(), "3.0 or -1.5")
                    .map_err(|m| self.error(v.span(), &format!("{prefix}.score"), m))?,
                None => 0.0,
            };

            let action = match &test {
                // The program decides; `reply` is that of its exit code 1.
                FilterTest::Execute(_) => FilterAction::Reject(self.rule_reply(&entry, &prefix)?),
                FilterTest::Match { .. } => {
                    self.filter_action(&entry, &prefix, local, accounts, catchall)?
                }
            };
            if let Some(reply) = &entry.reply
                && !matches!(action, FilterAction::Reject(_))
            {
                warnings.push(self.located(
                    reply.span(),
                    &format!("{prefix}.reply"),
                    "never sent: the rule's action is not \"reject\"",
                ));
            }

            lines.push(self.line_of(&span));
            let after_accept = entry.after_accept.as_ref().is_some_and(|a| *a.get_ref());
            out.push(FilterRule {
                name: text.clone(),
                test,
                score,
                action,
                after_accept,
            });
        }
        Ok(out)
    }

    /// `header = "NAME"` or `on = "..."`: exactly one.
    fn filter_target(
        &self,
        entry: &raw::RawFilter,
        prefix: &str,
        span: std::ops::Range<usize>,
    ) -> Result<FilterTarget, ConfigError> {
        let on_values: Vec<&str> = FilterTarget::ON_VALUES.iter().map(|(n, _)| *n).collect();
        let on_list = on_values.join(", ");
        match (&entry.header, &entry.on) {
            (Some(_), Some(on)) => Err(self.error(
                on.span(),
                &format!("{prefix}.on"),
                "give either header (a header field) or on (another part), not both",
            )),
            (None, None) => Err(self.error(
                span,
                prefix,
                format!(
                    "missing what the rule looks at: header = \"NAME\" (a header field, like \"To\") or on = one of: {on_list}"
                ),
            )),
            (Some(header), None) => {
                let key = format!("{prefix}.header");
                let text = header.get_ref().trim();
                let lower = text.to_ascii_lowercase();
                if let Some((n, _)) = FilterTarget::ON_VALUES
                    .iter()
                    .find(|(n, _)| *n == lower && !matches!(*n, "subject" | "from"))
                {
                    return Err(self.error(
                        header.span(),
                        &key,
                        format!("{text:?} is not a header field: write on = \"{n}\""),
                    ));
                }
                check_field_name(text).map_err(|m| {
                    self.error(
                        header.span(),
                        &key,
                        format!("expected a header name like \"To\", got {text:?} ({m})"),
                    )
                })?;
                Ok(FilterTarget::Header(text.to_string()))
            }
            (None, Some(on)) => {
                let text = on.get_ref();
                FilterTarget::ON_VALUES
                    .iter()
                    .find(|(n, _)| *n == text.as_str())
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| {
                        self.error(
                            on.span(),
                            &format!("{prefix}.on"),
                            format!(
                                "expected one of: {on_list}, got {text:?} (for a header field, write header = {text:?})"
                            ),
                        )
                    })
            }
        }
    }

    /// `matches = 'regex'` or `missing = true`: exactly one.
    fn filter_condition(
        &self,
        entry: &raw::RawFilter,
        prefix: &str,
        target: &FilterTarget,
        span: std::ops::Range<usize>,
    ) -> Result<FilterCondition, ConfigError> {
        match (&entry.matches, &entry.missing) {
            (Some(_), Some(missing)) => Err(self.error(
                missing.span(),
                &format!("{prefix}.missing"),
                "give either matches or missing, not both",
            )),
            (None, None) => Err(self.error(
                span,
                prefix,
                "missing the condition: matches = 'regex' or missing = true",
            )),
            (Some(pattern), None) => {
                let compiled = regex::Regex::new(pattern.get_ref()).map_err(|e| {
                    self.error(
                        pattern.span(),
                        &format!("{prefix}.matches"),
                        format!(
                            "not a valid regular expression: {}",
                            e.to_string()
                                .lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    )
                })?;
                Ok(FilterCondition::Matches(compiled))
            }
            (None, Some(missing)) => {
                let key = format!("{prefix}.missing");
                if !*missing.get_ref() {
                    return Err(self.error(
                        missing.span(),
                        &key,
                        "expected true (leave the key out for a rule with matches)",
                    ));
                }
                if matches!(target, FilterTarget::ClientIp | FilterTarget::EnvelopeTo) {
                    return Err(self.error(
                        missing.span(),
                        &key,
                        "never true for this part: a message always has a client address and a recipient",
                    ));
                }
                Ok(FilterCondition::Missing)
            }
        }
    }

    /// `action` (and `reply` for `"reject"`).
    fn filter_action(
        &self,
        entry: &raw::RawFilter,
        prefix: &str,
        local: &[String],
        accounts: &HashMap<String, usize>,
        catchall: &BTreeMap<String, String>,
    ) -> Result<FilterAction, ConfigError> {
        let Some(action) = &entry.action else {
            return Ok(FilterAction::Accept);
        };
        let key = format!("{prefix}.action");
        let text = action.get_ref();
        let bad = |why: &str| {
            self.error(
                action.span(),
                &key,
                format!("expected one of: {ACTIONS}, got {text:?}{why}"),
            )
        };
        if let Some(addr) = text.strip_prefix("redirect:") {
            let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
            let (local_part, domain) = check_address(addr)
                .map_err(|m| self.error(action.span(), &key, format!("redirect: {m}")))?;
            let lower = format!("{local_part}@{}", domain.to_lowercase()).to_lowercase();
            let domain = domain.to_lowercase();
            if local.contains(&domain)
                && !accounts.contains_key(&lower)
                && !catchall.contains_key(&domain)
            {
                return Err(self.error(
                    action.span(),
                    &key,
                    format!(
                        "redirect: {lower:?} is in a local domain but is no account, alias or catchall"
                    ),
                ));
            }
            return Ok(FilterAction::Redirect(lower));
        }
        if let Some(rest) = text.strip_prefix("header:") {
            let Some((name, value)) = rest.split_once(':') else {
                return Err(bad(" (a header action is \"header:NAME: VALUE\")"));
            };
            let name = name.trim();
            let value = value.trim();
            check_field_name(name).map_err(|m| {
                self.error(action.span(), &key, format!("header: {m}, in {text:?}"))
            })?;
            if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
                return Err(self.error(
                    action.span(),
                    &key,
                    format!(
                        "header: {c:?} in the value: printable ASCII on one line only, in {text:?}"
                    ),
                ));
            }
            if name.len() + value.len() + 2 > MAX_HEADER_LINE {
                return Err(self.error(
                    action.span(),
                    &key,
                    format!("header: the line would be longer than {MAX_HEADER_LINE} characters"),
                ));
            }
            return Ok(FilterAction::AddHeader {
                name: name.to_string(),
                value: value.to_string(),
            });
        }
        match text.as_str() {
            "accept" => Ok(FilterAction::Accept),
            "discard" => Ok(FilterAction::Discard),
            "reject" => Ok(FilterAction::Reject(self.rule_reply(entry, prefix)?)),
            "redirect" => Err(bad(" (write the address after a colon: \"redirect:ADDR\")")),
            "header" => Err(bad(" (write \"header:NAME: VALUE\")")),
            _ => Err(bad("")),
        }
    }

    /// `reply`, or the default refusal of a rule.
    fn rule_reply(&self, entry: &raw::RawFilter, prefix: &str) -> Result<Reply, ConfigError> {
        match &entry.reply {
            Some(reply) => self.refusal_reply(reply, &format!("{prefix}.reply"), &[]),
            None => {
                let default = Spanned::new(0..0, DEFAULT_FILTER_REPLY.to_string());
                self.refusal_reply(&default, &format!("{prefix}.reply"), &[])
            }
        }
    }

    /// `execute` and `timeout`: the program of an external filter.
    fn filter_program(
        &self,
        entry: &raw::RawFilter,
        execute: &Spanned<Vec<String>>,
        prefix: &str,
        warnings: &mut Vec<String>,
    ) -> Result<FilterProgram, ConfigError> {
        let key = format!("{prefix}.execute");
        // A pattern rule's keys mean nothing here: say so rather than
        // ignore them.
        let pattern_keys = [
            ("header", entry.header.as_ref().map(Spanned::span)),
            ("on", entry.on.as_ref().map(Spanned::span)),
            ("matches", entry.matches.as_ref().map(Spanned::span)),
            ("missing", entry.missing.as_ref().map(Spanned::span)),
            ("action", entry.action.as_ref().map(Spanned::span)),
        ];
        if let Some((name, Some(span))) = pattern_keys.iter().find(|(_, s)| s.is_some()) {
            return Err(self.error(
                span.clone(),
                &format!("{prefix}.{name}"),
                "an execute rule's program decides: it takes no header, on, matches, missing or action (only score, reply, timeout, max_running and after_accept)",
            ));
        }
        let argv = execute.get_ref().clone();
        let Some(program) = argv.first() else {
            return Err(self.error(
                execute.span(),
                &key,
                "expected the program's path and its arguments, like [\"/usr/local/bin/checkmail\", \"--strict\"]",
            ));
        };
        if !program.starts_with('/') {
            return Err(self.error(
                execute.span(),
                &key,
                format!("expected the program's absolute path, got {program:?} (no PATH search, no shell)"),
            ));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(self.error(execute.span(), &key, "an argument cannot hold a NUL"));
        }
        match std::fs::metadata(program) {
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::PermissionsExt as _;
                if m.permissions().mode() & 0o111 == 0 {
                    warnings.push(self.located(
                        execute.span(),
                        &key,
                        &format!(
                            "{program} is not executable: every message it judges gets 451 4.3.0"
                        ),
                    ));
                }
            }
            Ok(_) => warnings.push(self.located(
                execute.span(),
                &key,
                &format!("{program} is not a file: every message it judges gets 451 4.3.0"),
            )),
            Err(e) => warnings.push(self.located(
                execute.span(),
                &key,
                &format!("{program}: {e}: every message it judges gets 451 4.3.0"),
            )),
        }
        let timeout = match &entry.timeout {
            Some(t) => {
                let key = format!("{prefix}.timeout");
                let d = duration_value(t.get_ref()).map_err(|m| self.error(t.span(), &key, m))?;
                if d.is_zero() {
                    return Err(self.error(t.span(), &key, "must be greater than 0"));
                }
                let after = entry.after_accept.as_ref().is_some_and(|a| *a.get_ref());
                if !after && d > MAX_BEFORE_250_TIMEOUT {
                    return Err(self.error(
                        t.span(),
                        &key,
                        format!(
                            "at most {}s before the 250: the client waits for it (RFC 5321 4.5.3.2.6); set after_accept = true for a slower program",
                            MAX_BEFORE_250_TIMEOUT.as_secs()
                        ),
                    ));
                }
                d
            }
            None => DEFAULT_FILTER_TIMEOUT,
        };
        let max_running = match &entry.max_running {
            Some(n) => {
                let v = *n.get_ref();
                if !(1..=1000).contains(&v) {
                    return Err(self.error(
                        n.span(),
                        &format!("{prefix}.max_running"),
                        format!("expected a number from 1 to 1000, got {v}"),
                    ));
                }
                v as usize
            }
            None => DEFAULT_FILTER_MAX_RUNNING,
        };
        Ok(FilterProgram {
            argv,
            timeout,
            max_running,
        })
    }

    /// `[rspamd]`.
    pub(super) fn rspamd(
        &self,
        raw: Option<Spanned<raw::RawRspamd>>,
    ) -> Result<Option<RspamdConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let raw = raw.into_inner();
        let Some(url) = &raw.url else {
            return Err(self.error(
                span,
                "rspamd.url",
                "missing required key (rspamd's normal worker, like \"http://127.0.0.1:11333\")",
            ));
        };
        let (host, port, path) = parse_http_url(url.get_ref()).map_err(|m| {
            self.error(
                url.span(),
                "rspamd.url",
                format!(
                    "expected a URL like \"http://127.0.0.1:11333\", got {:?}: {m}",
                    url.get_ref()
                ),
            )
        })?;
        let timeout = match &raw.timeout {
            Some(t) => {
                let d = duration_value(t.get_ref())
                    .map_err(|m| self.error(t.span(), "rspamd.timeout", m))?;
                if d.is_zero() || d > MAX_BEFORE_250_TIMEOUT {
                    return Err(self.error(
                        t.span(),
                        "rspamd.timeout",
                        format!(
                            "expected more than 0 and at most {}s (the client waits for it)",
                            MAX_BEFORE_250_TIMEOUT.as_secs()
                        ),
                    ));
                }
                d
            }
            None => Duration::from_secs(5),
        };
        let max_size = match &raw.max_size {
            Some(v) => {
                size_value(v.get_ref()).map_err(|m| self.error(v.span(), "rspamd.max_size", m))?
            }
            None => 2 * 1024 * 1024,
        };
        Ok(Some(RspamdConfig {
            url: url.get_ref().clone(),
            host,
            port,
            path,
            timeout,
            max_size,
        }))
    }

    /// `[scoring]`.
    pub(super) fn scoring(
        &self,
        raw: Option<Spanned<raw::RawScoring>>,
        warnings: &mut Vec<String>,
    ) -> Result<ScoringConfig, ConfigError> {
        let mut scoring = ScoringConfig::default();
        let Some(raw) = raw else {
            return Ok(scoring);
        };
        scoring.active = true;
        let raw = raw.into_inner();
        if let Some(v) = &raw.tag_above {
            scoring.tag_above = signed_number(v.get_ref(), "5.0")
                .map_err(|m| self.error(v.span(), "scoring.tag_above", m))?;
        }
        if let Some(v) = &raw.reject_above {
            scoring.reject_above = signed_number(v.get_ref(), "10.0")
                .map_err(|m| self.error(v.span(), "scoring.reject_above", m))?;
        }
        if let Some(h) = &raw.headers {
            scoring.headers = *h.get_ref();
        }
        if scoring.tag_above >= scoring.reject_above {
            let span = raw
                .tag_above
                .as_ref()
                .or(raw.reject_above.as_ref())
                .map_or(0..0, Spanned::span);
            warnings.push(self.located(
                span,
                "scoring.tag_above",
                &format!(
                    "{} is not below scoring.reject_above ({}): no message is ever tagged, it is refused first",
                    scoring.tag_above, scoring.reject_above
                ),
            ));
        }
        Ok(scoring)
    }
}

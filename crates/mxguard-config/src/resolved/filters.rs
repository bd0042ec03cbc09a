//! `[[filter]]` (content rules) and `[scoring]`.

use std::collections::{BTreeMap, HashMap};

use toml::Spanned;

use super::{Cx, check_address, describe};
use crate::raw;
use crate::{
    ConfigError, DEFAULT_FILTER_REPLY, FilterAction, FilterCondition, FilterRule, FilterTarget,
    ScoringConfig,
};

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

            let target = self.filter_target(&entry, &prefix, span.clone())?;
            let condition = self.filter_condition(&entry, &prefix, &target, span.clone())?;

            let score = match &entry.score {
                Some(v) => signed_number(v.get_ref(), "3.0 or -1.5")
                    .map_err(|m| self.error(v.span(), &format!("{prefix}.score"), m))?,
                None => 0.0,
            };

            let action = self.filter_action(&entry, &prefix, local, accounts, catchall)?;
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
            out.push(FilterRule {
                name: text.clone(),
                target,
                condition,
                score,
                action,
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
            "reject" => {
                let reply = match &entry.reply {
                    Some(reply) => self.refusal_reply(reply, &format!("{prefix}.reply"), &[])?,
                    None => {
                        let default = Spanned::new(action.span(), DEFAULT_FILTER_REPLY.to_string());
                        self.refusal_reply(&default, &key, &[])?
                    }
                };
                Ok(FilterAction::Reject(reply))
            }
            "redirect" => Err(bad(" (write the address after a colon: \"redirect:ADDR\")")),
            "header" => Err(bad(" (write \"header:NAME: VALUE\")")),
            _ => Err(bad("")),
        }
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

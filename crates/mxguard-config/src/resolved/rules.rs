//! `[sender]`, `[recipient]` and `[router]`: the address rules.

use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;

use super::{Cx, SPOOFING_MODES, count_value, duration_value};
use crate::raw;
use crate::{
    ConfigError, IpList, RecipientConfig, RouterConfig, SenderConfig, SenderExclude, Spoofing,
    load_router,
};

/// RFC 5321 §4.5.3.1.8: a server must take at least 100 recipients.
const MIN_RECIPIENTS: usize = 100;

impl Cx<'_> {
    pub(super) fn sender(
        &self,
        raw: Option<Spanned<raw::RawSender>>,
        warnings: &mut Vec<String>,
    ) -> Result<SenderConfig, ConfigError> {
        let mut sender = SenderConfig::default();
        let Some(raw) = raw else {
            return Ok(sender);
        };
        let raw = raw.into_inner();
        if let Some(mode) = &raw.spoofing {
            let text = mode.get_ref();
            sender.spoofing = Spoofing::ALL
                .into_iter()
                .find(|s| s.as_str() == text)
                .ok_or_else(|| {
                    self.error(
                        mode.span(),
                        "sender.spoofing",
                        format!("expected one of: {SPOOFING_MODES}, got {text:?}"),
                    )
                })?;
        }
        if let Some(only) = &raw.own_address_only {
            sender.own_address_only = *only.get_ref();
        }
        if let Some(verify) = &raw.verify_domain {
            sender.verify_domain = *verify.get_ref();
        }
        if let Some(reply) = &raw.unknown_domain_reply {
            let key = "sender.unknown_domain_reply";
            sender.unknown_domain_reply = self.refusal_reply(reply, key, &[])?;
            if sender.unknown_domain_reply.code() >= 500 {
                warnings.push(self.located(
                    reply.span(),
                    key,
                    "a 5xx bounces mail at once when the sender's DNS fails for a moment (RFC 2505 §2.9 asks for 4xx)",
                ));
            }
        }
        if let Some(ban) = &raw.ban {
            sender.ban = self.ban_patterns(ban, "sender.ban", warnings)?;
        }
        if let Some(list) = &raw.exclude {
            for (i, entry) in list.get_ref().iter().enumerate() {
                sender
                    .exclude
                    .push(self.sender_exclude(entry, &format!("sender.exclude[{i}]"))?);
            }
        }
        Ok(sender)
    }

    fn sender_exclude(
        &self,
        entry: &Spanned<raw::RawSenderExclude>,
        key: &str,
    ) -> Result<SenderExclude, ConfigError> {
        let raw = entry.get_ref();
        let Some(hosts) = &raw.hosts else {
            return Err(self.error(
                entry.span(),
                &format!("{key}.hosts"),
                "missing: the client addresses (like [\"198.51.100.0/24\"]) this exclusion applies to",
            ));
        };
        let mut ranges = Vec::new();
        for (i, h) in hosts.get_ref().iter().enumerate() {
            let text = h.get_ref().trim();
            let range = crate::iplist::IpRange::parse(text).map_err(|m| {
                self.error(
                    h.span(),
                    &format!("{key}.hosts[{i}]"),
                    format!("{text:?}: {m}"),
                )
            })?;
            ranges.push(range);
        }
        let Some(pattern) = &raw.local_part else {
            return Err(self.error(
                entry.span(),
                &format!("{key}.local_part"),
                "missing: a regular expression for the local parts to refuse, like \"^[0-9]+$\"",
            ));
        };
        let local_part = regex::Regex::new(pattern.get_ref()).map_err(|e| {
            self.error(
                pattern.span(),
                &format!("{key}.local_part"),
                format!(
                    "not a valid regular expression: {}",
                    e.to_string().replace('\n', " ")
                ),
            )
        })?;
        Ok(SenderExclude {
            hosts: IpList::from_ranges(ranges),
            local_part,
        })
    }

    /// `sender.ban` / `recipient.ban`: `*` patterns over whole addresses.
    fn ban_patterns(
        &self,
        list: &Spanned<Vec<Spanned<String>>>,
        key: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for (i, p) in list.get_ref().iter().enumerate() {
            let text = p.get_ref().trim();
            let item = format!("{key}[{i}]");
            if text.is_empty()
                || text
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
            {
                return Err(self.error(
                    p.span(),
                    &item,
                    format!(
                        "expected an address pattern like \"*@spam.test\" or \"promo*@bigcorp.test\", got {text:?}"
                    ),
                ));
            }
            let pattern = if text.contains('@') {
                text.to_ascii_lowercase()
            } else {
                format!("*@{}", text.to_ascii_lowercase())
            };
            if pattern.chars().all(|c| c == '*' || c == '@') {
                warnings.push(self.located(
                    p.span(),
                    &item,
                    &format!("{text:?} matches every address"),
                ));
            }
            out.push(pattern);
        }
        Ok(out)
    }

    pub(super) fn recipient(
        &self,
        raw: Option<Spanned<raw::RawRecipient>>,
        warnings: &mut Vec<String>,
    ) -> Result<RecipientConfig, ConfigError> {
        let mut recipient = RecipientConfig::default();
        let Some(raw) = raw else {
            return Ok(recipient);
        };
        let raw = raw.into_inner();
        if let Some(ban) = &raw.ban {
            recipient.ban = self.ban_patterns(ban, "recipient.ban", warnings)?;
        }
        if let Some(v) = &raw.max_per_message {
            let key = "recipient.max_per_message";
            let n = count_value(v.get_ref(), 100_000).map_err(|m| self.error(v.span(), key, m))?;
            recipient.max_per_message = usize::try_from(n).unwrap_or(usize::MAX);
            if recipient.max_per_message < MIN_RECIPIENTS {
                warnings.push(self.located(
                    v.span(),
                    key,
                    &format!(
                        "{n} is below the {MIN_RECIPIENTS} recipients RFC 5321 §4.5.3.1.8 asks a server to take"
                    ),
                ));
            }
        }
        Ok(recipient)
    }

    pub(super) fn router(
        &self,
        raw: Option<Spanned<raw::RawRouter>>,
        _warnings: &mut Vec<String>,
    ) -> Result<RouterConfig, ConfigError> {
        let mut router = RouterConfig::default();
        let Some(raw) = raw else {
            return Ok(router);
        };
        let raw = raw.into_inner();
        if let Some(v) = &raw.spamtrap_ban {
            let d = duration_value(v.get_ref())
                .map_err(|m| self.error(v.span(), "router.spamtrap_ban", m))?;
            router.spamtrap_ban = (!d.is_zero()).then_some(d);
        }
        if let Some(file) = &raw.file {
            let key = "router.file";
            let name = file.get_ref();
            if name.is_empty() || name.contains('\0') {
                return Err(self.error(
                    file.span(),
                    key,
                    "expected the path of the router table, like \"router.txt\"",
                ));
            }
            let path = self
                .path
                .parent()
                .map_or_else(|| PathBuf::from(name), |dir| dir.join(name));
            let records = load_router(&path).map_err(|e| match e {
                ConfigError::Io { path, source } => self.error(
                    file.span(),
                    key,
                    format!("cannot read the router table {}: {source}", path.display()),
                ),
                other => other,
            })?;
            router.records = Arc::new(records.into());
            router.file = Some(path);
        }
        Ok(router)
    }
}

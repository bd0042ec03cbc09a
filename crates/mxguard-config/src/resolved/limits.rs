//! `[limits]` volume limits and tarpit, `[greylist]`, `[store]`.

use std::time::Duration;

use toml::Spanned;

use super::{Cx, describe, duration_value};
use crate::raw;
use crate::{ConfigError, GreylistConfig, IpList, LimitsConfig, StoreBackend, StoreConfig};

/// A limit: a whole number, 0 for none.
fn limit_value(value: &toml::Value, max: u64) -> Result<u64, String> {
    match value {
        toml::Value::Integer(n) => match u64::try_from(*n) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!(
                "expected a whole number from 0 (no limit) to {max}, got {n}"
            )),
        },
        other => Err(format!(
            "expected a whole number (0 for no limit), got {}",
            describe(other)
        )),
    }
}

impl Cx<'_> {
    pub(super) fn rate_limits(
        &self,
        raw: &raw::RawLimits,
        limits: &mut LimitsConfig,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let limit = |v: &Option<Spanned<toml::Value>>,
                     key: &str,
                     max: u64|
         -> Result<Option<u64>, ConfigError> {
            v.as_ref()
                .map(|v| limit_value(v.get_ref(), max).map_err(|m| self.error(v.span(), key, m)))
                .transpose()
        };
        if let Some(n) = limit(
            &raw.messages_per_hour_per_ip,
            "limits.messages_per_hour_per_ip",
            1 << 40,
        )? {
            limits.messages_per_hour_per_ip = n;
        }
        if let Some(n) = limit(
            &raw.recipients_per_hour,
            "limits.recipients_per_hour",
            1 << 40,
        )? {
            limits.recipients_per_hour = n;
        }
        if let Some(n) = limit(
            &raw.messages_per_hour_per_recipient,
            "limits.messages_per_hour_per_recipient",
            1 << 40,
        )? {
            limits.messages_per_hour_per_recipient = n;
        }
        if let Some(n) = limit(&raw.tarpit_start, "limits.tarpit_start", 100_000)? {
            limits.tarpit_start = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(v) = &raw.tarpit_delay {
            let key = "limits.tarpit_delay";
            let d = duration_value(v.get_ref()).map_err(|m| self.error(v.span(), key, m))?;
            if d > Duration::from_secs(60) {
                return Err(self.error(
                    v.span(),
                    key,
                    format!(
                        "{} is longer than a minute: the delay grows with every recipient, and senders give up after 5 minutes (RFC 5321 §4.5.3.2.2)",
                        crate::format_duration(d)
                    ),
                ));
            }
            limits.tarpit_delay = d;
            if limits.tarpit_start == 0 && !d.is_zero() && raw.tarpit_start.is_none() {
                warnings.push(self.located(
                    v.span(),
                    key,
                    "limits.tarpit_start is 0 (the default): no session is tarpitted",
                ));
            }
        }
        if let Some(list) = &raw.exempt {
            let mut ranges = Vec::new();
            for (i, entry) in list.get_ref().iter().enumerate() {
                let text = entry.get_ref().trim();
                let range = crate::iplist::IpRange::parse(text).map_err(|m| {
                    self.error(
                        entry.span(),
                        &format!("limits.exempt[{i}]"),
                        format!("{text:?}: {m}"),
                    )
                })?;
                ranges.push(range);
            }
            limits.exempt = IpList::from_ranges(ranges);
        }
        if limits.tarpit_start > 0 && limits.tarpit_start < 10 {
            warnings.push(self.located(
                raw.tarpit_start.as_ref().map_or(0..0, |v| v.span()),
                "limits.tarpit_start",
                &format!(
                    "{}: legitimate mail to a few people will be slowed down",
                    limits.tarpit_start
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn greylist(
        &self,
        raw: Option<Spanned<raw::RawGreylist>>,
        warnings: &mut Vec<String>,
    ) -> Result<GreylistConfig, ConfigError> {
        let mut g = GreylistConfig::default();
        let Some(raw) = raw else { return Ok(g) };
        let span = raw.span();
        let raw = raw.into_inner();
        if let Some(e) = &raw.enabled {
            g.enabled = *e.get_ref();
        }
        let duration = |v: &Option<Spanned<toml::Value>>,
                        key: &str|
         -> Result<Option<Duration>, ConfigError> {
            v.as_ref()
                .map(|v| duration_value(v.get_ref()).map_err(|m| self.error(v.span(), key, m)))
                .transpose()
        };
        if let Some(d) = duration(&raw.delay, "greylist.delay")? {
            g.delay = d;
        }
        if let Some(d) = duration(&raw.pass_after, "greylist.pass_after")? {
            if d.is_zero() {
                return Err(self.error(
                    raw.pass_after.as_ref().map_or(span.clone(), |v| v.span()),
                    "greylist.pass_after",
                    "0s would greylist every message again: expected a duration like \"36d\"",
                ));
            }
            g.pass_after = d;
        }
        if g.enabled && g.delay > Duration::from_secs(3600) {
            warnings.push(self.located(
                raw.delay.as_ref().map_or(span, |v| v.span()),
                "greylist.delay",
                "longer than an hour: first mail from new senders arrives late (5m is usual)",
            ));
        }
        Ok(g)
    }

    pub(super) fn store(
        &self,
        raw: Option<Spanned<raw::RawStore>>,
        _warnings: &mut Vec<String>,
    ) -> Result<StoreConfig, ConfigError> {
        let mut store = StoreConfig::default();
        let Some(raw) = raw else { return Ok(store) };
        let raw = raw.into_inner();
        if let Some(t) = &raw.timeout {
            let key = "store.timeout";
            let d = duration_value(t.get_ref()).map_err(|m| self.error(t.span(), key, m))?;
            if d.is_zero() || d > Duration::from_secs(10) {
                return Err(self.error(
                    t.span(),
                    key,
                    "expected a duration from 1ms to 10s, like \"500ms\": every check waits this long when the store does not answer",
                ));
            }
            store.timeout = d;
        }
        let backend = raw
            .backend
            .as_ref()
            .map(|b| (b.get_ref().as_str(), b.span()));
        match backend {
            None | Some(("embedded", _)) => {
                if let Some(url) = &raw.url {
                    return Err(self.error(
                        url.span(),
                        "store.url",
                        "only for backend = \"redis\" (the embedded store is a file in server.data_dir)",
                    ));
                }
            }
            Some(("redis", bspan)) => {
                let Some(url) = &raw.url else {
                    return Err(self.error(
                        bspan,
                        "store.url",
                        "missing: backend = \"redis\" needs url, like \"redis://127.0.0.1:6379/0\"",
                    ));
                };
                let u = url.get_ref().trim();
                if !u.starts_with("redis://") {
                    return Err(self.error(
                        url.span(),
                        "store.url",
                        format!(
                            "expected a Redis URL like \"redis://127.0.0.1:6379/0\", got {u:?}"
                        ),
                    ));
                }
                store.backend = StoreBackend::Redis { url: u.to_string() };
            }
            Some((other, bspan)) => {
                return Err(self.error(
                    bspan,
                    "store.backend",
                    format!("expected one of: embedded, redis, got {other:?}"),
                ));
            }
        }
        Ok(store)
    }
}

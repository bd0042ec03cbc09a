//! The raw layer: the TOML file as written, deserialized with serde.
//!
//! Every struct refuses unknown keys (`deny_unknown_fields`), every key is
//! optional here (required keys and defaults are the resolved layer's
//! business, so it can say which key is missing and where) and every value
//! keeps its byte span in the file, so that a validation error found later
//! can still point at the line and column of the offending value.
//!
//! Values that need more than a TOML type check (addresses, roles, durations,
//! sizes, modes) are kept as strings or as [`toml::Value`] and interpreted by
//! the resolved layer.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub server: Option<Spanned<RawServer>>,
    #[serde(rename = "listener")]
    pub listeners: Option<Spanned<Vec<Spanned<RawListener>>>>,
    pub tls: Option<Spanned<RawTls>>,
    pub domains: Option<Spanned<RawDomains>>,
    #[serde(rename = "account")]
    pub accounts: Option<Spanned<Vec<Spanned<RawAccount>>>>,
    pub dns: Option<Spanned<RawDns>>,
    pub smtp: Option<Spanned<RawSmtp>>,
    pub relay: Option<Spanned<RawRelay>>,
    pub queue: Option<Spanned<RawQueue>>,
    pub access: Option<Spanned<RawAccess>>,
    #[serde(rename = "dnsbl")]
    pub dnsbls: Option<Spanned<Vec<Spanned<RawDnsbl>>>>,
    pub limits: Option<Spanned<RawLimits>>,
    pub sender: Option<Spanned<RawSender>>,
    pub recipient: Option<Spanned<RawRecipient>>,
    pub router: Option<Spanned<RawRouter>>,
    pub greylist: Option<Spanned<RawGreylist>>,
    pub store: Option<Spanned<RawStore>>,
    #[serde(rename = "filter")]
    pub filters: Option<Spanned<Vec<Spanned<RawFilter>>>>,
    pub scoring: Option<Spanned<RawScoring>>,
    pub verify: Option<Spanned<RawVerify>>,
    pub dkim_sign: Option<Spanned<RawDkimSign>>,
    pub rspamd: Option<Spanned<RawRspamd>>,
}

/// `[rspamd]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRspamd {
    pub url: Option<Spanned<String>>,
    pub timeout: Option<Spanned<toml::Value>>,
    pub max_size: Option<Spanned<toml::Value>>,
}

/// `[dkim_sign]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDkimSign {
    pub domain: Option<Spanned<String>>,
    pub selector: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// `[verify]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVerify {
    pub spf: Option<Spanned<String>>,
    pub dkim: Option<Spanned<String>>,
    pub dmarc: Option<Spanned<String>>,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub hostname: Option<Spanned<String>>,
    pub data_dir: Option<Spanned<String>>,
    pub banner: Option<Spanned<String>>,
    /// A string with a unit, or a TOML integer (bytes).
    pub max_message_size: Option<Spanned<toml::Value>>,
    pub hide_client_ip: Option<Spanned<bool>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub address: Option<Spanned<String>>,
    pub role: Option<Spanned<String>>,
}

/// `[domains]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDomains {
    pub local: Option<Spanned<Vec<Spanned<String>>>>,
    pub catchall: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    pub disable_catchalls: Option<Spanned<bool>>,
    pub relay_to: Option<Spanned<Vec<Spanned<String>>>>,
    pub domain_literals: Option<Spanned<bool>>,
    pub literal_addresses: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[account]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub address: Option<Spanned<String>>,
    pub aliases: Option<Spanned<Vec<Spanned<String>>>>,
    pub password: Option<Spanned<String>>,
    pub relay: Option<Spanned<bool>>,
    pub mobile: Option<Spanned<bool>>,
}

/// `[tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub certificate: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub allow_plaintext_auth: Option<Spanned<bool>>,
}

/// `[dns]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub nameservers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Kept as a TOML value so that a bare integer gets a helpful error.
    pub timeout: Option<Spanned<toml::Value>>,
}

/// `[smtp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSmtp {
    pub vrfy: Option<Spanned<String>>,
    pub expn: Option<Spanned<String>>,
    pub timeouts: Option<Spanned<RawTimeouts>>,
}

/// `[smtp.timeouts]` or `smtp.timeouts = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub command: Option<Spanned<toml::Value>>,
    pub data: Option<Spanned<toml::Value>>,
}

/// `[relay]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRelay {
    pub clients: Option<Spanned<Vec<Spanned<String>>>>,
    pub clients_file: Option<Spanned<String>>,
    pub smarthost: Option<Spanned<String>>,
    pub routes: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    /// Kept as a TOML value so that a string or a float gets a helpful error.
    pub mx_port: Option<Spanned<toml::Value>>,
    pub clients_only: Option<Spanned<bool>>,
    pub relay_for_clients_only: Option<Spanned<bool>>,
    pub forward_from: Option<Spanned<Vec<Spanned<String>>>>,
    /// A duration string; kept as a TOML value for a helpful error.
    pub pop_before_smtp: Option<Spanned<toml::Value>>,
    /// An integer; kept as a TOML value for a helpful error.
    pub pop_before_smtp_max: Option<Spanned<toml::Value>>,
}

/// `[queue]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub retry: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub max_age: Option<Spanned<toml::Value>>,
    pub delay_warning: Option<Spanned<toml::Value>>,
}

/// `[access]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccess {
    pub blacklist: Option<Spanned<Vec<Spanned<String>>>>,
    pub blacklist_file: Option<Spanned<String>>,
    pub whitelist: Option<Spanned<Vec<Spanned<String>>>>,
    pub whitelist_file: Option<Spanned<String>>,
    pub reject_reply: Option<Spanned<String>>,
    pub ptr: Option<Spanned<String>>,
    /// An integer or a float.
    pub ptr_score: Option<Spanned<toml::Value>>,
    pub ehlo_block: Option<Spanned<Vec<Spanned<String>>>>,
    pub early_talker: Option<Spanned<toml::Value>>,
}

/// One `[[dnsbl]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsbl {
    pub zone: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matches: Option<Spanned<Vec<Spanned<String>>>>,
    pub reply: Option<Spanned<String>>,
    /// An integer or a float.
    pub score: Option<Spanned<toml::Value>>,
}

/// `[limits]`: integers kept as TOML values so that a string, a float or a
/// negative number gets a helpful error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_connections: Option<Spanned<toml::Value>>,
    pub connections_per_ip: Option<Spanned<toml::Value>>,
    pub max_errors: Option<Spanned<toml::Value>>,
    pub auto_ban: Option<Spanned<toml::Value>>,
    pub messages_per_hour_per_ip: Option<Spanned<toml::Value>>,
    pub recipients_per_hour: Option<Spanned<toml::Value>>,
    pub messages_per_hour_per_recipient: Option<Spanned<toml::Value>>,
    pub tarpit_start: Option<Spanned<toml::Value>>,
    pub tarpit_delay: Option<Spanned<toml::Value>>,
    pub exempt: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[greylist]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGreylist {
    pub enabled: Option<Spanned<bool>>,
    pub delay: Option<Spanned<toml::Value>>,
    pub pass_after: Option<Spanned<toml::Value>>,
}

/// `[store]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub backend: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub timeout: Option<Spanned<toml::Value>>,
}

/// `[sender]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSender {
    pub spoofing: Option<Spanned<String>>,
    pub own_address_only: Option<Spanned<bool>>,
    pub verify_domain: Option<Spanned<bool>>,
    pub unknown_domain_reply: Option<Spanned<String>>,
    pub ban: Option<Spanned<Vec<Spanned<String>>>>,
    pub exclude: Option<Spanned<Vec<Spanned<RawSenderExclude>>>>,
}

/// One entry of `sender.exclude`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSenderExclude {
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub local_part: Option<Spanned<String>>,
}

/// `[recipient]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecipient {
    pub ban: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_per_message: Option<Spanned<toml::Value>>,
}

/// `[router]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    pub file: Option<Spanned<String>>,
    pub spamtrap_ban: Option<Spanned<toml::Value>>,
}

/// One `[[filter]]`: a content rule judged at the end of DATA.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilter {
    pub name: Option<Spanned<String>>,
    /// A header field name: what the rule looks at (every occurrence).
    pub header: Option<Spanned<String>>,
    /// Or another part of the message or envelope: `"body"`, `"subject"`...
    pub on: Option<Spanned<String>>,
    pub matches: Option<Spanned<String>>,
    pub missing: Option<Spanned<bool>>,
    /// An integer or a float, negative allowed.
    pub score: Option<Spanned<toml::Value>>,
    pub action: Option<Spanned<String>>,
    pub reply: Option<Spanned<String>>,
    /// An external program and its arguments, instead of a pattern.
    pub execute: Option<Spanned<Vec<String>>>,
    pub timeout: Option<Spanned<toml::Value>>,
    pub after_accept: Option<Spanned<bool>>,
    pub max_running: Option<Spanned<i64>>,
}

/// `[scoring]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScoring {
    /// Integers or floats.
    pub tag_above: Option<Spanned<toml::Value>>,
    pub reject_above: Option<Spanned<toml::Value>>,
    pub headers: Option<Spanned<bool>>,
}

/// Keys that the specification of mxguard defines but this version does not
/// implement, by table path (`""` is the top level, arrays of tables are
/// named without index). An unknown key found here gets a more precise
/// message than a typo would.
pub(crate) const NOT_YET_SUPPORTED: &[(&str, &[&str])] =
    &[("server", &["admin_password"]), ("smtp", &["etrn"])];

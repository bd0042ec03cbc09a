//! Configuration of mxguard: the TOML file (`mxguard.toml`), read, checked
//! and turned into plain Rust values.
//!
//! The work is done in two layers:
//!
//! - the **raw layer** (`raw.rs`) is the file as written: serde structs that
//!   refuse unknown keys, where every key is optional and every value keeps
//!   its position in the file ([`toml::Spanned`]);
//! - the **resolved layer** (`resolved.rs`, and the public types here) is
//!   what the server uses: defaults filled in, strings turned into addresses,
//!   durations and sizes, names lowercased, cross-references checked (a
//!   catchall points at an existing account, an account is in a local domain,
//!   no address is used twice), and indexes built for the lookups the SMTP
//!   session does on every recipient ([`Config::account_for`],
//!   [`Config::is_local_domain`], [`Config::catchall_for`],
//!   [`Config::is_relay_to_domain`], [`Config::is_relay_client`],
//!   [`Config::is_forward_from_domain`], [`Config::route_for`]). IP lists ([`IpList`]) are merged, sorted ranges
//!   searched by bisection, whatever their size.
//!
//! Any key this version does not implement is an error, never silently
//! ignored: an administrator must not believe a check is active when it is
//! not. Every error names the file, line, column and key path, and says what
//! was expected:
//!
//! ```text
//! mxguard.toml:7:20: server.max_message_size: expected a size like "25MB", got "25XB" (units B, KB, MB, GB, KiB, MiB, GiB)
//! ```
//!
//! # Security
//!
//! The configuration file is trusted: whoever can write it runs the server.
//! It may still be malformed, by mistake or by a bad merge, so parsing never
//! panics, whatever the input, and refuses values that would be dangerous
//! later on (a banner with a line break would let the file inject SMTP
//! replies; a zero timeout would make every session fail).

mod iplist;
mod locate;
mod raw;
mod resolved;
mod router;
mod units;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use iplist::{IpList, IpRange};
pub use mxguard_proto::Reply;
pub use router::{RelayPrefix, RouterRecord, RouterTable, RouterTarget, load_router, parse_router};
pub use units::{format_duration, parse_duration, parse_size};

/// An error found while reading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration: bad TOML, an
    /// unknown key, a bad value or a failed cross-check.
    #[error("{}:{line}:{column}: {key}: {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// Dotted key path, arrays indexed from 0: `listener[1].role`.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A line of an IP list file (`relay.clients_file`) is not an address,
    /// a CIDR block or a range: `clients.txt:12: "10.0.0.300": expected an
    /// address, CIDR or range`.
    #[error("{}", list_message(.path, *.line, .entry, .message))]
    List {
        /// The IP list (or router) file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The entry as written, comment and spaces removed (empty when the
        /// line could not be read at all).
        entry: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

fn list_message(path: &Path, line: usize, entry: &str, message: &str) -> String {
    if entry.is_empty() {
        format!("{}:{line}: {message}", path.display())
    } else {
        format!("{}:{line}: {entry:?}: {message}", path.display())
    }
}

/// The whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, as given to [`Config::load`] or
    /// [`Config::parse`].
    pub path: PathBuf,
    /// `[server]`: identity and global settings.
    pub server: ServerConfig,
    /// `[[listener]]`: the sockets to listen on; at least one, no address
    /// twice.
    pub listeners: Vec<ListenerConfig>,
    /// `[tls]`: the server's certificate and key, when the section is
    /// there. Without it STARTTLS is not offered, implicit-TLS listeners
    /// (`submissions`, `pop3s`) are an error and AUTH is never offered.
    pub tls: Option<TlsConfig>,
    /// `[domains]`: the domains this server receives mail for.
    pub domains: DomainsConfig,
    /// `[[account]]`: the mailboxes, in file order.
    pub accounts: Vec<Account>,
    /// `[dns]`: the resolver.
    pub dns: DnsConfig,
    /// `[smtp]`: protocol settings.
    pub smtp: SmtpConfig,
    /// `[relay]`: who may relay, and where relayed mail goes.
    pub relay: RelayConfig,
    /// `[queue]`: how long and how often delivery is retried.
    pub queue: QueueConfig,
    /// `[access]`: who may connect, and the checks made on connection and
    /// at EHLO.
    pub access: AccessConfig,
    /// `[[dnsbl]]`: the DNS blocklists asked about each client, in file
    /// order; no zone twice.
    pub dnsbl: Vec<DnsblConfig>,
    /// `[limits]`: connection limits and the error limit.
    pub limits: LimitsConfig,
    /// `[sender]`: who may use which `MAIL FROM` address.
    pub sender: SenderConfig,
    /// `[recipient]`: recipient bans and the per-message limit.
    pub recipient: RecipientConfig,
    /// `[router]`: the router table.
    pub router: RouterConfig,
    /// `[greylist]`.
    pub greylist: GreylistConfig,
    /// `[verify]`: SPF, DKIM and DMARC of inbound mail. All off when the
    /// section is absent.
    pub verify: VerifyConfig,
    /// `[dkim_sign]`: DKIM signing of our users' mail. None when absent.
    pub dkim_sign: Option<DkimSignConfig>,
    /// `[store]`: the state store.
    pub store: StoreConfig,
    /// `[[filter]]`: the content rules judged at the end of DATA, in file
    /// order; no name twice.
    pub filters: Vec<FilterRule>,
    /// `[scoring]`: what the message score leads to. Applies with its
    /// defaults when the section is absent.
    pub scoring: ScoringConfig,
    /// `[rspamd]`: the external scanner. None when absent.
    pub rspamd: Option<RspamdConfig>,
    /// Lowercased address or alias -> index in `accounts`.
    account_index: HashMap<String, usize>,
    /// Lowercased local domains.
    local_set: HashSet<String>,
    /// Lowercased `domains.relay_to`.
    relay_to_set: HashSet<String>,
    /// Lowercased `relay.forward_from`.
    forward_from_set: HashSet<String>,
    /// Lints found while resolving, already formatted with their location.
    warnings: Vec<String>,
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// `hostname`: this server's name, used in the banner, the EHLO reply,
    /// `Received:` and `Message-ID:`. Required; a syntactically valid domain
    /// name, kept as written.
    pub hostname: String,
    /// `data_dir`: where the queue, the state and the Maildirs live. Default
    /// `./data`. A relative path is kept relative: the server resolves it
    /// against its working directory.
    pub data_dir: PathBuf,
    /// `banner`: the text after `220 ` in the welcome line. `None` (the
    /// default) means `<hostname> ESMTP mxguard`. Printable ASCII only.
    pub banner: Option<String>,
    /// `max_message_size`: the largest message accepted, in bytes
    /// (advertised with `SIZE`). Default `"25MB"` (25 000 000 bytes).
    pub max_message_size: u64,
    /// `hide_client_ip`: when true, `Received:` does not show the client's
    /// IP address. Default false.
    pub hide_client_ip: bool,
}

/// One `[[listener]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// `address`: IP address and port to listen on, `"0.0.0.0:25"` or
    /// `"[::1]:2525"`. Required.
    pub address: SocketAddr,
    /// `role`: what is served there. Required.
    pub role: Role,
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `"mx"`: mail from other servers to the local domains (port 25).
    Mx,
    /// `"submission"`: mail from the local users (port 587), after AUTH;
    /// STARTTLS when `[tls]` is configured.
    Submission,
    /// `"submissions"`: submission over implicit TLS (port 465, RFC 8314):
    /// TLS from the first byte, AUTH required. Needs `[tls]`.
    Submissions,
    /// `"pop3"`: POP3 (port 110), STLS when `[tls]` is configured.
    Pop3,
    /// `"pop3s"`: POP3 over implicit TLS (port 995). Needs `[tls]`.
    Pop3s,
}

impl Role {
    /// Every role, in the order of the documentation.
    pub const ALL: [Role; 5] = [
        Role::Mx,
        Role::Submission,
        Role::Submissions,
        Role::Pop3,
        Role::Pop3s,
    ];

    /// The name used in the configuration file: `"mx"`, `"submission"`,
    /// `"submissions"`, `"pop3"`, `"pop3s"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Mx => "mx",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
            Role::Pop3 => "pop3",
            Role::Pop3s => "pop3s",
        }
    }

    /// The role named `name` in the configuration file (exact, lowercase).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether the listener speaks TLS from the first byte (`submissions`,
    /// `pop3s`); it needs `[tls]`.
    pub fn implicit_tls(&self) -> bool {
        matches!(self, Role::Submissions | Role::Pop3s)
    }

    /// Whether clients log in there (submission and POP3 roles): AUTH or
    /// USER/PASS is offered, only over TLS unless
    /// `tls.allow_plaintext_auth` is true.
    pub fn takes_logins(&self) -> bool {
        !matches!(self, Role::Mx)
    }

    /// Whether the listener speaks POP3 rather than SMTP.
    pub fn is_pop3(&self) -> bool {
        matches!(self, Role::Pop3 | Role::Pop3s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[domains]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainsConfig {
    /// `local`: the domains whose mailboxes live here, lowercased, in file
    /// order. Default: none.
    pub local: Vec<String>,
    /// `catchall`: local domain -> account address (or alias) that receives
    /// mail for unknown recipients of that domain. Both lowercased.
    pub catchall: BTreeMap<String, String>,
    /// `disable_catchalls`: when true, `catchall` is ignored (a switch to
    /// turn all of them off at once). Default false.
    pub disable_catchalls: bool,
    /// `relay_to`: domains whose mail is accepted from anyone and relayed
    /// on (this server is their backup MX), lowercased, in file order; none
    /// of them is in `local`. Default: none.
    pub relay_to: Vec<String>,
    /// `domain_literals`: when true, a recipient `user@[IP]` is local when
    /// `IP` is the address the client connected to, or one of
    /// `literal_addresses`; its local part is then looked up as in any
    /// local domain. When false, every `user@[IP]` recipient is treated as
    /// not local. Default true.
    pub domain_literals: bool,
    /// `literal_addresses`: more IP addresses that count as this server's
    /// in `user@[IP]` (behind NAT, the public address), in file order, no
    /// address twice. Default: none.
    pub literal_addresses: Vec<IpAddr>,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        DomainsConfig {
            local: Vec::new(),
            catchall: BTreeMap::new(),
            disable_catchalls: false,
            relay_to: Vec::new(),
            domain_literals: true,
            literal_addresses: Vec::new(),
        }
    }
}

/// `[relay]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// `clients` and the entries of `clients_file`, merged: the "Client IP
    /// Addresses", which may relay to any domain. Default: empty.
    pub clients: IpList,
    /// `clients_file`, resolved against the configuration file's directory,
    /// when set.
    pub clients_file: Option<PathBuf>,
    /// `smarthost`: where all relayed mail goes (unless a route says
    /// otherwise). `None` (the default, or `""`): delivery by MX lookup.
    pub smarthost: Option<NextHop>,
    /// `routes`: lowercased domain -> its next hop; wins over `smarthost`.
    pub routes: BTreeMap<String, NextHop>,
    /// `mx_port`: the port of the MX hosts, and of the smarthost and routes
    /// written without a port. Default 25.
    pub mx_port: u16,
    /// `clients_only`: when true, a client that is neither in `clients` nor
    /// whitelisted (`access.whitelist`) is refused at connection with
    /// `access.reject_reply` ("Grant access to clients only"). Default
    /// false.
    pub clients_only: bool,
    /// `relay_for_clients_only`: when true (the default), only the clients
    /// allowed to relay (see the "Who may relay" list of the documentation)
    /// may send mail to domains that are neither local nor in
    /// `domains.relay_to`. When false, ANY client may relay to ANY address:
    /// an open relay (check-config warns).
    pub relay_for_clients_only: bool,
    /// `forward_from`: sender domains (lowercased, in file order, none
    /// twice) whose mail may be relayed from any client: a `MAIL FROM` in
    /// one of them allows relaying. Anyone can forge such a sender, so
    /// check-config always warns when it is not empty. See
    /// [`Config::is_forward_from_domain`]. Default: none.
    pub forward_from: Vec<String>,
    /// `pop_before_smtp`: after a POP3 login by an account with
    /// `mobile = true`, the client's address may relay for this long.
    /// `None` (`"0s"`) disables POP-before-SMTP. Default `"2m"`.
    pub pop_before_smtp: Option<Duration>,
    /// `pop_before_smtp_max`: no longer used (the addresses live in the
    /// state store and expire by themselves); accepted with a warning.
    /// Formerly: the most client addresses remembered for
    /// POP-before-SMTP at once (the oldest are forgotten first). Greater
    /// than 0. Default 10000.
    pub pop_before_smtp_max: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            clients: IpList::default(),
            clients_file: None,
            smarthost: None,
            routes: BTreeMap::new(),
            mx_port: 25,
            clients_only: false,
            relay_for_clients_only: true,
            forward_from: Vec::new(),
            pop_before_smtp: Some(Duration::from_secs(120)),
            pop_before_smtp_max: 10_000,
        }
    }
}

/// Where mail goes next: `relay.smarthost` or a `relay.routes` entry. The
/// host is connected to directly (its address records, not its MX records).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// A host name (lowercased) or an IP literal, without brackets.
    pub host: String,
    /// The port: as written, or `relay.mx_port` when none is.
    pub port: u16,
}

impl NextHop {
    /// The IP address when `host` is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// `host:port`, with brackets around an IPv6 address.
impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// `[queue]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// `retry`: the waits between delivery attempts, in order; after the
    /// last one, the last wait repeats. Never empty, each greater than 0.
    /// Default `["5m", "15m", "30m", "1h", "2h", "4h"]`.
    pub retry: Vec<Duration>,
    /// `max_age`: a recipient still failing after this long is bounced.
    /// Default `"5d"`.
    pub max_age: Duration,
    /// `delay_warning`: after this long a delay notice is sent to the
    /// sender, once. `None` (`"0s"`) sends none. Default `"4h"`.
    pub delay_warning: Option<Duration>,
}

impl QueueConfig {
    /// The wait after the `attempt`-th failed attempt (counted from 1):
    /// `retry[attempt - 1]`, or the last value of `retry` past its end.
    pub fn retry_after(&self, attempt: usize) -> Duration {
        let i = attempt
            .saturating_sub(1)
            .min(self.retry.len().saturating_sub(1));
        self.retry
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(300))
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry: [5 * 60, 15 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_age: Duration::from_secs(5 * 86_400),
            delay_warning: Some(Duration::from_secs(4 * 3600)),
        }
    }
}

/// `[access]`: the checks made when a client connects and when it says
/// HELO/EHLO. On an mx listener they apply in this order: whitelist (a
/// whitelisted client skips every check below, bans included), auto-ban,
/// blacklist, `relay.clients_only`, connection limits, DNSBL, PTR, early
/// talker, then the EHLO name.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessConfig {
    /// `blacklist` and the entries of `blacklist_file`, merged: clients
    /// refused at connection with `reject_reply`, unless whitelisted.
    /// Default: empty.
    pub blacklist: IpList,
    /// `whitelist` and the entries of `whitelist_file`, merged: clients
    /// exempt from the blacklist, the DNSBLs, the PTR and EHLO checks, the
    /// early talker check, the connection limits and the bans. Default:
    /// empty.
    pub whitelist: IpList,
    /// `reject_reply`: sent to blacklisted clients (and to strangers when
    /// `relay.clients_only` is true) before the connection is closed.
    /// Always 4xx or 5xx. Default `554 5.7.1 Access denied`.
    pub reject_reply: Reply,
    /// `ptr`: the reverse DNS check. Default [`PtrMode::Off`].
    pub ptr: PtrMode,
    /// `ptr_score`: with [`PtrMode::Score`], added to the message score
    /// when the check fails. At least 0. Default 1.0.
    pub ptr_score: f64,
    /// `ehlo_block`: lowercased substrings; a HELO/EHLO name containing one
    /// of them (case-insensitive) gets `554 5.7.1` and the connection is
    /// closed. Never an empty string. Default: none.
    pub ehlo_block: Vec<String>,
    /// `early_talker`: how long mx listeners wait before sending the
    /// banner; a client that sends anything first is refused and dropped.
    /// Zero (the default, `"0s"`) disables the pause and the check.
    pub early_talker: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            blacklist: IpList::default(),
            whitelist: IpList::default(),
            reject_reply: Reply::fixed(554, 5, 7, 1, "Access denied"),
            ptr: PtrMode::Off,
            ptr_score: 1.0,
            ehlo_block: Vec::new(),
            early_talker: Duration::ZERO,
        }
    }
}

impl AccessConfig {
    /// Whether the HELO/EHLO name `name` contains one of `ehlo_block`
    /// (case-insensitive); returns that entry.
    pub fn ehlo_blocked(&self, name: &str) -> Option<&str> {
        if self.ehlo_block.is_empty() {
            return None;
        }
        let name = name.to_lowercase();
        self.ehlo_block
            .iter()
            .find(|b| name.contains(b.as_str()))
            .map(String::as_str)
    }
}

/// `access.ptr`: what the reverse DNS of a client must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PtrMode {
    /// `"off"`: no check.
    #[default]
    Off,
    /// `"require"`: the client's address must have a PTR record; if not,
    /// the client is refused with `access.reject_reply`.
    Require,
    /// `"fcrdns"`: one of the PTR names must resolve back to the client's
    /// address (forward-confirmed reverse DNS); if not, the client is
    /// refused with `access.reject_reply`.
    Fcrdns,
    /// `"score"`: the fcrdns check, but a failure adds `access.ptr_score`
    /// to the message score instead of refusing.
    Score,
}

impl PtrMode {
    /// The name used in the configuration file.
    pub fn as_str(&self) -> &'static str {
        match self {
            PtrMode::Off => "off",
            PtrMode::Require => "require",
            PtrMode::Fcrdns => "fcrdns",
            PtrMode::Score => "score",
        }
    }
}

impl std::fmt::Display for PtrMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[dnsbl]]`: a DNS blocklist.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsblConfig {
    /// `zone`: the list's DNS zone, lowercased, without a final dot.
    /// Required.
    pub zone: String,
    /// `match`: the answers (A records) that mean "listed"; IPv4 only.
    /// Default `127.0.0.2-127.255.255.255`.
    pub matches: IpList,
    /// `reply`: sent to a listed client (when `score` is 0), with `%IP%`
    /// and `%ZONE%` still in it: see [`DnsblConfig::reply_for`]. Always 4xx
    /// or 5xx. Default `554 5.7.1 Service unavailable; [%IP%] listed at
    /// %ZONE%`.
    pub reply: Reply,
    /// `score`: when greater than 0, a listed client is not refused: this
    /// is added to the message score instead. At least 0. Default 0.
    pub score: f64,
}

/// The default of `dnsbl.reply`.
pub const DEFAULT_DNSBL_REPLY: &str = "554 5.7.1 Service unavailable; [%IP%] listed at %ZONE%";

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig {
            zone: String::new(),
            matches: IpList::from_ranges([IpRange::V4(
                std::net::Ipv4Addr::new(127, 0, 0, 2),
                std::net::Ipv4Addr::new(127, 255, 255, 255),
            )]),
            reply: Reply::parse(DEFAULT_DNSBL_REPLY)
                .unwrap_or_else(|_| Reply::fixed(554, 5, 7, 1, "Service unavailable")),
            score: 0.0,
        }
    }
}

impl DnsblConfig {
    /// `reply` with `%IP%` replaced by `ip` and `%ZONE%` by `zone`.
    pub fn reply_for(&self, ip: IpAddr) -> Reply {
        self.reply
            .substitute(&[("IP", &ip.to_string()), ("ZONE", &self.zone)])
    }

    /// Whether the DNSBL answer `answer` (an A record) means "listed".
    pub fn is_listed_answer(&self, answer: std::net::Ipv4Addr) -> bool {
        self.matches.contains(IpAddr::V4(answer))
    }
}

/// `[limits]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `max_connections`: the most sessions open at once, all clients
    /// together. Greater than 0. Default 2000.
    pub max_connections: usize,
    /// `connections_per_ip`: the most sessions open at once from one IP
    /// address. Greater than 0. Default 20.
    pub connections_per_ip: usize,
    /// `max_errors`: failed commands and refused recipients in a session
    /// before `421 4.7.0` and close. Greater than 0. Default 10.
    pub max_errors: u32,
    /// `auto_ban`: how long a client dropped for `max_errors` is then
    /// refused at connection. `None` (`"0s"`) disables bans. Default
    /// `"1h"`.
    pub auto_ban: Option<Duration>,
    /// `messages_per_hour_per_ip`: messages one client address may send
    /// in an hour (DMail's fromip_max); 0 = no limit (the default).
    pub messages_per_hour_per_ip: u64,
    /// `recipients_per_hour`: recipients an authenticated account (else a
    /// client address) may give in an hour (MailEnable); 0 = no limit.
    pub recipients_per_hour: u64,
    /// `messages_per_hour_per_recipient`: messages one local mailbox may
    /// receive in an hour (DMail); 0 = no limit.
    pub messages_per_hour_per_recipient: u64,
    /// `tarpit_start`: RCPT commands in a session before replies slow
    /// down; 0 = no tarpit (the default).
    pub tarpit_start: u32,
    /// `tarpit_delay`: added to each RCPT reply per recipient past
    /// `tarpit_start`. Default `"1s"`.
    pub tarpit_delay: Duration,
    /// `exempt`: client addresses with no rate limit and no tarpit
    /// (DMail's fromip_nolimit).
    pub exempt: IpList,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 2000,
            connections_per_ip: 20,
            max_errors: 10,
            auto_ban: Some(Duration::from_secs(3600)),
            messages_per_hour_per_ip: 0,
            recipients_per_hour: 0,
            messages_per_hour_per_recipient: 0,
            tarpit_start: 0,
            tarpit_delay: Duration::from_secs(1),
            exempt: IpList::new(),
        }
    }
}

/// `[greylist]`: new (client network, sender, recipient) triplets wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreylistConfig {
    /// `enabled`. Default false.
    pub enabled: bool,
    /// `delay`: how long a new triplet is refused (451 4.7.1). Default
    /// `"5m"`.
    pub delay: Duration,
    /// `pass_after`: how long a triplet that passed once is remembered.
    /// Default `"36d"`.
    pub pass_after: Duration,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            delay: Duration::from_secs(300),
            pass_after: Duration::from_secs(36 * 86_400),
        }
    }
}

/// `[verify]`: sender authentication (SPF, DKIM, DMARC) of inbound mail at
/// the end of DATA. Everything is off by default (no DNS query, no header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyConfig {
    /// `spf`. Default off.
    pub spf: SpfMode,
    /// `dkim`. Default off.
    pub dkim: DkimMode,
    /// `dmarc`. Default off.
    pub dmarc: DmarcMode,
}

impl VerifyConfig {
    /// Whether any check is on (and an Authentication-Results header due).
    pub fn is_active(&self) -> bool {
        self.spf != SpfMode::Off || self.dkim != DkimMode::Off || self.dmarc != DmarcMode::Off
    }

    /// Whether a result adds to the message score.
    pub fn scores(&self) -> bool {
        self.spf == SpfMode::Score || self.dkim == DkimMode::Score
    }
}

/// `[dkim_sign]`: mail from authenticated sessions whose From or MAIL FROM
/// domain is `domain` is DKIM-signed before it is queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimSignConfig {
    /// `domain` (the `d=` tag), lowercased. Required.
    pub domain: String,
    /// `selector` (the `s=` tag). Required.
    pub selector: String,
    /// `key`: the PEM file of the private key, relative to the
    /// configuration file's directory. Required.
    pub key_file: PathBuf,
    /// The key, read from `key_file` when the configuration was read.
    pub key: DkimKey,
}

/// A DKIM private key: its form and DER bytes (never shown by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub format: DkimKeyFormat,
    pub der: Vec<u8>,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DkimKey({:?}, {} bytes)", self.format, self.der.len())
    }
}

/// The forms of [`DkimKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DkimKeyFormat {
    /// `BEGIN RSA PRIVATE KEY` (PKCS#1).
    RsaPkcs1,
    /// `BEGIN PRIVATE KEY` (PKCS#8) holding an RSA key.
    RsaPkcs8,
    /// `BEGIN PRIVATE KEY` (PKCS#8) holding an Ed25519 key.
    Ed25519Pkcs8,
}

/// `verify.spf`: what the SPF result of MAIL FROM (of HELO for `<>`) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpfMode {
    /// No check.
    #[default]
    Off,
    /// The result in Authentication-Results only.
    Header,
    /// Also added to the message score.
    Score,
    /// A fail is refused (550 5.7.23) at the end of DATA.
    Reject,
}

/// `verify.dkim`: what the DKIM signatures' results do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DkimMode {
    /// No check.
    #[default]
    Off,
    /// The results in Authentication-Results only.
    Header,
    /// Also added to the message score.
    Score,
}

/// `verify.dmarc`: alignment and the From domain's policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DmarcMode {
    /// No check.
    #[default]
    Off,
    /// The result in Authentication-Results only.
    Header,
    /// Also the domain's policy: p=reject refused (550 5.7.1), p=quarantine
    /// tagged `X-Spam-Flag: YES`.
    Enforce,
}

/// `[store]`: where bans, counters, greylist triplets and POP-before-SMTP
/// addresses live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// `backend` (and `url` for Redis). Default embedded.
    pub backend: StoreBackend,
    /// `timeout`: how long one Redis command may take before the check is
    /// skipped (fail open). Default `"500ms"`.
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Embedded,
            timeout: Duration::from_millis(500),
        }
    }
}

/// `store.backend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// `"embedded"`: `data_dir/state.redb`.
    Embedded,
    /// `"redis"` at `store.url`: shared by several mxguard nodes.
    Redis { url: String },
}

/// `[sender]`: checks on the `MAIL FROM` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// `spoofing`: who may use a `MAIL FROM` address in a local domain.
    /// Default [`Spoofing::Anyone`].
    pub spoofing: Spoofing,
    /// `own_address_only`: when true (the default), an authenticated
    /// session's `MAIL FROM` must be the account's address, one of its
    /// aliases, or the null sender `<>`.
    pub own_address_only: bool,
    /// `verify_domain`: the return path's domain must be local, known to
    /// the router, or have an MX, A or AAAA record (RFC 2505 §2.9).
    /// Default true.
    pub verify_domain: bool,
    /// `unknown_domain_reply`: the reply when the return path's domain
    /// does not exist. Default `450 4.1.8 Sender address rejected: Domain
    /// not found`.
    pub unknown_domain_reply: Reply,
    /// `ban`: address patterns refused as `MAIL FROM` (`*` matches any
    /// run of characters), lowercased; a pattern without `@` is `*@` it.
    pub ban: Vec<String>,
    /// `exclude`: local parts refused from given client addresses.
    pub exclude: Vec<SenderExclude>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            spoofing: Spoofing::Anyone,
            own_address_only: true,
            verify_domain: true,
            unknown_domain_reply: Reply::fixed(
                450,
                4,
                1,
                8,
                "Sender address rejected: Domain not found",
            ),
            ban: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// One `sender.exclude` entry (Isode's sender-excludes): a `MAIL FROM`
/// whose local part matches `local_part` is refused from `hosts`.
#[derive(Clone, Debug)]
pub struct SenderExclude {
    pub hosts: IpList,
    pub local_part: regex::Regex,
}

impl PartialEq for SenderExclude {
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts && self.local_part.as_str() == other.local_part.as_str()
    }
}

impl Eq for SenderExclude {}

/// `[recipient]`: checks on `RCPT TO` addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientConfig {
    /// `ban`: address patterns refused as recipients, like `sender.ban`.
    pub ban: Vec<String>,
    /// `max_per_message`: recipients one transaction may have (more get
    /// 452 4.5.3). Default 1000; RFC 5321 §4.5.3.1.8 asks for at least 100.
    pub max_per_message: usize,
}

impl Default for RecipientConfig {
    fn default() -> Self {
        RecipientConfig {
            ban: Vec::new(),
            max_per_message: 1000,
        }
    }
}

/// `[router]`: the router table (SPEC §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// `file`: where the table was read from (relative paths are relative
    /// to the configuration's directory).
    pub file: Option<PathBuf>,
    /// The table, in file order; empty without `file`.
    pub records: Arc<RouterTable>,
    /// `spamtrap_ban`: how long a client that sends to a spam trap is
    /// refused; `None` (`"0s"`) bans no one. Default one hour.
    pub spamtrap_ban: Option<Duration>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            file: None,
            records: Arc::new(RouterTable::default()),
            spamtrap_ban: Some(Duration::from_secs(3600)),
        }
    }
}

/// One `[[filter]]`: a content rule, judged at the end of DATA on what got
/// past the connection, sender and recipient checks.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterRule {
    /// `name`: letters, digits, `_`, `-` and `.`; used in logs and in
    /// `X-Spam-Status`. Required, unique.
    pub name: String,
    /// What the rule looks at and when it fires: a pattern, or a program.
    pub test: FilterTest,
    /// `score`: added to the message score when the rule fires. Any finite
    /// number, negative allowed. Default 0.
    pub score: f64,
    /// `action` (and `reply`): what happens when the rule fires. Default
    /// [`FilterAction::Accept`]. For an `execute` rule the program decides,
    /// and this holds the reply of its plain "reject" (exit code 1).
    pub action: FilterAction,
    /// `after_accept = true` (execute rules only): the program runs after
    /// the 250, before delivery; a refusal then becomes a bounce to the
    /// sender. Default false.
    pub after_accept: bool,
}

impl FilterRule {
    /// What a pattern rule looks at (None for a program).
    pub fn target(&self) -> Option<&FilterTarget> {
        match &self.test {
            FilterTest::Match { target, .. } => Some(target),
            FilterTest::Execute(_) => None,
        }
    }

    /// When a pattern rule fires (None for a program).
    pub fn condition(&self) -> Option<&FilterCondition> {
        match &self.test {
            FilterTest::Match { condition, .. } => Some(condition),
            FilterTest::Execute(_) => None,
        }
    }

    /// The program of an `execute` rule.
    pub fn program(&self) -> Option<&FilterProgram> {
        match &self.test {
            FilterTest::Execute(p) => Some(p),
            FilterTest::Match { .. } => None,
        }
    }
}

/// How a `[[filter]]` decides whether it fires.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterTest {
    /// `header = "NAME"` or `on = "..."`, with `matches` or `missing`.
    Match {
        /// What the rule looks at.
        target: FilterTarget,
        /// `matches = 'regex'` or `missing = true`.
        condition: FilterCondition,
    },
    /// `execute = ["/path/prog", "arg"...]`: a program judges the message.
    Execute(FilterProgram),
}

/// An external filter program (`execute`, `timeout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterProgram {
    /// The program's absolute path, then its arguments. Run directly, no
    /// shell.
    pub argv: Vec<String>,
    /// `timeout`: how long the program may take, reading included; then it
    /// is killed (with its process group). Default 30s.
    pub timeout: Duration,
    /// `max_running`: at most this many copies of the program run at once
    /// (for this rule); a message waits for a free one within `timeout`.
    /// Default 20.
    pub max_running: usize,
}

/// The default `max_running` of an `execute` filter.
pub const DEFAULT_FILTER_MAX_RUNNING: usize = 20;

/// The default `timeout` of an `execute` filter.
pub const DEFAULT_FILTER_TIMEOUT: Duration = Duration::from_secs(30);

/// `[rspamd]`: an rspamd scanner asked about each message at the end of
/// DATA (HTTP `/checkv2`); its score joins the message score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RspamdConfig {
    /// `url`: the base URL of rspamd's normal worker, `http://host:port`
    /// (a path prefix is kept). Required.
    pub url: String,
    /// The host and port of `url`, for the connection.
    pub host: String,
    pub port: u16,
    /// The path prefix of `url` without its trailing `/` (usually empty).
    pub path: String,
    /// `timeout`: connection, request and answer together. Default 5s;
    /// past it the message flows without rspamd's score (logged).
    pub timeout: Duration,
    /// `max_size`: larger messages are not sent (rspamd's own default
    /// limit is far above; spam is small). Default 2 MiB.
    pub max_size: u64,
}

/// What a `[[filter]]` looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterTarget {
    /// `header = "NAME"`: every occurrence of that header field (name
    /// compared without case), its value decoded per RFC 2047.
    Header(String),
    /// `on = "subject"`: the Subject: header, decoded.
    Subject,
    /// `on = "from"`: the From: header, decoded.
    From,
    /// `on = "body"`: the body as text: every text part, whatever its
    /// transfer encoding, and the text of HTML parts without the tags.
    Body,
    /// `on = "envelope_from"`: the `MAIL FROM` address (`""` for `<>`).
    EnvelopeFrom,
    /// `on = "envelope_to"`: each recipient address.
    EnvelopeTo,
    /// `on = "client_ip"`: the client's IP address, as text.
    ClientIp,
    /// `on = "helo"`: the HELO/EHLO name.
    Helo,
}

impl FilterTarget {
    /// The `on` values, in the order of the documentation.
    pub const ON_VALUES: [(&'static str, FilterTarget); 7] = [
        ("subject", FilterTarget::Subject),
        ("from", FilterTarget::From),
        ("body", FilterTarget::Body),
        ("envelope_from", FilterTarget::EnvelopeFrom),
        ("envelope_to", FilterTarget::EnvelopeTo),
        ("client_ip", FilterTarget::ClientIp),
        ("helo", FilterTarget::Helo),
    ];
}

/// When a `[[filter]]` fires.
#[derive(Clone, Debug)]
pub enum FilterCondition {
    /// `matches`: a regular expression (compiled when the configuration is
    /// read), found in any occurrence of the target.
    Matches(regex::Regex),
    /// `missing = true`: the header is absent (for envelope parts and the
    /// body: empty).
    Missing,
}

impl PartialEq for FilterCondition {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FilterCondition::Matches(a), FilterCondition::Matches(b)) => a.as_str() == b.as_str(),
            (FilterCondition::Missing, FilterCondition::Missing) => true,
            _ => false,
        }
    }
}

/// What a `[[filter]]` does when it fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterAction {
    /// `"accept"`: only the score counts.
    Accept,
    /// `"reject"`: refused at the end of DATA with `reply` (default
    /// `550 5.7.1 Message rejected`); no later rule runs.
    Reject(Reply),
    /// `"discard"`: `250` to the client, delivered nowhere (logged); no
    /// later rule runs.
    Discard,
    /// `"redirect:ADDR"`: every recipient is replaced by ADDR (lowercased).
    Redirect(String),
    /// `"header:NAME: VALUE"`: the header is added to the message.
    AddHeader {
        /// The field name, as written.
        name: String,
        /// The value, printable ASCII.
        value: String,
    },
}

/// The default `reply` of a `[[filter]]` with `action = "reject"`.
pub const DEFAULT_FILTER_REPLY: &str = "550 5.7.1 Message rejected";

/// `[scoring]`: the message score is the connection-stage score (DNSBL
/// zones with a score, `access.ptr = "score"`) plus the scores of the
/// `[[filter]]` rules that fired.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoringConfig {
    /// `tag_above`: a score above this adds `X-Spam-Flag: YES`. Default 5.0.
    pub tag_above: f64,
    /// `reject_above`: a score above this is refused at the end of DATA.
    /// Default 10.0.
    pub reject_above: f64,
    /// `headers`: `X-Spam-Score` and `X-Spam-Status` on every accepted
    /// message (when `active`). Default true.
    pub headers: bool,
    /// Whether anything in the configuration can score a message: a
    /// `[[filter]]`, a `[[dnsbl]]` with a score, `access.ptr = "score"`,
    /// or a `[scoring]` section. When false, no message is scored and
    /// none gets a header: a configuration without any of these leaves
    /// messages as they were.
    pub active: bool,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            tag_above: 5.0,
            reject_above: 10.0,
            headers: true,
            active: false,
        }
    }
}

/// `sender.spoofing`: who may send with a `MAIL FROM` address in a local
/// domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Spoofing {
    /// `"anyone"`: any client (no check).
    #[default]
    Anyone,
    /// `"authenticated-only"`: only authenticated sessions.
    AuthenticatedOnly,
    /// `"authorized-only"`: authenticated sessions, or clients in
    /// `relay.clients` (or `relay.clients_file`).
    AuthorizedOnly,
}

impl Spoofing {
    /// Every value, in the order of the documentation.
    pub const ALL: [Spoofing; 3] = [
        Spoofing::Anyone,
        Spoofing::AuthenticatedOnly,
        Spoofing::AuthorizedOnly,
    ];

    /// The name used in the configuration file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Spoofing::Anyone => "anyone",
            Spoofing::AuthenticatedOnly => "authenticated-only",
            Spoofing::AuthorizedOnly => "authorized-only",
        }
    }
}

impl std::fmt::Display for Spoofing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[account]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// `address`: the account's address, lowercased; its domain is in
    /// `domains.local`. Required.
    pub address: String,
    /// `aliases`: more addresses delivered to this account, lowercased, each
    /// in a local domain. Default: none.
    pub aliases: Vec<String>,
    /// `password`: what the account logs in with. `None` (the default):
    /// it cannot log in.
    pub password: Option<Secret>,
    /// `relay`: after authenticating, the account may send mail to any
    /// domain. Default false.
    pub relay: bool,
    /// `mobile`: after a POP3 login, mail from the client's address may be
    /// relayed for a while (POP-before-SMTP). Default false.
    pub mobile: bool,
}

/// An account's `password`, as written in the configuration. Its `Debug`
/// never shows the secret (nor the hash).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// An argon2 hash in PHC form (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`),
    /// checked to be well-formed when the configuration was read.
    Argon2(String),
    /// A password in plain text (accepted, with a warning).
    Plain(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Argon2(_) => f.write_str("Secret::Argon2(<hidden>)"),
            Secret::Plain(_) => f.write_str("Secret::Plain(<hidden>)"),
        }
    }
}

/// `[tls]`: the certificate and key the server presents, for STARTTLS and
/// the implicit-TLS listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `certificate`: the PEM file of the certificate chain, server
    /// certificate first; relative to the configuration file's directory.
    /// Required; it was readable when the configuration was read (its
    /// content is checked when the server loads it).
    pub certificate: PathBuf,
    /// `key`: the PEM file of the private key (PKCS#8, PKCS#1 or SEC1),
    /// relative to the configuration file's directory. Required, readable.
    pub key: PathBuf,
    /// `allow_plaintext_auth`: when true, AUTH (and POP3 USER/PASS) is also
    /// offered on connections that are not encrypted. Default false.
    pub allow_plaintext_auth: bool,
}

/// `[dns]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// `nameservers`: the servers every query goes to (`"ip"` means port
    /// 53). Empty (the default) means the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// `timeout`: how long to wait for an answer. Default `"3s"`.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// `[smtp]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `vrfy`: how VRFY is answered. Default [`VrfyMode::Ambiguous`].
    pub vrfy: VrfyMode,
    /// `expn`: how EXPN is answered. Default [`ExpnMode::Off`].
    pub expn: ExpnMode,
    /// `timeouts.command`: how long to wait for the next command. Default
    /// `"5m"`.
    pub command_timeout: Duration,
    /// `timeouts.data`: how long to wait for more of the message during
    /// DATA. Default `"10m"`.
    pub data_timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            vrfy: VrfyMode::Ambiguous,
            expn: ExpnMode::Off,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
        }
    }
}

/// `smtp.vrfy`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrfyMode {
    /// `"ambiguous"`: `252`, neither confirming nor denying (RFC 2505 §2.11).
    Ambiguous,
    /// `"off"`: `502`, command not implemented.
    Off,
    /// `"on"`: tells whether the address exists.
    On,
}

impl VrfyMode {
    /// The name used in the configuration file.
    pub fn as_str(&self) -> &'static str {
        match self {
            VrfyMode::Ambiguous => "ambiguous",
            VrfyMode::Off => "off",
            VrfyMode::On => "on",
        }
    }
}

/// `smtp.expn`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpnMode {
    /// `"off"`: `502`, command not implemented.
    Off,
    /// `"on"`: expands the address.
    On,
}

impl ExpnMode {
    /// The name used in the configuration file.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExpnMode::Off => "off",
            ExpnMode::On => "on",
        }
    }
}

impl Config {
    /// Reads and parses the file at `path`. An error reading it names the
    /// file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Config::parse(&text, path),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let bytes = e.as_bytes();
                // The prefix up to `valid` is valid UTF-8 by definition.
                let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or("");
                let (line, column) = locate::line_col(prefix, prefix.len());
                Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    column,
                    key: "(file)".to_string(),
                    message: "the file is not valid UTF-8".to_string(),
                })
            }
        }
    }

    /// Parses `text`, the content of the file `path` (used in error
    /// messages and kept in [`Config::path`]).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        resolved::parse(text, path)
    }

    /// Whether `domain` is one of `domains.local` (case-insensitive; a
    /// trailing dot is ignored).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.local_set.contains(&domain.to_lowercase())
    }

    /// The account that `address` (its address or one of its aliases)
    /// belongs to, case-insensitive.
    pub fn account_for(&self, address: &str) -> Option<&Account> {
        let index = *self.account_index.get(&address.to_lowercase())?;
        self.accounts.get(index)
    }

    /// The catchall address of `domain` (case-insensitive), or `None` when
    /// it has none or `domains.disable_catchalls` is true.
    pub fn catchall_for(&self, domain: &str) -> Option<&str> {
        if self.domains.disable_catchalls {
            return None;
        }
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.domains
            .catchall
            .get(&domain.to_lowercase())
            .map(String::as_str)
    }

    /// Whether `domain` is one of `domains.relay_to` (case-insensitive; a
    /// trailing dot is ignored): mail to it is accepted from anyone and
    /// relayed on.
    pub fn is_relay_to_domain(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.relay_to_set.contains(&domain.to_lowercase())
    }

    /// The next hop of `relay.routes` for `domain` (case-insensitive; a
    /// trailing dot is ignored; no match on parent domains).
    pub fn route_for(&self, domain: &str) -> Option<&NextHop> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.relay.routes.get(&domain.to_lowercase())
    }

    /// Whether `domain` (the domain of a `MAIL FROM` address) is one of
    /// `relay.forward_from` (case-insensitive; a trailing dot is ignored;
    /// no match on subdomains): mail from it may be relayed from any
    /// client.
    pub fn is_forward_from_domain(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.forward_from_set.contains(&domain.to_lowercase())
    }

    /// Whether a client at `ip` is in `relay.clients` (or
    /// `relay.clients_file`), and so may relay to any domain.
    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        self.relay.clients.contains(ip)
    }

    /// Whether a client at `ip` is in `access.blacklist` (or
    /// `access.blacklist_file`) and not whitelisted: the whitelist wins.
    pub fn is_blacklisted(&self, ip: IpAddr) -> bool {
        self.access.blacklist.contains(ip) && !self.access.whitelist.contains(ip)
    }

    /// Whether a client at `ip` is in `access.whitelist` (or
    /// `access.whitelist_file`): exempt from the blacklist, the DNSBLs, the
    /// PTR and EHLO checks, the early talker check, the connection limits
    /// and bans.
    pub fn is_whitelisted(&self, ip: IpAddr) -> bool {
        self.access.whitelist.contains(ip)
    }

    /// Things that are valid but probably not what the administrator wants,
    /// for `mxguard check-config`, formatted like errors
    /// (`file:line:column: key: message`).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

//! Table-driven tests of mxguard-config: the sample parses, each bad input
//! gives the expected `file:line:column: key: message`, lookups ignore case,
//! and no input makes the parser panic.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mxguard_config::{
    AccessConfig, Config, ConfigError, DnsblConfig, ExpnMode, IpList, LimitsConfig, NextHop,
    PtrMode, QueueConfig, Reply, Role, SenderConfig, Spoofing, VrfyMode,
};

/// The example of the specification, restricted to what this version
/// supports.
const SAMPLE: &str = r#"
[server]
hostname = "mx.example.test"          # banner, EHLO reply, Received, Message-ID
data_dir = "./data"                   # queue/, state store, mail/ (Maildirs)
banner = "%LOCALDOMAIN% ESMTP ready %TIME%"
max_message_size = "25MB"
hide_client_ip = false

[[listener]]
address = "0.0.0.0:25"
role = "mx"

[[listener]]
address = "[::1]:2525"
role = "mx"

[dns]
nameservers = ["127.0.0.1:5353", "::1", "192.0.2.1"]
timeout = "3s"

[domains]
local = ["example.test", "Other.Test"]
catchall = { "example.test" = "postmaster@example.test" }
disable_catchalls = false
relay_to = ["backup.test", "Relay.Test"]

[[account]]
address = "alice@example.test"
aliases = ["al@example.test", "Alice@Other.Test"]

[[account]]
address = "Postmaster@Example.Test"

[smtp]
vrfy = "ambiguous"
expn = "off"
timeouts = { command = "5m", data = "10m" }

[relay]
clients = ["127.0.0.1", "10.0.0.0/8", "192.168.1.10-192.168.1.99", "2001:db8::/64"]
clients_file = "tests/data/clients.txt"
smarthost = "mail.isp.test:587"
routes = { "backup.test" = "10.0.0.5:25", "Inner.Test" = "[10.0.0.6]", "v6.test" = "[2001:db8::7]:2525" }
mx_port = 2525

[queue]
retry = ["5m", "15m", "30m", "1h", "2h", "4h"]
max_age = "5d"
delay_warning = "4h"

[access]
blacklist = ["203.0.113.0/24", "2001:db8:bad::/48"]
blacklist_file = "tests/data/blacklist.txt"
whitelist = ["192.0.2.25", "2001:db8:900d::1"]
whitelist_file = ""
reject_reply = "554 5.7.1 Access denied"
ptr = "score"
ptr_score = 1.5
ehlo_block = ["ylmf-pc", "Spam.Test"]
early_talker = "1s"

[[dnsbl]]
zone = "bl.example.net"
match = ["127.0.0.2-127.0.0.255"]
reply = "554 5.7.1 Service unavailable; [%IP%] listed at %ZONE%"
score = 0

[[dnsbl]]
zone = "Score.Example.NET."
score = 2.5

[limits]
max_connections = 2000
connections_per_ip = 20
max_errors = 10
auto_ban = "1h"

[sender]
spoofing = "authorized-only"
own_address_only = true
"#;

/// The smallest valid configuration.
const MINIMAL: &str = r#"
[server]
hostname = "mx.example.test"

[[listener]]
address = "127.0.0.1:2525"
role = "mx"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("mxguard.toml"))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn sample_parses() {
    let config = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, PathBuf::from("mxguard.toml"));
    assert_eq!(config.server.hostname, "mx.example.test");
    assert_eq!(config.server.data_dir, PathBuf::from("./data"));
    assert_eq!(
        config.server.banner.as_deref(),
        Some("%LOCALDOMAIN% ESMTP ready %TIME%")
    );
    assert_eq!(config.server.max_message_size, 25_000_000);
    assert!(!config.server.hide_client_ip);

    assert_eq!(config.listeners.len(), 2);
    assert_eq!(
        config.listeners[0].address,
        "0.0.0.0:25".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.listeners[0].role, Role::Mx);
    assert_eq!(
        config.listeners[1].address,
        "[::1]:2525".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(Role::Mx.as_str(), "mx");
    assert_eq!(Role::Submission.as_str(), "submission");

    assert_eq!(
        config.dns.nameservers,
        vec![
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
        ]
    );
    assert_eq!(config.dns.timeout, Duration::from_secs(3));

    assert_eq!(config.domains.local, vec!["example.test", "other.test"]);
    assert_eq!(
        config
            .domains
            .catchall
            .get("example.test")
            .map(String::as_str),
        Some("postmaster@example.test")
    );
    assert!(!config.domains.disable_catchalls);

    assert_eq!(config.accounts.len(), 2);
    assert_eq!(config.accounts[0].address, "alice@example.test");
    assert_eq!(
        config.accounts[0].aliases,
        vec!["al@example.test", "alice@other.test"]
    );
    assert_eq!(config.accounts[1].address, "postmaster@example.test");
    assert!(config.accounts[1].aliases.is_empty());

    assert_eq!(config.smtp.vrfy, VrfyMode::Ambiguous);
    assert_eq!(config.smtp.expn, ExpnMode::Off);
    assert_eq!(config.smtp.command_timeout, Duration::from_secs(300));
    assert_eq!(config.smtp.data_timeout, Duration::from_secs(600));

    assert_eq!(config.domains.relay_to, vec!["backup.test", "relay.test"]);
    assert_eq!(config.relay.mx_port, 2525);
    assert_eq!(
        config.relay.clients_file,
        Some(PathBuf::from("tests/data/clients.txt"))
    );
    // 4 entries in the file and 4 in the configuration, none merged.
    assert_eq!(config.relay.clients.len(), 8);
    assert_eq!(config.relay.smarthost, Some(hop("mail.isp.test", 587)));
    let routes: BTreeMap<String, NextHop> = [
        ("backup.test".to_string(), hop("10.0.0.5", 25)),
        ("inner.test".to_string(), hop("10.0.0.6", 2525)),
        ("v6.test".to_string(), hop("2001:db8::7", 2525)),
    ]
    .into_iter()
    .collect();
    assert_eq!(config.relay.routes, routes);
    assert_eq!(config.queue, QueueConfig::default());
    assert_eq!(
        config.queue.retry,
        [5 * 60, 15 * 60, 30 * 60, 3600, 7200, 14400].map(Duration::from_secs)
    );
    assert_eq!(config.queue.max_age, Duration::from_secs(5 * 86400));
    assert_eq!(
        config.queue.delay_warning,
        Some(Duration::from_secs(4 * 3600))
    );

    assert_eq!(config.sender.spoofing, Spoofing::AuthorizedOnly);
    assert!(config.sender.own_address_only);

    assert_eq!(config.warnings(), Vec::<String>::new());
}

fn hop(host: &str, port: u16) -> NextHop {
    NextHop {
        host: host.to_string(),
        port,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn defaults() {
    let config = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.data_dir, PathBuf::from("./data"));
    assert_eq!(config.server.banner, None);
    assert_eq!(config.server.max_message_size, 25_000_000);
    assert!(!config.server.hide_client_ip);
    assert!(config.domains.local.is_empty());
    assert!(config.domains.catchall.is_empty());
    assert!(!config.domains.disable_catchalls);
    assert!(config.accounts.is_empty());
    assert!(config.dns.nameservers.is_empty());
    assert_eq!(config.dns.timeout, Duration::from_secs(3));
    assert_eq!(config.smtp.vrfy, VrfyMode::Ambiguous);
    assert_eq!(config.smtp.expn, ExpnMode::Off);
    assert_eq!(config.smtp.command_timeout, Duration::from_secs(300));
    assert_eq!(config.smtp.data_timeout, Duration::from_secs(600));
    assert!(config.domains.relay_to.is_empty());
    assert!(config.relay.clients.is_empty());
    assert_eq!(config.relay.clients_file, None);
    assert_eq!(config.relay.smarthost, None);
    assert!(config.relay.routes.is_empty());
    assert_eq!(config.relay.mx_port, 25);
    assert_eq!(config.queue.retry.len(), 6);
    assert_eq!(config.queue.retry[0], Duration::from_secs(300));
    assert_eq!(config.queue.retry[5], Duration::from_secs(4 * 3600));
    assert_eq!(config.queue.retry_after(1), Duration::from_secs(300));
    assert_eq!(config.queue.retry_after(6), Duration::from_secs(4 * 3600));
    assert_eq!(config.queue.retry_after(60), Duration::from_secs(4 * 3600));
    assert_eq!(config.queue.max_age, Duration::from_secs(5 * 86400));
    assert_eq!(
        config.queue.delay_warning,
        Some(Duration::from_secs(4 * 3600))
    );
    assert!(!config.is_relay_client(ip("127.0.0.1")));
    assert!(config.route_for("example.test").is_none());
    assert!(!config.is_relay_to_domain("example.test"));
    assert!(config.relay.relay_for_clients_only);
    assert!(config.relay.forward_from.is_empty());
    assert_eq!(config.relay.pop_before_smtp, Some(Duration::from_secs(120)));
    assert_eq!(config.relay.pop_before_smtp_max, 10_000);
    assert!(!config.is_forward_from_domain("example.test"));
    assert!(config.domains.domain_literals);
    assert!(config.domains.literal_addresses.is_empty());
    assert_eq!(config.sender, SenderConfig::default());
    assert_eq!(config.sender.spoofing, Spoofing::Anyone);
    assert!(config.sender.own_address_only);
}

#[test]
fn other_accepted_forms() {
    type Check = dyn Fn(&Config) -> bool;
    let cases: &[(&str, &Check)] = &[
        // A relative data_dir stays relative; an absolute one stays absolute.
        (
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"spool/mx\"\n",
            &|c| c.server.data_dir == Path::new("spool/mx"),
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"/var/lib/mxguard\"\n",
            &|c| c.server.data_dir == Path::new("/var/lib/mxguard"),
        ),
        // Sizes: an integer is bytes, binary units, case-insensitive.
        (
            "[server]\nhostname = \"mx.example.test\"\nmax_message_size = 1048576\n",
            &|c| c.server.max_message_size == 1_048_576,
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\nmax_message_size = \"10mib\"\n",
            &|c| c.server.max_message_size == 10 * 1_048_576,
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\nhide_client_ip = true\n",
            &|c| c.server.hide_client_ip,
        ),
        // [smtp.timeouts] as a table, one key only.
        ("[smtp.timeouts]\ndata = \"1h\"\n", &|c| {
            c.smtp.data_timeout == Duration::from_secs(3600)
                && c.smtp.command_timeout == Duration::from_secs(300)
        }),
        ("[smtp]\nvrfy = \"off\"\nexpn = \"on\"\n", &|c| {
            c.smtp.vrfy == VrfyMode::Off && c.smtp.expn == ExpnMode::On
        }),
        ("[smtp]\nvrfy = \"on\"\n", &|c| c.smtp.vrfy == VrfyMode::On),
        ("[dns]\ntimeout = \"500ms\"\n", &|c| {
            c.dns.timeout == Duration::from_millis(500)
        }),
        // Dotted keys.
        ("[smtp]\ntimeouts.command = \"30s\"\n", &|c| {
            c.smtp.command_timeout == Duration::from_secs(30)
        }),
        // Port 0 (a free port chosen by the system) may appear twice.
        (
            "[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n",
            &|c| c.listeners.len() == 2,
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:587\"\nrole = \"submission\"\n",
            &|c| c.listeners[1].role == Role::Submission,
        ),
    ];
    for (extra, check) in cases {
        // MINIMAL's [server] would clash with one in `extra`.
        let text = if extra.starts_with("[server]") {
            format!("{extra}\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n")
        } else {
            format!(
                "{}{extra}",
                MINIMAL.replace("127.0.0.1:2525", "127.0.0.1:0")
            )
        };
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(check(&config), "{text}");
    }
}

#[test]
fn lookups_ignore_case() {
    let config = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    for domain in [
        "example.test",
        "EXAMPLE.TEST",
        "Other.test",
        "example.test.",
    ] {
        assert!(config.is_local_domain(domain), "{domain}");
    }
    for domain in ["example.org", "", "test", "sub.example.test"] {
        assert!(!config.is_local_domain(domain), "{domain}");
    }
    for (address, owner) in [
        ("alice@example.test", "alice@example.test"),
        ("ALICE@EXAMPLE.TEST", "alice@example.test"),
        ("Al@Example.Test", "alice@example.test"),
        ("alice@other.test", "alice@example.test"),
        ("postmaster@EXAMPLE.test", "postmaster@example.test"),
    ] {
        assert_eq!(
            config.account_for(address).map(|a| a.address.as_str()),
            Some(owner),
            "{address}"
        );
    }
    for address in ["bob@example.test", "alice", "", "alice@example.org"] {
        assert!(config.account_for(address).is_none(), "{address}");
    }
    assert_eq!(
        config.catchall_for("Example.TEST"),
        Some("postmaster@example.test")
    );
    assert_eq!(config.catchall_for("other.test"), None);
    assert_eq!(config.catchall_for("example.org"), None);

    let disabled = SAMPLE.replace("disable_catchalls = false", "disable_catchalls = true");
    let config = parse(&disabled).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.catchall_for("example.test"), None);
    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("catchalls are configured but ignored"))
    );
}

/// Replaces `from` by `to` in the sample, and expects an error starting with
/// `mxguard.toml:LINE:COLUMN: KEY: ` and containing `message`.
#[test]
fn errors_in_the_sample() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // Unknown keys and sections.
        (
            "hostname = \"mx.example.test\"",
            "hostnam = \"mx.example.test\"",
            "3:1: server.hostnam",
            "unknown key (expected one of: hostname, data_dir, banner, max_message_size, hide_client_ip)",
        ),
        (
            "[dns]",
            "[rspamd]\nurl = \"https://127.0.0.1:11333\"\n[dns]",
            "18:7: rspamd.url",
            "expected a URL like \"http://127.0.0.1:11333\", got \"https://127.0.0.1:11333\": only http://",
        ),
        (
            "[dns]",
            "[rspamd]\ntimeout = \"1s\"\n[dns]",
            "17:1: rspamd.url",
            "missing required key",
        ),
        (
            "[dns]",
            "[rspamd]\nurl = \"http://[::1]:11333\"\ntimeout = \"10m\"\n[dns]",
            "19:11: rspamd.timeout",
            "expected more than 0 and at most 300s",
        ),
        (
            "[dns]",
            "[rspamd]\nurl = \"http://127.0.0.1:0\"\n[dns]",
            "18:7: rspamd.url",
            "bad port \"0\"",
        ),
        (
            "[dns]",
            "[verify]\nspf = \"strict\"\n[dns]",
            "18:7: verify.spf",
            "expected one of: off, header, score, reject, got \"strict\"",
        ),
        (
            "[dns]",
            "[verify]\ndmarc = \"reject\"\n[dns]",
            "18:9: verify.dmarc",
            "expected one of: off, header, enforce, got \"reject\"",
        ),
        (
            "[dns]",
            "[verify]\nspf = \"header\"\narc = \"header\"\n[dns]",
            "19:1: verify.arc",
            "unknown key (expected one of: spf, dkim, dmarc)",
        ),
        (
            "hide_client_ip = false",
            "hide_client_ip = false\nadmin_password = \"x\"",
            "8:1: server.admin_password",
            "not supported by this version of mxguard",
        ),
        (
            "aliases = [",
            "passwd = \"secret\"\naliases = [",
            "29:1: account[0].passwd",
            "unknown key (expected one of: address, aliases, password, relay, mobile)",
        ),
        (
            "expn = \"off\"",
            "etrn = \"off\"",
            "36:1: smtp.etrn",
            "not supported by this version of mxguard",
        ),
        (
            "command = \"5m\"",
            "comand = \"5m\"",
            "37:14: smtp.timeouts.comand",
            "unknown key (expected one of: command, data)",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"",
            "role = \"mx\"\n\n[[listener]]\nport = 2525\naddress = \"[::1]:2525\"",
            "14:1: listener[1].port",
            "unknown key (expected one of: address, role)",
        ),
        // Bad values.
        (
            "\"25MB\"",
            "\"25XB\"",
            "6:20: server.max_message_size",
            "expected a size like \"25MB\", got \"25XB\"",
        ),
        (
            "max_message_size = \"25MB\"",
            "max_message_size = \"0\"",
            "6:20: server.max_message_size",
            "must be greater than 0",
        ),
        (
            "max_message_size = \"25MB\"",
            "max_message_size = -1",
            "6:20: server.max_message_size",
            "expected a size like \"25MB\", got -1",
        ),
        (
            "timeout = \"3s\"",
            "timeout = \"3 seconds\"",
            "19:11: dns.timeout",
            "expected a duration like \"5m\" (units ms, s, m, h, d), got \"3 seconds\"",
        ),
        (
            "timeout = \"3s\"",
            "timeout = 3",
            "19:11: dns.timeout",
            "a bare number is ambiguous",
        ),
        (
            "timeout = \"3s\"",
            "timeout = \"0s\"",
            "19:11: dns.timeout",
            "must be greater than 0",
        ),
        (
            "command = \"5m\"",
            "command = \"5 minutes\"",
            "37:24: smtp.timeouts.command",
            "expected a duration like \"5m\" (units ms, s, m, h, d), got \"5 minutes\"",
        ),
        (
            "data = \"10m\"",
            "data = \"0ms\"",
            "37:37: smtp.timeouts.data",
            "must be greater than 0",
        ),
        (
            "hide_client_ip = false",
            "hide_client_ip = \"no\"",
            "7:18: server.hide_client_ip",
            "expected a boolean (true or false), got string \"no\"",
        ),
        (
            "hostname = \"mx.example.test\"",
            "hostname = 42",
            "3:12: server.hostname",
            "expected a string, got integer `42`",
        ),
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"mx example\"",
            "3:12: server.hostname",
            "expected a domain name like \"example.test\", got \"mx example\"",
        ),
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"\"",
            "3:12: server.hostname",
            "it is empty",
        ),
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"192.0.2.1\"",
            "3:12: server.hostname",
            "an IP address is not a domain name",
        ),
        (
            "banner = \"%LOCALDOMAIN% ESMTP ready %TIME%\"",
            "banner = \"hello\\r\\n250 fake\"",
            "5:10: server.banner",
            "expected printable ASCII on one line",
        ),
        (
            "banner = \"%LOCALDOMAIN% ESMTP ready %TIME%\"",
            "banner = \"\"",
            "5:10: server.banner",
            "must not be empty",
        ),
        (
            "data_dir = \"./data\"",
            "data_dir = \"\"",
            "4:12: server.data_dir",
            "expected a directory",
        ),
        (
            "address = \"0.0.0.0:25\"",
            "address = \"0.0.0.0\"",
            "10:11: listener[0].address",
            "expected an IP address and port like \"0.0.0.0:25\" or \"[::1]:2525\", got \"0.0.0.0\"",
        ),
        (
            "address = \"0.0.0.0:25\"",
            "address = \"localhost:25\"",
            "10:11: listener[0].address",
            "expected an IP address and port",
        ),
        (
            "address = \"[::1]:2525\"",
            "address = \"0.0.0.0:25\"",
            "14:11: listener[1].address",
            "0.0.0.0:25 is already used by listener[0] (line 9)",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"admin\"",
            "15:8: listener[1].role",
            "role \"admin\" is not supported by this version of mxguard (supported: mx, submission, submissions, pop3, pop3s)",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"submissions\"",
            "15:8: listener[1].role",
            "role \"submissions\" speaks TLS from the first byte and needs a [tls] section (certificate and key)",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"pop3s\"",
            "15:8: listener[1].role",
            "role \"pop3s\" speaks TLS from the first byte and needs a [tls] section",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"MX\"",
            "15:8: listener[1].role",
            "expected one of: mx, submission, submissions, pop3, pop3s, got \"MX\"",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"",
            "13:1: listener[1].role",
            "missing required key",
        ),
        (
            "\"127.0.0.1:5353\", ",
            "\"dns.google\", ",
            "18:16: dns.nameservers[0]",
            "expected an IP address, with an optional port",
        ),
        (
            "\"127.0.0.1:5353\", ",
            "\"127.0.0.1:0\", ",
            "18:16: dns.nameservers[0]",
            "port 0",
        ),
        (
            "vrfy = \"ambiguous\"",
            "vrfy = \"yes\"",
            "35:8: smtp.vrfy",
            "expected one of: ambiguous, off, on, got \"yes\"",
        ),
        (
            "expn = \"off\"",
            "expn = \"ambiguous\"",
            "36:8: smtp.expn",
            "expected one of: off, on, got \"ambiguous\"",
        ),
        (
            "timeouts = { command = \"5m\", data = \"10m\" }",
            "timeouts = 5",
            "37:12: smtp.timeouts",
            "expected a table ([smtp.timeouts]), got an integer",
        ),
        (
            "local = [\"example.test\", \"Other.Test\"]",
            "local = \"example.test\"",
            "22:9: domains.local",
            "expected an array, got string \"example.test\"",
        ),
        (
            "\"Other.Test\"]",
            "\"other..test\"]",
            "22:26: domains.local[1]",
            "empty label",
        ),
        (
            "\"Other.Test\"]",
            "\"EXAMPLE.test\"]",
            "22:26: domains.local[1]",
            "\"example.test\" is listed twice (also domains.local[0])",
        ),
        // Cross-checks.
        (
            "address = \"alice@example.test\"",
            "address = \"alice@example.org\"",
            "28:11: account[0].address",
            "the domain \"example.org\" of \"alice@example.org\" is not in domains.local",
        ),
        (
            "address = \"alice@example.test\"",
            "address = \"alice\"",
            "28:11: account[0].address",
            "expected an address like \"alice@example.test\", got \"alice\"",
        ),
        (
            "address = \"alice@example.test\"",
            "address = \"al ice@example.test\"",
            "28:11: account[0].address",
            "' ' is not allowed before the @",
        ),
        (
            "\"Alice@Other.Test\"",
            "\"alice@nowhere.test\"",
            "29:31: account[0].aliases[1]",
            "is not in domains.local",
        ),
        (
            "\"Alice@Other.Test\"",
            "\"ALICE@example.test\"",
            "29:31: account[0].aliases[1]",
            "\"alice@example.test\" is already used by account[0].address (line 28)",
        ),
        (
            "address = \"Postmaster@Example.Test\"",
            "address = \"AL@example.test\"",
            "32:11: account[1].address",
            "\"al@example.test\" is already used by account[0].aliases[0] (line 29)",
        ),
        (
            "[[account]]\naddress = \"Postmaster@Example.Test\"",
            "[[account]]\naliases = [\"pm@example.test\"]",
            "31:1: account[1].address",
            "missing required key",
        ),
        (
            "{ \"example.test\" = \"postmaster@example.test\" }",
            "{ \"example.org\" = \"postmaster@example.test\" }",
            "23:14: domains.catchall.\"example.org\"",
            "\"example.org\" is not in domains.local",
        ),
        (
            "{ \"example.test\" = \"postmaster@example.test\" }",
            "{ \"example.test\" = \"nobody@example.test\" }",
            "23:31: domains.catchall.\"example.test\"",
            "\"nobody@example.test\" is not the address or an alias of an [[account]]",
        ),
        (
            "{ \"example.test\" = \"postmaster@example.test\" }",
            "{ \"example.test\" = \"postmaster@example.test\", \"EXAMPLE.TEST\" = \"al@example.test\" }",
            "23:58: domains.catchall.\"EXAMPLE.TEST\"",
            "has two catchalls",
        ),
        (
            "disable_catchalls = false",
            "disable_catchalls = 0",
            "24:21: domains.disable_catchalls",
            "expected a boolean (true or false), got integer `0`",
        ),
        // Syntax errors.
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"mx.example.test",
            "3:80: server.hostname",
            "invalid TOML",
        ),
        (
            "hide_client_ip = false",
            "hide_client_ip = false\nhostname = \"x.test\"",
            "8:1: server.hostname",
            "invalid TOML: duplicate key",
        ),
        ("[smtp]", "[smtp", "34:6: smtp", "invalid TOML"),
    ];
    let mut failures = Vec::new();
    for (from, to, location, message) in cases {
        assert!(SAMPLE.contains(from), "the sample has no {from:?}");
        let text = SAMPLE.replacen(from, to, 1);
        let got = error(&text);
        let prefix = format!("mxguard.toml:{location}: ");
        if !(got.starts_with(&prefix) && got.contains(message)) {
            failures.push(format!(
                "replacing {from:?} by {to:?}\n  expected: {prefix}...{message}...\n       got: {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_in_whole_files() {
    let cases: &[(&str, &str)] = &[
        (
            "",
            "mxguard.toml:1:1: server: missing required table [server]",
        ),
        (
            "[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n",
            "mxguard.toml:1:1: server: missing required table [server]",
        ),
        (
            "[server]\ndata_dir = \"/tmp\"\n",
            "mxguard.toml:1:1: server.hostname: missing required key",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n",
            "mxguard.toml:1:1: listener: at least one [[listener]] is required",
        ),
        (
            "listener = []\n[server]\nhostname = \"mx.example.test\"\n",
            "mxguard.toml:1:12: listener: at least one [[listener]] is required",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[listener]\naddress = \"0.0.0.0:25\"\n",
            "mxguard.toml:3:1: listener: expected an array of tables ([[listener]]), got a table",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\nrole = \"mx\"\n",
            "mxguard.toml:3:1: listener[0].address: missing required key",
        ),
        (
            "[server]\nhostnam = \"mx.example.test\"\n",
            "mxguard.toml:2:1: server.hostnam: unknown key (expected one of: hostname, data_dir, banner, max_message_size, hide_client_ip)",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n\n[[account]]\naddress = \"a@example.test\"\n",
            "mxguard.toml:8:11: account[0].address: the domain \"example.test\" of \"a@example.test\" is not in domains.local",
        ),
        ("= 1\n", "mxguard.toml:1:1: (top level): invalid TOML"),
        (
            "[server]\nhostname = \"mx.example.test\"\n[server]\n",
            "mxguard.toml:3:",
        ),
    ];
    let mut failures = Vec::new();
    for (text, expected) in cases {
        let got = error(text);
        if !got.starts_with(expected) {
            failures.push(format!(
                "for {text:?}\n  expected: {expected}\n       got: {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_fields() {
    let text = SAMPLE.replace("\"25MB\"", "\"25XB\"");
    match Config::parse(&text, Path::new("examples/mxguard.toml")) {
        Err(ConfigError::Invalid {
            path,
            line,
            column,
            key,
            message,
        }) => {
            assert_eq!(path, Path::new("examples/mxguard.toml"));
            assert_eq!((line, column), (6, 20));
            assert_eq!(key, "server.max_message_size");
            assert!(message.starts_with("expected a size like \"25MB\", got \"25XB\""));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mxguard.toml");
    std::fs::write(&path, SAMPLE).unwrap();
    // relay.clients_file is resolved against the configuration's directory.
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:41:16: relay.clients_file: cannot read the IP list {}",
            path.display(),
            dir.path().join("tests/data/clients.txt").display()
        )),
        "{err}"
    );
    std::fs::create_dir_all(dir.path().join("tests/data")).unwrap();
    std::fs::write(dir.path().join("tests/data/clients.txt"), "203.0.113.7\n").unwrap();
    // access.blacklist_file too.
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:53:18: access.blacklist_file: cannot read the IP list {}",
            path.display(),
            dir.path().join("tests/data/blacklist.txt").display()
        )),
        "{err}"
    );
    std::fs::write(dir.path().join("tests/data/blacklist.txt"), "198.18.0.1\n").unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, path);
    assert_eq!(
        config.relay.clients_file,
        Some(dir.path().join("tests/data/clients.txt"))
    );
    assert!(config.is_relay_client("203.0.113.7".parse().unwrap()));
    assert!(!config.is_relay_client("172.16.5.1".parse().unwrap()));
    assert!(config.is_blacklisted("198.18.0.1".parse().unwrap()));
    assert!(!config.is_blacklisted("198.51.100.66".parse().unwrap()));

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display()))
    );

    let bad = dir.path().join("latin1.toml");
    std::fs::write(&bad, b"[server]\nhostname = \"caf\xe9.test\"\n").unwrap();
    let err = Config::load(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:2:16: ", bad.display())) && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn warnings() {
    let cases: &[(&str, &str)] = &[
        (
            "[server]\nhostname = \"mx\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n",
            "mxguard.toml:2:12: server.hostname: \"mx\" has no dot",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n",
            "mxguard.toml:3:1: domains.local: there is no local domain",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[domains]\nlocal = [\"example.test\"]\n[[listener]]\naddress = \"0.0.0.0:587\"\nrole = \"submission\"\n",
            "mxguard.toml:5:1: listener[0].role: a submission listener without [tls]: AUTH will not be offered: clients cannot log in (add [tls] with a certificate and key)",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[domains]\nlocal = [\"example.test\"]\n[[listener]]\naddress = \"0.0.0.0:587\"\nrole = \"submission\"\n",
            "listener: there is no mx listener",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[domains]\nlocal = [\"example.test\"]\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n",
            "mxguard.toml:4:10: domains.local: no account, alias or catchall in \"example.test\"",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\nmax_message_size = \"1KB\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n",
            "server.max_message_size: 1000 bytes is less than the 64KiB",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"mx\"\n",
            "listener[1].address: 127.0.0.1:25 overlaps listener[0] (0.0.0.0:25)",
        ),
        (
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[smtp]\nvrfy = \"on\"\nexpn = \"on\"\n",
            "smtp.expn: \"on\" tells anyone",
        ),
    ];
    for (text, expected) in cases {
        let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
        let warnings = config.warnings();
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "for {text:?}\n  expected a warning containing: {expected}\n  got: {warnings:#?}"
        );
    }
}

/// A batch of malformed inputs: each is an error (never a panic, never a
/// silently accepted file).
#[test]
fn malformed_inputs_are_errors() {
    let long_label = format!("[server]\nhostname = \"{}.test\"\n", "a".repeat(64));
    let long_banner = format!(
        "[server]\nhostname = \"mx.example.test\"\nbanner = \"{}\"\n",
        "x".repeat(1000)
    );
    let huge = format!("[server]\nhostname = \"{}\"\n", "é".repeat(100_000));
    let deep = format!("x = {}{}\n", "[".repeat(2000), "]".repeat(2000));
    let inputs: Vec<&str> = vec![
        "\u{0}",
        "\u{feff}",
        "[",
        "[[",
        "]]",
        "[server]]",
        "[server]\nhostname",
        "[server]\nhostname =",
        "[server]\nhostname = \"\\u{D800}\"",
        "[server]\nhostname = '''",
        "[server]\nhostname = \"\"\"a\nb\"\"\"",
        "[server]\nhostname = [\"mx.example.test\"]",
        "[server]\nhostname = { a = 1 }",
        "[server]\nhostname = 1979-05-27T07:32:00Z",
        "[server]\nhostname = nan",
        "[server]\nhostname = \"-mx.example.test\"",
        "[server]\nhostname = \"mx.example.test.\"",
        "[server]\nhostname = \"mx_1.example.test\"",
        "[server]\nhostname = \"mx.example.test\"\nmax_message_size = 1.5",
        "[server]\nhostname = \"mx.example.test\"\nmax_message_size = \"99999999999999999999GB\"",
        "[server]\nhostname = \"mx.example.test\"\nmax_message_size = true",
        "[server]\nhostname = \"mx.example.test\"\nbanner = \"\\u0000\"",
        "[server]\nhostname = \"mx.example.test\"\nbanner = \"caf\u{e9}\"",
        "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"a\\u0000b\"",
        "[server]\nhostname = \"mx.example.test\"\ndata_dir = 5",
        "server = 5",
        "server = []",
        "server = [{ hostname = \"mx.example.test\" }]",
        "[[server]]\nhostname = \"mx.example.test\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[smtp]\ntimeouts = [\"5m\", \"10m\"]",
        "listener = [[\"0.0.0.0:25\", \"mx\"]]\n[server]\nhostname = \"mx.example.test\"",
        "account = [[\"x@a.test\"]]\n[server]\nhostname = \"mx.example.test\"",
        "listener = 5\n[server]\nhostname = \"mx.example.test\"",
        "listener = [5]\n[server]\nhostname = \"mx.example.test\"",
        "listener = [{}]\n[server]\nhostname = \"mx.example.test\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:99999\"\nrole = \"mx\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = 1",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"submission\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [1]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\ncatchall = [\"a\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\ncatchall = { \"a.test\" = \"@a.test\" }",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n[[account]]\naddress = \"x@@a.test\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n[[account]]\naddress = \".x@a.test\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n[[account]]\naddress = \"x@a.test\"\naliases = \"y@a.test\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"a.test\"]\n[[account]]\naddress = \"x@a.test\"\naliases = [\"x@a.test\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[dns]\nnameservers = \"127.0.0.1\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[dns]\ntimeout = \"-3s\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[dns]\ntimeout = \"999999999999999999d\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[smtp]\ntimeouts = { command = \"5m\", idle = \"1m\" }",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[smtp]\ntimeouts.command = 300",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[smtp.timeouts]\ncommand = \"5m\"\n[smtp]\nvrfy = \"off\"\n[smtp]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients = \"10.0.0.0/8\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients = [\"10.0.0.0/8/8\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients = [\"\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients = [\"::1-10.0.0.1\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients_file = \"a\\u0000b\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients_file = \"/nonexistent/clients.txt\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nsmarthost = \"[\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nsmarthost = \"[]:25\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nsmarthost = \"a.test:\u{661}\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nroutes = { \"a.test\" = \"\" }",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nmx_port = 1.5",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nmx_port = -25",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\nclients_only = \"yes\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[relay]\npop_before_smtp_max = 0",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nliteral_addresses = [\"[::1\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[sender]\nspoofing = \"\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[[relay]]\nclients = []",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[queue]\nretry = [\"5m\", true]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[queue]\nmax_age = \"-1d\"",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[queue]\ndelay_warning = false",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nrelay_to = [\"a.test\", \"A.TEST\"]",
        "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nrelay_to = [\"\"]",
        &long_label,
        &long_banner,
        &huge,
        &deep,
    ];
    for input in inputs {
        let result = std::panic::catch_unwind(|| parse(input));
        match result {
            Err(_) => panic!("panicked on {:?}", truncate(input)),
            Ok(Ok(_)) => panic!("accepted {:?}", truncate(input)),
            Ok(Err(ConfigError::Invalid {
                line, column, key, ..
            })) => {
                assert!(line >= 1 && column >= 1, "{:?}", truncate(input));
                assert!(!key.is_empty(), "{:?}", truncate(input));
            }
            Ok(Err(e)) => panic!("unexpected {e:?}"),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Mutations of the sample (bytes deleted, duplicated or replaced, lines
/// swapped) never make the parser panic.
#[test]
fn mutations_never_panic() {
    const ALPHABET: &[u8] = b"[]{}=\"'.,#\n \\@:0123456789abcdefmsMBKiB-_\t";
    let bytes = SAMPLE.as_bytes();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..3000 {
        let mut text = bytes.to_vec();
        for _ in 0..(next() % 4 + 1) {
            if text.is_empty() {
                break;
            }
            let at = (next() % text.len() as u64) as usize;
            match next() % 4 {
                0 => {
                    text.remove(at);
                }
                1 => {
                    let b = text[at];
                    text.insert(at, b);
                }
                2 => text[at] = ALPHABET[(next() % ALPHABET.len() as u64) as usize],
                _ => {
                    let end = (at + (next() % 40) as usize).min(text.len());
                    text.drain(at..end);
                }
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let result = std::panic::catch_unwind(|| {
            if let Err(e) = parse(&text) {
                // Formatting never panics either.
                let _ = e.to_string();
            }
        });
        assert!(result.is_ok(), "panicked on:\n{text}");
    }
}

/// The example of docs/configuration.md is valid and draws no warning.
#[test]
fn documented_example_parses() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("end of the toml block");
    // The [tls] files it names must exist: put them in a directory of ours.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "").unwrap();
    std::fs::write(dir.path().join("key.pem"), "").unwrap();
    // And the router table, next to the configuration.
    std::fs::write(
        dir.path().join("router.txt"),
        "<sales@example.test> = alice@example.test\n",
    )
    .unwrap();
    let text = doc[start..end].replace("\"/etc/mxguard/", &format!("\"{}/", dir.path().display()));
    let config =
        Config::parse(&text, &dir.path().join("mxguard.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.router.records.len(), 1);
    assert_eq!(config.warnings(), Vec::<String>::new());
    assert_eq!(config.listeners.len(), 4);
    assert_eq!(config.listeners[3].role, Role::Submissions);
    assert_eq!(
        config.tls.as_ref().map(|t| t.key.clone()),
        Some(dir.path().join("key.pem"))
    );
    let alice = config.account_for("al@example.test").unwrap();
    assert!(alice.relay && !alice.mobile);
    assert!(matches!(
        alice.password,
        Some(mxguard_config::Secret::Argon2(_))
    ));
    assert_eq!(
        config
            .account_for("Alice@Example.org")
            .map(|a| a.address.as_str()),
        Some("alice@example.test")
    );
    assert!(config.is_relay_to_domain("backup.test"));
    assert!(config.is_relay_client(ip("192.168.1.50")));
    assert_eq!(config.route_for("inner.test"), Some(&hop("10.0.0.6", 25)));
    assert_eq!(config.relay.smarthost, Some(hop("mail.isp.test", 587)));
    assert_eq!(config.queue, QueueConfig::default());
    assert!(!config.relay.clients_only);
    assert!(config.is_blacklisted(ip("203.0.113.9")));
    assert!(config.is_whitelisted(ip("192.0.2.25")));
    assert_eq!(config.access.ptr, PtrMode::Score);
    assert_eq!(config.access.early_talker, Duration::from_secs(2));
    assert_eq!(config.dnsbl.len(), 2);
    assert_eq!(config.dnsbl[1].score, 2.5);
    assert_eq!(config.limits.messages_per_hour_per_ip, 500);
    assert_eq!(config.limits.tarpit_start, 20);
    assert!(config.limits.exempt.contains(ip("10.9.8.7")));
    assert!(!config.greylist.enabled);
    assert_eq!(config.store.backend, mxguard_config::StoreBackend::Embedded);
    assert!(config.relay.relay_for_clients_only);
    assert!(config.relay.forward_from.is_empty());
    assert_eq!(config.relay.pop_before_smtp, Some(Duration::from_secs(120)));
    assert!(config.domains.domain_literals);
    assert!(config.domains.literal_addresses.is_empty());
    assert_eq!(config.sender.spoofing, Spoofing::AuthorizedOnly);
    assert!(config.sender.own_address_only);
}

#[test]
fn relay_lookups() {
    let config = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    for domain in ["backup.test", "BACKUP.Test", "relay.test", "relay.test."] {
        assert!(config.is_relay_to_domain(domain), "{domain}");
    }
    for domain in ["example.test", "sub.backup.test", "", "test", "inner.test"] {
        assert!(!config.is_relay_to_domain(domain), "{domain}");
    }
    assert_eq!(
        config.route_for("Inner.TEST."),
        Some(&hop("10.0.0.6", 2525))
    );
    assert_eq!(config.route_for("backup.test"), Some(&hop("10.0.0.5", 25)));
    assert_eq!(config.route_for("sub.backup.test"), None);
    assert_eq!(config.route_for("relay.test"), None);
    assert_eq!(
        config.route_for("v6.test").and_then(NextHop::ip),
        Some(ip("2001:db8::7"))
    );
    assert_eq!(
        config.route_for("v6.test").unwrap().to_string(),
        "[2001:db8::7]:2525"
    );
    assert_eq!(config.relay.smarthost.as_ref().unwrap().ip(), None);
    assert_eq!(
        config.relay.smarthost.as_ref().unwrap().to_string(),
        "mail.isp.test:587"
    );

    for yes in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "10.0.0.0",
        "10.255.255.255",
        "192.168.1.10",
        "192.168.1.99",
        "2001:db8::1",
        "2001:db8::ffff:ffff:ffff:ffff",
        // From tests/data/clients.txt.
        "172.16.5.1",
        "172.16.8.255",
        "172.16.9.20",
        "::ffff:172.16.9.10",
        "2001:db8:1:ffff::1",
    ] {
        assert!(config.is_relay_client(ip(yes)), "{yes}");
    }
    for no in [
        "127.0.0.2",
        "11.0.0.0",
        "192.168.1.9",
        "192.168.1.100",
        "2001:db8:0:1::",
        "172.16.5.2",
        "172.16.9.21",
        "2001:db8:2::",
        "::1",
        "203.0.113.1",
    ] {
        assert!(!config.is_relay_client(ip(no)), "{no}");
    }
}

#[test]
fn next_hops() {
    let cases: &[(&str, &str, u16)] = &[
        ("mail.isp.test", "mail.isp.test", 25),
        ("Mail.ISP.test", "mail.isp.test", 25),
        ("mail.isp.test:587", "mail.isp.test", 587),
        ("localhost:2526", "localhost", 2526),
        ("192.0.2.1", "192.0.2.1", 25),
        ("192.0.2.1:2525", "192.0.2.1", 2525),
        ("[192.0.2.1]", "192.0.2.1", 25),
        ("[192.0.2.1]:26", "192.0.2.1", 26),
        ("[2001:db8::1]", "2001:db8::1", 25),
        ("[2001:DB8::1]:587", "2001:db8::1", 587),
        ("[::1]:65535", "::1", 65535),
    ];
    for (written, host, port) in cases {
        let text = format!("{MINIMAL}[relay]\nsmarthost = \"{written}\"\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.relay.smarthost, Some(hop(host, *port)), "{written}");
        let text = format!("{MINIMAL}[relay]\nroutes = {{ \"a.test\" = \"{written}\" }}\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.route_for("a.test"),
            Some(&hop(host, *port)),
            "{written}"
        );
    }
    // mx_port is the default port, whatever the order of the keys.
    let text = format!(
        "{MINIMAL}[relay]\nsmarthost = \"[192.0.2.1]\"\nroutes = {{ \"a.test\" = \"b.test\" }}\nmx_port = 2526\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.relay.smarthost, Some(hop("192.0.2.1", 2526)));
    assert_eq!(config.route_for("a.test"), Some(&hop("b.test", 2526)));
    // An empty smarthost is no smarthost.
    let config = parse(&format!("{MINIMAL}[relay]\nsmarthost = \"\"\n")).unwrap();
    assert_eq!(config.relay.smarthost, None);

    let bad: &[(&str, &str)] = &[
        (
            "mail.isp.test:0",
            "the port must be a number from 1 to 65535, got \"0\"",
        ),
        (
            "mail.isp.test:65536",
            "the port must be a number from 1 to 65535",
        ),
        (
            "mail.isp.test:",
            "the port must be a number from 1 to 65535, got \"\"",
        ),
        ("mail.isp.test:+25", "the port must be"),
        ("mail.isp.test:smtp", "the port must be"),
        ("mail isp.test", "\"mail isp.test\" is not a host name"),
        ("mail_isp.test", "is not a host name"),
        ("-mail.test", "is not a host name"),
        ("mail.test.", "is not a host name"),
        ("10.0.0.300", "is not a host name"),
        (":25", "\"\" is not a host name"),
        (" mail.test", "is not a host name"),
        (
            "2001:db8::1",
            "write an IPv6 address in brackets, \"[2001:db8::1]\"",
        ),
        ("2001:db8::1:25", "write an IPv6 address in brackets"),
        ("[2001:db8::1", "no closing ]"),
        ("[mail.test]", "\"mail.test\" is not an IP address"),
        ("[192.0.2.1]25", "unexpected \"25\" after ]"),
        ("[192.0.2.1]:", "the port must be"),
        ("mail.test:25:25", "write an IPv6 address in brackets"),
        ("smtp://mail.test", "the port must be"),
    ];
    for (written, message) in bad {
        let text = format!("{MINIMAL}[relay]\nsmarthost = \"{written}\"\n");
        let got = error(&text);
        let prefix = "mxguard.toml:9:13: relay.smarthost: expected a host like";
        assert!(
            got.starts_with(prefix) && got.contains(message),
            "for {written:?}\n  expected: {prefix}...{message}\n       got: {got}"
        );
        let text = format!("{MINIMAL}[relay]\nroutes = {{ \"a.test\" = \"{written}\" }}\n");
        let got = error(&text);
        let prefix = "mxguard.toml:9:23: relay.routes.\"a.test\": expected a host like";
        assert!(
            got.starts_with(prefix) && got.contains(message),
            "for {written:?}\n  expected: {prefix}...{message}\n       got: {got}"
        );
    }
}

/// Errors in the new keys of the sample: `file:line:column: key: message`.
#[test]
fn relay_and_queue_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Example.Test\"]",
            "25:28: domains.relay_to[1]",
            "\"example.test\" is also in domains.local (domains.local[0]): a domain is either delivered here or relayed on, not both",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Backup.Test\"]",
            "25:28: domains.relay_to[1]",
            "\"backup.test\" is listed twice (also domains.relay_to[0])",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"10.0.0.1\"]",
            "25:28: domains.relay_to[1]",
            "an IP address is not a domain name",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = \"backup.test\"",
            "25:12: domains.relay_to",
            "expected an array, got string \"backup.test\"",
        ),
        (
            "\"192.168.1.10-192.168.1.99\"",
            "\"10.0.0.300\"",
            "40:39: relay.clients[2]",
            "\"10.0.0.300\": expected an address, CIDR or range",
        ),
        (
            "\"192.168.1.10-192.168.1.99\"",
            "\"192.168.1.99-192.168.1.10\"",
            "40:39: relay.clients[2]",
            "\"192.168.1.99-192.168.1.10\": the range is reversed: 192.168.1.99 comes after 192.168.1.10",
        ),
        (
            "\"10.0.0.0/8\"",
            "\"10.0.0.0/33\"",
            "40:25: relay.clients[1]",
            "\"10.0.0.0/33\": expected an address, CIDR or range: the prefix length after / must be a number from 0 to 32, got \"33\"",
        ),
        (
            "\"10.0.0.0/8\"",
            "\"10.0.0.1 ; office\"",
            "40:25: relay.clients[1]",
            "expected an address, CIDR or range",
        ),
        (
            "\"10.0.0.0/8\"",
            "10",
            "40:25: relay.clients[1]",
            "expected a string, got integer `10`",
        ),
        (
            "clients_file = \"tests/data/clients.txt\"",
            "clients_file = \"tests/data/missing.txt\"",
            "41:16: relay.clients_file",
            "cannot read the IP list tests/data/missing.txt: ",
        ),
        (
            "clients_file = \"tests/data/clients.txt\"",
            "clients_file = \"\"",
            "41:16: relay.clients_file",
            "expected a file name, got \"\"",
        ),
        (
            "smarthost = \"mail.isp.test:587\"",
            "smarthost = \"mail.isp.test:99999\"",
            "42:13: relay.smarthost",
            "the port must be a number from 1 to 65535, got \"99999\"",
        ),
        (
            "\"Inner.Test\" = \"[10.0.0.6]\"",
            "\"Inner.Test\" = \"[10.0.0.6]:0\"",
            "43:58: relay.routes.\"Inner.Test\"",
            "the port must be a number from 1 to 65535, got \"0\"",
        ),
        (
            "\"Inner.Test\" = \"[10.0.0.6]\"",
            "\"inner..test\" = \"[10.0.0.6]\"",
            "43:43: relay.routes.\"inner..test\"",
            "empty label",
        ),
        (
            "\"Inner.Test\" = \"[10.0.0.6]\"",
            "\"Other.Test\" = \"[10.0.0.6]\"",
            "43:43: relay.routes.\"Other.Test\"",
            "\"other.test\" is in domains.local: its mail is delivered to the mailboxes here",
        ),
        (
            "\"Inner.Test\" = \"[10.0.0.6]\"",
            "\"Backup.TEST\" = \"[10.0.0.6]\"",
            "43:43: relay.routes.\"Backup.TEST\"",
            "\"backup.test\" has two routes",
        ),
        (
            "\"Inner.Test\" = \"[10.0.0.6]\"",
            "\"Inner.Test\" = 25",
            "43:58: relay.routes.\"Inner.Test\"",
            "expected a string, got integer `25`",
        ),
        (
            "mx_port = 2525",
            "mx_port = 0",
            "44:11: relay.mx_port",
            "expected a port number from 1 to 65535, got 0",
        ),
        (
            "mx_port = 2525",
            "mx_port = 70000",
            "44:11: relay.mx_port",
            "expected a port number from 1 to 65535, got 70000",
        ),
        (
            "mx_port = 2525",
            "mx_port = \"25\"",
            "44:11: relay.mx_port",
            "expected a port number from 1 to 65535, got \"25\"",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\nrelay_for_clients_only = \"no\"",
            "45:26: relay.relay_for_clients_only",
            "expected a boolean (true or false), got string \"no\"",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\nforward_from = [\"partner.test\", \"Partner.Test.\"]",
            "45:33: relay.forward_from[1]",
            "\"partner.test\" is listed twice (also relay.forward_from[0])",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\nforward_from = [\"*.partner.test\"]",
            "45:17: relay.forward_from[0]",
            "expected a domain name like \"example.test\", got \"*.partner.test\"",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\nforward_from = \"partner.test\"",
            "45:16: relay.forward_from",
            "expected an array",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\npop_before_smtp = 120",
            "45:19: relay.pop_before_smtp",
            "a bare number is ambiguous",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\npop_before_smtp = \"2 minutes\"",
            "45:19: relay.pop_before_smtp",
            "expected a duration like \"5m\"",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\npop_before_smtp_max = 0",
            "45:23: relay.pop_before_smtp_max",
            "must be greater than 0",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\npop_before_smtp_max = -1",
            "45:23: relay.pop_before_smtp_max",
            "expected a whole number greater than 0, got -1",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\npop_before_smtp_max = \"10000\"",
            "45:23: relay.pop_before_smtp_max",
            "expected a whole number greater than 0, got \"10000\"",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\ndomain_literals = 1",
            "26:19: domains.domain_literals",
            "expected a boolean (true or false)",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\nliteral_addresses = [\"192.0.2.1\", \"mx.example.test\"]",
            "26:35: domains.literal_addresses[1]",
            "expected an IP address like \"192.0.2.1\" or \"2001:db8::1\", got \"mx.example.test\"",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\nliteral_addresses = [\"[192.0.2.1]\"]",
            "26:22: domains.literal_addresses[0]",
            "(write it without brackets: \"192.0.2.1\")",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\nliteral_addresses = [\"192.0.2.0/24\"]",
            "26:22: domains.literal_addresses[0]",
            "(one address, not a CIDR block or range)",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\nliteral_addresses = [\"0.0.0.0\"]",
            "26:22: domains.literal_addresses[0]",
            "not the address of a host",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\nliteral_addresses = [\"192.0.2.1\", \"::ffff:192.0.2.1\"]",
            "26:35: domains.literal_addresses[1]",
            "192.0.2.1 is listed twice (also domains.literal_addresses[0])",
        ),
        (
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\nliteral = []",
            "26:1: domains.literal",
            "unknown key (expected one of: local, catchall, disable_catchalls, relay_to, domain_literals, literal_addresses)",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\nclient = []",
            "45:1: relay.client",
            "unknown key (expected one of: clients, clients_file, smarthost, routes, mx_port, clients_only, relay_for_clients_only, forward_from, pop_before_smtp, pop_before_smtp_max)",
        ),
        (
            "retry = [\"5m\", \"15m\", \"30m\", \"1h\", \"2h\", \"4h\"]",
            "retry = [\"5m\", \"0s\"]",
            "47:16: queue.retry[1]",
            "must be greater than 0",
        ),
        (
            "retry = [\"5m\", \"15m\", \"30m\", \"1h\", \"2h\", \"4h\"]",
            "retry = [\"5m\", 15]",
            "47:16: queue.retry[1]",
            "a bare number is ambiguous",
        ),
        (
            "retry = [\"5m\", \"15m\", \"30m\", \"1h\", \"2h\", \"4h\"]",
            "retry = []",
            "47:9: queue.retry",
            "expected at least one wait",
        ),
        (
            "retry = [\"5m\", \"15m\", \"30m\", \"1h\", \"2h\", \"4h\"]",
            "retry = \"5m\"",
            "47:9: queue.retry",
            "expected an array",
        ),
        (
            "max_age = \"5d\"",
            "max_age = \"0s\"",
            "48:11: queue.max_age",
            "must be greater than 0",
        ),
        (
            "max_age = \"5d\"",
            "max_age = \"5 days\"",
            "48:11: queue.max_age",
            "expected a duration like \"5m\"",
        ),
        (
            "delay_warning = \"4h\"",
            "delay_warning = \"4\"",
            "49:17: queue.delay_warning",
            "a bare number is ambiguous",
        ),
        (
            "delay_warning = \"4h\"",
            "delay_warning = \"4h\"\nbounce = true",
            "50:1: queue.bounce",
            "unknown key (expected one of: retry, max_age, delay_warning)",
        ),
    ];
    let mut failures = Vec::new();
    for (from, to, location, message) in cases {
        assert!(SAMPLE.contains(from), "the sample has no {from:?}");
        let text = SAMPLE.replacen(from, to, 1);
        let got = error(&text);
        let prefix = format!("mxguard.toml:{location}: ");
        if !(got.starts_with(&prefix) && got.contains(message)) {
            failures.push(format!(
                "replacing {from:?} by {to:?}\n  expected: {prefix}...{message}...\n       got: {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    for (text, expected) in [
        (
            format!("relay = 5\n{MINIMAL}"),
            "mxguard.toml:1:9: relay: expected a table ([relay]), got an integer",
        ),
        (
            format!("queue = [\"5m\"]\n{MINIMAL}"),
            "mxguard.toml:1:9: queue: expected a table ([queue]), got an array",
        ),
        (
            format!("{MINIMAL}[relay]\nroutes = [\"a.test\"]\n"),
            "mxguard.toml:9:10: relay.routes: expected a table, got array",
        ),
    ] {
        let got = error(&text);
        assert!(got.starts_with(expected), "{got}");
    }

    // A bad line of clients_file names that file and line.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("clients.txt");
    std::fs::write(
        &list,
        "; ok\n10.0.0.1\n\n10.0.0.2 ; fine\n10.0.0.300 ; bad\n",
    )
    .unwrap();
    let config = dir.path().join("mxguard.toml");
    std::fs::write(
        &config,
        format!("{MINIMAL}[relay]\nclients_file = \"clients.txt\"\n"),
    )
    .unwrap();
    let err = Config::load(&config).unwrap_err();
    assert!(matches!(err, ConfigError::List { line: 5, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:5: \"10.0.0.300\": expected an address, CIDR or range",
            list.display()
        )
    );
    // An absolute clients_file is used as it is.
    std::fs::write(&list, "10.0.0.1\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("mxguard.toml");
    std::fs::write(
        &moved,
        format!(
            "{MINIMAL}[relay]\nclients_file = {:?}\n",
            list.display().to_string()
        ),
    )
    .unwrap();
    let loaded = Config::load(&moved).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.relay.clients_file.as_deref(), Some(list.as_path()));
    assert!(loaded.is_relay_client(ip("10.0.0.1")));
}

#[test]
fn relay_warnings() {
    let base = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[relay]\nclients = [\"10.0.0.1\", \"0.0.0.0/0\"]\n",
            "mxguard.toml:10:24: relay.clients[1]: relay.clients holds 0.0.0.0/0: this server is an open relay",
        ),
        (
            "[relay]\nclients = [\"0.0.0.0-255.255.255.255\"]\n",
            "relay.clients[0]: relay.clients holds 0.0.0.0/0: this server is an open relay",
        ),
        (
            "[relay]\nclients = [\"::/0\"]\n",
            "relay.clients[0]: relay.clients holds ::/0: this server is an open relay",
        ),
        (
            "[relay]\nclients = [\"::ffff:0.0.0.0/96\"]\n",
            "relay.clients[0]: relay.clients holds 0.0.0.0/0: this server is an open relay",
        ),
        (
            "[relay]\nclients = [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n",
            "mxguard.toml:9:1: relay.clients: relay.clients holds 0.0.0.0/0: this server is an open relay (its entries together cover every address)",
        ),
        (
            "[relay]\nclients = [\"10.0.0.0/7\"]\n",
            "mxguard.toml:10:12: relay.clients[0]: \"10.0.0.0/7\" is wider than a /8 (33554432 addresses)",
        ),
        (
            "[relay]\nclients = [\"10.0.0.0-11.0.0.0\"]\n",
            "relay.clients[0]: \"10.0.0.0-11.0.0.0\" is wider than a /8 (16777217 addresses)",
        ),
        (
            "[relay]\nclients = [\"2001:db8::/31\"]\n",
            "relay.clients[0]: \"2001:db8::/31\" is wider than a /32",
        ),
        (
            "[relay]\nsmarthost = \"127.0.0.1\"\n",
            "mxguard.toml:10:13: relay.smarthost: 127.0.0.1:25 is this server's own listener[0] (0.0.0.0:25): mail relayed there comes back here, in a loop",
        ),
        (
            "[relay]\nsmarthost = \"mx.example.test\"\n",
            "relay.smarthost: mx.example.test:25 is this server's own listener[0]",
        ),
        (
            "[relay]\nmx_port = 2525\nroutes = { \"a.test\" = \"[::1]\" }\n",
            "mxguard.toml:11:23: relay.routes.\"a.test\": [::1]:2525 is this server's own listener[1] ([::1]:2525)",
        ),
        (
            "[relay]\nroutes = { \"a.test\" = \"localhost:2525\" }\n",
            "relay.routes.\"a.test\": localhost:2525 is this server's own listener[1]",
        ),
        (
            "[queue]\nmax_age = \"4h\"\n",
            "mxguard.toml:10:11: queue.max_age: the delay notice (4h) is never sent",
        ),
        (
            "[queue]\nmax_age = \"1d\"\ndelay_warning = \"2d\"\n",
            "mxguard.toml:11:17: queue.delay_warning: the delay notice (2d) is never sent",
        ),
        (
            "[queue]\nretry = [\"1h\"]\nmax_age = \"30m\"\ndelay_warning = \"0s\"\n",
            "queue.max_age: 30m is not longer than the first retry wait (1h)",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!("{base}{extra}");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let warnings = config.warnings();
        assert!(
            warnings.iter().any(|w| w.starts_with(expected)
                || (!expected.starts_with("mxguard.toml") && w.contains(expected))),
            "for {extra:?}\n  expected a warning: {expected}\n  got: {warnings:#?}"
        );
    }
    // Not linted: a /8, a /32, relay_to alone, a smarthost elsewhere.
    for extra in [
        "[relay]\nclients = [\"10.0.0.0/8\", \"2001:db8::/32\", \"::ffff:10.0.0.0/104\"]\n",
        "[domains]\nrelay_to = [\"backup.test\"]\n",
        "[relay]\nsmarthost = \"127.0.0.1:2526\"\nroutes = { \"a.test\" = \"[::1]:25\", \"b.test\" = \"192.0.2.1:25\" }\n",
        "[queue]\ndelay_warning = \"0s\"\n",
    ] {
        let text = format!("{base}{extra}");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let ours: Vec<String> = config
            .warnings()
            .into_iter()
            .filter(|w| w.contains("relay") || w.contains("queue"))
            .collect();
        assert_eq!(ours, Vec::<String>::new(), "{extra}");
    }
    let config = parse(&format!("{base}[queue]\ndelay_warning = \"0s\"\n")).unwrap();
    assert_eq!(config.queue.delay_warning, None);

    // An entry of clients_file: the file and line are named.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("clients.txt"),
        "10.0.0.1\n0.0.0.0/0 ; oops\n",
    )
    .unwrap();
    let path = dir.path().join("mxguard.toml");
    std::fs::write(
        &path,
        format!("{base}[relay]\nclients_file = \"clients.txt\"\n"),
    )
    .unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let expected = format!(
        "{}:2: relay.clients_file: relay.clients holds 0.0.0.0/0: this server is an open relay",
        dir.path().join("clients.txt").display()
    );
    assert!(
        config.warnings().contains(&expected),
        "{:#?}",
        config.warnings()
    );
}

/// A relay client list of 100 000 entries written in the configuration:
/// parsed in reasonable time, every lookup right at the boundaries.
#[test]
fn large_client_list_in_the_configuration() {
    let mut text = format!("{MINIMAL}[relay]\nclients = [\n");
    for i in 0..100_000u32 {
        // 10.0.0.0, 10.0.0.2, ...: one address in two.
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i);
        text.push_str(&format!("  \"{a}\",\n"));
    }
    text.push_str("]\n");
    let started = std::time::Instant::now();
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(config.relay.clients.len(), 100_000);
    for i in [0u32, 1, 50_000, 99_999] {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i);
        let b = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i + 1);
        assert!(config.is_relay_client(a.into()), "{a}");
        assert!(!config.is_relay_client(b.into()), "{b}");
    }
    assert!(!config.is_relay_client(ip("9.255.255.255")));
    let list = IpList::from_ranges(config.relay.clients.ranges());
    assert_eq!(list, config.relay.clients);
}

/// The new sections of the sample: `[access]`, `[[dnsbl]]`, `[limits]`.
#[test]
fn access_dnsbl_limits_in_the_sample() {
    let config = parse(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let access = &config.access;
    // 2 entries in the configuration and 3 in the file.
    assert_eq!(access.blacklist.len(), 5);
    assert_eq!(access.whitelist.len(), 2);
    assert_eq!(access.reject_reply.code(), 554);
    assert_eq!(access.reject_reply.to_wire(), "554 5.7.1 Access denied\r\n");
    assert_eq!(access.ptr, PtrMode::Score);
    assert_eq!(access.ptr.as_str(), "score");
    assert_eq!(access.ptr_score, 1.5);
    assert_eq!(access.ehlo_block, vec!["ylmf-pc", "spam.test"]);
    assert_eq!(access.early_talker, Duration::from_secs(1));
    assert_eq!(access.ehlo_blocked("YLMF-PC"), Some("ylmf-pc"));
    assert_eq!(access.ehlo_blocked("host.SPAM.test"), Some("spam.test"));
    assert_eq!(access.ehlo_blocked("mail.example.org"), None);

    for yes in [
        "203.0.113.0",
        "203.0.113.255",
        "::ffff:203.0.113.9",
        "2001:db8:bad::1",
        "198.51.100.66",
        "198.51.100.200",
        "2001:db8:dead:1::1",
    ] {
        assert!(config.is_blacklisted(ip(yes)), "{yes}");
        assert!(!config.is_whitelisted(ip(yes)), "{yes}");
    }
    for no in [
        "203.0.114.0",
        "198.51.100.65",
        "192.0.2.25",
        "2001:db8:badd::1",
    ] {
        assert!(!config.is_blacklisted(ip(no)), "{no}");
    }
    assert!(config.is_whitelisted(ip("192.0.2.25")));
    assert!(config.is_whitelisted(ip("::ffff:192.0.2.25")));
    assert!(config.is_whitelisted(ip("2001:db8:900d::1")));
    assert!(!config.is_whitelisted(ip("192.0.2.26")));

    assert_eq!(config.dnsbl.len(), 2);
    let bl = &config.dnsbl[0];
    assert_eq!(bl.zone, "bl.example.net");
    assert!(bl.is_listed_answer("127.0.0.2".parse().unwrap()));
    assert!(bl.is_listed_answer("127.0.0.255".parse().unwrap()));
    assert!(!bl.is_listed_answer("127.0.1.2".parse().unwrap()));
    assert!(!bl.is_listed_answer("127.0.0.1".parse().unwrap()));
    assert_eq!(bl.score, 0.0);
    assert_eq!(
        bl.reply.to_string(),
        "554 5.7.1 Service unavailable; [%IP%] listed at %ZONE%"
    );
    assert_eq!(
        bl.reply_for(ip("192.0.2.99")).to_wire(),
        "554 5.7.1 Service unavailable; [192.0.2.99] listed at bl.example.net\r\n"
    );
    let scored = &config.dnsbl[1];
    assert_eq!(scored.zone, "score.example.net");
    assert_eq!(scored.score, 2.5);
    assert_eq!(scored.matches, DnsblConfig::default().matches);
    assert!(scored.is_listed_answer("127.255.0.4".parse().unwrap()));
    assert_eq!(scored.reply, DnsblConfig::default().reply);

    assert_eq!(config.limits, LimitsConfig::default());
    assert!(!config.relay.clients_only);
    assert_eq!(config.warnings(), Vec::<String>::new());
}

#[test]
fn access_dnsbl_limits_defaults() {
    let config = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.access, AccessConfig::default());
    assert!(config.access.blacklist.is_empty());
    assert!(config.access.whitelist.is_empty());
    assert_eq!(
        config.access.reject_reply,
        Reply::parse("554 5.7.1 Access denied").unwrap()
    );
    assert_eq!(config.access.ptr, PtrMode::Off);
    assert_eq!(config.access.ptr_score, 1.0);
    assert!(config.access.ehlo_block.is_empty());
    assert_eq!(config.access.early_talker, Duration::ZERO);
    assert!(config.dnsbl.is_empty());
    assert_eq!(config.limits.max_connections, 2000);
    assert_eq!(config.limits.connections_per_ip, 20);
    assert_eq!(config.limits.max_errors, 10);
    assert_eq!(config.limits.auto_ban, Some(Duration::from_secs(3600)));
    assert!(!config.relay.clients_only);
    assert!(!config.is_blacklisted(ip("203.0.113.1")));
    assert!(!config.is_whitelisted(ip("203.0.113.1")));

    let d = DnsblConfig::default();
    assert_eq!(d.score, 0.0);
    assert!(d.is_listed_answer("127.0.0.2".parse().unwrap()));
    assert!(d.is_listed_answer("127.255.255.255".parse().unwrap()));
    assert!(!d.is_listed_answer("127.0.0.1".parse().unwrap()));
    assert!(!d.is_listed_answer("128.0.0.2".parse().unwrap()));
    assert_eq!(
        d.reply.to_wire(),
        "554 5.7.1 Service unavailable; [%IP%] listed at %ZONE%\r\n"
    );
    for (mode, name) in [
        (PtrMode::Off, "off"),
        (PtrMode::Require, "require"),
        (PtrMode::Fcrdns, "fcrdns"),
        (PtrMode::Score, "score"),
    ] {
        assert_eq!(mode.as_str(), name);
        assert_eq!(mode.to_string(), name);
    }
}

#[test]
fn access_dnsbl_limits_other_forms() {
    type Check = dyn Fn(&Config) -> bool;
    let cases: &[(&str, &Check)] = &[
        (
            "[relay]\nclients = [\"10.0.0.0/8\"]\nclients_only = true\n",
            &|c| c.relay.clients_only,
        ),
        ("[access]\nreject_reply = \"421 4.7.1 go away\"\n", &|c| {
            c.access.reject_reply.code() == 421
                && c.access.reject_reply.to_wire() == "421 4.7.1 go away\r\n"
        }),
        ("[access]\nreject_reply = \"550 no\"\n", &|c| {
            c.access.reject_reply.enhanced().is_none()
        }),
        ("[access]\nptr = \"off\"\n", &|c| {
            c.access.ptr == PtrMode::Off
        }),
        ("[access]\nptr = \"require\"\n", &|c| {
            c.access.ptr == PtrMode::Require
        }),
        ("[access]\nptr = \"fcrdns\"\n", &|c| {
            c.access.ptr == PtrMode::Fcrdns
        }),
        ("[access]\nptr = \"score\"\nptr_score = 3\n", &|c| {
            c.access.ptr == PtrMode::Score && c.access.ptr_score == 3.0
        }),
        ("[access]\nearly_talker = \"0s\"\n", &|c| {
            c.access.early_talker.is_zero()
        }),
        ("[access]\nearly_talker = \"500ms\"\n", &|c| {
            c.access.early_talker == Duration::from_millis(500)
        }),
        ("[access]\nehlo_block = [\"A\", \"a\"]\n", &|c| {
            c.access.ehlo_block == ["a"]
        }),
        ("[access]\nblacklist = []\nwhitelist = []\n", &|c| {
            c.access == AccessConfig::default()
        }),
        ("[limits]\nauto_ban = \"0s\"\n", &|c| {
            c.limits.auto_ban.is_none()
        }),
        (
            "[limits]\nmax_connections = 1\nconnections_per_ip = 1\nmax_errors = 1\nauto_ban = \"10m\"\n",
            &|c| {
                c.limits
                    == LimitsConfig {
                        max_connections: 1,
                        connections_per_ip: 1,
                        max_errors: 1,
                        auto_ban: Some(Duration::from_secs(600)),
                        ..LimitsConfig::default()
                    }
            },
        ),
        (
            "[limits]\nmessages_per_hour_per_ip = 500\nrecipients_per_hour = 0\nmessages_per_hour_per_recipient = 40\ntarpit_start = 20\ntarpit_delay = \"500ms\"\nexempt = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n[greylist]\nenabled = true\ndelay = \"2m\"\npass_after = \"7d\"\n[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6400/2\"\ntimeout = \"250ms\"\n",
            &|c| {
                c.limits.messages_per_hour_per_ip == 500
                    && c.limits.recipients_per_hour == 0
                    && c.limits.messages_per_hour_per_recipient == 40
                    && c.limits.tarpit_start == 20
                    && c.limits.tarpit_delay == Duration::from_millis(500)
                    && c.limits.exempt.contains(ip("10.1.2.3"))
                    && c.limits.exempt.contains(ip("2001:db8::9"))
                    && c.greylist.enabled
                    && c.greylist.delay == Duration::from_secs(120)
                    && c.greylist.pass_after == Duration::from_secs(7 * 86_400)
                    && c.store.backend
                        == mxguard_config::StoreBackend::Redis {
                            url: "redis://127.0.0.1:6400/2".into(),
                        }
                    && c.store.timeout == Duration::from_millis(250)
            },
        ),
        (
            "[[dnsbl]]\nzone = \"a.test\"\n[[dnsbl]]\nzone = \"b.test\"\nreply = \"450 4.7.1 %ZONE% says no to %IP%\"\nmatch = [\"127.0.0.2\", \"127.0.0.4/31\"]\n",
            &|c| {
                c.dnsbl.len() == 2
                    && c.dnsbl[1].reply_for(ip("2001:db8::1")).to_wire()
                        == "450 4.7.1 b.test says no to 2001:db8::1\r\n"
                    && c.dnsbl[1].is_listed_answer("127.0.0.5".parse().unwrap())
                    && !c.dnsbl[1].is_listed_answer("127.0.0.3".parse().unwrap())
            },
        ),
        ("dnsbl = [{ zone = \"a.test\", score = 0.5 }]\n", &|c| {
            c.dnsbl[0].score == 0.5
        }),
    ];
    for (extra, check) in cases {
        let text = if extra.starts_with("dnsbl =") {
            format!("{extra}{MINIMAL}")
        } else {
            format!("{MINIMAL}{extra}")
        };
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(check(&config), "{text}");
    }
}

/// Bad values of the new keys: each error names the line, column and key.
#[test]
fn access_dnsbl_limits_errors() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "blacklist = [\"203.0.113.0/24\",",
            "blacklist = [\"203.0.113.0/33\",",
            "52:14: access.blacklist[0]",
            "\"203.0.113.0/33\": expected an address, CIDR or range",
        ),
        (
            "whitelist = [\"192.0.2.25\",",
            "whitelist = [\"192.0.2.25\", \"nope\",",
            "54:28: access.whitelist[1]",
            "\"nope\": expected an address, CIDR or range",
        ),
        (
            "blacklist_file = \"tests/data/blacklist.txt\"",
            "blacklist_file = \"tests/data/missing.txt\"",
            "53:18: access.blacklist_file",
            "cannot read the IP list tests/data/missing.txt",
        ),
        (
            "whitelist_file = \"\"",
            "whitelist_file = \"tests/data/nowhere.txt\"",
            "55:18: access.whitelist_file",
            "cannot read the IP list",
        ),
        (
            "whitelist_file = \"\"",
            "whitelist_file = 5",
            "55:18: access.whitelist_file",
            "expected a string, got integer `5`",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = \"Access denied\"",
            "56:16: access.reject_reply",
            "expected a reply like \"554 5.7.1 Access denied\", got \"Access denied\"",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = \"250 2.0.0 OK\"",
            "56:16: access.reject_reply",
            "250 is not a refusal: use a 4xx (try again later) or 5xx (permanent) code",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = \"354 go ahead\"",
            "56:16: access.reject_reply",
            "354 is not a refusal",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = \"554 4.7.1 Access denied\"",
            "56:16: access.reject_reply",
            "does not match the class of reply code 554",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = \"699 no\"",
            "56:16: access.reject_reply",
            "reply code 699 is not between 200 and 599",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = \"554 5.7.1 Access denied\\r\\n250 OK\"",
            "56:16: access.reject_reply",
            "'\\r': printable ASCII on one line only",
        ),
        (
            "reject_reply = \"554 5.7.1 Access denied\"",
            "reject_reply = 554",
            "56:16: access.reject_reply",
            "expected a string, got integer `554`",
        ),
        (
            "ptr = \"score\"",
            "ptr = \"strict\"",
            "57:7: access.ptr",
            "expected one of: off, require, fcrdns, score, got \"strict\"",
        ),
        (
            "ptr_score = 1.5",
            "ptr_score = -1.5",
            "58:13: access.ptr_score",
            "expected a score of 0 or more, like 1.5, got the number -1.5",
        ),
        (
            "ptr_score = 1.5",
            "ptr_score = nan",
            "58:13: access.ptr_score",
            "expected a score of 0 or more",
        ),
        (
            "ptr_score = 1.5",
            "ptr_score = \"1.5\"",
            "58:13: access.ptr_score",
            "expected a score of 0 or more, like 1.5, got \"1.5\"",
        ),
        (
            "ehlo_block = [\"ylmf-pc\", \"Spam.Test\"]",
            "ehlo_block = [\"ylmf-pc\", \"\"]",
            "59:26: access.ehlo_block[1]",
            "got an empty string (it would block every client)",
        ),
        (
            "ehlo_block = [\"ylmf-pc\", \"Spam.Test\"]",
            "ehlo_block = [\"ylmf pc\"]",
            "59:15: access.ehlo_block[0]",
            "' ' never appears in a HELO name",
        ),
        (
            "early_talker = \"1s\"",
            "early_talker = 1",
            "60:16: access.early_talker",
            "a bare number is ambiguous",
        ),
        (
            "early_talker = \"1s\"",
            "early_talker = \"-1s\"",
            "60:16: access.early_talker",
            "expected a duration like \"5m\"",
        ),
        (
            "early_talker = \"1s\"",
            "early_talker = \"1s\"\nearly_talkers = \"1s\"",
            "61:1: access.early_talkers",
            "unknown key (expected one of: blacklist, blacklist_file, whitelist, whitelist_file, reject_reply, ptr, ptr_score, ehlo_block, early_talker)",
        ),
        (
            "zone = \"bl.example.net\"",
            "zone = \"bl..example.net\"",
            "63:8: dnsbl[0].zone",
            "expected a domain name like \"example.test\", got \"bl..example.net\" (empty label)",
        ),
        (
            "zone = \"bl.example.net\"",
            "zone = \"127.0.0.1\"",
            "63:8: dnsbl[0].zone",
            "an IP address is not a domain name",
        ),
        (
            "zone = \"bl.example.net\"",
            "zone = \"\"",
            "63:8: dnsbl[0].zone",
            "it is empty",
        ),
        (
            "zone = \"bl.example.net\"",
            "zone = \"score.example.net\"",
            "69:8: dnsbl[1].zone",
            "\"score.example.net\" is listed twice (also dnsbl[0], line 62)",
        ),
        (
            "zone = \"bl.example.net\"",
            "zones = \"bl.example.net\"",
            "63:1: dnsbl[0].zones",
            "unknown key (expected one of: zone, match, reply, score)",
        ),
        (
            "zone = \"bl.example.net\"\n",
            "",
            "62:1: dnsbl[0].zone",
            "missing required key",
        ),
        (
            "match = [\"127.0.0.2-127.0.0.255\"]",
            "match = [\"::1\"]",
            "64:10: dnsbl[0].match[0]",
            "\"::1\": expected an IPv4 address, CIDR or range: DNSBL answers are A records",
        ),
        (
            "match = [\"127.0.0.2-127.0.0.255\"]",
            "match = [\"127.0.0.2\", \"127.0.0.x\"]",
            "64:23: dnsbl[0].match[1]",
            "\"127.0.0.x\": expected an address, CIDR or range",
        ),
        (
            "match = [\"127.0.0.2-127.0.0.255\"]",
            "match = []",
            "64:9: dnsbl[0].match",
            "expected at least one answer",
        ),
        (
            "match = [\"127.0.0.2-127.0.0.255\"]",
            "match = \"127.0.0.2\"",
            "64:9: dnsbl[0].match",
            "expected an array",
        ),
        (
            "reply = \"554 5.7.1 Service unavailable; [%IP%] listed at %ZONE%\"",
            "reply = \"listed\"",
            "65:9: dnsbl[0].reply",
            "expected a reply like \"554 5.7.1 Access denied\", got \"listed\"",
        ),
        (
            "reply = \"554 5.7.1 Service unavailable; [%IP%] listed at %ZONE%\"",
            "reply = \"220 fine\"",
            "65:9: dnsbl[0].reply",
            "220 is not a refusal",
        ),
        (
            "score = 0\n",
            "score = -1\n",
            "66:9: dnsbl[0].score",
            "expected a score of 0 or more, like 1.5, got -1",
        ),
        (
            "score = 2.5",
            "score = inf",
            "70:9: dnsbl[1].score",
            "expected a score of 0 or more",
        ),
        (
            "max_connections = 2000",
            "max_connections = 0",
            "73:19: limits.max_connections",
            "must be greater than 0",
        ),
        (
            "max_connections = 2000",
            "max_connections = \"2000\"",
            "73:19: limits.max_connections",
            "expected a whole number greater than 0, got \"2000\"",
        ),
        (
            "connections_per_ip = 20",
            "connections_per_ip = -20",
            "74:22: limits.connections_per_ip",
            "expected a whole number greater than 0, got -20",
        ),
        (
            "max_errors = 10",
            "max_errors = 10.5",
            "75:14: limits.max_errors",
            "expected a whole number greater than 0, got the number 10.5",
        ),
        (
            "max_errors = 10",
            "max_errors = 10\nmessages_per_hour_per_ip = -1",
            "76:28: limits.messages_per_hour_per_ip",
            "expected a whole number from 0 (no limit) to",
        ),
        (
            "max_errors = 10",
            "max_errors = 10\nrecipients_per_hour = \"many\"",
            "76:23: limits.recipients_per_hour",
            "expected a whole number (0 for no limit), got \"many\"",
        ),
        (
            "max_errors = 10",
            "max_errors = 10\ntarpit_delay = \"2m\"",
            "76:16: limits.tarpit_delay",
            "2m is longer than a minute",
        ),
        (
            "max_errors = 10",
            "max_errors = 10\nexempt = [\"10.0.0.0/8\", \"ten\"]",
            "76:25: limits.exempt[1]",
            "\"ten\": expected an address, CIDR or range",
        ),
        (
            "max_errors = 10",
            "max_errors = 4294967296",
            "75:14: limits.max_errors",
            "expected a whole number from 1 to 4294967295, got 4294967296",
        ),
        (
            "auto_ban = \"1h\"",
            "auto_ban = \"1 hour\"",
            "76:12: limits.auto_ban",
            "expected a duration like \"5m\"",
        ),
        (
            "auto_ban = \"1h\"",
            "auto_ban = \"1h\"\nmax_connection = 5",
            "77:1: limits.max_connection",
            "unknown key (expected one of",
        ),
        (
            "mx_port = 2525",
            "mx_port = 2525\nclients_only = \"yes\"",
            "45:16: relay.clients_only",
            "expected a boolean (true or false), got string \"yes\"",
        ),
    ];
    let mut failures = Vec::new();
    for (from, to, location, message) in cases {
        assert!(SAMPLE.contains(from), "the sample has no {from:?}");
        let text = SAMPLE.replacen(from, to, 1);
        let got = error(&text);
        let prefix = format!("mxguard.toml:{location}: ");
        if !(got.starts_with(&prefix) && got.contains(message)) {
            failures.push(format!(
                "replacing {from:?} by {to:?}\n  expected: {prefix}...{message}...\n       got: {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    for (text, expected) in [
        (
            format!("access = 5\n{MINIMAL}"),
            "mxguard.toml:1:10: access: expected a table ([access]), got an integer",
        ),
        (
            format!("limits = []\n{MINIMAL}"),
            "mxguard.toml:1:10: limits: expected a table ([limits]), got an array",
        ),
        (
            format!("{MINIMAL}[dnsbl]\nzone = \"a.test\"\n"),
            "mxguard.toml:8:1: dnsbl: expected an array of tables ([[dnsbl]]), got a table",
        ),
        (
            format!("{MINIMAL}[[dnsbl]]\nzone = \"A.test\"\n[[dnsbl]]\nzone = \"a.TEST.\"\n"),
            "mxguard.toml:11:8: dnsbl[1].zone: \"a.test\" is listed twice (also dnsbl[0], line 8)",
        ),
        (
            format!(
                "{MINIMAL}[[dnsbl]]\nzone = \"a.test\"\nreply = \"554 5.7.1 {}%IP%\"\n",
                "x".repeat(460)
            ),
            "mxguard.toml:10:9: dnsbl[0].reply: expected a reply like",
        ),
    ] {
        let got = error(&text);
        assert!(got.starts_with(expected), "{got}");
    }

    // A bad line of blacklist_file names that file and line.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blacklist.txt");
    std::fs::write(&list, "198.51.100.1\n\n198.51.100.0/40 ; bad\n").unwrap();
    let config = dir.path().join("mxguard.toml");
    std::fs::write(
        &config,
        format!("{MINIMAL}[access]\nblacklist_file = \"blacklist.txt\"\n"),
    )
    .unwrap();
    let err = Config::load(&config).unwrap_err();
    assert!(matches!(err, ConfigError::List { line: 3, .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3: \"198.51.100.0/40\": ", list.display())),
        "{err}"
    );
}

#[test]
fn access_dnsbl_limits_warnings() {
    let base = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[access]\nwhitelist = [\"10.0.0.0/8\"]\nblacklist = [\"192.0.2.1\", \"10.1.2.3\"]\n",
            "mxguard.toml:8:27: access.blacklist[1]: \"10.1.2.3\" is also in access.whitelist: the whitelist wins, a whitelisted address is never refused as blacklisted",
        ),
        (
            "[access]\nwhitelist = [\"10.1.2.3\"]\nblacklist = [\"10.0.0.0/8\"]\n",
            "mxguard.toml:8:14: access.blacklist[0]: \"10.0.0.0/8\" is also in access.whitelist (10.1.2.3 at least): the whitelist wins",
        ),
        (
            "[access]\nptr = \"require\"\n",
            "mxguard.toml:7:7: access.ptr: \"require\" refuses legitimate servers whose reverse DNS is missing or wrong (RFC 2505 asks for care",
        ),
        (
            "[access]\nptr = \"fcrdns\"\n",
            "mxguard.toml:7:7: access.ptr: \"fcrdns\" refuses legitimate servers",
        ),
        (
            "[access]\nptr_score = 2\n",
            "mxguard.toml:7:13: access.ptr_score: ignored: access.ptr is \"off\"",
        ),
        (
            "[access]\nptr = \"score\"\nptr_score = 0\n",
            "mxguard.toml:8:13: access.ptr_score: is 0: the PTR check has no effect",
        ),
        (
            "[access]\nearly_talker = \"11s\"\n",
            "mxguard.toml:7:16: access.early_talker: 11s before the banner is long: some clients give up waiting",
        ),
        (
            "[access]\nwhitelist = [\"0.0.0.0/0\"]\n",
            "access.whitelist: access.whitelist holds 0.0.0.0/0: no client is ever checked",
        ),
        (
            "[access]\nblacklist = [\"::/0\"]\n",
            "access.blacklist: access.blacklist holds ::/0: every client that is not whitelisted is refused",
        ),
        (
            "[relay]\nclients_only = true\n",
            "mxguard.toml:7:16: relay.clients_only: relay.clients and access.whitelist are empty: every connection is refused",
        ),
        (
            "[[dnsbl]]\nzone = \"a.test\"\nreply = \"550 no\"\nscore = 1\n",
            "mxguard.toml:8:9: dnsbl[0].reply: never sent: dnsbl[0].score is greater than 0",
        ),
        (
            "[limits]\nmax_connections = 10\nconnections_per_ip = 11\n",
            "mxguard.toml:8:22: limits.connections_per_ip: 11 is more than limits.max_connections (10)",
        ),
    ];
    for (extra, expected) in cases {
        let text = format!("{base}{extra}");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let warnings = config.warnings();
        assert!(
            warnings.iter().any(|w| w.starts_with(expected)
                || (!expected.starts_with("mxguard.toml") && w.contains(expected))),
            "for {extra:?}\n  expected a warning: {expected}\n  got: {warnings:#?}"
        );
    }
    // Not linted.
    for extra in [
        "[access]\nptr = \"score\"\nearly_talker = \"10s\"\nwhitelist = [\"10.0.0.1\"]\nblacklist = [\"10.0.0.2\"]\n",
        "[relay]\nclients_only = true\nclients = [\"10.0.0.0/8\"]\n",
        "[relay]\nclients_only = true\n[access]\nwhitelist = [\"192.0.2.1\"]\n",
        "[[dnsbl]]\nzone = \"a.test\"\nscore = 1\n",
        "[limits]\nconnections_per_ip = 2000\n",
    ] {
        let text = format!("{base}{extra}");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours(&config), Vec::<String>::new(), "{extra}");
    }

    // Overlaps found in files name the file and line; past ten, a summary.
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..15 {
        lines.push_str(&format!("10.0.0.{i}\n"));
    }
    std::fs::write(dir.path().join("black.txt"), lines).unwrap();
    std::fs::write(dir.path().join("white.txt"), "; trusted\n10.0.0.0/24\n").unwrap();
    let path = dir.path().join("mxguard.toml");
    std::fs::write(
        &path,
        format!("{base}[access]\nblacklist_file = \"black.txt\"\nwhitelist_file = \"white.txt\"\n"),
    )
    .unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let warnings = ours(&config);
    let first = format!(
        "{}:1: access.blacklist_file: \"10.0.0.0\" is also in access.whitelist",
        dir.path().join("black.txt").display()
    );
    assert!(
        warnings.iter().any(|w| w.starts_with(&first)),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), 11, "{warnings:#?}");
    assert!(
        warnings[10].contains(
            "access.blacklist: 5 more blacklist entries are also in access.whitelist (the whitelist wins)"
        ),
        "{warnings:#?}"
    );
    assert!(!config.is_blacklisted(ip("10.0.0.3")));
    assert!(config.is_whitelisted(ip("10.0.0.3")));
}

/// A blacklist_file of 100 000 entries: loaded in reasonable time, every
/// lookup right at the boundaries.
#[test]
fn large_blacklist_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::from("; a large blacklist\n");
    for i in 0..100_000u32 {
        // 10.0.0.0, 10.0.0.2, ...: one address in two; a comment on some.
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i);
        if i % 1000 == 0 {
            list.push_str(&format!("{a} ; batch {i}\n"));
        } else {
            list.push_str(&format!("{a}\n"));
        }
    }
    std::fs::write(dir.path().join("blacklist.txt"), list).unwrap();
    let path = dir.path().join("mxguard.toml");
    std::fs::write(
        &path,
        format!(
            "{MINIMAL}[access]\nblacklist_file = \"blacklist.txt\"\nwhitelist = [\"10.0.0.1\", \"192.0.2.0/24\"]\n"
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(config.access.blacklist.len(), 100_000);
    for i in [0u32, 1, 50_000, 99_999] {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i);
        let b = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i + 3);
        assert!(config.is_blacklisted(a.into()), "{a}");
        assert!(!config.is_blacklisted(b.into()), "{b}");
    }
    assert!(!config.is_blacklisted(ip("9.255.255.255")));
    // No overlap with the whitelist: no warning.
    assert_eq!(ours(&config), Vec::<String>::new());
}

/// The warnings about `[access]`, `[[dnsbl]]`, `[limits]` and
/// `relay.clients_only`.
fn ours(config: &Config) -> Vec<String> {
    config
        .warnings()
        .into_iter()
        .filter(|w| {
            ["access.", "dnsbl", "limits.", "relay.clients_only"]
                .iter()
                .any(|k| w.contains(k))
        })
        .collect()
}

/// A hash printed by `mxguard passwd` (of "correct horse").
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bJvCzxlret9TeTdFn2A2yw$gVwqYGJE2RMHIAaDxJo5q9ZYT9dBp3rDi98OXRX630Q";

#[test]
fn tls_section() {
    use mxguard_config::TlsConfig;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/cert.pem"), "not parsed here").unwrap();
    std::fs::write(dir.path().join("key.pem"), "nor this").unwrap();
    let file = dir.path().join("mxguard.toml");
    let base = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n";
    let load = |extra: &str| {
        std::fs::write(&file, format!("{base}{extra}")).unwrap();
        Config::load(&file)
    };

    // Relative to the configuration's directory; absolute kept.
    let abs = dir.path().join("key.pem");
    let config = load(&format!(
        "[tls]\ncertificate = \"certs/cert.pem\"\nkey = {:?}\n",
        abs.display().to_string()
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.tls,
        Some(TlsConfig {
            certificate: dir.path().join("certs/cert.pem"),
            key: abs,
            allow_plaintext_auth: false,
        })
    );
    assert!(
        !config.warnings().iter().any(|w| w.contains("tls")),
        "{:?}",
        config.warnings()
    );
    assert!(parse(MINIMAL).unwrap().tls.is_none());

    let config = load(
        "[tls]\ncertificate = \"certs/cert.pem\"\nkey = \"key.pem\"\nallow_plaintext_auth = true\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.tls.as_ref().unwrap().allow_plaintext_auth);
    let warnings = config.warnings().join("\n");
    assert!(
        warnings.contains("mxguard.toml:9:24: tls.allow_plaintext_auth: AUTH is offered on unencrypted connections"),
        "{warnings}"
    );

    let f = file.display().to_string();
    let d = dir.path().display().to_string();
    let cases: &[(&str, String)] = &[
        (
            "[tls]\ncertificate = \"certs/missing.pem\"\nkey = \"key.pem\"\n",
            format!(
                "{f}:7:15: tls.certificate: cannot read the certificate chain {d}/certs/missing.pem: "
            ),
        ),
        (
            "[tls]\ncertificate = \"certs/cert.pem\"\nkey = \"nokey.pem\"\n",
            format!("{f}:8:7: tls.key: cannot read the private key {d}/nokey.pem: "),
        ),
        (
            "[tls]\ncertificate = \"certs\"\nkey = \"key.pem\"\n",
            format!("{f}:7:15: tls.certificate: {d}/certs is not a file"),
        ),
        (
            "[tls]\nkey = \"key.pem\"\n",
            format!("{f}:6:1: tls.certificate: missing required key"),
        ),
        (
            "[tls]\ncertificate = \"certs/cert.pem\"\n",
            format!("{f}:6:1: tls.key: missing required key"),
        ),
        (
            "[tls]\ncertificate = \"\"\nkey = \"key.pem\"\n",
            format!(
                "{f}:7:15: tls.certificate: expected the PEM file of the certificate chain, got \"\""
            ),
        ),
        (
            "[tls]\ncertificate = \"certs/cert.pem\"\nkey = \"key.pem\"\nallow_plaintext_auth = \"yes\"\n",
            format!("{f}:9:24: tls.allow_plaintext_auth: expected a boolean"),
        ),
        (
            "[tls]\ncertificate = \"certs/cert.pem\"\nkey = \"key.pem\"\nciphers = []\n",
            format!(
                "{f}:9:1: tls.ciphers: unknown key (expected one of: certificate, key, allow_plaintext_auth)"
            ),
        ),
    ];
    for (extra, expected) in cases {
        let err = load(extra).unwrap_err().to_string();
        assert!(
            err.starts_with(expected.as_str()),
            "{err}\nexpected: {expected}"
        );
    }
    let err = error(&format!("tls = \"on\"\n{MINIMAL}"));
    assert!(
        err.starts_with("mxguard.toml:1:7: tls: expected a table ([tls]), got a string"),
        "{err}"
    );
}

#[test]
fn roles_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
    std::fs::write(dir.path().join("key.pem"), "x").unwrap();
    let file = dir.path().join("mxguard.toml");
    let listeners = "[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[[listener]]\naddress = \"0.0.0.0:587\"\nrole = \"submission\"\n[[listener]]\naddress = \"0.0.0.0:465\"\nrole = \"submissions\"\n[[listener]]\naddress = \"0.0.0.0:110\"\nrole = \"pop3\"\n[[listener]]\naddress = \"0.0.0.0:995\"\nrole = \"pop3s\"\n";
    std::fs::write(
        &file,
        format!("[server]\nhostname = \"mx.example.test\"\n[tls]\ncertificate = \"cert.pem\"\nkey = \"key.pem\"\n{listeners}"),
    )
    .unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let roles: Vec<Role> = config.listeners.iter().map(|l| l.role).collect();
    assert_eq!(roles, Role::ALL);
    let names: Vec<&str> = Role::ALL.iter().map(Role::as_str).collect();
    assert_eq!(names, ["mx", "submission", "submissions", "pop3", "pop3s"]);
    for role in Role::ALL {
        assert_eq!(Role::from_name(role.as_str()), Some(role));
        assert_eq!(role.to_string(), role.as_str());
        assert_eq!(
            role.implicit_tls(),
            matches!(role, Role::Submissions | Role::Pop3s)
        );
        assert_eq!(role.takes_logins(), role != Role::Mx);
        assert_eq!(role.is_pop3(), matches!(role, Role::Pop3 | Role::Pop3s));
    }
    assert_eq!(Role::from_name("admin"), None);
    assert_eq!(Role::from_name("MX"), None);
    assert!(
        !config
            .warnings()
            .iter()
            .any(|w| w.contains("AUTH will not be offered")),
        "{:?}",
        config.warnings()
    );

    // Without [tls]: logins are warned about, one warning a listener.
    let text = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[[listener]]\naddress = \"0.0.0.0:587\"\nrole = \"submission\"\n[[listener]]\naddress = \"0.0.0.0:110\"\nrole = \"pop3\"\n";
    let warnings = parse(text).unwrap().warnings();
    let auth: Vec<&String> = warnings
        .iter()
        .filter(|w| w.contains("AUTH will not be offered: clients cannot log in"))
        .collect();
    assert_eq!(auth.len(), 2, "{warnings:?}");
    assert!(auth[0].starts_with("mxguard.toml:6:1: listener[1].role: a submission listener"));
    assert!(auth[1].starts_with("mxguard.toml:9:1: listener[2].role: a pop3 listener"));
}

#[test]
fn account_passwords() {
    use mxguard_config::Secret;
    let head = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"0.0.0.0:25\"\nrole = \"mx\"\n[domains]\nlocal = [\"example.test\"]\n";
    let text = format!(
        "{head}[[account]]\naddress = \"alice@example.test\"\npassword = \"{HASH}\"\nrelay = true\nmobile = true\n[[account]]\naddress = \"bob@example.test\"\npassword = \"hunter2\"\n[[account]]\naddress = \"carol@example.test\"\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let alice = config.account_for("alice@example.test").unwrap();
    assert_eq!(alice.password, Some(Secret::Argon2(HASH.to_string())));
    assert!(alice.relay && alice.mobile);
    let bob = config.account_for("bob@example.test").unwrap();
    assert_eq!(bob.password, Some(Secret::Plain("hunter2".to_string())));
    assert!(!bob.relay && !bob.mobile);
    let carol = config.account_for("carol@example.test").unwrap();
    assert_eq!(carol.password, None);

    // Debug never shows a secret or a hash.
    let debug = format!("{:?}", config.accounts);
    assert!(
        !debug.contains("hunter2") && !debug.contains("argon2id"),
        "{debug}"
    );
    assert!(debug.contains("Secret::Plain(<hidden>)"), "{debug}");

    let warnings = config.warnings().join("\n");
    assert!(
        warnings.contains("mxguard.toml:15:12: account[1].password: the password of \"bob@example.test\" is in plain text"),
        "{warnings}"
    );
    assert!(!warnings.contains("account[0]"), "{warnings}");
    assert!(!warnings.contains("hunter2"), "{warnings}");

    // relay or mobile without a password.
    let text = format!(
        "{head}[[account]]\naddress = \"alice@example.test\"\nrelay = true\nmobile = false\n"
    );
    let warnings = parse(&text).unwrap().warnings().join("\n");
    assert!(
        warnings.contains("mxguard.toml:10:9: account[0].relay: \"alice@example.test\" has no password: it can never log in"),
        "{warnings}"
    );
    assert!(!warnings.contains("account[0].mobile"), "{warnings}");

    let cases: &[(&str, &str, &str)] = &[
        (
            "\"\"",
            "10:12: account[0].password",
            "expected a hash from `mxguard passwd`",
        ),
        (
            "\"$argon2id$v=19$m=19456,t=2,p=1$bJvCzxlret9TeTdFn2A2yw\"",
            "10:12: account[0].password",
            "not a valid argon2 hash (the salt or the hash is missing)",
        ),
        (
            "\"$argon2id$v=19$m=19456,t=2,p=1$!!$gVwqYGJE2RMHIAaDxJo5q9ZYT9dBp3rDi98OXRX630Q\"",
            "10:12: account[0].password",
            "not a valid argon2 hash",
        ),
        (
            "\"$argon2id$v=19$m=1,t=2,p=1$bJvCzxlret9TeTdFn2A2yw$gVwqYGJE2RMHIAaDxJo5q9ZYT9dBp3rDi98OXRX630Q\"",
            "10:12: account[0].password",
            "not a valid argon2 hash (parameters: ",
        ),
        (
            "\"$argon2id$v=99$m=19456,t=2,p=1$bJvCzxlret9TeTdFn2A2yw$gVwqYGJE2RMHIAaDxJo5q9ZYT9dBp3rDi98OXRX630Q\"",
            "10:12: account[0].password",
            "unknown version 99",
        ),
        (
            "\"$argon2x$v=19$m=19456,t=2,p=1$bJvCzxlret9TeTdFn2A2yw$gVwqYGJE2RMHIAaDxJo5q9ZYT9dBp3rDi98OXRX630Q\"",
            "10:12: account[0].password",
            "unknown algorithm \"argon2x\"",
        ),
        (
            "\"$argon2id$garbage\"",
            "10:12: account[0].password",
            "not a valid argon2 hash",
        ),
        (
            "\"$6$saltsalt$abcdef\"",
            "10:12: account[0].password",
            "looks like a \"6\" password hash: only argon2 hashes are supported",
        ),
        (
            "\"$2b$12$abcdef\"",
            "10:12: account[0].password",
            "looks like a \"2b\" password hash",
        ),
        (
            "42",
            "10:12: account[0].password",
            "expected a string, got integer",
        ),
    ];
    for (value, at, message) in cases {
        let text =
            format!("{head}[[account]]\naddress = \"alice@example.test\"\npassword = {value}\n");
        let err = error(&text);
        assert!(
            err.starts_with(&format!("mxguard.toml:{at}: ")) && err.contains(message),
            "{err}\nexpected: {at}: ...{message}"
        );
    }
    // Text that merely starts with a dollar is a plain password.
    for plain in ["$ecret", "$$", "$ab$cd$", "pa$$word"] {
        let text =
            format!("{head}[[account]]\naddress = \"alice@example.test\"\npassword = {plain:?}\n");
        let result = parse(&text);
        match plain {
            "$ab$cd$" => assert!(result.is_err(), "{plain}"),
            _ => assert_eq!(
                result.unwrap().accounts[0].password,
                Some(Secret::Plain(plain.to_string()))
            ),
        }
    }
    let text = format!("{head}[[account]]\naddress = \"alice@example.test\"\nrelay = \"yes\"\n");
    assert!(error(&text).starts_with("mxguard.toml:10:9: account[0].relay: expected a boolean"));
}

/// `relay.relay_for_clients_only`, `forward_from`, `pop_before_smtp`,
/// `pop_before_smtp_max`, `domains.domain_literals`,
/// `domains.literal_addresses` and `[sender]`: values, lookups, warnings.
#[test]
fn relay_permissions_literals_and_sender() {
    let text = SAMPLE
        .replace(
            "mx_port = 2525",
            "mx_port = 2525\nrelay_for_clients_only = true\nforward_from = [\"Partner.Test\", \"other.partner.test.\"]\npop_before_smtp = \"5m\"\npop_before_smtp_max = 500",
        )
        .replace(
            "relay_to = [\"backup.test\", \"Relay.Test\"]",
            "relay_to = [\"backup.test\", \"Relay.Test\"]\ndomain_literals = true\nliteral_addresses = [\"198.51.100.7\", \"2001:DB8::25\", \"::ffff:192.0.2.9\"]",
        )
        .replace(
            "spoofing = \"authorized-only\"\nown_address_only = true",
            "spoofing = \"authenticated-only\"\nown_address_only = false",
        );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.relay.relay_for_clients_only);
    assert_eq!(
        config.relay.forward_from,
        ["partner.test", "other.partner.test"]
    );
    assert!(config.is_forward_from_domain("partner.test"));
    assert!(config.is_forward_from_domain("PARTNER.test."));
    assert!(config.is_forward_from_domain("Other.Partner.Test"));
    assert!(!config.is_forward_from_domain("sub.partner.test"));
    assert!(!config.is_forward_from_domain("example.test"));
    assert_eq!(config.relay.pop_before_smtp, Some(Duration::from_secs(300)));
    assert_eq!(config.relay.pop_before_smtp_max, 500);
    assert!(config.domains.domain_literals);
    assert_eq!(
        config.domains.literal_addresses,
        [ip("198.51.100.7"), ip("2001:db8::25"), ip("192.0.2.9")]
    );
    assert_eq!(config.sender.spoofing, Spoofing::AuthenticatedOnly);
    assert!(!config.sender.own_address_only);
    assert_eq!(
        config.warnings(),
        [
            "mxguard.toml:48:16: relay.forward_from: relay.forward_from lets anyone who forges a sender in these domains relay (\"partner.test\", \"other.partner.test\")",
            "mxguard.toml:50:23: relay.pop_before_smtp_max: no longer used: POP-before-SMTP addresses live in the state store and expire after relay.pop_before_smtp"
        ]
    );

    // Other forms.
    let other = |extra: &str| parse(&format!("{MINIMAL}{extra}")).unwrap_or_else(|e| panic!("{e}"));
    let config = other("[relay]\npop_before_smtp = \"0s\"\nforward_from = []\n");
    assert_eq!(config.relay.pop_before_smtp, None);
    assert!(config.relay.forward_from.is_empty());
    assert!(
        !config.warnings().iter().any(|w| w.contains("relay")),
        "{:#?}",
        config.warnings()
    );
    let config = other("[domains]\ndomain_literals = false\n");
    assert!(!config.domains.domain_literals);
    for mode in Spoofing::ALL {
        let config = other(&format!("[sender]\nspoofing = \"{mode}\"\n"));
        assert_eq!(config.sender.spoofing, mode);
        assert!(config.sender.own_address_only);
    }
    assert_eq!(Spoofing::default().as_str(), "anyone");
    assert_eq!(Spoofing::AuthenticatedOnly.as_str(), "authenticated-only");
    assert_eq!(Spoofing::AuthorizedOnly.as_str(), "authorized-only");

    // Warnings.
    let cases: &[(&str, &str)] = &[
        (
            "[relay]\nrelay_for_clients_only = false\n",
            "mxguard.toml:9:26: relay.relay_for_clients_only: relay.relay_for_clients_only = false: this server is an open relay",
        ),
        (
            "[domains]\nlocal = [\"example.test\"]\n[relay]\nforward_from = [\"Example.Test\"]\n",
            "mxguard.toml:11:17: relay.forward_from[0]: \"example.test\" is in domains.local",
        ),
        (
            "[domains]\ndomain_literals = false\nliteral_addresses = [\"192.0.2.1\"]\n",
            "mxguard.toml:10:21: domains.literal_addresses: ignored: domains.domain_literals is false",
        ),
    ];
    for (extra, expected) in cases {
        let warnings = other(extra).warnings();
        assert!(
            warnings.iter().any(|w| w.starts_with(expected)),
            "for {extra:?}\n  expected a warning starting with: {expected}\n  got: {warnings:#?}"
        );
    }
}

/// Bad values in `[sender]`, and its keys this version does not support.
#[test]
fn sender_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "spoofing = \"authorized-only\"",
            "spoofing = \"authenticated\"",
            "mxguard.toml:79:12: sender.spoofing: expected one of: anyone, authenticated-only, authorized-only, got \"authenticated\"",
        ),
        (
            "own_address_only = true",
            "own_address_only = \"yes\"",
            "mxguard.toml:80:20: sender.own_address_only: expected a boolean (true or false), got string \"yes\"",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nverify_domain = \"yes\"",
            "mxguard.toml:81:17: sender.verify_domain: expected a boolean (true or false), got string \"yes\"",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nunknown_domain_reply = \"250 2.0.0 fine\"",
            "mxguard.toml:81:24: sender.unknown_domain_reply: expected a reply like \"554 5.7.1 Access denied\", got \"250 2.0.0 fine\" (250 is not a refusal",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nban = [\"*@ok.test\", \"two words\"]",
            "mxguard.toml:81:21: sender.ban[1]: expected an address pattern like \"*@spam.test\" or \"promo*@bigcorp.test\", got \"two words\"",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nexclude = [ { hosts = [\"10.0.0.0/33\"], local_part = \"^1\" } ]",
            "mxguard.toml:81:24: sender.exclude[0].hosts[0]: \"10.0.0.0/33\":",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nexclude = [ { hosts = [\"10.0.0.0/8\"], local_part = \"(\" } ]",
            "mxguard.toml:81:52: sender.exclude[0].local_part: not a valid regular expression",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nexclude = [ { hosts = [\"10.0.0.0/8\"] } ]",
            "mxguard.toml:81:13: sender.exclude[0].local_part: missing",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\nspoof = \"anyone\"",
            "mxguard.toml:81:1: sender.spoof: unknown key (expected one of: spoofing, own_address_only, verify_domain, unknown_domain_reply, ban, exclude)",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[recipient]\nmax_per_message = 0",
            "mxguard.toml:82:19: recipient.max_per_message: must be greater than 0",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[recipient]\nban = [\"<x@y.test>\"]",
            "mxguard.toml:82:8: recipient.ban[0]: expected an address pattern",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[router]\nfile = \"no-such-router.txt\"",
            "mxguard.toml:82:8: router.file: cannot read the router table no-such-router.txt:",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[greylist]\ndelay = 5",
            "mxguard.toml:82:9: greylist.delay: expected a duration",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[greylist]\npass_after = \"0s\"",
            "mxguard.toml:82:14: greylist.pass_after: 0s would greylist every message again",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[store]\nbackend = \"redis\"",
            "mxguard.toml:82:11: store.url: missing: backend = \"redis\" needs url",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[store]\nbackend = \"memcached\"",
            "mxguard.toml:82:11: store.backend: expected one of: embedded, redis, got \"memcached\"",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[store]\nbackend = \"redis\"\nurl = \"http://x\"",
            "mxguard.toml:83:7: store.url: expected a Redis URL",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[store]\nurl = \"redis://127.0.0.1/0\"",
            "mxguard.toml:82:7: store.url: only for backend = \"redis\"",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[store]\ntimeout = \"1m\"",
            "mxguard.toml:82:11: store.timeout: expected a duration from 1ms to 10s",
        ),
        (
            "own_address_only = true",
            "own_address_only = true\n[router]\nspamtrap_ban = \"forever\"",
            "mxguard.toml:82:16: router.spamtrap_ban: expected a duration",
        ),
    ];
    let mut failures = Vec::new();
    for (from, to, expected) in cases {
        assert!(SAMPLE.contains(from), "{from}");
        let got = error(&SAMPLE.replace(from, to));
        if !got.starts_with(expected) {
            failures.push(format!(
                "replacing {from:?} by {to:?}\n  expected: {expected}\n       got: {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `[router] file` is read relative to the configuration's directory; a bad
/// line is an error naming the router file and its line; the address rules
/// resolve with their defaults and lints.
#[test]
fn router_file_and_address_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("mxguard.toml");
    let router = dir.path().join("router.txt");
    std::fs::write(
        &router,
        "; test table\n<joe@example.test> = joe@other.test\n<misterx@example.test> = spamtrap\n",
    )
    .unwrap();
    let text = format!(
        "{MINIMAL}\n[router]\nfile = \"router.txt\"\nspamtrap_ban = \"0s\"\n\
         [sender]\nunknown_domain_reply = \"550 5.1.8 Sender domain unknown\"\n\
         ban = [\"Spam.Test\", \"*\"]\n\
         exclude = [ {{ hosts = [\"198.51.100.0/24\"], local_part = \"^[0-9]+$\" }} ]\n\
         [recipient]\nban = [\"*@competitor.test\"]\nmax_per_message = 50\n"
    );
    std::fs::write(&config_path, &text).unwrap();
    let cfg = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.router.file.as_deref(), Some(router.as_path()));
    assert_eq!(cfg.router.records.len(), 2);
    assert_eq!(cfg.router.records[1].line, 3);
    assert_eq!(cfg.router.spamtrap_ban, None);
    assert!(cfg.sender.verify_domain, "on by default");
    assert_eq!(
        cfg.sender.unknown_domain_reply.to_string(),
        "550 5.1.8 Sender domain unknown"
    );
    assert_eq!(cfg.sender.ban, vec!["*@spam.test", "*@*"]);
    assert_eq!(cfg.sender.exclude.len(), 1);
    assert!(
        cfg.sender.exclude[0]
            .hosts
            .contains("198.51.100.9".parse().unwrap())
    );
    assert!(cfg.sender.exclude[0].local_part.is_match("12345"));
    assert_eq!(cfg.recipient.ban, vec!["*@competitor.test"]);
    assert_eq!(cfg.recipient.max_per_message, 50);
    let warnings = cfg.warnings().join("\n");
    assert!(
        warnings.contains("sender.unknown_domain_reply: a 5xx"),
        "{warnings}"
    );
    assert!(
        warnings.contains("sender.ban[1]: \"*\" matches every address"),
        "{warnings}"
    );
    assert!(
        warnings.contains("recipient.max_per_message: 50 is below the 100"),
        "{warnings}"
    );

    // defaults without the sections
    let plain = Config::parse(MINIMAL, Path::new("mxguard.toml")).unwrap();
    assert!(plain.router.records.is_empty() && plain.router.file.is_none());
    assert_eq!(
        plain.router.spamtrap_ban,
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(
        plain.sender.unknown_domain_reply.to_string(),
        "450 4.1.8 Sender address rejected: Domain not found"
    );
    assert_eq!(plain.recipient.max_per_message, 1000);

    // a bad router line names the router file and the line
    std::fs::write(
        &router,
        "; ok\n<joe@example.test> = joe@other.test\nBogus:<a@b.test> = c@d.test\n",
    )
    .unwrap();
    let e = Config::load(&config_path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:3: ", router.display())) && e.contains("unknown prefix"),
        "{e}"
    );
}

/// `[[filter]]` and `[scoring]`: what they resolve to, and every error
/// naming the entry and the key.
#[test]
fn filters_and_scoring() {
    use mxguard_config::{FilterAction, FilterCondition, FilterTarget, ScoringConfig};

    const BASE: &str = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:2525\"\nrole = \"mx\"\n[domains]\nlocal = [\"example.test\"]\n[[account]]\naddress = \"joe@example.test\"\naliases = [\"joey@example.test\"]\n";
    // BASE is 10 lines: the first [[filter]] starts on line 11.
    let text = format!(
        "{BASE}[[filter]]\nname = \"EMPTY_TO\"\nheader = \"To\"\nmatches = '^\\s*$'\nscore = 3.0\n\
         [[filter]]\nname = \"NO_SUBJECT\"\non = \"subject\"\nmissing = true\nscore = -1\naction = \"reject\"\n\
         [[filter]]\nname = \"PILLS\"\non = \"body\"\nmatches = '(?i)cheap pills'\naction = \"reject\"\nreply = \"554 5.7.0 No pills\"\n\
         [[filter]]\nname = \"DROP\"\non = \"helo\"\nmatches = 'spam'\naction = \"discard\"\n\
         [[filter]]\nname = \"TO_JOE\"\non = \"envelope_to\"\nmatches = 'x'\naction = \"redirect:Joey@Example.Test\"\n\
         [[filter]]\nname = \"AWAY\"\non = \"client_ip\"\nmatches = '^10\\.'\naction = \"redirect:<quarantine@elsewhere.test>\"\n\
         [[filter]]\nname = \"TAG\"\non = \"envelope_from\"\nmissing = true\naction = \"header:X-Bounce: yes, a bounce\"\n\
         [scoring]\ntag_above = 4\nreject_above = 12.5\nheaders = false\n"
    );
    let cfg = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.warnings(), Vec::<String>::new());
    let names: Vec<&str> = cfg.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "EMPTY_TO",
            "NO_SUBJECT",
            "PILLS",
            "DROP",
            "TO_JOE",
            "AWAY",
            "TAG"
        ]
    );
    let f = &cfg.filters;
    assert_eq!(f[0].target(), Some(&FilterTarget::Header("To".into())));
    assert!(matches!(f[0].condition(), Some(FilterCondition::Matches(re)) if re.is_match("  ")));
    assert_eq!(f[0].score, 3.0);
    assert_eq!(f[0].action, FilterAction::Accept);
    assert_eq!(f[1].target(), Some(&FilterTarget::Subject));
    assert_eq!(f[1].condition(), Some(&FilterCondition::Missing));
    assert_eq!(f[1].score, -1.0);
    assert_eq!(
        f[1].action,
        FilterAction::Reject(Reply::parse("550 5.7.1 Message rejected").unwrap())
    );
    assert_eq!(f[2].target(), Some(&FilterTarget::Body));
    assert!(
        matches!(f[2].condition(), Some(FilterCondition::Matches(re)) if re.is_match("CHEAP PILLS"))
    );
    assert_eq!(
        f[2].action,
        FilterAction::Reject(Reply::parse("554 5.7.0 No pills").unwrap())
    );
    assert_eq!(f[3].target(), Some(&FilterTarget::Helo));
    assert_eq!(f[3].action, FilterAction::Discard);
    assert_eq!(f[4].target(), Some(&FilterTarget::EnvelopeTo));
    assert_eq!(
        f[4].action,
        FilterAction::Redirect("joey@example.test".into())
    );
    assert_eq!(f[5].target(), Some(&FilterTarget::ClientIp));
    assert_eq!(
        f[5].action,
        FilterAction::Redirect("quarantine@elsewhere.test".into())
    );
    assert_eq!(f[6].target(), Some(&FilterTarget::EnvelopeFrom));
    assert_eq!(
        f[6].action,
        FilterAction::AddHeader {
            name: "X-Bounce".into(),
            value: "yes, a bounce".into()
        }
    );
    assert_eq!(
        cfg.scoring,
        ScoringConfig {
            tag_above: 4.0,
            reject_above: 12.5,
            headers: false,
            active: true,
        }
    );

    // Defaults: no rules, scoring on.
    let plain = parse(MINIMAL).unwrap();
    assert!(plain.filters.is_empty());
    assert_eq!(plain.scoring, ScoringConfig::default());
    assert_eq!(plain.scoring.tag_above, 5.0);
    assert_eq!(plain.scoring.reject_above, 10.0);
    assert!(plain.scoring.headers);
    assert!(!plain.scoring.active, "nothing can score a message");
    // Anything that can score a message turns scoring on.
    for extra in [
        "[scoring]\n",
        "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\n",
        "[[dnsbl]]\nzone = \"bl.example.net\"\nscore = 1.5\n",
        "[access]\nptr = \"score\"\n",
    ] {
        let cfg = parse(&format!("{MINIMAL}{extra}")).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.scoring.active, "{extra}");
    }
    let cfg = parse(&format!("{MINIMAL}[[dnsbl]]\nzone = \"bl.example.net\"\n")).unwrap();
    assert!(!cfg.scoring.active, "a refusing DNSBL scores nothing");

    // Errors: (the entry after BASE, expected "line:column: key: message" start).
    let cases: &[(&str, &str)] = &[
        (
            "[[filter]]\nheader = \"To\"\nmissing = true\n",
            "11:1: filter[0].name: missing required key",
        ),
        (
            "[[filter]]\nname = \"bad name\"\nheader = \"To\"\nmissing = true\n",
            "12:8: filter[0].name: expected a name like \"EMPTY_TO\"",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\n[[filter]]\nname = \"a\"\nheader = \"To\"\nmissing = true\n",
            "16:8: filter[1].name: \"a\" is used twice (also filter[0], line 11)",
        ),
        (
            "[[filter]]\nname = \"A\"\nmissing = true\n",
            "11:1: filter[0]: missing what the rule looks at: header = \"NAME\" (a header field, like \"To\") or on = one of: subject, from, body, envelope_from, envelope_to, client_ip, helo",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\non = \"body\"\nmissing = true\n",
            "14:6: filter[0].on: give either header (a header field) or on (another part), not both",
        ),
        (
            "[[filter]]\nname = \"A\"\non = \"bodyy\"\nmissing = true\n",
            "13:6: filter[0].on: expected one of: subject, from, body, envelope_from, envelope_to, client_ip, helo, got \"bodyy\"",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"body\"\nmissing = true\n",
            "13:10: filter[0].header: \"body\" is not a header field: write on = \"body\"",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"X Bad\"\nmissing = true\n",
            "13:10: filter[0].header: expected a header name like \"To\", got \"X Bad\"",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\n",
            "11:1: filter[0]: missing the condition: matches = 'regex' or missing = true",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmatches = 'x'\nmissing = true\n",
            "15:11: filter[0].missing: give either matches or missing, not both",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\n[[filter]]\nname = \"B\"\non = \"body\"\nmatches = '(unclosed'\n",
            "18:11: filter[1].matches: not a valid regular expression: ",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = false\n",
            "14:11: filter[0].missing: expected true",
        ),
        (
            "[[filter]]\nname = \"A\"\non = \"client_ip\"\nmissing = true\n",
            "14:11: filter[0].missing: never true for this part",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\nscore = \"3\"\n",
            "15:9: filter[0].score: expected a number like 3.0 or -1.5, got \"3\"",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\nscore = nan\n",
            "15:9: filter[0].score: expected a number like 3.0 or -1.5, got NaN",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"bounce\"\n",
            "15:10: filter[0].action: expected one of: accept, reject, discard, redirect:ADDR, header:NAME: VALUE, got \"bounce\"",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"redirect\"\n",
            "15:10: filter[0].action: expected one of: accept, reject, discard, redirect:ADDR, header:NAME: VALUE, got \"redirect\" (write the address after a colon",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"redirect:nobody\"\n",
            "15:10: filter[0].action: redirect: expected an address like",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"redirect:nobody@example.test\"\n",
            "15:10: filter[0].action: redirect: \"nobody@example.test\" is in a local domain but is no account, alias or catchall",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"header:X-Bad\"\n",
            "15:10: filter[0].action: expected one of: accept, reject, discard, redirect:ADDR, header:NAME: VALUE, got \"header:X-Bad\" (a header action is \"header:NAME: VALUE\")",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"header:X Bad: v\"\n",
            "15:10: filter[0].action: header: ' ' is not allowed in a header name",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"header:X-Ok: a\\r\\nBcc: x\"\n",
            "15:10: filter[0].action: header: '\\r' in the value",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\naction = \"reject\"\nreply = \"250 fine\"\n",
            "16:9: filter[0].reply: expected a reply like \"554 5.7.1 Access denied\", got \"250 fine\" (250 is not a refusal",
        ),
        (
            "[[filter]]\nname = \"EXTERNAL\"\nexecute = [\"checkmail\"]\n",
            "13:11: filter[0].execute: expected the program's absolute path, got \"checkmail\" (no PATH search, no shell)",
        ),
        (
            "[[filter]]\nname = \"EXTERNAL\"\nexecute = []\n",
            "13:11: filter[0].execute: expected the program's path and its arguments",
        ),
        (
            "[[filter]]\nname = \"EXTERNAL\"\nexecute = [\"/bin/true\"]\naction = \"discard\"\n",
            "14:10: filter[0].action: an execute rule's program decides",
        ),
        (
            "[[filter]]\nname = \"EXTERNAL\"\nexecute = [\"/bin/true\"]\ntimeout = \"6m\"\n",
            "14:11: filter[0].timeout: at most 300s before the 250",
        ),
        (
            "[[filter]]\nname = \"EXTERNAL\"\nexecute = [\"/bin/true\"]\ntimeout = \"0s\"\n",
            "14:11: filter[0].timeout: must be greater than 0",
        ),
        (
            "[[filter]]\nname = \"T\"\non = \"body\"\nmatches = \"x\"\nafter_accept = true\n",
            "15:16: filter[0].after_accept: only an execute rule can run after the 250",
        ),
        (
            "[[filter]]\nname = \"T\"\non = \"body\"\nmatches = \"x\"\ntimeout = \"5s\"\n",
            "15:11: filter[0].timeout: only an execute rule has a timeout",
        ),
        (
            "[[filter]]\nname = \"T\"\non = \"body\"\nmatches = \"x\"\nmax_running = 5\n",
            "15:15: filter[0].max_running: only an execute rule has max_running",
        ),
        (
            "[[filter]]\nname = \"EXTERNAL\"\nexecute = [\"/bin/true\"]\nmax_running = 0\n",
            "14:15: filter[0].max_running: expected a number from 1 to 1000, got 0",
        ),
        (
            "[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\npart = \"body\"\n",
            "15:1: filter[0].part: unknown key (expected one of: name, header, on, matches, missing, score, action, reply, execute, timeout, after_accept, max_running)",
        ),
        (
            "[scoring]\ntag_above = \"5\"\n",
            "12:13: scoring.tag_above: expected a number like 5.0, got \"5\"",
        ),
        (
            "[scoring]\nreject_above = true\n",
            "12:16: scoring.reject_above: expected a number like 10.0, got the boolean true",
        ),
        (
            "[scoring]\nheaders = \"yes\"\n",
            "12:11: scoring.headers: expected a boolean",
        ),
        (
            "[scoring]\nrequired = 5\n",
            "12:1: scoring.required: unknown key (expected one of: tag_above, reject_above, headers)",
        ),
    ];
    let mut failures = Vec::new();
    for (extra, expected) in cases {
        let got = error(&format!("{BASE}{extra}"));
        let want = format!("mxguard.toml:{expected}");
        if !got.starts_with(&want) {
            failures.push(format!(
                "for {extra:?}\n  expected: {want}\n       got: {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Warnings: a reply that is never sent, thresholds the wrong way round.
    let cfg = parse(&format!(
        "{BASE}[[filter]]\nname = \"A\"\nheader = \"To\"\nmissing = true\nreply = \"550 5.7.1 x\"\n[scoring]\ntag_above = 10\nreject_above = 8\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let warnings = cfg.warnings().join("\n");
    assert!(
        warnings.contains(
            "mxguard.toml:15:9: filter[0].reply: never sent: the rule's action is not \"reject\""
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains("scoring.tag_above: 10.0 is not below scoring.reject_above (8.0)")
            || warnings.contains("scoring.tag_above: 10 is not below scoring.reject_above (8)"),
        "{warnings}"
    );
}

#[test]
fn verify_section() {
    use mxguard_config::{DkimMode, DmarcMode, SpfMode, VerifyConfig};
    let plain = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain.verify, VerifyConfig::default());
    assert!(!plain.verify.is_active(), "off when the section is absent");

    let cfg = parse(&format!(
        "{MINIMAL}\n[verify]\nspf = \"reject\"\ndkim = \"score\"\ndmarc = \"enforce\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.verify,
        VerifyConfig {
            spf: SpfMode::Reject,
            dkim: DkimMode::Score,
            dmarc: DmarcMode::Enforce,
        }
    );
    assert!(cfg.verify.is_active());
    assert!(cfg.scoring.active, "a DKIM score turns scoring on");

    // Keys left out are off; header-only does not turn scoring on.
    let cfg = parse(&format!("{MINIMAL}\n[verify]\nspf = \"header\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.verify.spf, SpfMode::Header);
    assert_eq!(cfg.verify.dkim, DkimMode::Off);
    assert_eq!(cfg.verify.dmarc, DmarcMode::Off);
    assert!(!cfg.verify.scores());

    let e = error(&format!("{MINIMAL}\n[verify]\ndkim = \"reject\"\n"));
    assert!(
        e.contains("verify.dkim: expected one of: off, header, score, got \"reject\""),
        "{e}"
    );
}

#[test]
fn dkim_sign_section() {
    use mxguard_config::DkimKeyFormat;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mxguard.toml");
    let load = |extra: &str| {
        std::fs::write(&path, format!("{MINIMAL}\n[dkim_sign]\n{extra}")).unwrap();
        Config::load(&path)
    };
    // A PKCS#8 Ed25519 key (RFC 8410 example).
    std::fs::write(
        dir.path().join("ed.pem"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let cfg = load("domain = \"Example.Test\"\nselector = \"mx2026\"\nkey = \"ed.pem\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let ds = cfg.dkim_sign.expect("[dkim_sign]");
    assert_eq!(ds.domain, "example.test");
    assert_eq!(ds.selector, "mx2026");
    assert_eq!(ds.key_file, dir.path().join("ed.pem"));
    assert_eq!(ds.key.format, DkimKeyFormat::Ed25519Pkcs8);
    assert!(
        !format!("{:?}", ds.key).contains("MC4C"),
        "the key is not shown"
    );
    assert!(parse(MINIMAL).unwrap().dkim_sign.is_none());

    // A missing file, a file that is no key, a missing key.
    let e = load("domain = \"example.test\"\nselector = \"s\"\nkey = \"none.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dkim_sign.key") && e.contains("none.pem"), "{e}");
    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = load("domain = \"example.test\"\nselector = \"s\"\nkey = \"cert.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dkim_sign.key") && e.contains("cert.pem") && e.contains("no PEM private key"),
        "{e}"
    );
    let e = load("domain = \"example.test\"\nselector = \"s\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dkim_sign.key: missing required key"), "{e}");
    let e = load("selector = \"s\"\nkey = \"ed.pem\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dkim_sign.domain: missing required key"), "{e}");
}

//! Table-driven tests of mxguard-config: the sample parses, each bad input
//! gives the expected `file:line:column: key: message`, lookups ignore case,
//! and no input makes the parser panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mxguard_config::{Config, ConfigError, ExpnMode, Role, VrfyMode};

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

[[account]]
address = "alice@example.test"
aliases = ["al@example.test", "Alice@Other.Test"]

[[account]]
address = "Postmaster@Example.Test"

[smtp]
vrfy = "ambiguous"
expn = "off"
timeouts = { command = "5m", data = "10m" }
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

    assert_eq!(config.warnings(), Vec::<String>::new());
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
            "[tls]\ncertificate = \"x\"\n[dns]",
            "17:2: tls",
            "unknown key: not supported by this version of mxguard (expected one of: server, listener, domains, account, dns, smtp)",
        ),
        (
            "hide_client_ip = false",
            "hide_client_ip = false\nadmin_password = \"x\"",
            "8:1: server.admin_password",
            "not supported by this version of mxguard",
        ),
        (
            "aliases = [",
            "password = \"secret\"\naliases = [",
            "28:1: account[0].password",
            "unknown key: not supported by this version of mxguard (expected one of: address, aliases)",
        ),
        (
            "expn = \"off\"",
            "etrn = \"off\"",
            "35:1: smtp.etrn",
            "not supported by this version of mxguard",
        ),
        (
            "command = \"5m\"",
            "comand = \"5m\"",
            "36:14: smtp.timeouts.comand",
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
            "36:24: smtp.timeouts.command",
            "expected a duration like \"5m\" (units ms, s, m, h, d), got \"5 minutes\"",
        ),
        (
            "data = \"10m\"",
            "data = \"0ms\"",
            "36:37: smtp.timeouts.data",
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
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"pop3\"",
            "15:8: listener[1].role",
            "role \"pop3\" is not supported by this version of mxguard (supported: mx, submission)",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"submissions\"",
            "15:8: listener[1].role",
            "not supported by this version of mxguard",
        ),
        (
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"mx\"",
            "role = \"mx\"\n\n[[listener]]\naddress = \"[::1]:2525\"\nrole = \"MX\"",
            "15:8: listener[1].role",
            "expected one of: mx, submission, got \"MX\"",
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
            "34:8: smtp.vrfy",
            "expected one of: ambiguous, off, on, got \"yes\"",
        ),
        (
            "expn = \"off\"",
            "expn = \"ambiguous\"",
            "35:8: smtp.expn",
            "expected one of: off, on, got \"ambiguous\"",
        ),
        (
            "timeouts = { command = \"5m\", data = \"10m\" }",
            "timeouts = 5",
            "36:12: smtp.timeouts",
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
            "27:11: account[0].address",
            "the domain \"example.org\" of \"alice@example.org\" is not in domains.local",
        ),
        (
            "address = \"alice@example.test\"",
            "address = \"alice\"",
            "27:11: account[0].address",
            "expected an address like \"alice@example.test\", got \"alice\"",
        ),
        (
            "address = \"alice@example.test\"",
            "address = \"al ice@example.test\"",
            "27:11: account[0].address",
            "' ' is not allowed before the @",
        ),
        (
            "\"Alice@Other.Test\"",
            "\"alice@nowhere.test\"",
            "28:31: account[0].aliases[1]",
            "is not in domains.local",
        ),
        (
            "\"Alice@Other.Test\"",
            "\"ALICE@example.test\"",
            "28:31: account[0].aliases[1]",
            "\"alice@example.test\" is already used by account[0].address (line 27)",
        ),
        (
            "address = \"Postmaster@Example.Test\"",
            "address = \"AL@example.test\"",
            "31:11: account[1].address",
            "\"al@example.test\" is already used by account[0].aliases[0] (line 28)",
        ),
        (
            "[[account]]\naddress = \"Postmaster@Example.Test\"",
            "[[account]]\naliases = [\"pm@example.test\"]",
            "30:1: account[1].address",
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
        ("[smtp]", "[smtp", "33:6: smtp", "invalid TOML"),
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
        (
            "[[dnsbl]]\nzone = \"bl.example.net\"\n",
            "mxguard.toml:1:3: dnsbl: unknown key: not supported by this version of mxguard",
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
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, path);

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
            "mxguard.toml:5:1: listener[0].role: a submission listener refuses MAIL until AUTH",
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
    let config = parse(&doc[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.warnings(), Vec::<String>::new());
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(
        config
            .account_for("Alice@Example.org")
            .map(|a| a.address.as_str()),
        Some("alice@example.test")
    );
}

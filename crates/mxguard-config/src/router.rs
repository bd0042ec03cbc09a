//! The router table (SPEC §3), in CommuniGate Pro's syntax:
//!
//! ```text
//! ; comments
//! <joe@example.test> = joe@other.test            ; Relay: is the default prefix
//! NoRelay:<*@client.test> = *@mail.client.test
//! RelayAll:<report-*@example.test> = report-*@lists.test
//! other.test = mail.other.test                   ; a domain record
//! <*@spammer.test> = error
//! <misterX@example.test> = spamtrap
//! ```
//!
//! This module parses the text into [`RouterRecord`]s; applying them is
//! `mxguard_policy::router`'s work.
//!
//! # Security
//! The file is the administrator's, but it is parsed defensively: a bad
//! line is an error naming the file and line, never a panic.

use std::collections::HashMap;
use std::path::Path;

use crate::ConfigError;

/// How a record treats the "may relay" marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayPrefix {
    /// `Relay:` (the default): sets the marker, except for multi-route
    /// addresses.
    Relay,
    /// `NoRelay:`: leaves the marker as it is.
    NoRelay,
    /// `RelayAll:`: sets the marker, multi-route addresses included.
    RelayAll,
}

/// What a record's right side says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterTarget {
    /// A new address (address records) or domain (domain records), where
    /// `*` stands for what the left side's `*` matched.
    Rewrite(String),
    /// Refused (as a recipient and as a sender).
    Error,
    /// A spam trap: a message to it is refused whole.
    SpamTrap,
}

/// One line of the router table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterRecord {
    pub line: usize,
    pub prefix: RelayPrefix,
    /// `true` for `<local@domain>` records, `false` for domain records.
    pub address_record: bool,
    /// The left side, lowercase, without `<>`; `*` is a wildcard.
    pub pattern: String,
    pub target: RouterTarget,
}

fn strip_comment(line: &str) -> &str {
    match line.find(';') {
        Some(i) => &line[..i],
        None => line,
    }
}

fn valid_side(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '<' && c != '>' && c != '=')
}

/// Parses router table text; errors name `path` and the line.
pub fn parse_router(text: &str, path: &Path) -> Result<Vec<RouterRecord>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let bad = |entry: &str, message: &str| ConfigError::List {
            path: path.to_path_buf(),
            line: line_no,
            entry: entry.to_string(),
            message: message.to_string(),
        };
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let (left, right) = line
            .split_once('=')
            .ok_or_else(|| bad(line, "expected `<address> = target` or `domain = target`"))?;
        let (left, right) = (left.trim(), right.trim());
        let (prefix, left) = match left.split_once(':') {
            Some((p, rest)) if !p.contains('<') => {
                let prefix = match p.trim().to_ascii_lowercase().as_str() {
                    "relay" => RelayPrefix::Relay,
                    "norelay" => RelayPrefix::NoRelay,
                    "relayall" => RelayPrefix::RelayAll,
                    other => {
                        return Err(bad(
                            other,
                            "unknown prefix (expected Relay:, NoRelay: or RelayAll:)",
                        ));
                    }
                };
                (prefix, rest.trim())
            }
            _ => (RelayPrefix::Relay, left),
        };
        let (address_record, pattern) =
            match left.strip_prefix('<').and_then(|l| l.strip_suffix('>')) {
                Some(p) => (true, p),
                None if left.starts_with('<') || left.ends_with('>') => {
                    return Err(bad(left, "unbalanced < >"));
                }
                None => (false, left),
            };
        if !valid_side(pattern) {
            return Err(bad(left, "expected an address pattern or a domain"));
        }
        if address_record && !pattern.contains('@') && !pattern.contains('*') {
            return Err(bad(left, "an address record needs local@domain"));
        }
        let target = match right.to_ascii_lowercase().as_str() {
            "error" => RouterTarget::Error,
            "spamtrap" => RouterTarget::SpamTrap,
            _ if valid_side(right) => {
                if pattern.matches('*').count() < right.matches('*').count() {
                    return Err(bad(right, "the right side has more `*` than the left side"));
                }
                RouterTarget::Rewrite(right.to_ascii_lowercase())
            }
            _ => {
                return Err(bad(
                    right,
                    "expected an address, a domain, `error` or `spamtrap`",
                ));
            }
        };
        out.push(RouterRecord {
            line: line_no,
            prefix,
            address_record,
            pattern: pattern.to_ascii_lowercase(),
            target,
        });
    }
    Ok(out)
}

/// A parsed router table, indexed: records without `*` are found by a hash
/// lookup, and address records with `*` only in the local part are filed
/// under their domain, so a table of thousands of aliases costs a few hash
/// lookups an address instead of a scan. Only records with `*` in the
/// domain are tried one by one. Dereferences to the records in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterTable {
    records: Vec<RouterRecord>,
    /// Address records without `*`: the address -> the first record's index.
    exact_address: HashMap<String, usize>,
    /// Domain records without `*`: the domain -> the first record's index.
    exact_domain: HashMap<String, usize>,
    /// Address records with `*` in the local part only: the domain -> their
    /// indexes in file order.
    by_domain: HashMap<String, Vec<usize>>,
    /// Indexes of the other records with `*` (in the domain), in file order.
    wildcard: Vec<usize>,
}

impl RouterTable {
    pub fn new(records: Vec<RouterRecord>) -> RouterTable {
        let mut t = RouterTable::default();
        for (i, r) in records.iter().enumerate() {
            let domain_part = r.pattern.rsplit_once('@').map(|(_, d)| d);
            if r.address_record
                && r.pattern.contains('*')
                && let Some(d) = domain_part.filter(|d| !d.contains('*'))
            {
                t.by_domain.entry(d.to_string()).or_default().push(i);
            } else if r.pattern.contains('*') {
                t.wildcard.push(i);
            } else if r.address_record {
                t.exact_address.entry(r.pattern.clone()).or_insert(i);
            } else {
                t.exact_domain.entry(r.pattern.clone()).or_insert(i);
            }
        }
        t.records = records;
        t
    }

    /// The first address record without `*` for `address` (lowercase).
    pub fn exact_address(&self, address: &str) -> Option<usize> {
        self.exact_address.get(address).copied()
    }

    /// The first domain record without `*` for `domain` (lowercase).
    pub fn exact_domain(&self, domain: &str) -> Option<usize> {
        self.exact_domain.get(domain).copied()
    }

    /// The address records with `*` in the local part only, for `domain`
    /// (lowercase), as indexes in file order.
    pub fn local_wildcards(&self, domain: &str) -> &[usize] {
        self.by_domain.get(domain).map_or(&[], Vec::as_slice)
    }

    /// The records with `*` in the domain, as indexes in file order.
    pub fn wildcards(&self) -> &[usize] {
        &self.wildcard
    }
}

impl From<Vec<RouterRecord>> for RouterTable {
    fn from(records: Vec<RouterRecord>) -> Self {
        RouterTable::new(records)
    }
}

impl std::ops::Deref for RouterTable {
    type Target = [RouterRecord];

    fn deref(&self) -> &[RouterRecord] {
        &self.records
    }
}

/// Reads and parses a router file.
pub fn load_router(path: &Path) -> Result<Vec<RouterRecord>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_router(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses() {
        let text = "; comments\n\
            <joe@example.test> = joe@other.test          ; alias\n\
            NoRelay:<*@client.test> = *@mail.client.test\n\
            Relay:<*@backup.test> = *@backup-host.test\n\
            RelayAll:<report-*@example.test> = report-*@lists.test\n\
            <*@spammer.test> = error\n\
            <promo*@bigcorp.test> = ERROR\n\
            <misterX@example.test> = spamtrap\n\
            other.test = mail.other.test\n";
        let r = parse_router(text, Path::new("router.txt")).unwrap();
        assert_eq!(r.len(), 8);
        assert_eq!(r[0].prefix, RelayPrefix::Relay);
        assert_eq!(r[0].line, 2);
        assert_eq!(r[1].prefix, RelayPrefix::NoRelay);
        assert_eq!(r[3].prefix, RelayPrefix::RelayAll);
        assert_eq!(r[4].target, RouterTarget::Error);
        assert_eq!(r[5].target, RouterTarget::Error);
        assert_eq!(r[6].target, RouterTarget::SpamTrap);
        assert_eq!(r[6].pattern, "misterx@example.test");
        assert!(!r[7].address_record);
        assert_eq!(r[7].target, RouterTarget::Rewrite("mail.other.test".into()));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            "no equals sign",
            "<a@b.test = x@y.test",
            "Bogus:<a@b.test> = x@y.test",
            "<a@b.test> = ",
            "<a@b.test> = two words",
            "<a@b.test> = *@y.test",
            "<nodomain> = x@y.test",
        ];
        for (i, c) in cases.iter().enumerate() {
            let text = format!("; ok\n{c}\n");
            match parse_router(&text, Path::new("router.txt")) {
                Err(ConfigError::List { line, path, .. }) => {
                    assert_eq!(line, 2, "case {i}: {c}");
                    assert_eq!(path, Path::new("router.txt"));
                }
                other => panic!("case {i} {c:?}: {other:?}"),
            }
        }
    }
}

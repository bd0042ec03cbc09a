//! Mailbox and path syntax of RFC 5321 §4.1.2 (with RFC 6531 UTF-8).
//!
//! `MAIL FROM:<…>` and `RCPT TO:<…>` arguments are parsed here, strictly:
//! angle brackets are required, lengths are capped as RFC 5321 §4.5.3.1
//! says (local part 64, domain 255, path 256 octets), and source routes
//! (`<@a,@b:user@c>`) are kept apart so relay decisions can see them.
//!
//! # Security
//! Input is untrusted client text. The parser never panics, never
//! allocates more than the input's size, and reports a syntax error for
//! anything outside the grammar.

use std::fmt;
use std::net::IpAddr;

/// `local-part@domain`. The local part is kept as written (a quoted local
/// part keeps its quotes); the domain is lowercased unless it is a literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local_part: String,
    /// The domain, or an address literal with its brackets (`[192.0.2.1]`);
    /// empty only for the bare `<Postmaster>` recipient of RFC 5321 §4.1.1.3.
    pub domain: String,
}

impl Mailbox {
    /// The IP of a domain literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
    pub fn domain_literal_ip(&self) -> Option<IpAddr> {
        let inner = self.domain.strip_prefix('[')?.strip_suffix(']')?;
        match inner.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("ipv6:") => inner[5..].parse().ok(),
            _ => inner.parse().ok(),
        }
    }

    /// True for the bare `Postmaster` recipient, which needs no domain.
    pub fn is_bare_postmaster(&self) -> bool {
        self.domain.is_empty()
    }

    /// True when the local part is a quoted string.
    pub fn is_quoted(&self) -> bool {
        self.local_part.starts_with('"')
    }

    /// The local part with quoting removed.
    pub fn local_part_unquoted(&self) -> String {
        if !self.is_quoted() {
            return self.local_part.clone();
        }
        let inner = &self.local_part[1..self.local_part.len().saturating_sub(1).max(1)];
        let mut out = String::with_capacity(inner.len());
        let mut esc = false;
        for c in inner.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// True when any part holds a non-ASCII character (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local_part.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            write!(f, "{}", self.local_part)
        } else {
            write!(f, "{}@{}", self.local_part, self.domain)
        }
    }
}

/// A forward or reverse path: an optional source route and a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The obsolete source route (`@relay1,@relay2:`), domains without `@`.
    pub route: Vec<String>,
    pub mailbox: Mailbox,
}

/// Why a path did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be enclosed in <>")]
    MissingBrackets,
    #[error("address is longer than 256 octets")]
    PathTooLong,
    #[error("local part is longer than 64 octets")]
    LocalPartTooLong,
    #[error("domain is longer than 255 octets")]
    DomainTooLong,
    #[error("bad address syntax")]
    Syntax,
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || !c.is_ascii() && !c.is_control()
}

fn valid_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn valid_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return false;
    };
    if s.len() < 2 {
        return false;
    }
    let mut esc = false;
    for c in inner.chars() {
        if esc {
            if c.is_ascii() && !(' '..='~').contains(&c) {
                return false;
            }
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '"' || (c.is_ascii() && !(' '..='~').contains(&c)) || c.is_control() {
            return false;
        }
    }
    !esc
}

fn valid_domain_name(d: &str) -> bool {
    !d.is_empty()
        && d.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii() && !c.is_control()
                })
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn valid_address_literal(d: &str) -> bool {
    let Some(inner) = d.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    if inner
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("ipv6:"))
    {
        return inner[5..].parse::<std::net::Ipv6Addr>().is_ok();
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // General-address-literal: Standardized-tag ":" 1*dcontent
    match inner.split_once(':') {
        Some((tag, content)) => {
            valid_domain_name(tag)
                && !content.is_empty()
                && content
                    .bytes()
                    .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b))
        }
        None => false,
    }
}

/// Parses a domain (name or literal) as used after `@`, lowercasing names.
pub fn parse_domain(d: &str) -> Result<String, AddressError> {
    if d.len() > 255 {
        return Err(AddressError::DomainTooLong);
    }
    if d.starts_with('[') {
        if valid_address_literal(d) {
            Ok(d.to_string())
        } else {
            Err(AddressError::Syntax)
        }
    } else if valid_domain_name(d) {
        Ok(d.to_lowercase())
    } else {
        Err(AddressError::Syntax)
    }
}

/// Parses `local@domain` (no brackets).
pub fn parse_mailbox(s: &str) -> Result<Mailbox, AddressError> {
    // The local part may be quoted and contain '@': split at the last '@'
    // that follows the closing quote.
    let at = if s.starts_with('"') {
        // find the closing quote, skipping escaped ones
        let mut end = None;
        let mut esc = false;
        for (i, c) in s.char_indices().skip(1) {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                end = Some(i);
                break;
            }
        }
        let end = end.ok_or(AddressError::Syntax)?;
        if s.as_bytes().get(end + 1) != Some(&b'@') {
            return Err(AddressError::Syntax);
        }
        end + 1
    } else {
        s.rfind('@').ok_or(AddressError::Syntax)?
    };
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.len() > 64 {
        return Err(AddressError::LocalPartTooLong);
    }
    if !(valid_dot_string(local) || valid_quoted_string(local)) {
        return Err(AddressError::Syntax);
    }
    Ok(Mailbox {
        local_part: local.to_string(),
        domain: parse_domain(domain)?,
    })
}

/// Parses `<path>` or `<>`; `Ok(None)` is the null reverse path.
/// `allow_postmaster` accepts the bare `<Postmaster>` (RCPT only).
pub fn parse_path(s: &str, allow_postmaster: bool) -> Result<Option<Path>, AddressError> {
    let inner = s
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .ok_or(AddressError::MissingBrackets)?;
    if inner.len() > 256 {
        return Err(AddressError::PathTooLong);
    }
    if inner.is_empty() {
        return Ok(None);
    }
    if allow_postmaster && inner.eq_ignore_ascii_case("postmaster") {
        return Ok(Some(Path {
            route: Vec::new(),
            mailbox: Mailbox {
                local_part: inner.to_string(),
                domain: String::new(),
            },
        }));
    }
    let (route, mailbox) = if inner.starts_with('@') {
        let (adl, mbox) = inner.split_once(':').ok_or(AddressError::Syntax)?;
        let mut route = Vec::new();
        for hop in adl.split(',') {
            let d = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
            route.push(parse_domain(d)?);
        }
        (route, mbox)
    } else {
        (Vec::new(), inner)
    };
    Ok(Some(Path {
        route,
        mailbox: parse_mailbox(mailbox)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let ok: &[(&str, &str, usize)] = &[
            ("<user@example.test>", "user@example.test", 0),
            (
                "<User.Name+tag@Example.TEST>",
                "User.Name+tag@example.test",
                0,
            ),
            (
                "<\"john doe\"@example.test>",
                "\"john doe\"@example.test",
                0,
            ),
            ("<\"a@b\"@example.test>", "\"a@b\"@example.test", 0),
            (
                "<user%other.test@example.test>",
                "user%other.test@example.test",
                0,
            ),
            ("<host!user@example.test>", "host!user@example.test", 0),
            (
                "<@relay.test,@r2.test:user@example.test>",
                "user@example.test",
                2,
            ),
            ("<user@[192.0.2.1]>", "user@[192.0.2.1]", 0),
            ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]", 0),
            ("<jürgen@bücher.test>", "jürgen@bücher.test", 0),
        ];
        for (input, want, hops) in ok {
            let p = parse_path(input, false)
                .unwrap_or_else(|e| panic!("{input}: {e}"))
                .unwrap();
            assert_eq!(p.mailbox.to_string(), *want);
            assert_eq!(p.route.len(), *hops);
        }
        let bad = [
            "user@example.test",
            "<user>",
            "<@example.test>",
            "<user@>",
            "<user@-bad.test>",
            "<user@exa mple.test>",
            "<us er@example.test>",
            "<user..x@example.test>",
            "<.user@example.test>",
            "<\"unterminated@example.test>",
            "<user@[300.1.1.1]>",
            "<user@example.test",
            "<user@example..test>",
            "<@relay.test:>",
        ];
        for input in bad {
            assert!(parse_path(input, false).is_err(), "{input} should fail");
        }
        assert_eq!(parse_path("<>", false), Ok(None));
        let long = format!("<{}@example.test>", "a".repeat(65));
        assert_eq!(
            parse_path(&long, false),
            Err(AddressError::LocalPartTooLong)
        );
        let long = format!("<a@{}.test>", "b.".repeat(130));
        assert!(parse_path(&long, false).is_err());
        assert!(
            parse_path("<Postmaster>", true)
                .unwrap()
                .unwrap()
                .mailbox
                .is_bare_postmaster()
        );
        assert!(parse_path("<Postmaster>", false).is_err());
    }

    #[test]
    fn literal_and_unquote() {
        let m = parse_mailbox("x@[IPv6:::1]").unwrap();
        assert_eq!(m.domain_literal_ip(), Some("::1".parse().unwrap()));
        let m = parse_mailbox("\"a\\\"b\"@x.test").unwrap();
        assert_eq!(m.local_part_unquoted(), "a\"b");
        assert!(m.is_quoted());
    }
}

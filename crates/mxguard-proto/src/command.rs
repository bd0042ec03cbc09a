//! SMTP command lines (RFC 5321 §4.1, RFC 1870 SIZE, RFC 6152 8BITMIME,
//! RFC 3030 CHUNKING, RFC 6531 SMTPUTF8) parsed into [`Command`].
//!
//! # Security
//! Parses one untrusted line at a time, already stripped of its CRLF and
//! already checked for length and NUL bytes by the session. Never panics.

use crate::address::{AddressError, Path, parse_path};

/// `BODY=` of MAIL FROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

/// The parameters of MAIL FROM that mxguard understands.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` as declared by the client (RFC 1870).
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
}

/// A parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `None` is the null reverse path `<>`.
    Mail(Option<Path>, MailParams),
    Rcpt(Path),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy(String),
    Expn(String),
    StartTls,
    Auth(String),
}

/// A command line that could not be parsed, with the reply it deserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// 500 5.5.1: not a command we know.
    Unrecognized,
    /// 501 5.5.4: wrong arguments (text says how it should look).
    Syntax(&'static str),
    /// 501 5.1.7 / 5.1.3: bad address in MAIL / RCPT.
    BadSender(AddressError),
    BadRecipient(AddressError),
    /// 555 5.5.4: a MAIL/RCPT parameter we do not support.
    UnsupportedParam(String),
    /// 502 5.5.1: a command that exists but is not implemented here.
    NotImplemented(&'static str),
}

fn split_verb(line: &str) -> (&str, &str) {
    match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    }
}

/// Splits `FROM:<path> params` after the keyword; tolerates one space after
/// the colon (common, and harmless) but requires the brackets.
fn split_path_args<'a>(args: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start_matches(' ');
    if !rest.starts_with('<') {
        // Let the path parser report the missing brackets.
        let (p, params) = rest.split_once(' ').unwrap_or((rest, ""));
        return Some((p, params));
    }
    // The path ends at the first '>' that is not inside a quoted local part.
    let mut in_quote = false;
    let mut esc = false;
    for (i, c) in rest.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_quote => esc = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => return Some((&rest[..=i], rest[i + 1..].trim_start_matches(' '))),
            _ => {}
        }
    }
    Some((rest, ""))
}

fn parse_mail_params(params: &str) -> Result<MailParams, ParseError> {
    let mut out = MailParams::default();
    for p in params.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.eq_ignore_ascii_case("SIZE") {
            out.size = Some(
                v.parse()
                    .map_err(|_| ParseError::Syntax("SIZE=<number of octets>"))?,
            );
        } else if k.eq_ignore_ascii_case("BODY") {
            out.body = if v.eq_ignore_ascii_case("7BIT") {
                Body::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                Body::EightBitMime
            } else {
                return Err(ParseError::UnsupportedParam(p.to_string()));
            };
        } else if k.eq_ignore_ascii_case("SMTPUTF8") && v.is_empty() {
            out.smtputf8 = true;
        } else {
            return Err(ParseError::UnsupportedParam(p.to_string()));
        }
    }
    Ok(out)
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &str) -> Result<Command, ParseError> {
    let (verb, args) = split_verb(line);
    let is = |v: &str| verb.eq_ignore_ascii_case(v);
    let no_args = |cmd: Command, usage: &'static str| {
        if args.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax(usage))
        }
    };
    if is("HELO") || is("EHLO") {
        let name = args.trim();
        if name.is_empty() || name.contains(' ') {
            return Err(ParseError::Syntax(if is("HELO") {
                "HELO hostname"
            } else {
                "EHLO hostname"
            }));
        }
        Ok(if is("HELO") {
            Command::Helo(name.to_string())
        } else {
            Command::Ehlo(name.to_string())
        })
    } else if is("MAIL") {
        let (path, params) =
            split_path_args(args, "FROM:").ok_or(ParseError::Syntax("MAIL FROM:<address>"))?;
        let path = parse_path(path, false).map_err(ParseError::BadSender)?;
        Ok(Command::Mail(path, parse_mail_params(params)?))
    } else if is("RCPT") {
        let (path, params) =
            split_path_args(args, "TO:").ok_or(ParseError::Syntax("RCPT TO:<address>"))?;
        let path = parse_path(path, true)
            .map_err(ParseError::BadRecipient)?
            .ok_or(ParseError::BadRecipient(AddressError::Syntax))?;
        if let Some(p) = params.split(' ').find(|p| !p.is_empty()) {
            return Err(ParseError::UnsupportedParam(p.to_string()));
        }
        Ok(Command::Rcpt(path))
    } else if is("DATA") {
        no_args(Command::Data, "DATA")
    } else if is("BDAT") {
        let mut it = args.split(' ').filter(|s| !s.is_empty());
        let size = it
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(ParseError::Syntax("BDAT <size> [LAST]"))?;
        let last = match it.next() {
            None => false,
            Some(l) if l.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return Err(ParseError::Syntax("BDAT <size> [LAST]")),
        };
        if it.next().is_some() {
            return Err(ParseError::Syntax("BDAT <size> [LAST]"));
        }
        Ok(Command::Bdat { size, last })
    } else if is("RSET") {
        no_args(Command::Rset, "RSET")
    } else if is("NOOP") {
        Ok(Command::Noop)
    } else if is("QUIT") {
        no_args(Command::Quit, "QUIT")
    } else if is("HELP") {
        Ok(Command::Help)
    } else if is("VRFY") {
        if args.trim().is_empty() {
            return Err(ParseError::Syntax("VRFY address"));
        }
        Ok(Command::Vrfy(args.trim().to_string()))
    } else if is("EXPN") {
        if args.trim().is_empty() {
            return Err(ParseError::Syntax("EXPN list"));
        }
        Ok(Command::Expn(args.trim().to_string()))
    } else if is("STARTTLS") {
        no_args(Command::StartTls, "STARTTLS")
    } else if is("AUTH") {
        Ok(Command::Auth(args.to_string()))
    } else if is("TURN") || is("ETRN") || is("ATRN") || is("SEND") || is("SOML") || is("SAML") {
        Err(ParseError::NotImplemented("Command not implemented"))
    } else {
        Err(ParseError::Unrecognized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let ok: &[(&str, &str)] = &[
            ("EHLO client.test", "Ehlo"),
            ("helo client.test", "Helo"),
            ("MAIL FROM:<a@b.test>", "Mail"),
            ("mail from: <a@b.test> SIZE=1000 BODY=8BITMIME", "Mail"),
            ("MAIL FROM:<>", "Mail"),
            ("RCPT TO:<x@y.test>", "Rcpt"),
            ("RCPT TO:<Postmaster>", "Rcpt"),
            ("RCPT TO:<\"a>b\"@y.test>", "Rcpt"),
            ("DATA", "Data"),
            ("BDAT 100 LAST", "Bdat"),
            ("BDAT 0", "Bdat"),
            ("RSET", "Rset"),
            ("NOOP anything", "Noop"),
            ("QUIT", "Quit"),
            ("HELP", "Help"),
            ("VRFY joe", "Vrfy"),
            ("STARTTLS", "StartTls"),
        ];
        for (line, kind) in ok {
            let c = parse_command(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
            assert!(format!("{c:?}").starts_with(kind), "{line} -> {c:?}");
        }
        let bad: &[(&str, ParseError)] = &[
            ("FOO", ParseError::Unrecognized),
            ("", ParseError::Unrecognized),
            ("EHLO", ParseError::Syntax("EHLO hostname")),
            (
                "MAIL TO:<a@b.test>",
                ParseError::Syntax("MAIL FROM:<address>"),
            ),
            (
                "MAIL FROM:a@b.test",
                ParseError::BadSender(AddressError::MissingBrackets),
            ),
            (
                "MAIL FROM:<a@b.test> RET=FULL",
                ParseError::UnsupportedParam("RET=FULL".into()),
            ),
            (
                "MAIL FROM:<a@b.test> BODY=BINARYMIME",
                ParseError::UnsupportedParam("BODY=BINARYMIME".into()),
            ),
            (
                "MAIL FROM:<a@b.test> SIZE=x",
                ParseError::Syntax("SIZE=<number of octets>"),
            ),
            ("RCPT TO:<>", ParseError::BadRecipient(AddressError::Syntax)),
            (
                "RCPT TO:<a@b.test> NOTIFY=NEVER",
                ParseError::UnsupportedParam("NOTIFY=NEVER".into()),
            ),
            ("DATA x", ParseError::Syntax("DATA")),
            ("BDAT", ParseError::Syntax("BDAT <size> [LAST]")),
            ("BDAT 10 FIRST", ParseError::Syntax("BDAT <size> [LAST]")),
            (
                "ETRN x",
                ParseError::NotImplemented("Command not implemented"),
            ),
        ];
        for (line, want) in bad {
            assert_eq!(&parse_command(line).unwrap_err(), want, "{line}");
        }
        match parse_command("MAIL FROM:<a@b.test> SIZE=1000 BODY=8BITMIME SMTPUTF8").unwrap() {
            Command::Mail(Some(p), params) => {
                assert_eq!(p.mailbox.to_string(), "a@b.test");
                assert_eq!(params.size, Some(1000));
                assert_eq!(params.body, Body::EightBitMime);
                assert!(params.smtputf8);
            }
            other => panic!("{other:?}"),
        }
    }
}

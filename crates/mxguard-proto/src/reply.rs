//! SMTP replies: a reply code, an enhanced status code (RFC 3463) and text.
//!
//! Every reply mxguard sends is built here, through one validating
//! constructor, so a reply can never carry a class mismatch ("550 4.1.1"),
//! a CR/LF injected into its text, or a code outside 200..=599.
//!
//! # Security
//! Reply text may come from the configuration or echo client input (a
//! HELO name, an address). [`Reply::new`] strips CR, LF and other control
//! characters so that nothing can inject an extra reply line.

use std::fmt;

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        EnhancedCode {
            class,
            subject,
            detail,
        }
    }

    /// Parses `5.7.1`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let class: u8 = it.next()?.parse().ok()?;
        let subject: u16 = it.next()?.parse().ok()?;
        let detail: u16 = it.next()?.parse().ok()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(EnhancedCode::new(class, subject, detail))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Why a reply could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply code {0} is not between 200 and 599")]
    BadCode(u16),
    #[error("enhanced status code {enhanced} does not match the class of reply code {code}")]
    ClassMismatch { code: u16, enhanced: EnhancedCode },
    #[error("expected a reply like \"554 5.7.1 Access denied\", got {0:?}")]
    Unparsable(String),
}

/// One SMTP reply, possibly of several lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Reply {
    /// Builds a reply; the enhanced code's class must equal the code's first digit.
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> Result<Reply, ReplyError> {
        if !(200..=599).contains(&code) {
            return Err(ReplyError::BadCode(code));
        }
        if let Some(e) = enhanced
            && u16::from(e.class) != code / 100
        {
            return Err(ReplyError::ClassMismatch { code, enhanced: e });
        }
        Ok(Reply {
            code,
            enhanced,
            lines: vec![clean_text(text)],
        })
    }

    /// Builds a reply from constants known to be valid (the fixed replies
    /// of the protocol and of policy checks). A mismatch there is a
    /// programming error, caught by the tests, and degrades to a generic 451
    /// rather than a panic.
    pub fn fixed(code: u16, class: u8, subject: u16, detail: u16, text: &str) -> Reply {
        Reply::new(code, Some(EnhancedCode::new(class, subject, detail)), text).unwrap_or_else(
            |_| Reply {
                code: 451,
                enhanced: Some(EnhancedCode::new(4, 3, 0)),
                lines: vec!["Internal error".into()],
            },
        )
    }

    /// A reply without enhanced code (greeting, EHLO, 3xx), from constants.
    pub fn fixed_plain(code: u16, text: &str) -> Reply {
        Reply::new(code, None, text)
            .unwrap_or_else(|_| Reply::fixed(451, 4, 3, 0, "Internal error"))
    }

    /// Parses an administrator's reply string: `"554 5.7.1 Access denied"`,
    /// `"421 go away"` (no enhanced code), or `"550"`.
    pub fn parse(s: &str) -> Result<Reply, ReplyError> {
        let s = s.trim();
        let bad = || ReplyError::Unparsable(s.to_string());
        let (code_str, rest) = s.split_once(' ').unwrap_or((s, ""));
        if code_str.len() != 3 {
            return Err(bad());
        }
        let code: u16 = code_str.parse().map_err(|_| bad())?;
        let rest = rest.trim_start();
        let (enhanced, text) = match rest.split_once(' ').unwrap_or((rest, "")) {
            (first, text)
                if first.contains('.') && first.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                match EnhancedCode::parse(first) {
                    Some(e) => (Some(e), text.trim_start()),
                    None => return Err(bad()),
                }
            }
            _ => (None, rest),
        };
        Reply::new(code, enhanced, text)
    }

    /// Adds a further line (multi-line replies such as EHLO's).
    pub fn with_line(mut self, text: &str) -> Reply {
        self.lines.push(clean_text(text));
        self
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text of the first line (without code).
    pub fn text(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }

    /// The text of every line (without code and enhanced code); a reply
    /// has at least one line.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Replaces `%NAME%` placeholders in the text.
    pub fn substitute(&self, vars: &[(&str, &str)]) -> Reply {
        let mut r = self.clone();
        for line in &mut r.lines {
            for (k, v) in vars {
                let pat = format!("%{k}%");
                if line.contains(&pat) {
                    *line = line.replace(&pat, &clean_text(v));
                }
            }
        }
        r
    }

    /// Appends the wire form (`code[-| ]enhanced text\r\n` per line).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            let mut s = format!("{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                s.push_str(&e.to_string());
                if !line.is_empty() {
                    s.push(' ');
                }
            }
            s.push_str(line);
            s.push_str("\r\n");
            out.extend_from_slice(s.as_bytes());
        }
    }

    pub fn to_wire(&self) -> String {
        let mut v = Vec::new();
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

impl fmt::Display for Reply {
    /// One line, for logs: `550 5.1.1 text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_replies() {
        // Some((code, enhanced code, text)) or None for a parse error
        type Want = Option<(u16, Option<&'static str>, &'static str)>;
        let cases: &[(&str, Want)] = &[
            (
                "554 5.7.1 Access denied",
                Some((554, Some("5.7.1"), "Access denied")),
            ),
            ("421 4.7.1 go away", Some((421, Some("4.7.1"), "go away"))),
            ("421 go away", Some((421, None, "go away"))),
            ("550", Some((550, None, ""))),
            (
                "220 mx.example.test ESMTP",
                Some((220, None, "mx.example.test ESMTP")),
            ),
            ("550 4.7.1 mismatch", None),
            ("99 x", None),
            ("700 7.1.1 x", None),
            ("abc def", None),
            ("550 5.x.1 bad", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = Reply::parse(input);
            match want {
                None => assert!(got.is_err(), "{input:?} should fail, got {got:?}"),
                Some((code, enh, text)) => {
                    let r = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                    assert_eq!(r.code(), *code, "{input}");
                    assert_eq!(r.enhanced().map(|e| e.to_string()).as_deref(), *enh);
                    assert_eq!(r.text(), *text);
                }
            }
        }
    }

    #[test]
    fn wire_form_and_injection() {
        let r = Reply::new(250, None, "mx.test")
            .unwrap()
            .with_line("PIPELINING");
        assert_eq!(r.to_wire(), "250-mx.test\r\n250 PIPELINING\r\n");
        let r = Reply::new(550, Some(EnhancedCode::new(5, 1, 1)), "no\r\n250 ok").unwrap();
        assert_eq!(r.to_wire(), "550 5.1.1 no  250 ok\r\n");
        let r = Reply::parse("554 5.7.1 [%IP%] listed")
            .unwrap()
            .substitute(&[("IP", "1.2.3.4\r\n")]);
        assert_eq!(r.to_wire(), "554 5.7.1 [1.2.3.4  ] listed\r\n");
    }

    #[test]
    fn class_must_match() {
        assert!(Reply::new(450, Some(EnhancedCode::new(5, 1, 1)), "x").is_err());
        assert!(Reply::new(600, None, "x").is_err());
    }
}

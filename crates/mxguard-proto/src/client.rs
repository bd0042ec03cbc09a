//! The sans-IO pieces of mxguard's outbound SMTP client.
//!
//! - [`ReplyParser`]: bytes from a server in, complete [`Reply`] values out
//!   (single-line and multi-line `250-` / `250 ` replies, with the RFC 3463
//!   enhanced status code split off when the server sends one).
//! - [`Extensions`]: what a server offers, read from its EHLO reply.
//! - [`BodyEncoder`] and [`dot_stuff`]: message content to the DATA wire
//!   form, chunk by chunk, so a large message never has to be in memory.
//!
//! Nothing here does IO or looks at a clock; the tokio client in the
//! `mxguard` binary (`delivery::remote::client`) drives these pieces.
//!
//! # Security
//! Everything [`ReplyParser`] reads comes from a remote server that may be
//! hostile or broken. A reply line is capped at [`MAX_REPLY_LINE`] octets and
//! a reply at [`MAX_REPLY_LINES`] lines and [`MAX_REPLY_BYTES`] octets, so a
//! server cannot make the client buffer without bound; anything that is not
//! `DDD[ -]text` with a code in 200..=599 (and the same code on every line of
//! a reply) is an error, never a panic. Reply text is decoded lossily as
//! UTF-8 and goes through [`Reply::new`], which replaces control characters,
//! so server text logged or quoted in a bounce cannot inject lines.
//!
//! The body encoder turns bare CR and bare LF into CRLF and dot-stuffs every
//! line, so message content can never contain an end-of-data sequence that
//! some receiver might honour ("SMTP smuggling"): the only `CRLF.CRLF` on
//! the wire is the one [`BodyEncoder::finish`] writes.

use std::collections::VecDeque;

use crate::reply::{EnhancedCode, Reply};

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 says 512;
/// real servers send longer, so there is room to spare.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one reply.
pub const MAX_REPLY_LINES: usize = 256;
/// Most octets in one reply, all lines together.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Why the server's bytes are not SMTP replies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyParseError {
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("reply longer than {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} octets")]
    ReplyTooLong,
    #[error("not an SMTP reply line: {0:?}")]
    BadLine(String),
    #[error("reply code changed within a multi-line reply ({first} then {then})")]
    CodeChanged { first: u16, then: u16 },
}

/// A reply being assembled from its lines.
#[derive(Debug)]
struct Partial {
    code: u16,
    bytes: usize,
    lines: Vec<String>,
}

/// Incremental reply parser: [`push`](ReplyParser::push) bytes as they
/// arrive, take replies with [`next_reply`](ReplyParser::next_reply).
///
/// Lines end in CRLF (a bare LF is tolerated). Replies are returned in
/// order; an error is returned after every reply that was complete before
/// it, and from then on the parser ignores further input (the connection is
/// to be dropped).
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Bytes of the current, incomplete line.
    line: Vec<u8>,
    partial: Option<Partial>,
    ready: VecDeque<Reply>,
    error: Option<ReplyParseError>,
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Feeds bytes read from the server.
    pub fn push(&mut self, mut data: &[u8]) {
        while self.error.is_none() && !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    if self.line.len() + i + 1 > MAX_REPLY_LINE {
                        self.fail(ReplyParseError::LineTooLong);
                        return;
                    }
                    self.line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let mut line = std::mem::take(&mut self.line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if let Err(e) = self.take_line(&line) {
                        self.fail(e);
                    }
                }
                None => {
                    if self.line.len() + data.len() >= MAX_REPLY_LINE {
                        self.fail(ReplyParseError::LineTooLong);
                        return;
                    }
                    self.line.extend_from_slice(data);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, e: ReplyParseError) {
        self.error = Some(e);
        self.line = Vec::new();
        self.partial = None;
    }

    /// The next complete reply; `Ok(None)` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyParseError> {
        if let Some(r) = self.ready.pop_front() {
            return Ok(Some(r));
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// True when nothing is buffered: no reply waiting and no partial line.
    /// After the 220 to STARTTLS this must hold; anything else was sent
    /// before the TLS handshake and must not be read as if it came after.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && self.partial.is_none() && self.ready.is_empty()
    }

    fn take_line(&mut self, line: &[u8]) -> Result<(), ReplyParseError> {
        let bad = || ReplyParseError::BadLine(String::from_utf8_lossy(line).into_owned());
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let code = line[..3]
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(200..=599).contains(&code) {
            return Err(bad());
        }
        let (last, text) = match line.get(3) {
            None => (true, &line[3..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(bad()),
        };
        let text = String::from_utf8_lossy(text).into_owned();
        let partial = self.partial.get_or_insert_with(|| Partial {
            code,
            bytes: 0,
            lines: Vec::new(),
        });
        if partial.code != code {
            return Err(ReplyParseError::CodeChanged {
                first: partial.code,
                then: code,
            });
        }
        partial.bytes += line.len() + 2;
        partial.lines.push(text);
        if partial.lines.len() > MAX_REPLY_LINES || partial.bytes > MAX_REPLY_BYTES {
            return Err(ReplyParseError::ReplyTooLong);
        }
        if last && let Some(p) = self.partial.take() {
            self.ready.push_back(build_reply(p.code, p.lines)?);
        }
        Ok(())
    }
}

/// Splits a leading enhanced status code (`5.1.1 text`) off a line when its
/// class matches the reply code.
fn split_enhanced(code: u16, text: &str) -> Option<(EnhancedCode, &str)> {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    let e = EnhancedCode::parse(first)?;
    (u16::from(e.class) == code / 100).then_some((e, rest))
}

/// Builds a reply from a server's lines (code already checked).
fn build_reply(code: u16, lines: Vec<String>) -> Result<Reply, ReplyParseError> {
    let mut it = lines.into_iter();
    let first = it.next().unwrap_or_default();
    let (enhanced, first_text) = match split_enhanced(code, &first) {
        Some((e, rest)) => (Some(e), rest),
        None => (None, first.as_str()),
    };
    let mut reply = Reply::new(code, enhanced, first_text)
        .map_err(|_| ReplyParseError::BadLine(format!("{code} {first}")))?;
    for line in it {
        // RFC 2034 §4: every line of the reply carries the enhanced code.
        let text = match (enhanced, split_enhanced(code, &line)) {
            (Some(e), Some((e2, rest))) if e == e2 => rest,
            _ => line.as_str(),
        };
        reply = reply.with_line(text);
    }
    Ok(reply)
}

/// What a server offers, from its EHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870: SIZE is advertised (the `SIZE=` MAIL parameter may be sent).
    pub size: bool,
    /// RFC 1870: the advertised limit; `None` when SIZE is absent or gives
    /// no limit (`SIZE` alone, `SIZE 0`).
    pub max_size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 3030 (BDAT).
    pub chunking: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
}

impl Extensions {
    /// Reads the keywords of an EHLO reply. The first line is the server's
    /// name and greeting; unknown keywords are ignored.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => {
                    ext.size = true;
                    ext.max_size = words
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|&n| n > 0);
                }
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                _ => {}
            }
        }
        ext
    }
}

/// Dot-stuffs `input` into `out` (RFC 5321 §4.5.2): a `.` at the start of a
/// line is doubled. `at_line_start` carries the state from one chunk to the
/// next; start with `true`. A line starts after any LF, so a bare LF
/// followed by a dot is stuffed as well.
///
/// This does not repair bare CR or LF; [`BodyEncoder`] does, and is what
/// the client uses.
pub fn dot_stuff(input: &[u8], out: &mut Vec<u8>, at_line_start: &mut bool) {
    out.reserve(input.len() + input.len() / 64 + 1);
    let mut rest = input;
    while !rest.is_empty() {
        if *at_line_start && rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                out.extend_from_slice(&rest[..=i]);
                rest = &rest[i + 1..];
                *at_line_start = true;
            }
            None => {
                out.extend_from_slice(rest);
                *at_line_start = false;
                return;
            }
        }
    }
}

/// Appends the end of data to a body dot-stuffed with [`dot_stuff`]: a CRLF
/// when the body did not end with a line end, then `.` CRLF.
pub fn finish_body(out: &mut Vec<u8>, at_line_start: bool) {
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Message content to the DATA wire form, over chunks: bare CR and bare LF
/// become CRLF, a `.` starting a line is doubled, and
/// [`finish`](BodyEncoder::finish) ends the last line if needed and writes
/// the terminating `.` CRLF.
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    at_line_start: bool,
    /// The previous chunk ended with a CR whose LF may come next.
    pending_cr: bool,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        BodyEncoder::new()
    }
}

impl BodyEncoder {
    pub fn new() -> BodyEncoder {
        BodyEncoder {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Encodes one chunk of content, appending to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 2);
        let mut start = 0;
        for (i, &b) in input.iter().enumerate() {
            if self.pending_cr {
                self.pending_cr = false;
                // A CR ends the line whatever follows: CRLF, or a bare CR
                // made into CRLF.
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if b == b'\n' {
                    start = i + 1;
                    continue;
                }
            }
            match b {
                b'\r' | b'\n' => {
                    out.extend_from_slice(&input[start..i]);
                    start = i + 1;
                    if b == b'\r' {
                        self.pending_cr = true;
                    } else {
                        out.extend_from_slice(b"\r\n");
                        self.at_line_start = true;
                    }
                }
                b'.' if self.at_line_start => {
                    out.extend_from_slice(&input[start..i]);
                    start = i;
                    out.push(b'.');
                    self.at_line_start = false;
                }
                _ => self.at_line_start = false,
            }
        }
        out.extend_from_slice(&input[start..]);
    }

    /// Ends the content: a pending CR, a last line without line end, then
    /// `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.pending_cr = false;
        self.at_line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (code, enhanced, lines) of a parsed reply.
    type Parsed = (u16, Option<&'static str>, Vec<&'static str>);

    fn parse_all(input: &[u8], chunk: usize) -> (Vec<Reply>, Option<ReplyParseError>) {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            p.push(c);
        }
        loop {
            match p.next_reply() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn parses_replies_in_any_chunking() {
        let cases: Vec<(&[u8], Vec<Parsed>)> = vec![
            (
                b"220 mx.test ESMTP\r\n",
                vec![(220, None, vec!["mx.test ESMTP"])],
            ),
            (
                b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
                vec![(250, None, vec!["mx.test", "PIPELINING", "SIZE 1000"])],
            ),
            (
                b"550 5.1.1 <x@y>: unknown\r\n",
                vec![(550, Some("5.1.1"), vec!["<x@y>: unknown"])],
            ),
            (
                b"550-5.7.1 first\r\n550 5.7.1 second\r\n",
                vec![(550, Some("5.7.1"), vec!["first", "second"])],
            ),
            // class mismatch: kept as text
            (b"250 4.1.1 odd\r\n", vec![(250, None, vec!["4.1.1 odd"])]),
            // no text, bare LF, several replies in one read
            (
                b"250\n354 go ahead\r\n221 2.0.0 bye\r\n",
                vec![
                    (250, None, vec![""]),
                    (354, None, vec!["go ahead"]),
                    (221, Some("2.0.0"), vec!["bye"]),
                ],
            ),
            (b"421 4.7.0\r\n", vec![(421, Some("4.7.0"), vec![""])]),
            // incomplete: nothing yet
            (b"250-mx.test\r\n250 PIPE", vec![]),
            // control characters in text are neutralised
            (b"250 a\x00b\x1bc\r\n", vec![(250, None, vec!["a b c"])]),
            // non-UTF-8 text survives lossily
            (b"250 caf\xe9\r\n", vec![(250, None, vec!["caf\u{fffd}"])]),
        ];
        for (input, want) in &cases {
            for chunk in [1, 2, 3, 7, 1000] {
                let (got, err) = parse_all(input, chunk);
                assert!(err.is_none(), "{input:?}: {err:?}");
                let got: Vec<(u16, Option<String>, Vec<String>)> = got
                    .iter()
                    .map(|r| {
                        (
                            r.code(),
                            r.enhanced().map(|e| e.to_string()),
                            r.lines().to_vec(),
                        )
                    })
                    .collect();
                let want: Vec<(u16, Option<String>, Vec<String>)> = want
                    .iter()
                    .map(|(c, e, l)| {
                        (
                            *c,
                            e.map(str::to_string),
                            l.iter().map(|s| s.to_string()).collect(),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{input:?} in chunks of {chunk}");
            }
        }
    }

    #[test]
    fn refuses_garbage() {
        let long_line = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE], b"\r\n"].concat();
        let no_newline = vec![b'2'; MAX_REPLY_LINE + 10];
        let mut many_lines = Vec::new();
        for _ in 0..=MAX_REPLY_LINES {
            many_lines.extend_from_slice(b"250-x\r\n");
        }
        many_lines.extend_from_slice(b"250 end\r\n");
        // (input, replies before the error, the error)
        type Case = (Vec<u8>, usize, fn(&ReplyParseError) -> bool);
        let cases: Vec<Case> = vec![
            (b"HTTP/1.1 400 Bad\r\n".to_vec(), 0, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"25\r\n".to_vec(), 0, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"199 low\r\n".to_vec(), 0, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"600 high\r\n".to_vec(), 0, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"250x\r\n".to_vec(), 0, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"\r\n".to_vec(), 0, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"250 ok\r\n2\xff0 x\r\n".to_vec(), 1, |e| {
                matches!(e, ReplyParseError::BadLine(_))
            }),
            (b"250-a\r\n550 b\r\n".to_vec(), 0, |e| {
                *e == ReplyParseError::CodeChanged {
                    first: 250,
                    then: 550,
                }
            }),
            (long_line, 0, |e| *e == ReplyParseError::LineTooLong),
            (no_newline, 0, |e| *e == ReplyParseError::LineTooLong),
            (many_lines, 0, |e| *e == ReplyParseError::ReplyTooLong),
        ];
        for (input, n_ok, is_err) in &cases {
            for chunk in [1, 5, 100_000] {
                let (got, err) = parse_all(input, chunk);
                assert_eq!(got.len(), *n_ok, "{:?}", String::from_utf8_lossy(input));
                let err = err
                    .unwrap_or_else(|| panic!("{:?} should fail", String::from_utf8_lossy(input)));
                assert!(is_err(&err), "{err:?}");
            }
        }
    }

    #[test]
    fn error_is_sticky_and_idle_tracks_buffered_bytes() {
        let mut p = ReplyParser::new();
        assert!(p.is_idle());
        p.push(b"220 go ahead\r\n");
        assert!(!p.is_idle());
        assert_eq!(p.next_reply().unwrap().unwrap().code(), 220);
        assert!(p.is_idle());
        p.push(b"250 inj");
        assert!(!p.is_idle());
        let mut p = ReplyParser::new();
        p.push(b"junk\r\n250 ok\r\n");
        assert!(p.next_reply().is_err());
        assert!(p.next_reply().is_err());
    }

    #[test]
    fn reads_extensions() {
        let ehlo = |lines: &[&str]| {
            let mut r = Reply::new(250, None, "mx.test greets you").unwrap();
            for l in lines {
                r = r.with_line(l);
            }
            Extensions::from_ehlo(&r)
        };
        let all = ehlo(&[
            "PIPELINING",
            "SIZE 10240000",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
            "AUTH PLAIN LOGIN",
            "X-UNKNOWN",
        ]);
        assert_eq!(
            all,
            Extensions {
                pipelining: true,
                size: true,
                max_size: Some(10_240_000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
            }
        );
        let cases: &[(&[&str], bool, Option<u64>)] = &[
            (&[], false, None),
            (&["SIZE"], true, None),
            (&["SIZE 0"], true, None),
            (&["size 1000"], true, Some(1000)),
            (&["SIZE junk"], true, None),
            (&["SIZE 99999999999999999999999"], true, None),
        ];
        for (lines, size, max) in cases {
            let e = ehlo(lines);
            assert_eq!((e.size, e.max_size), (*size, *max), "{lines:?}");
        }
        assert!(ehlo(&["pipelining"]).pipelining);
        // The first line is the greeting, even when it looks like a keyword.
        let r = Reply::new(250, None, "STARTTLS").unwrap();
        assert!(!Extensions::from_ehlo(&r).starttls);
    }

    #[test]
    fn dot_stuffs_over_chunks() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a.b\r\n.", b"a.b\r\n..\r\n.\r\n"),
        ];
        for (input, want) in cases {
            for chunk in [1, 2, 3, 1000] {
                let mut out = Vec::new();
                let mut at = true;
                for c in input.chunks(chunk) {
                    dot_stuff(c, &mut out, &mut at);
                }
                finish_body(&mut out, at);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(want),
                    "dot_stuff {:?} / {chunk}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn body_encoder_normalises_line_ends() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
            (b"a\r\nb", b"a\r\nb\r\n.\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
            (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
            // smuggling attempts: every dot after any line end is stuffed
            (
                b"x\n.\r\nMAIL FROM:<a>\r\n",
                b"x\r\n..\r\nMAIL FROM:<a>\r\n.\r\n",
            ),
            (b"x\r\n.\ny", b"x\r\n..\r\ny\r\n.\r\n"),
            (b"x\r.\r", b"x\r\n..\r\n.\r\n"),
            (b"..", b"...\r\n.\r\n"),
            (b"a.\r\n", b"a.\r\n.\r\n"),
            (b"\xc3\xa9\r\n", b"\xc3\xa9\r\n.\r\n"),
        ];
        for (input, want) in cases {
            for chunk in [1, 2, 3, 1000] {
                let mut enc = BodyEncoder::new();
                let mut out = Vec::new();
                for c in input.chunks(chunk) {
                    enc.push(c, &mut out);
                }
                enc.finish(&mut out);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(want),
                    "{:?} / {chunk}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn body_encoder_output_has_a_single_terminator() {
        // Every input of up to 6 octets from an alphabet of the interesting
        // ones: the output ends with CRLF.CRLF and holds it nowhere else,
        // and has no bare CR or LF.
        let alphabet = [b'\r', b'\n', b'.', b'a'];
        for len in 0..=6u32 {
            for n in 0..4usize.pow(len) {
                let mut input = Vec::new();
                let mut k = n;
                for _ in 0..len {
                    input.push(alphabet[k % 4]);
                    k /= 4;
                }
                let mut enc = BodyEncoder::new();
                let mut out = b"\r\n".to_vec(); // as after "354"
                enc.push(&input, &mut out);
                enc.finish(&mut out);
                let hits = out.windows(5).filter(|w| *w == b"\r\n.\r\n").count();
                assert_eq!(hits, 1, "{input:?} -> {out:?}");
                assert!(out.ends_with(b"\r\n.\r\n"));
                for (i, &b) in out.iter().enumerate() {
                    if b == b'\r' {
                        assert_eq!(out.get(i + 1), Some(&b'\n'), "{input:?} -> {out:?}");
                    }
                    if b == b'\n' {
                        assert_eq!(out[i - 1], b'\r', "{input:?} -> {out:?}");
                    }
                }
            }
        }
    }
}

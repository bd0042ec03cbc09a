//! Message content readers: DATA (dot-stuffed, ends at CRLF.CRLF) and
//! BDAT chunks (counted octets), with the same line checks for both.

use memchr::{memchr, memchr2_iter};

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
pub(crate) const MAX_TEXT_LINE: usize = 1000;

/// Why a message is refused once its content has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    TooLarge,
    LineTooLong,
    BareLineEnding,
}

/// Decodes DATA content. Only complete lines are consumed (a partial line
/// of up to 1000 octets stays in the caller's buffer), so the terminator
/// is recognised only as CRLF "." CRLF, never after a bare LF.
#[derive(Debug)]
pub(crate) struct DataReader {
    size: u64,
    max: u64,
    skipping_long_line: bool,
    pub(crate) flaw: Option<Flaw>,
}

impl DataReader {
    pub(crate) fn new(max: u64) -> Self {
        DataReader {
            size: 0,
            max,
            skipping_long_line: false,
            flaw: None,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn flag(&mut self, f: Flaw) {
        // The first flaw decides the reply; size wins since it is what a
        // client can act on.
        if self.flaw.is_none() || f == Flaw::TooLarge {
            self.flaw = Some(f);
        }
    }

    fn append(&mut self, content: &[u8], out: &mut Vec<u8>) {
        self.size += content.len() as u64 + 2;
        if self.size > self.max {
            self.flag(Flaw::TooLarge);
        }
        if self.flaw.is_none() {
            out.extend_from_slice(content);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Consumes what it can of `buf`, appending unstuffed content to `out`.
    /// Returns the octets consumed and whether the terminator was seen.
    pub(crate) fn feed(&mut self, buf: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let Some(i) = memchr(b'\n', rest) else {
                if self.skipping_long_line {
                    return (buf.len(), false);
                }
                if rest.len() >= MAX_TEXT_LINE {
                    self.flag(Flaw::LineTooLong);
                    self.size += rest.len() as u64;
                    self.skipping_long_line = true;
                    return (buf.len(), false);
                }
                return (pos, false);
            };
            pos += i + 1;
            if self.skipping_long_line {
                self.skipping_long_line = false;
                self.size += i as u64 + 1;
                continue;
            }
            let crlf = i >= 1 && rest[i - 1] == b'\r';
            let content = if crlf { &rest[..i - 1] } else { &rest[..i] };
            if !crlf {
                self.flag(Flaw::BareLineEnding);
            } else if content == b"." {
                return (pos, true);
            }
            if i + 1 > MAX_TEXT_LINE {
                self.flag(Flaw::LineTooLong);
            }
            if memchr(b'\r', content).is_some() {
                self.flag(Flaw::BareLineEnding);
            }
            let content = content.strip_prefix(b".").unwrap_or(content);
            self.append(content, out);
        }
    }
}

/// Checks BDAT chunks, which carry raw octets, for the same line rules.
#[derive(Debug, Default)]
pub(crate) struct ChunkChecker {
    line_len: usize,
    prev_cr: bool,
    pub(crate) size: u64,
    pub(crate) flaw: Option<Flaw>,
}

impl ChunkChecker {
    pub(crate) fn check(&mut self, chunk: &[u8], max: u64) {
        self.size += chunk.len() as u64;
        if self.size > max {
            self.flaw = Some(Flaw::TooLarge);
        }
        if self.flaw.is_some() {
            return;
        }
        let mut last = 0;
        for i in memchr2_iter(b'\r', b'\n', chunk) {
            if self.prev_cr && (i > last || chunk[i] != b'\n') {
                self.flaw = Some(Flaw::BareLineEnding);
                return;
            }
            self.line_len += i - last;
            last = i + 1;
            if chunk[i] == b'\n' {
                if !self.prev_cr {
                    self.flaw = Some(Flaw::BareLineEnding);
                    return;
                }
                // line_len counts content and the CR; add the LF.
                if self.line_len + 1 > MAX_TEXT_LINE {
                    self.flaw = Some(Flaw::LineTooLong);
                    return;
                }
                self.line_len = 0;
                self.prev_cr = false;
            } else {
                self.line_len += 1;
                self.prev_cr = true;
            }
        }
        if last < chunk.len() {
            if self.prev_cr {
                self.flaw = Some(Flaw::BareLineEnding);
                return;
            }
            self.line_len += chunk.len() - last;
        }
        if self.line_len >= MAX_TEXT_LINE {
            self.flaw = Some(Flaw::LineTooLong);
        }
    }

    /// At the last chunk: a message may not end in a lone CR.
    pub(crate) fn finish(&mut self) {
        if self.prev_cr && self.flaw.is_none() {
            self.flaw = Some(Flaw::BareLineEnding);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(pieces: &[&[u8]], max: u64) -> (Vec<u8>, bool, Option<Flaw>, usize) {
        let mut r = DataReader::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut done = false;
        let mut leftover = 0;
        for p in pieces {
            buf.extend_from_slice(p);
            let (n, d) = r.feed(&buf, &mut out);
            buf.drain(..n);
            if d {
                done = true;
                leftover = buf.len();
                break;
            }
        }
        (out, done, r.flaw, leftover)
    }

    #[test]
    fn dot_stuffing_and_terminator() {
        let (out, done, flaw, left) = read_all(
            &[b"Subject: x\r\n\r\n..dot\r\n", b".\r", b"\nQUIT\r\n"],
            1000,
        );
        assert!(done);
        assert_eq!(flaw, None);
        assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(left, 6);
    }

    #[test]
    fn bare_lf_never_terminates() {
        // The smuggling pattern: "\n.\n" and "\r\n.\n" must not end DATA.
        let (_, done, flaw, _) = read_all(&[b"a\n.\nMAIL FROM:<x@y>\r\n", b"b\r\n.\n"], 1000);
        assert!(!done);
        assert_eq!(flaw, Some(Flaw::BareLineEnding));
        let (_, done, flaw, _) = read_all(&[b"a\r\n.\n", b"x\r\n.\r\n"], 1000);
        assert!(done);
        assert_eq!(flaw, Some(Flaw::BareLineEnding));
        let (_, done, flaw, _) = read_all(&[b"a\rb\r\n.\r\n"], 1000);
        assert!(done);
        assert_eq!(flaw, Some(Flaw::BareLineEnding));
    }

    #[test]
    fn long_lines_and_size() {
        let long = vec![b'a'; 5000];
        let (_, done, flaw, _) = read_all(&[&long, b"\r\n.\r\n"], 100_000);
        assert!(done);
        assert_eq!(flaw, Some(Flaw::LineTooLong));
        let ok = vec![b'a'; 998];
        let (out, done, flaw, _) = read_all(&[&ok, b"\r\n.\r\n"], 100_000);
        assert!(done);
        assert_eq!(flaw, None);
        assert_eq!(out.len(), 1000);
        let (_, done, flaw, _) =
            read_all(&[b"0123456789\r\n".repeat(20).as_slice(), b".\r\n"], 100);
        assert!(done);
        assert_eq!(flaw, Some(Flaw::TooLarge));
    }

    #[test]
    fn chunks() {
        let mut c = ChunkChecker::default();
        c.check(b"a\r", 100);
        c.check(b"\nb\r\n", 100);
        c.finish();
        assert_eq!(c.flaw, None);
        let mut c = ChunkChecker::default();
        c.check(b"a\nb", 100);
        assert_eq!(c.flaw, Some(Flaw::BareLineEnding));
        let mut c = ChunkChecker::default();
        c.check(b"a\rb", 100);
        assert_eq!(c.flaw, Some(Flaw::BareLineEnding));
        let mut c = ChunkChecker::default();
        c.check(b"a\rb\n", 100);
        assert_eq!(c.flaw, Some(Flaw::BareLineEnding));
        let mut c = ChunkChecker::default();
        c.check(b"a\r", 100);
        c.check(b"b\r\n", 100);
        assert_eq!(c.flaw, Some(Flaw::BareLineEnding));
        let mut c = ChunkChecker::default();
        c.check(&[b'x'; 600], 10_000);
        c.check(&[b'x'; 600], 10_000);
        assert_eq!(c.flaw, Some(Flaw::LineTooLong));
        let mut c = ChunkChecker::default();
        c.check(&[b'x'; 600], 500);
        assert_eq!(c.flaw, Some(Flaw::TooLarge));
    }
}

//! The POP3 server session (RFC 1939, with CAPA and the extensions of
//! RFC 2449, UIDL, TOP, and STLS of RFC 2595): a state machine that does
//! no IO.
//!
//! Bytes go in with [`Pop3Session::handle_input`]; [`Pop3Session::poll_output`]
//! yields bytes to write, events for the driver and the order to close.
//! Three events need an answer through [`Pop3Session::respond`]: a login
//! (the driver checks the password and lists the maildrop), a message to
//! read (RETR/TOP: the driver reads the file) and the final commit at QUIT
//! (the driver removes the messages marked deleted). Deletions are applied
//! only then, in the UPDATE state of RFC 1939 §6; a session that ends any
//! other way deletes nothing.
//!
//! # Security
//! Command lines are capped at 255 octets (RFC 2449 §4); a line that is
//! longer, or holds a NUL or bare CR, gets `-ERR`. Passwords are never
//! echoed. After STLS, whatever the client sent behind the command is
//! discarded (the STARTTLS command-injection class of bug). Three failed
//! logins close the session, so a client cannot try passwords forever on
//! one connection.

use std::collections::VecDeque;

use memchr::memchr;

/// RFC 2449 §4: a command line is at most 255 octets with its CRLF.
const MAX_LINE: usize = 255;
/// Failed logins before the session is closed.
const MAX_LOGIN_FAILURES: u32 = 3;

/// One message of the maildrop, as listed at login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pop3Message {
    /// A unique id that stays the same across sessions (RFC 1939 UIDL).
    pub uid: String,
    pub size: u64,
}

/// What the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pop3Event {
    /// USER/PASS given; answer with [`Pop3Answer::Login`].
    Login { user: String, password: String },
    /// RETR (`lines` = None) or TOP; answer with [`Pop3Answer::Content`].
    Read { index: usize, lines: Option<usize> },
    /// QUIT in TRANSACTION: remove these messages (indexes into the
    /// listing); answer with [`Pop3Answer::Committed`].
    Commit { deleted: Vec<usize> },
    /// STLS accepted: the driver upgrades the stream to TLS now (after
    /// writing the pending output), then calls [`Pop3Session::tls_started`].
    StartTls,
}

/// The driver's answer to an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pop3Answer {
    /// `Some(listing)` when the login is good; `None` when it is not, or
    /// the maildrop cannot be opened (`Err` text for the client).
    Login(Result<Vec<Pop3Message>, String>),
    /// The message (or an error text, e.g. it vanished).
    Content(Result<Vec<u8>, String>),
    /// Whether every deletion was done.
    Committed(Result<(), String>),
}

/// One thing to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pop3Output {
    Send(Vec<u8>),
    Event(Pop3Event),
    Close,
}

/// What the session needs to know.
#[derive(Clone, Debug)]
pub struct Pop3Config {
    pub hostname: String,
    /// STLS is offered (TLS configured and not yet started).
    pub tls_available: bool,
    /// Logins are allowed without TLS.
    pub allow_plaintext_auth: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Authorization,
    Transaction,
    Closed,
}

#[derive(Debug)]
enum Pending {
    Login,
    Read,
    Commit,
}

/// One POP3 session.
#[derive(Debug)]
pub struct Pop3Session {
    cfg: Pop3Config,
    state: State,
    tls: bool,
    inbuf: Vec<u8>,
    out: VecDeque<Pop3Output>,
    pending: Option<Pending>,
    user: Option<String>,
    failures: u32,
    listing: Vec<Pop3Message>,
    deleted: Vec<bool>,
    skipping_long_line: bool,
}

fn ok(text: &str) -> Vec<u8> {
    format!("+OK {text}\r\n").into_bytes()
}

fn err(text: &str) -> Vec<u8> {
    format!("-ERR {text}\r\n").into_bytes()
}

/// Dot-stuffs `content` into `out` for a multi-line response, ending it
/// with CRLF "." CRLF (RFC 1939 §3); bare LF and CR become CRLF.
fn multiline(content: &[u8], out: &mut Vec<u8>) {
    let mut at_start = true;
    let mut prev_cr = false;
    for &b in content {
        match b {
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_start = true;
                prev_cr = false;
                continue;
            }
            _ if prev_cr => {
                out.extend_from_slice(b"\r\n");
                at_start = true;
            }
            _ => {}
        }
        prev_cr = b == b'\r';
        if prev_cr {
            continue;
        }
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = false;
    }
    if prev_cr || !at_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// The header section and the first `lines` lines of the body (for TOP).
pub fn top_of(content: &[u8], lines: usize) -> &[u8] {
    let Some(head_end) = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
    else {
        return content;
    };
    let mut end = head_end;
    for _ in 0..lines {
        match memchr(b'\n', &content[end..]) {
            Some(i) => end += i + 1,
            None => return content,
        }
    }
    &content[..end]
}

impl Pop3Session {
    /// Starts a session (sends the greeting). `tls` is true on pop3s.
    pub fn new(cfg: Pop3Config, tls: bool) -> Pop3Session {
        let greeting = ok(&format!("{} POP3 mxguard ready", cfg.hostname));
        let mut s = Pop3Session {
            cfg,
            state: State::Authorization,
            tls,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            pending: None,
            user: None,
            failures: 0,
            listing: Vec::new(),
            deleted: Vec::new(),
            skipping_long_line: false,
        };
        s.out.push_back(Pop3Output::Send(greeting));
        s
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The user who logged in, once logged in.
    pub fn user(&self) -> Option<&str> {
        (self.state == State::Transaction)
            .then_some(self.user.as_deref())
            .flatten()
    }

    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        self.process();
    }

    /// The client went away or timed out: nothing is deleted.
    pub fn handle_eof(&mut self) {
        self.close();
    }

    /// A timeout: RFC 1939 §3 (autologout) without entering UPDATE.
    pub fn handle_timeout(&mut self) {
        if self.state != State::Closed {
            self.out
                .push_back(Pop3Output::Send(err("autologout: idle for too long")));
            self.close();
        }
    }

    pub fn poll_output(&mut self) -> Option<Pop3Output> {
        self.out.pop_front()
    }

    /// The TLS handshake after STLS succeeded.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.process();
    }

    pub fn respond(&mut self, answer: Pop3Answer) {
        let Some(p) = self.pending.take() else { return };
        match (p, answer) {
            (Pending::Login, Pop3Answer::Login(Ok(listing))) => {
                self.deleted = vec![false; listing.len()];
                self.listing = listing;
                self.state = State::Transaction;
                let total: u64 = self.listing.iter().map(|m| m.size).sum();
                let text = format!(
                    "maildrop has {} messages ({total} octets)",
                    self.listing.len()
                );
                self.out.push_back(Pop3Output::Send(ok(&text)));
            }
            (Pending::Login, Pop3Answer::Login(Err(why))) => {
                self.failures += 1;
                self.user = None;
                self.out
                    .push_back(Pop3Output::Send(err(&format!("[AUTH] {why}"))));
                if self.failures >= MAX_LOGIN_FAILURES {
                    self.out
                        .push_back(Pop3Output::Send(err("too many failed logins")));
                    self.close();
                    return;
                }
            }
            (Pending::Read, Pop3Answer::Content(Ok(data))) => {
                let mut out = ok("message follows");
                multiline(&data, &mut out);
                self.out.push_back(Pop3Output::Send(out));
            }
            (Pending::Read, Pop3Answer::Content(Err(why))) => {
                self.out.push_back(Pop3Output::Send(err(&why)));
            }
            (Pending::Commit, Pop3Answer::Committed(r)) => {
                let bye = match r {
                    Ok(()) => ok(&format!("{} POP3 server signing off", self.cfg.hostname)),
                    Err(why) => err(&format!("some deleted messages not removed: {why}")),
                };
                self.out.push_back(Pop3Output::Send(bye));
                self.close();
                return;
            }
            (_, _) => {
                self.out.push_back(Pop3Output::Send(err("internal error")));
            }
        }
        self.process();
    }

    fn close(&mut self) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.inbuf.clear();
            self.out.push_back(Pop3Output::Close);
        }
    }

    fn ask(&mut self, p: Pending, e: Pop3Event) {
        self.pending = Some(p);
        self.out.push_back(Pop3Output::Event(e));
    }

    fn process(&mut self) {
        let mut pos = 0;
        while self.pending.is_none() && self.state != State::Closed {
            let buf = &self.inbuf[pos..];
            let Some(i) = memchr(b'\n', buf) else {
                if buf.len() > MAX_LINE {
                    self.skipping_long_line = true;
                    pos = self.inbuf.len();
                }
                break;
            };
            let line = buf[..i].strip_suffix(b"\r").unwrap_or(&buf[..i]).to_vec();
            pos += i + 1;
            if std::mem::take(&mut self.skipping_long_line) || i + 1 > MAX_LINE {
                self.out.push_back(Pop3Output::Send(err("line too long")));
                continue;
            }
            if line.contains(&0) || line.contains(&b'\r') {
                self.out
                    .push_back(Pop3Output::Send(err("bad characters in command")));
                continue;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let stls = self.command(&line);
            if stls {
                // Nothing the client sent behind STLS may be read as a
                // command inside TLS.
                self.inbuf.clear();
                return;
            }
        }
        if self.state != State::Closed {
            self.inbuf.drain(..pos.min(self.inbuf.len()));
        }
    }

    fn capa(&self) -> Vec<u8> {
        let mut lines = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        if self.state == State::Authorization {
            if self.tls || self.cfg.allow_plaintext_auth {
                lines.push("USER");
            }
            if self.cfg.tls_available && !self.tls {
                lines.push("STLS");
            }
        }
        lines.push("IMPLEMENTATION mxguard");
        let mut out = ok("capability list follows");
        for l in lines {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// Message number argument (1-based, not deleted) to an index.
    fn msg_index(&self, arg: Option<&str>) -> Result<usize, Vec<u8>> {
        let n: usize = arg
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| err("expected a message number"))?;
        if n == 0 || n > self.listing.len() {
            return Err(err("no such message"));
        }
        if self.deleted[n - 1] {
            return Err(err("message already deleted"));
        }
        Ok(n - 1)
    }

    /// Runs one command; returns true when it was an accepted STLS.
    fn command(&mut self, line: &str) -> bool {
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        let arg1 = words.next();
        let arg2 = words.next();
        let reply = match (&self.state, verb.as_str()) {
            (_, "CAPA") => self.capa(),
            (_, "QUIT") => {
                if self.state == State::Transaction {
                    let deleted = (0..self.deleted.len())
                        .filter(|&i| self.deleted[i])
                        .collect();
                    self.ask(Pending::Commit, Pop3Event::Commit { deleted });
                } else {
                    self.out.push_back(Pop3Output::Send(ok(&format!(
                        "{} POP3 server signing off",
                        self.cfg.hostname
                    ))));
                    self.close();
                }
                return false;
            }
            (_, "NOOP") if self.state == State::Transaction => ok(""),
            (State::Authorization, "STLS") => {
                if !self.cfg.tls_available || self.tls {
                    err("STLS not available")
                } else {
                    self.out
                        .push_back(Pop3Output::Send(ok("begin TLS negotiation")));
                    self.out.push_back(Pop3Output::Event(Pop3Event::StartTls));
                    return true;
                }
            }
            (State::Authorization, "USER") => {
                if !self.tls && !self.cfg.allow_plaintext_auth {
                    err("[LOGIN-DELAY] use STLS first: no passwords in clear text")
                } else {
                    match arg1 {
                        Some(u) if !u.is_empty() => {
                            self.user = Some(line[5..].trim().to_string());
                            ok("send your password")
                        }
                        _ => err("expected USER name"),
                    }
                }
            }
            (State::Authorization, "PASS") => match self.user.clone() {
                None => err("USER first"),
                Some(user) => {
                    let password = line.get(5..).unwrap_or("").to_string();
                    self.ask(Pending::Login, Pop3Event::Login { user, password });
                    return false;
                }
            },
            (State::Transaction, "STAT") => {
                let (n, size) = self
                    .listing
                    .iter()
                    .zip(&self.deleted)
                    .filter(|(_, d)| !**d)
                    .fold((0, 0), |(n, s), (m, _)| (n + 1, s + m.size));
                ok(&format!("{n} {size}"))
            }
            (State::Transaction, "LIST") | (State::Transaction, "UIDL") => {
                let uidl = verb == "UIDL";
                let entry = |i: usize, m: &Pop3Message| {
                    if uidl {
                        format!("{} {}", i + 1, m.uid)
                    } else {
                        format!("{} {}", i + 1, m.size)
                    }
                };
                if arg1.is_some() {
                    match self.msg_index(arg1) {
                        Ok(i) => ok(&entry(i, &self.listing[i])),
                        Err(e) => e,
                    }
                } else {
                    let mut out = ok("listing follows");
                    for (i, m) in self.listing.iter().enumerate() {
                        if !self.deleted[i] {
                            out.extend_from_slice(entry(i, m).as_bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                    out.extend_from_slice(b".\r\n");
                    out
                }
            }
            (State::Transaction, "RETR") => match self.msg_index(arg1) {
                Ok(index) => {
                    self.ask(Pending::Read, Pop3Event::Read { index, lines: None });
                    return false;
                }
                Err(e) => e,
            },
            (State::Transaction, "TOP") => match (
                self.msg_index(arg1),
                arg2.and_then(|a| a.parse::<usize>().ok()),
            ) {
                (Ok(index), Some(n)) => {
                    self.ask(
                        Pending::Read,
                        Pop3Event::Read {
                            index,
                            lines: Some(n),
                        },
                    );
                    return false;
                }
                (Err(e), _) => e,
                (_, None) => err("expected TOP msg lines"),
            },
            (State::Transaction, "DELE") => match self.msg_index(arg1) {
                Ok(i) => {
                    self.deleted[i] = true;
                    ok(&format!("message {} deleted", i + 1))
                }
                Err(e) => e,
            },
            (State::Transaction, "RSET") => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                ok("")
            }
            (State::Authorization, _) => err("command not valid before login"),
            (State::Transaction, _) => err("unknown command"),
            (State::Closed, _) => return false,
        };
        self.out.push_back(Pop3Output::Send(reply));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Pop3Config {
        Pop3Config {
            hostname: "mx.test".into(),
            tls_available: true,
            allow_plaintext_auth: false,
        }
    }

    struct H {
        s: Pop3Session,
        sent: String,
        closed: bool,
        committed: Option<Vec<usize>>,
        tls_requested: bool,
    }

    impl H {
        fn new(tls: bool) -> H {
            let mut h = H {
                s: Pop3Session::new(cfg(), tls),
                sent: String::new(),
                closed: false,
                committed: None,
                tls_requested: false,
            };
            h.drain();
            h
        }
        fn drain(&mut self) {
            while let Some(o) = self.s.poll_output() {
                match o {
                    Pop3Output::Send(b) => self.sent.push_str(&String::from_utf8_lossy(&b)),
                    Pop3Output::Close => self.closed = true,
                    Pop3Output::Event(Pop3Event::Login { user, password }) => {
                        let a = if user == "joe@example.test" && password == "secret pw" {
                            Ok(vec![
                                Pop3Message {
                                    uid: "u1".into(),
                                    size: 20,
                                },
                                Pop3Message {
                                    uid: "u2".into(),
                                    size: 30,
                                },
                            ])
                        } else {
                            Err("invalid login".into())
                        };
                        self.s.respond(Pop3Answer::Login(a));
                    }
                    Pop3Output::Event(Pop3Event::Read { index, lines }) => {
                        let msg = format!("Subject: {index}\r\n\r\n.dot\r\nline2\r\nline3\r\n");
                        let data = match lines {
                            Some(n) => top_of(msg.as_bytes(), n).to_vec(),
                            None => msg.into_bytes(),
                        };
                        self.s.respond(Pop3Answer::Content(Ok(data)));
                    }
                    Pop3Output::Event(Pop3Event::Commit { deleted }) => {
                        self.committed = Some(deleted);
                        self.s.respond(Pop3Answer::Committed(Ok(())));
                    }
                    Pop3Output::Event(Pop3Event::StartTls) => self.tls_requested = true,
                }
            }
        }
        fn send(&mut self, input: &str) -> String {
            self.sent.clear();
            self.s.handle_input(input.as_bytes());
            self.drain();
            self.sent.clone()
        }
    }

    #[test]
    fn login_list_retr_dele_quit() {
        let mut h = H::new(true);
        assert!(h.send("CAPA\r\n").contains("USER\r\n"));
        assert!(h.send("PASS x\r\n").starts_with("-ERR"));
        assert!(h.send("USER joe@example.test\r\n").starts_with("+OK"));
        assert_eq!(
            h.send("PASS secret pw\r\n"),
            "+OK maildrop has 2 messages (50 octets)\r\n"
        );
        assert_eq!(h.send("STAT\r\n"), "+OK 2 50\r\n");
        assert_eq!(
            h.send("LIST\r\n"),
            "+OK listing follows\r\n1 20\r\n2 30\r\n.\r\n"
        );
        assert_eq!(h.send("UIDL 2\r\n"), "+OK 2 u2\r\n");
        assert_eq!(
            h.send("RETR 1\r\n"),
            "+OK message follows\r\nSubject: 0\r\n\r\n..dot\r\nline2\r\nline3\r\n.\r\n"
        );
        assert_eq!(
            h.send("TOP 2 1\r\n"),
            "+OK message follows\r\nSubject: 1\r\n\r\n..dot\r\n.\r\n"
        );
        assert!(h.send("DELE 1\r\n").starts_with("+OK"));
        assert!(h.send("RETR 1\r\n").starts_with("-ERR"));
        assert_eq!(h.send("STAT\r\n"), "+OK 1 30\r\n");
        assert!(h.send("RSET\r\n").starts_with("+OK"));
        assert!(h.send("DELE 2\r\n").starts_with("+OK"));
        assert!(h.send("RETR 9\r\n").starts_with("-ERR"));
        assert!(h.send("QUIT\r\n").starts_with("+OK"));
        assert_eq!(h.committed, Some(vec![1]));
        assert!(h.closed);
    }

    #[test]
    fn nothing_deleted_without_quit() {
        let mut h = H::new(true);
        h.send("USER joe@example.test\r\nPASS secret pw\r\nDELE 1\r\n");
        h.s.handle_eof();
        h.drain();
        assert!(h.closed);
        assert_eq!(h.committed, None);
    }

    #[test]
    fn plaintext_login_refused_and_stls_drops_pipelined_input() {
        let mut h = H::new(false);
        assert!(!h.send("CAPA\r\n").contains("USER"));
        assert!(h.send("USER joe@example.test\r\n").starts_with("-ERR"));
        let r = h.send("STLS\r\nUSER joe@example.test\r\nPASS secret pw\r\n");
        assert_eq!(r, "+OK begin TLS negotiation\r\n");
        assert!(h.tls_requested);
        h.s.tls_started();
        h.drain();
        // the pipelined USER/PASS were dropped: a new USER is needed
        assert!(h.send("PASS secret pw\r\n").starts_with("-ERR"));
        assert!(h.send("USER joe@example.test\r\n").starts_with("+OK"));
        assert!(h.send("PASS secret pw\r\n").starts_with("+OK"));
    }

    #[test]
    fn three_failed_logins_close() {
        let mut h = H::new(true);
        for _ in 0..2 {
            assert!(
                h.send("USER joe@example.test\r\nPASS wrong\r\n")
                    .contains("-ERR [AUTH]")
            );
        }
        let r = h.send("USER joe@example.test\r\nPASS wrong\r\n");
        assert!(r.contains("too many failed logins"), "{r}");
        assert!(h.closed);
    }

    #[test]
    fn bad_input() {
        let mut h = H::new(true);
        assert!(
            h.send(&format!("{}\r\n", "x".repeat(300)))
                .starts_with("-ERR line too long")
        );
        assert!(h.send("NO\0OP\r\n").starts_with("-ERR"));
        assert!(h.send("STAT\r\n").starts_with("-ERR"));
        assert!(!h.closed);
        assert!(h.send("QUIT\r\n").starts_with("+OK"));
    }

    #[test]
    fn multiline_stuffing_and_line_ends() {
        let mut out = Vec::new();
        multiline(b".a\nb\r\n.\r\nc", &mut out);
        assert_eq!(out, b"..a\r\nb\r\n..\r\nc\r\n.\r\n");
        let mut out = Vec::new();
        multiline(b"", &mut out);
        assert_eq!(out, b".\r\n");
    }
}

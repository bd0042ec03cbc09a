//! The session state machine proper. See the module documentation.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use memchr::memchr;

use super::data::{ChunkChecker, DataReader, Flaw};
use crate::address::Path;
use crate::command::{Command, MailParams, ParseError, parse_command};
use crate::reply::Reply;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets with its CRLF.
const MAX_COMMAND_LINE: usize = 512;

/// RFC 4954 §4: an AUTH command with its initial response, and each SASL
/// response line, may be up to 12288 octets with its CRLF.
const MAX_AUTH_LINE: usize = 12288;

/// Content handed to the driver in pieces of about this size.
const DATA_CHUNK: usize = 64 * 1024;

/// How VRFY is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrfyPolicy {
    /// 252: neither confirms nor denies (RFC 2505 §2.11).
    Ambiguous,
    /// 502: disabled.
    Off,
    /// Asks the driver, which looks the address up.
    On,
}

/// What a session needs to know; shared by all sessions of a listener.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our name, in the EHLO reply and in 421/221 texts.
    pub hostname: String,
    /// The largest message accepted, in octets (advertised as SIZE).
    pub max_message_size: u64,
    /// Hard cap on recipients of one transaction (452 4.5.3 past it).
    pub max_recipients: usize,
    pub vrfy: VrfyPolicy,
    pub expn: bool,
    /// A submission listener: MAIL before a successful AUTH gets 530 5.7.0.
    pub require_auth: bool,
    /// STARTTLS is offered (TLS is configured and the listener is not
    /// implicit TLS).
    pub starttls: bool,
    /// AUTH is offered on this listener at all (the submission roles).
    pub auth: bool,
    /// AUTH is offered on connections that are not encrypted too
    /// (`tls.allow_plaintext_auth`); otherwise it gets 538 5.7.11 there.
    pub auth_mechanisms_without_tls: bool,
    /// Close with 421 4.7.0 after this many failed commands.
    pub max_errors: Option<u32>,
}

/// Which timer the driver should run while waiting for input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    Command,
    Data,
}

/// A SASL mechanism of AUTH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    /// RFC 4616.
    Plain,
    /// The de facto LOGIN mechanism (draft-murchison-sasl-login).
    Login,
}

impl AuthMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
        }
    }
}

/// A password a client sent with AUTH. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// Something the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// HELO or EHLO; needs a decision.
    Helo { name: String, extended: bool },
    /// MAIL FROM (`None` = `<>`); needs a decision.
    Mail {
        from: Option<Path>,
        params: MailParams,
    },
    /// RCPT TO; needs a decision.
    Rcpt { to: Path },
    /// VRFY with [`VrfyPolicy::On`]; needs a decision carrying the reply.
    Vrfy(String),
    /// EXPN when enabled; needs a decision carrying the reply.
    Expn(String),
    /// Message content begins (after 354, or at the first BDAT).
    MessageStart,
    /// Content, dot-unstuffed, CRLF line ends.
    MessageData(Vec<u8>),
    /// The message is complete; needs a decision (commit it, then accept
    /// with the queue id in the reply, or refuse).
    MessageEnd { size: u64 },
    /// The message in progress is abandoned: discard what was spooled.
    MessageAborted,
    /// STARTTLS was accepted and its 220 is the last reply before this
    /// event: write the replies out, run the TLS handshake on the
    /// connection, then call [`Session::tls_started`]. Needs no decision;
    /// the session reads nothing until then, and what the client sent
    /// after STARTTLS has been thrown away.
    StartTls,
    /// AUTH with a complete response; needs a decision: accept (235, the
    /// session is authenticated) or reject (535 5.7.8 is the usual reply;
    /// it counts as an error).
    Auth {
        mechanism: AuthMechanism,
        /// The authentication identity (PLAIN authcid, LOGIN user name).
        login: String,
        password: Password,
    },
}

impl Event {
    fn needs_decision(&self) -> bool {
        !matches!(
            self,
            Event::MessageStart | Event::MessageData(_) | Event::MessageAborted | Event::StartTls
        )
    }
}

/// What the driver decided about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on; `None` sends the standard positive reply.
    Accept(Option<Reply>),
    /// Refuse with this reply (counts as an error); the session goes on.
    Reject(Reply),
    /// Send this reply and close the connection.
    Close(Reply),
}

/// One thing for the driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Reply(Reply),
    Event(Event),
    /// Flush what was written, then close.
    Close,
}

#[derive(Debug)]
enum Pending {
    Helo { name: String, extended: bool },
    Mail { params: MailParams },
    Rcpt,
    Vrfy,
    Auth,
    MessageEnd,
}

/// Which SASL response an AUTH exchange waits for.
#[derive(Debug)]
enum AuthStep {
    /// PLAIN without initial response, after `334 `.
    Plain,
    /// LOGIN, after `334 VXNlcm5hbWU6` ("Username:").
    LoginUser,
    /// LOGIN, after `334 UGFzc3dvcmQ6` ("Password:").
    LoginPassword { login: String },
}

#[derive(Debug)]
enum Mode {
    Command,
    Data(DataReader),
    /// Reading a BDAT chunk of `remaining` octets. `error` is the reply owed
    /// when the chunk was refused up front (its octets are still read).
    Bdat {
        remaining: u64,
        last: bool,
        error: Option<Reply>,
    },
    /// Reading the client's response line of an AUTH exchange.
    Auth(AuthStep),
}

#[derive(Debug, Default)]
struct Transaction {
    mail: bool,
    smtputf8: bool,
    recipients: usize,
    /// BDAT chunks have been received for this transaction.
    chunking: Option<ChunkChecker>,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    cfg: Arc<SessionConfig>,
    inbuf: Vec<u8>,
    out: VecDeque<Output>,
    mode: Mode,
    pending: Option<Pending>,
    helo: Option<String>,
    tx: Transaction,
    data_out: Vec<u8>,
    skipping_long_command: bool,
    /// The connection is encrypted (implicit TLS, or after STARTTLS).
    tls: bool,
    /// STARTTLS was accepted: input is ignored until the handshake is done.
    starting_tls: bool,
    /// AUTH succeeded.
    authenticated: bool,
    errors: u32,
    /// `cfg.max_errors`, unless lifted for this client (whitelisted).
    max_errors: Option<u32>,
    shutting_down: bool,
    closed: bool,
}

fn reply(code: u16, class: u8, subject: u16, detail: u16, text: &str) -> Reply {
    Reply::fixed(code, class, subject, detail, text)
}

impl Session {
    /// Starts a session; `greeting` is the 220 banner to send first.
    pub fn new(cfg: Arc<SessionConfig>, greeting: Reply) -> Session {
        let mut s = Session {
            inbuf: Vec::new(),
            out: VecDeque::new(),
            mode: Mode::Command,
            pending: None,
            helo: None,
            tx: Transaction::default(),
            data_out: Vec::new(),
            skipping_long_command: false,
            tls: false,
            starting_tls: false,
            authenticated: false,
            errors: 0,
            max_errors: cfg.max_errors,
            cfg,
            shutting_down: false,
            closed: false,
        };
        s.out.push_back(Output::Reply(greeting));
        s
    }

    /// The HELO/EHLO name the client gave, once accepted.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// Whether the connection is encrypted. An implicit-TLS listener sets
    /// it before the first exchange; it changes what EHLO offers.
    pub fn set_tls(&mut self, on: bool) {
        self.tls = on;
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether AUTH succeeded.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// The TLS handshake that [`Event::StartTls`] asked for is done: the
    /// session starts over as right after the greeting (RFC 3207 §4.2: the
    /// client's HELO name, any transaction and authentication are
    /// forgotten) and reads again.
    pub fn tls_started(&mut self) {
        self.starting_tls = false;
        self.tls = true;
        self.helo = None;
        self.tx = Transaction::default();
        self.authenticated = false;
        self.mode = Mode::Command;
        self.inbuf.clear();
        self.skipping_long_command = false;
        if self.shutting_down && self.pending.is_none() {
            self.process();
        }
    }

    /// Lifts (or sets) the error limit for this session: whitelisted
    /// clients are not cut off.
    pub fn set_max_errors(&mut self, max: Option<u32>) {
        self.max_errors = max;
    }

    /// Failed commands so far.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while an event waits for [`Session::respond`].
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// The timer that applies while waiting for the client.
    pub fn timeout_kind(&self) -> TimeoutKind {
        match self.mode {
            Mode::Command | Mode::Auth(_) => TimeoutKind::Command,
            Mode::Data(_) | Mode::Bdat { .. } => TimeoutKind::Data,
        }
    }

    /// True when no message is in progress (for a graceful shutdown).
    pub fn is_idle(&self) -> bool {
        matches!(self.mode, Mode::Command | Mode::Auth(_))
            && self.pending.is_none()
            && !self.message_started()
    }

    fn message_started(&self) -> bool {
        self.tx.chunking.is_some() || matches!(self.mode, Mode::Data(_) | Mode::Bdat { .. })
    }

    /// Bytes from the client.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.closed || self.starting_tls {
            // After STARTTLS, only the handshake may follow.
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        self.process();
    }

    /// The client closed its side.
    pub fn handle_eof(&mut self) {
        if self.closed {
            return;
        }
        if self.message_started() {
            self.out.push_back(Output::Event(Event::MessageAborted));
        }
        self.close();
    }

    /// The client was silent for the timeout of [`Session::timeout_kind`].
    pub fn handle_timeout(&mut self) {
        if self.closed {
            return;
        }
        if self.message_started() {
            self.out.push_back(Output::Event(Event::MessageAborted));
        }
        let r = reply(
            421,
            4,
            4,
            2,
            &format!("{} Error: timeout exceeded", self.cfg.hostname),
        );
        self.send(r);
        self.close();
    }

    /// The server is stopping: close at the next command boundary with 421.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        if self.pending.is_none() {
            self.process();
        }
    }

    /// The next thing to do, or `None` when the session needs input (or a
    /// decision it already handed out). Write replies out when this
    /// returns `None` (RFC 2920 §3.1: flush when the input is drained).
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The driver's decision on the last event that needed one.
    pub fn respond(&mut self, decision: Decision) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let (accept_reply, refusal, close) = match decision {
            Decision::Accept(r) => (r, None, false),
            Decision::Reject(r) => (None, Some(r), false),
            Decision::Close(r) => (None, Some(r), true),
        };
        if let Some(r) = refusal {
            if matches!(pending, Pending::MessageEnd) {
                self.tx = Transaction::default();
            }
            if close {
                self.send(r);
                self.close();
                return;
            }
            self.fail(r);
        } else {
            let r = match pending {
                Pending::Helo { name, extended } => {
                    self.helo = Some(name);
                    self.tx = Transaction::default();
                    accept_reply.unwrap_or_else(|| self.helo_reply(extended))
                }
                Pending::Mail { params } => {
                    self.tx = Transaction {
                        mail: true,
                        smtputf8: params.smtputf8,
                        ..Transaction::default()
                    };
                    accept_reply.unwrap_or_else(|| reply(250, 2, 1, 0, "Sender OK"))
                }
                Pending::Rcpt => {
                    self.tx.recipients += 1;
                    accept_reply.unwrap_or_else(|| reply(250, 2, 1, 5, "Recipient OK"))
                }
                Pending::Vrfy => accept_reply.unwrap_or_else(|| {
                    reply(
                        252,
                        2,
                        5,
                        2,
                        "Cannot VRFY user, but will accept message and attempt delivery",
                    )
                }),
                Pending::Auth => {
                    self.authenticated = true;
                    accept_reply.unwrap_or_else(|| reply(235, 2, 7, 0, "Authentication successful"))
                }
                Pending::MessageEnd => {
                    self.tx = Transaction::default();
                    accept_reply.unwrap_or_else(|| reply(250, 2, 0, 0, "Message accepted"))
                }
            };
            self.send(r);
        }
        self.process();
    }

    fn helo_reply(&self, extended: bool) -> Reply {
        // EHLO keywords carry no enhanced code (RFC 2034 §3).
        let base = Reply::fixed_plain(250, &self.cfg.hostname);
        if !extended {
            return base;
        }
        let mut r = base
            .with_line("PIPELINING")
            .with_line(&format!("SIZE {}", self.cfg.max_message_size))
            .with_line("8BITMIME")
            .with_line("ENHANCEDSTATUSCODES")
            .with_line("SMTPUTF8")
            .with_line("CHUNKING");
        if self.cfg.starttls && !self.tls {
            r = r.with_line("STARTTLS");
        }
        if self.auth_offered() {
            r = r.with_line("AUTH PLAIN LOGIN");
        }
        r
    }

    fn auth_offered(&self) -> bool {
        self.cfg.auth && !self.authenticated && (self.tls || self.cfg.auth_mechanisms_without_tls)
    }

    fn send(&mut self, r: Reply) {
        self.out.push_back(Output::Reply(r));
    }

    fn close(&mut self) {
        self.closed = true;
        self.inbuf = Vec::new();
        self.out.push_back(Output::Close);
    }

    /// A refused command: reply, count, and close past max_errors.
    fn fail(&mut self, r: Reply) {
        self.send(r);
        self.errors += 1;
        if let Some(max) = self.max_errors
            && self.errors >= max
        {
            let r = reply(
                421,
                4,
                7,
                0,
                &format!("{} Error: too many errors", self.cfg.hostname),
            );
            self.send(r);
            self.close();
        }
    }

    fn emit(&mut self, e: Event) {
        if e.needs_decision() {
            debug_assert!(self.pending.is_some());
        }
        self.out.push_back(Output::Event(e));
    }

    fn flush_data(&mut self) {
        if !self.data_out.is_empty() {
            let chunk = std::mem::take(&mut self.data_out);
            self.out.push_back(Output::Event(Event::MessageData(chunk)));
        }
    }

    /// Runs the machine until it needs input or a decision.
    fn process(&mut self) {
        let mut pos = 0;
        while !self.closed && self.pending.is_none() && !self.starting_tls {
            let progressed = match &mut self.mode {
                Mode::Command => self.step_command(&mut pos),
                Mode::Data(_) => self.step_data(&mut pos),
                Mode::Bdat { .. } => self.step_bdat(&mut pos),
                Mode::Auth(_) => self.step_auth(&mut pos),
            };
            if !progressed {
                break;
            }
        }
        if self.closed {
            return;
        }
        self.flush_data();
        if self.starting_tls {
            // RFC 3207 §4.2: nothing sent before the handshake counts.
            self.inbuf = Vec::new();
        } else {
            self.inbuf.drain(..pos.min(self.inbuf.len()));
        }
    }

    /// The next complete line at `pos`, without its CRLF: `Ok(None)` when
    /// it is not complete yet, `Err` with the reply for a bad line (which
    /// is consumed). Lines longer than `limit` octets (with CRLF) are bad.
    fn next_line(
        &mut self,
        pos: &mut usize,
        limit: usize,
    ) -> Result<Option<std::ops::Range<usize>>, Reply> {
        let buf = &self.inbuf[*pos..];
        let Some(i) = memchr(b'\n', buf) else {
            if buf.len() > limit {
                self.skipping_long_command = true;
                *pos = self.inbuf.len();
            }
            return Ok(None);
        };
        let line_len = i + 1;
        let start = *pos;
        *pos += line_len;
        if std::mem::take(&mut self.skipping_long_command) || line_len > limit {
            return Err(reply(500, 5, 5, 2, "Line too long"));
        }
        let line = &self.inbuf[start..start + i];
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(reply(
                500,
                5,
                5,
                2,
                "Bare LF received; command lines must end with CRLF",
            ));
        };
        if memchr(b'\r', line).is_some() {
            return Err(reply(
                500,
                5,
                5,
                2,
                "Bare CR received; command lines must end with CRLF",
            ));
        }
        if memchr(0, line).is_some() {
            return Err(reply(500, 5, 5, 2, "NUL character in command"));
        }
        if std::str::from_utf8(line).is_err() {
            return Err(reply(500, 5, 5, 2, "Invalid UTF-8 in command"));
        }
        Ok(Some(start..start + line.len()))
    }

    /// The line of `range`, checked to be UTF-8 by [`Session::next_line`].
    fn line_text(&self, range: std::ops::Range<usize>) -> String {
        String::from_utf8_lossy(&self.inbuf[range]).into_owned()
    }

    fn step_command(&mut self, pos: &mut usize) -> bool {
        if self.shutting_down {
            let r = reply(
                421,
                4,
                3,
                2,
                &format!("{} Service shutting down", self.cfg.hostname),
            );
            self.send(r);
            self.close();
            return false;
        }
        // An AUTH command may carry a long initial response.
        let rest = &self.inbuf[*pos..];
        let limit = if rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(b"AUTH ") {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        };
        let range = match self.next_line(pos, limit) {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(r) => {
                self.fail(r);
                return true;
            }
        };
        let Ok(line) = std::str::from_utf8(&self.inbuf[range]) else {
            return true;
        };
        let parsed = parse_command(line);
        self.dispatch(parsed);
        true
    }

    fn dispatch(&mut self, parsed: Result<Command, ParseError>) {
        let cmd = match parsed {
            Ok(c) => c,
            Err(e) => {
                let r = match e {
                    ParseError::Unrecognized => reply(500, 5, 5, 1, "Command unrecognized"),
                    ParseError::Syntax(usage) => reply(501, 5, 5, 4, &format!("Syntax: {usage}")),
                    ParseError::BadSender(e) => {
                        reply(501, 5, 1, 7, &format!("Bad sender address syntax: {e}"))
                    }
                    ParseError::BadRecipient(e) => {
                        reply(501, 5, 1, 3, &format!("Bad recipient address syntax: {e}"))
                    }
                    ParseError::UnsupportedParam(p) => {
                        reply(555, 5, 5, 4, &format!("Unsupported parameter {p}"))
                    }
                    ParseError::NotImplemented(t) => reply(502, 5, 5, 1, t),
                };
                return self.fail(r);
            }
        };
        match cmd {
            Command::Helo(_) | Command::Ehlo(_) if self.tx.chunking.is_some() => {
                self.abort_message();
                self.fail(reply(
                    503,
                    5,
                    5,
                    1,
                    "BDAT transfer in progress; message discarded",
                ));
            }
            Command::Helo(name) => self.ask(
                Pending::Helo {
                    name: name.clone(),
                    extended: false,
                },
                Event::Helo {
                    name,
                    extended: false,
                },
            ),
            Command::Ehlo(name) => self.ask(
                Pending::Helo {
                    name: name.clone(),
                    extended: true,
                },
                Event::Helo {
                    name,
                    extended: true,
                },
            ),
            Command::Mail(from, params) => self.mail(from, params),
            Command::Rcpt(to) => self.rcpt(to),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_message();
                self.tx = Transaction::default();
                self.send(reply(250, 2, 0, 0, "OK"));
            }
            Command::Noop => self.send(reply(250, 2, 0, 0, "OK")),
            Command::Quit => {
                let r = reply(
                    221,
                    2,
                    0,
                    0,
                    &format!("{} closing connection", self.cfg.hostname),
                );
                self.send(r);
                self.abort_message();
                self.close();
            }
            Command::Help => self.send(reply(
                214,
                2,
                0,
                0,
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH",
            )),
            Command::Vrfy(arg) => match self.cfg.vrfy {
                VrfyPolicy::Off => self.fail(reply(502, 5, 5, 1, "VRFY command is disabled")),
                VrfyPolicy::Ambiguous => self.send(reply(
                    252,
                    2,
                    5,
                    2,
                    "Cannot VRFY user, but will accept message and attempt delivery",
                )),
                VrfyPolicy::On => self.ask(Pending::Vrfy, Event::Vrfy(arg)),
            },
            Command::Expn(arg) => {
                if self.cfg.expn {
                    self.ask(Pending::Vrfy, Event::Expn(arg))
                } else {
                    self.fail(reply(502, 5, 5, 1, "EXPN command is disabled"))
                }
            }
            Command::StartTls => self.starttls(),
            Command::Auth(args) => self.auth(&args),
        }
    }

    fn starttls(&mut self) {
        if self.tls {
            return self.fail(reply(503, 5, 5, 1, "TLS already active"));
        }
        if !self.cfg.starttls {
            return self.fail(reply(502, 5, 5, 1, "STARTTLS not available"));
        }
        if self.tx.mail || self.tx.chunking.is_some() {
            return self.fail(reply(
                503,
                5,
                5,
                1,
                "STARTTLS not allowed during a mail transaction",
            ));
        }
        self.send(reply(220, 2, 0, 0, "Ready to start TLS"));
        self.out.push_back(Output::Event(Event::StartTls));
        self.starting_tls = true;
    }

    fn auth(&mut self, args: &str) {
        if !self.cfg.auth {
            return self.fail(reply(502, 5, 5, 1, "AUTH not available"));
        }
        if self.helo.is_none() {
            return self.fail(reply(503, 5, 5, 1, "Send EHLO first"));
        }
        if self.authenticated {
            return self.fail(reply(503, 5, 5, 1, "Already authenticated"));
        }
        if self.tx.mail || self.tx.chunking.is_some() {
            return self.fail(reply(
                503,
                5,
                5,
                1,
                "AUTH not allowed during a mail transaction",
            ));
        }
        if !self.tls && !self.cfg.auth_mechanisms_without_tls {
            return self.fail(reply(
                538,
                5,
                7,
                11,
                "Encryption required for requested authentication mechanism",
            ));
        }
        let mut words = args.split(' ').filter(|w| !w.is_empty());
        let syntax = || reply(501, 5, 5, 4, "Syntax: AUTH mechanism [initial-response]");
        let Some(mechanism) = words.next() else {
            return self.fail(syntax());
        };
        let initial = words.next();
        if words.next().is_some() {
            return self.fail(syntax());
        }
        let mechanism = if mechanism.eq_ignore_ascii_case("PLAIN") {
            AuthMechanism::Plain
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            AuthMechanism::Login
        } else {
            return self.fail(reply(504, 5, 5, 4, "Unrecognized authentication type"));
        };
        match (mechanism, initial) {
            (AuthMechanism::Plain, None) => self.challenge(AuthStep::Plain, ""),
            (AuthMechanism::Plain, Some(r)) => self.plain_response(r),
            (AuthMechanism::Login, None) => self.challenge(AuthStep::LoginUser, "VXNlcm5hbWU6"),
            (AuthMechanism::Login, Some(r)) => self.login_user(r),
        }
    }

    /// Sends a 334 challenge and waits for the client's response line.
    fn challenge(&mut self, step: AuthStep, text: &str) {
        // 3xx replies carry no enhanced code (RFC 2034 §3).
        self.send(Reply::fixed_plain(334, text));
        self.mode = Mode::Auth(step);
    }

    /// A SASL response: `=` is an empty one (RFC 4954 §4); `None` when it
    /// is not base64, after the 501 was sent.
    fn decode_response(&mut self, text: &str) -> Option<Vec<u8>> {
        if text == "=" {
            return Some(Vec::new());
        }
        match BASE64.decode(text.as_bytes()) {
            Ok(v) => Some(v),
            Err(_) => {
                self.fail(reply(501, 5, 5, 2, "Invalid base64 data"));
                None
            }
        }
    }

    /// PLAIN: `authzid NUL authcid NUL passwd` (RFC 4616 §2).
    fn plain_response(&mut self, text: &str) {
        let Some(raw) = self.decode_response(text) else {
            return;
        };
        let mut parts = raw.splitn(3, |&b| b == 0);
        let (Some(authzid), Some(authcid), Some(passwd)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return self.fail(reply(501, 5, 5, 2, "Invalid PLAIN response"));
        };
        let (Ok(authzid), Ok(authcid)) =
            (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
        else {
            return self.fail(reply(501, 5, 5, 2, "Invalid PLAIN response"));
        };
        if authcid.is_empty() {
            return self.fail(reply(501, 5, 5, 2, "Invalid PLAIN response"));
        }
        // Acting as someone else is not supported: the authorization
        // identity, when given, must be the login itself.
        if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
            return self.fail(reply(535, 5, 7, 8, "Authentication credentials invalid"));
        }
        let event = Event::Auth {
            mechanism: AuthMechanism::Plain,
            login: authcid.to_string(),
            password: Password(passwd.to_vec()),
        };
        self.ask(Pending::Auth, event);
    }

    /// LOGIN: the user name; the password is asked for next.
    fn login_user(&mut self, text: &str) {
        let Some(raw) = self.decode_response(text) else {
            return;
        };
        let Ok(login) = String::from_utf8(raw) else {
            return self.fail(reply(501, 5, 5, 2, "Invalid user name"));
        };
        self.challenge(AuthStep::LoginPassword { login }, "UGFzc3dvcmQ6");
    }

    /// One response line of an AUTH exchange.
    fn step_auth(&mut self, pos: &mut usize) -> bool {
        if self.shutting_down {
            self.mode = Mode::Command;
            return self.step_command(pos);
        }
        let range = match self.next_line(pos, MAX_AUTH_LINE) {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(r) => {
                self.mode = Mode::Command;
                self.fail(r);
                return true;
            }
        };
        let text = self.line_text(range);
        let Mode::Auth(step) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return true;
        };
        if text == "*" {
            self.fail(reply(501, 5, 0, 0, "Authentication cancelled"));
            return true;
        }
        match step {
            AuthStep::Plain => self.plain_response(&text),
            AuthStep::LoginUser => self.login_user(&text),
            AuthStep::LoginPassword { login } => {
                if let Some(raw) = self.decode_response(&text) {
                    let event = Event::Auth {
                        mechanism: AuthMechanism::Login,
                        login,
                        password: Password(raw),
                    };
                    self.ask(Pending::Auth, event);
                }
            }
        }
        true
    }

    fn ask(&mut self, pending: Pending, event: Event) {
        self.pending = Some(pending);
        self.emit(event);
    }

    fn abort_message(&mut self) {
        if self.tx.chunking.take().is_some() {
            self.data_out.clear();
            self.out.push_back(Output::Event(Event::MessageAborted));
        }
    }

    fn mail(&mut self, from: Option<Path>, params: MailParams) {
        if self.helo.is_none() {
            return self.fail(reply(503, 5, 5, 1, "Send HELO/EHLO first"));
        }
        if self.tx.mail {
            return self.fail(reply(503, 5, 5, 1, "Nested MAIL command"));
        }
        if self.cfg.require_auth && !self.authenticated {
            return self.fail(reply(530, 5, 7, 0, "Authentication required"));
        }
        if params.size.is_some_and(|s| s > self.cfg.max_message_size) {
            return self.fail(reply(
                552,
                5,
                3,
                4,
                "Message size exceeds fixed maximum message size",
            ));
        }
        if from.as_ref().is_some_and(|p| p.mailbox.is_utf8()) && !params.smtputf8 {
            return self.fail(reply(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8"));
        }
        self.ask(
            Pending::Mail {
                params: params.clone(),
            },
            Event::Mail { from, params },
        );
    }

    fn rcpt(&mut self, to: Path) {
        if !self.tx.mail {
            return self.fail(reply(503, 5, 5, 1, "Need MAIL before RCPT"));
        }
        if self.tx.chunking.is_some() {
            return self.fail(reply(503, 5, 5, 1, "BDAT transfer in progress"));
        }
        if self.tx.recipients >= self.cfg.max_recipients {
            return self.fail(reply(452, 4, 5, 3, "Too many recipients"));
        }
        if to.mailbox.is_utf8() && !self.tx.smtputf8 {
            return self.fail(reply(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8"));
        }
        self.ask(Pending::Rcpt, Event::Rcpt { to });
    }

    fn data(&mut self) {
        if !self.tx.mail {
            return self.fail(reply(503, 5, 5, 1, "Need MAIL command"));
        }
        if self.tx.chunking.is_some() {
            self.abort_message();
            self.tx = Transaction::default();
            return self.fail(reply(503, 5, 5, 1, "DATA not allowed during BDAT transfer"));
        }
        if self.tx.recipients == 0 {
            return self.fail(reply(554, 5, 5, 1, "No valid recipients"));
        }
        // 3xx replies carry no enhanced code (RFC 2034 §3).
        self.send(Reply::fixed_plain(354, "End data with <CR><LF>.<CR><LF>"));
        self.out.push_back(Output::Event(Event::MessageStart));
        self.mode = Mode::Data(DataReader::new(self.cfg.max_message_size));
    }

    fn bdat(&mut self, size: u64, last: bool) {
        // RFC 3030 §2: the chunk is read even when the command is refused.
        let error = if !self.tx.mail {
            Some(reply(503, 5, 5, 1, "Need MAIL command"))
        } else if self.tx.recipients == 0 {
            Some(reply(554, 5, 5, 1, "No valid recipients"))
        } else {
            None
        };
        if error.is_none() && self.tx.chunking.is_none() {
            self.tx.chunking = Some(ChunkChecker::default());
            self.out.push_back(Output::Event(Event::MessageStart));
        }
        self.mode = Mode::Bdat {
            remaining: size,
            last,
            error,
        };
    }

    fn flaw_reply(flaw: Flaw) -> Reply {
        match flaw {
            Flaw::TooLarge => reply(
                552,
                5,
                3,
                4,
                "Message size exceeds fixed maximum message size",
            ),
            Flaw::LineTooLong => reply(
                500,
                5,
                5,
                2,
                "Message has a line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
            ),
            Flaw::BareLineEnding => reply(
                550,
                5,
                6,
                0,
                "Message contains bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)",
            ),
        }
    }

    fn step_data(&mut self, pos: &mut usize) -> bool {
        let Mode::Data(reader) = &mut self.mode else {
            return false;
        };
        let (n, done) = reader.feed(&self.inbuf[*pos..], &mut self.data_out);
        let (size, flaw) = (reader.size(), reader.flaw);
        *pos += n;
        if self.data_out.len() >= DATA_CHUNK {
            self.flush_data();
        }
        if !done {
            return false;
        }
        self.mode = Mode::Command;
        if let Some(flaw) = flaw {
            self.data_out.clear();
            self.out.push_back(Output::Event(Event::MessageAborted));
            self.tx = Transaction::default();
            self.fail(Self::flaw_reply(flaw));
        } else {
            self.flush_data();
            self.pending = Some(Pending::MessageEnd);
            self.emit(Event::MessageEnd { size });
        }
        true
    }

    fn step_bdat(&mut self, pos: &mut usize) -> bool {
        let Mode::Bdat {
            remaining,
            last,
            error,
        } = &mut self.mode
        else {
            return false;
        };
        let avail = (self.inbuf.len() - *pos) as u64;
        let take = avail.min(*remaining) as usize;
        *remaining -= take as u64;
        if take > 0
            && error.is_none()
            && let Some(checker) = self.tx.chunking.as_mut()
        {
            let chunk = &self.inbuf[*pos..*pos + take];
            checker.check(chunk, self.cfg.max_message_size);
            if checker.flaw.is_none() {
                self.data_out.extend_from_slice(chunk);
            }
        }
        *pos += take;
        if *remaining > 0 {
            if self.data_out.len() >= DATA_CHUNK {
                self.flush_data();
            }
            return false;
        }
        let (last, error) = (*last, error.take());
        self.mode = Mode::Command;
        if let Some(r) = error {
            self.fail(r);
            return true;
        }
        let Some(checker) = self.tx.chunking.as_mut() else {
            return true;
        };
        if last {
            checker.finish();
        }
        let (size, flaw) = (checker.size, checker.flaw);
        if let Some(flaw) = flaw {
            self.abort_message();
            self.tx = Transaction::default();
            self.fail(Self::flaw_reply(flaw));
        } else if last {
            self.flush_data();
            self.tx.chunking = None;
            self.pending = Some(Pending::MessageEnd);
            self.emit(Event::MessageEnd { size });
        } else {
            self.send(reply(250, 2, 0, 0, &format!("{size} octets received")));
        }
        true
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

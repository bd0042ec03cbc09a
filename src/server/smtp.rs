//! The SMTP driver: feeds a socket to an [`mxguard_proto::smtp::Session`],
//! decides its events through the policy crate, spools and commits
//! messages, and writes the replies.
//!
//! # Security
//! All bytes from the socket go through the session, which bounds lines
//! and message size; this driver adds the timeouts (`smtp.timeouts`) so a
//! stalled client cannot hold a session forever, and logs every refusal
//! with the check that made it.
//!
//! TLS: a `submissions` listener runs the handshake before the banner; on
//! the others STARTTLS upgrades the same TCP connection and the session
//! goes on over TLS. The connection checks (lists, limits, DNS, the early
//! talker test) all run on the plain socket, before any handshake.
//! AUTH passwords are checked off the executor (argon2 is slow) and never
//! logged; a login for an unknown account costs the same hash as a wrong
//! password, so timing does not tell which accounts exist.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use mxguard_config::{Config, Role, Secret};
use mxguard_policy::content::after_accept_rules;
use mxguard_policy::limits::{
    Rate, StoreDown, check_rate, client_key, count_rate, greylist, greylist_applies, is_exempt,
    recipients_id, tarpit_delay,
};
use mxguard_policy::recipient::{Client, Route, route_recipient};
use mxguard_policy::sender::{SenderCheck, check_sender, judge_sender_domain};
use mxguard_proto::smtp::{AuthMechanism, Decision, Event, Output, Password, Session, TimeoutKind};
use mxguard_proto::{Path, Reply};
use mxguard_queue::{Body, Envelope, Recipient, Target, new_queue_id};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use super::limits::StoreCounters;
use super::tls::TlsState;
use crate::auth;

use super::ListenerCtx;
use super::connect::{self, ClientFacts};
use super::trace::{self, ReceivedFacts};
use mxguard_policy::Verdict;
use mxguard_policy::connect::{check_helo, early_talker_verdict};

/// The read buffer of a session, allocated at accept and kept for its
/// life: small, because a server holding thousands of tarpitted or idle
/// sessions pays it for each (16 KiB was most of a session's memory); a
/// command line fits, and DATA just takes more reads.
const READ_BUF: usize = 4 * 1024;

/// A message larger than this goes to a spool file instead of memory, so a
/// session's memory stays bounded whatever `max_message_size` is.
const SPILL_AT: usize = 1024 * 1024;

/// The message being received.
enum Spool {
    Memory(Vec<u8>),
    File {
        file: BufWriter<tokio::fs::File>,
        path: std::path::PathBuf,
    },
    /// Writing the spool file failed; the message will get a 451.
    Failed(String),
}

/// What the driver knows of the current session and transaction.
struct Conn {
    id: String,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    /// The configuration this session started with (a reload does not
    /// change the rules in the middle of a session).
    cfg: Arc<Config>,
    helo: String,
    esmtp: bool,
    sender: Option<String>,
    recipients: Vec<Recipient>,
    queue_id: String,
    message: Option<Spool>,
    /// Where the client's content starts in `message` (after our trace).
    content_start: usize,
    /// The check behind the refusal the session is about to send.
    policy_refusal: bool,
    /// The score the content filters gave the message in commit (None when
    /// they did not judge it: authenticated or whitelisted clients).
    score: Option<f64>,
    /// What the connection stage learned (whitelisting, reverse DNS).
    facts: ClientFacts,
    /// The connection is encrypted.
    tls: bool,
    /// The address of the account the client authenticated as.
    account: Option<String>,
    /// The address the client connected to (for `user@[IP]`).
    local_ip: std::net::IpAddr,
    /// A recipient of this transaction is a spam trap (the address and the
    /// router line): the message is refused whole at the end of DATA.
    spamtrap: Option<(String, usize)>,
    /// RCPT commands in this session, all transactions (for the tarpit).
    rcpts_in_session: u32,
    /// Whether the client's address logged in over POP3 lately, once
    /// asked in this transaction.
    pop_login: std::sync::atomic::AtomicU8,
    /// The server's stop signal (ends a tarpit delay early).
    stop: watch::Receiver<bool>,
}

/// The states of `Conn::pop_login`.
const POP_UNKNOWN: u8 = 0;
const POP_NO: u8 = 1;
const POP_YES: u8 = 2;

/// The state of the read/write loop that outlives a STARTTLS upgrade.
struct Io {
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    stopping: bool,
    command_timeout: Duration,
    data_timeout: Duration,
}

pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: String,
    ctx: Arc<ListenerCtx>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let config = ctx.config.get();
    let cfg = &*config;
    let ip = peer.ip();
    let (_counted, total, from_ip) = ctx.conns.open(ip);
    let whitelisted = match connect::check_lists_and_limits(cfg, &*ctx.store, ip, total, from_ip) {
        Ok(w) => w,
        Err(v) => return refuse_connection(stream, &id, ip, v).await,
    };
    // The DNS checks run while an early talker is given the chance to
    // give itself away (postscreen's pregreet test).
    let wait = (ctx.role == Role::Mx && !whitelisted && !cfg.access.early_talker.is_zero())
        .then_some(cfg.access.early_talker);
    let (facts, talked) = tokio::join!(
        connect::check_dns(cfg, &ctx.dns, ip, whitelisted),
        talks_first(&stream, wait)
    );
    let facts = match facts {
        Ok(f) => f,
        Err(v) => return refuse_connection(stream, &id, ip, v).await,
    };
    if talked {
        return refuse_connection(stream, &id, ip, early_talker_verdict()).await;
    }
    let banner_text = trace::banner_text(
        cfg.server.banner.as_deref(),
        &cfg.server.hostname,
        SystemTime::now(),
    );
    let banner = Reply::new(220, None, &banner_text)
        .unwrap_or_else(|_| Reply::fixed_plain(220, &cfg.server.hostname));
    let mut session = Session::new(ctx.session.clone(), banner);
    if whitelisted {
        session.set_max_errors(None);
    }
    let (command_timeout, data_timeout) = (cfg.smtp.command_timeout, cfg.smtp.data_timeout);
    tracing::debug!(session = %id, client = %peer.ip(), role = ctx.role.as_str(), "connect");
    let local_ip = stream.local_addr().map(|a| a.ip()).unwrap_or(ip);
    let mut conn = Conn {
        stop: stop.clone(),
        id,
        peer,
        ctx: ctx.clone(),
        cfg: config.clone(),
        helo: String::new(),
        esmtp: false,
        sender: None,
        recipients: Vec::new(),
        queue_id: String::new(),
        message: None,
        content_start: 0,
        policy_refusal: false,
        score: None,
        facts,
        tls: false,
        account: None,
        local_ip,
        spamtrap: None,
        rcpts_in_session: 0,
        pop_login: std::sync::atomic::AtomicU8::new(POP_UNKNOWN),
    };
    let mut io = Io {
        wbuf: Vec::with_capacity(1024),
        rbuf: vec![0u8; READ_BUF],
        stopping: *stop.borrow(),
        command_timeout,
        data_timeout,
    };
    if io.stopping {
        session.shutdown();
    }
    if ctx.role.implicit_tls() {
        // The banner comes after the handshake (RFC 8314 §3.3).
        let Some(mut tls) = handshake(ctx.tls.as_deref(), stream, &conn, command_timeout).await
        else {
            return;
        };
        session.set_tls(true);
        conn.tls = true;
        run(&mut tls, &mut session, &mut conn, &mut stop, &mut io).await;
    } else if run(&mut stream, &mut session, &mut conn, &mut stop, &mut io).await {
        // STARTTLS: its 220 is out; the handshake takes over the socket.
        let Some(mut tls) = handshake(ctx.tls.as_deref(), stream, &conn, command_timeout).await
        else {
            return;
        };
        session.tls_started();
        conn.tls_started();
        // A second STARTTLS is refused by the session (TLS already active).
        run(&mut tls, &mut session, &mut conn, &mut stop, &mut io).await;
    }
    tracing::debug!(session = %conn.id, client = %conn.peer.ip(), "disconnect");
}

/// The TLS handshake on `stream`, within `limit`; `None` (logged) when it
/// fails or TLS is not configured.
async fn handshake(
    tls: Option<&TlsState>,
    stream: TcpStream,
    conn: &Conn,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let Some(tls) = tls else {
        tracing::warn!(session = %conn.id, client = %conn.peer.ip(),
            "TLS asked for but no [tls] certificate is loaded; closing");
        return None;
    };
    match tokio::time::timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => {
            let (_, state) = s.get_ref();
            tracing::debug!(session = %conn.id, client = %conn.peer.ip(),
                version = ?state.protocol_version(), cipher = ?state.negotiated_cipher_suite().map(|c| c.suite()),
                "TLS established");
            Some(s)
        }
        Ok(Err(e)) => {
            tracing::info!(session = %conn.id, client = %conn.peer.ip(), check = "tls", error = %e,
                "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(session = %conn.id, client = %conn.peer.ip(), check = "tls", timeout = ?limit,
                "TLS handshake timed out");
            None
        }
    }
}

/// Runs the session over `stream` until it closes (false) or the client's
/// STARTTLS was accepted (true: the 220 has been written, nothing more was
/// read from the stream, and the caller upgrades it).
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    session: &mut Session,
    conn: &mut Conn,
    stop: &mut watch::Receiver<bool>,
    io: &mut Io,
) -> bool {
    loop {
        let mut close = false;
        let mut starttls = false;
        while let Some(out) = session.poll_output() {
            match out {
                Output::Reply(r) => {
                    conn.log_refusal(&r);
                    r.write_to(&mut io.wbuf);
                }
                Output::Event(Event::StartTls) => {
                    starttls = true;
                    break;
                }
                Output::Event(e) => {
                    if let Some(d) = conn.handle(e).await {
                        session.respond(d);
                    }
                }
                Output::Close => close = true,
            }
        }
        if !io.wbuf.is_empty() {
            let written = async {
                stream.write_all(&io.wbuf).await?;
                stream.flush().await
            }
            .await;
            if let Err(e) = written {
                tracing::debug!(session = %conn.id, error = %e, "write failed");
                return false;
            }
            io.wbuf.clear();
        }
        if starttls {
            return true;
        }
        if close {
            // Record a ban before the client can come back.
            conn.ban_if_abusive(session.errors());
            let _ = stream.shutdown().await;
            return false;
        }
        let limit = match session.timeout_kind() {
            TimeoutKind::Command => io.command_timeout,
            TimeoutKind::Data => io.data_timeout,
        };
        tokio::select! {
            r = tokio::time::timeout(limit, stream.read(&mut io.rbuf)) => match r {
                Ok(Ok(0)) => session.handle_eof(),
                Ok(Ok(n)) => session.handle_input(&io.rbuf[..n]),
                Ok(Err(e)) => {
                    tracing::debug!(session = %conn.id, error = %e, "read failed");
                    session.handle_eof();
                }
                Err(_) => {
                    tracing::info!(session = %conn.id, client = %conn.peer.ip(), helo = %conn.helo,
                        check = "timeout", timeout = ?limit, "client stalled; closing");
                    session.handle_timeout();
                }
            },
            _ = stop.changed(), if !io.stopping => {
                io.stopping = true;
                session.shutdown();
            }
        }
    }
}

/// A hash checked when the login names no account (or one without a
/// password), so that a failure takes as long either way.
fn decoy_secret() -> Secret {
    static DECOY: OnceLock<Secret> = OnceLock::new();
    DECOY
        .get_or_init(|| {
            Secret::Argon2(auth::hash_password(b"mxguard decoy password").unwrap_or_default())
        })
        .clone()
}

/// Sends a connection-stage refusal, logs it, and closes.
async fn refuse_connection(mut stream: TcpStream, id: &str, ip: std::net::IpAddr, v: Verdict) {
    tracing::info!(session = %id, client = %ip, check = v.check.as_str(), reason = %v.reason, reply = %v.reply,
        "connection refused ({})", v.check.as_str());
    let mut out = Vec::new();
    v.reply.write_to(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}

/// Whether the client sends anything during `wait` (`None`: no wait).
async fn talks_first(stream: &TcpStream, wait: Option<std::time::Duration>) -> bool {
    let Some(wait) = wait else { return false };
    let mut probe = [0u8; 1];
    matches!(tokio::time::timeout(wait, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
}

impl Conn {
    fn sender_shown(&self) -> &str {
        self.sender.as_deref().unwrap_or("")
    }

    /// Logs a refusal the session sends for protocol reasons; refusals made
    /// by policy were logged when they were decided.
    fn log_refusal(&mut self, r: &Reply) {
        if r.code() < 400 {
            return;
        }
        if std::mem::take(&mut self.policy_refusal) {
            return;
        }
        tracing::info!(
            session = %self.id, client = %self.peer.ip(), helo = %self.helo, from = %self.sender_shown(),
            check = "protocol", reply = %r, "command refused (protocol)"
        );
    }

    async fn handle(&mut self, e: Event) -> Option<Decision> {
        match e {
            Event::Helo { name, extended } => {
                if !self.facts.whitelisted
                    && let Err(r) = check_helo(&self.cfg, &name, self.peer.ip())
                {
                    tracing::info!(session = %self.id, client = %self.peer.ip(), helo = %name,
                        check = r.verdict.check.as_str(), reason = %r.verdict.reason, reply = %r.verdict.reply,
                        "HELO refused ({})", r.verdict.check.as_str());
                    self.policy_refusal = true;
                    return Some(if r.close {
                        Decision::Close(r.verdict.reply)
                    } else {
                        Decision::Reject(r.verdict.reply)
                    });
                }
                self.helo = name;
                self.esmtp = extended;
                self.reset();
                Some(Decision::Accept(None))
            }
            Event::Mail { from, .. } => {
                self.reset();
                let address = from.map(|p| p.mailbox.to_string());
                let checked = match self.check_mail(address.as_deref()).await {
                    Ok(()) => self.message_rate(),
                    Err(v) => Err(v),
                };
                if let Err(v) = checked {
                    tracing::info!(
                        session = %self.id, client = %self.peer.ip(), helo = %self.helo,
                        from = address.as_deref().unwrap_or(""), check = v.check.as_str(), reason = %v.reason,
                        reply = %v.reply, "MAIL denied ({})", v.check.as_str()
                    );
                    self.policy_refusal = true;
                    return Some(Decision::Reject(v.reply));
                }
                self.sender = Some(address.unwrap_or_default());
                Some(Decision::Accept(None))
            }
            Event::Rcpt { to } => Some(self.rcpt(to).await),
            Event::Vrfy(arg) | Event::Expn(arg) => Some(self.verify(&arg)),
            Event::MessageStart => {
                self.start_message();
                None
            }
            Event::MessageData(chunk) => {
                self.append(&chunk).await;
                None
            }
            Event::MessageAborted => {
                self.discard_spool().await;
                None
            }
            Event::MessageEnd { size } => Some(self.commit(size).await),
            Event::Auth {
                mechanism,
                login,
                password,
            } => Some(self.auth(mechanism, login, password).await),
            // The run loop upgrades the connection before it gets here.
            Event::StartTls => None,
        }
    }

    /// The session starts over on the encrypted connection.
    fn tls_started(&mut self) {
        self.tls = true;
        self.helo.clear();
        self.esmtp = false;
        self.account = None;
        self.reset();
    }

    /// AUTH: the account named by `login` and its password.
    async fn auth(
        &mut self,
        mechanism: AuthMechanism,
        login: String,
        password: Password,
    ) -> Decision {
        let cfg = self.cfg.clone();
        let account = auth::find_account(&cfg, &login)
            .and_then(|a| a.password.clone().map(|p| (a.address.clone(), p)));
        let (address, secret) = match account {
            Some((address, secret)) => (Some(address), Some(secret)),
            None => (None, None),
        };
        let ok = tokio::task::spawn_blocking(move || {
            let secret = secret.unwrap_or_else(decoy_secret);
            auth::verify_password(&secret, password.as_bytes())
        })
        .await
        .unwrap_or(false);
        match address {
            Some(address) if ok => {
                tracing::info!(session = %self.id, client = %self.peer.ip(), helo = %self.helo,
                    check = "auth", mechanism = mechanism.as_str(), account = %address, tls = self.tls,
                    "AUTH OK");
                self.account = Some(address);
                Decision::Accept(None)
            }
            _ => {
                let r = Reply::fixed(535, 5, 7, 8, "Authentication credentials invalid");
                // The login is the client's text: Debug-quoted, never the password.
                tracing::info!(session = %self.id, client = %self.peer.ip(), helo = %self.helo,
                    check = "auth", mechanism = mechanism.as_str(), login = ?login, reply = %r,
                    "AUTH failed");
                self.policy_refusal = true;
                Decision::Reject(r)
            }
        }
    }

    /// `limits.auto_ban`: a client dropped for too many errors is refused
    /// for a while, on every listener and across restarts.
    fn ban_if_abusive(&self, errors: u32) {
        let cfg = &self.cfg;
        let (Some(ban), false) = (cfg.limits.auto_ban, self.facts.whitelisted) else {
            return;
        };
        if errors < cfg.limits.max_errors {
            return;
        }
        let ip = self.peer.ip();
        let until = connect::now_secs() + ban.as_secs();
        let reason = format!("{errors} errors in one session");
        match self.ctx.store.ban(&ip.to_string(), until, &reason) {
            Ok(()) => tracing::info!(session = %self.id, client = %ip, check = "too_many_errors",
                ban = ?ban, "client banned"),
            Err(e) => {
                tracing::warn!(session = %self.id, client = %ip, error = %e, "cannot record the ban")
            }
        }
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
        self.message = None;
        self.spamtrap = None;
        self.pop_login
            .store(POP_UNKNOWN, std::sync::atomic::Ordering::Relaxed);
    }

    /// MAIL FROM: the checks of `[sender]` and the router, then (when
    /// `sender.verify_domain` asks for it) the DNS of the domain.
    async fn check_mail(&self, address: Option<&str>) -> Result<(), Verdict> {
        let cfg = self.cfg.clone();
        let client = self.client(&cfg, None);
        match check_sender(&cfg, address, &client)? {
            SenderCheck::Accept => Ok(()),
            SenderCheck::VerifyDomain(domain) => {
                let answer = self.ctx.dns.mail_domain(&domain).await;
                judge_sender_domain(&cfg, address.unwrap_or(""), &domain, &answer)
            }
        }
    }

    /// Whether this client is one of ours (never banned for a spam trap).
    fn is_trusted(&self) -> bool {
        self.facts.whitelisted
            || self.account.is_some()
            || self.cfg.is_relay_client(self.peer.ip())
            || self.recent_pop()
    }

    /// A POP3 login of a `mobile` account from this address lately.
    /// Asked of the store once a transaction, not at every RCPT.
    fn recent_pop(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match self.pop_login.load(Relaxed) {
            POP_NO => return false,
            POP_YES => return true,
            _ => {}
        }
        let recent = super::popauth::recent(
            &self.cfg,
            &*self.ctx.store,
            self.peer.ip(),
            mxguard_store::unix_now(),
        );
        self.pop_login
            .store(if recent { POP_YES } else { POP_NO }, Relaxed);
        recent
    }

    /// The end of DATA of a message with a spam trap among its recipients:
    /// nobody gets it (SPEC §4), and the client may be banned
    /// (`router.spamtrap_ban`).
    async fn refuse_spamtrap(&mut self, trap: &str, line: usize) -> Decision {
        self.discard_spool().await;
        let reply = Reply::fixed(550, 5, 7, 1, "Message refused: a recipient is a spam trap");
        let ip = self.peer.ip();
        tracing::info!(
            session = %self.id, client = %ip, helo = %self.helo, from = %self.sender_shown(),
            rcpt = %trap, recipients = self.recipients.len() + 1, check = "spamtrap",
            reason = %format!("{trap} is a spam trap (router line {line})"), reply = %reply,
            "DATA refused (spamtrap)"
        );
        self.recipients.clear();
        self.sender = None;
        self.policy_refusal = true;
        if let Some(ban) = self.cfg.router.spamtrap_ban
            && !self.is_trusted()
        {
            let until = connect::now_secs() + ban.as_secs();
            let reason = format!("sent to the spam trap {trap}");
            match self.ctx.store.ban(&ip.to_string(), until, &reason) {
                Ok(()) => tracing::info!(session = %self.id, client = %ip, check = "spamtrap",
                    ban = ?ban, "client banned"),
                Err(e) => {
                    tracing::warn!(session = %self.id, client = %ip, error = %e, "cannot record the ban")
                }
            }
        }
        Decision::Reject(reply)
    }

    async fn append(&mut self, chunk: &[u8]) {
        let spill = match self.message.as_mut() {
            Some(Spool::Memory(m)) => {
                m.extend_from_slice(chunk);
                m.len() > SPILL_AT
            }
            Some(Spool::File { file, path }) => {
                if let Err(e) = file.write_all(chunk).await {
                    let why = format!("writing spool file {}: {e}", path.display());
                    let _ = tokio::fs::remove_file(&*path).await;
                    self.message = Some(Spool::Failed(why));
                }
                false
            }
            Some(Spool::Failed(_)) | None => false,
        };
        if spill && let Some(Spool::Memory(mut m)) = self.message.take() {
            // The header section is within the first megabyte: complete it
            // now, while it is still in memory.
            self.complete_submission(&mut m);
            let path = self.ctx.queue.spool_path(&self.queue_id);
            let r = async {
                let mut file =
                    BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(&path).await?);
                file.write_all(&m).await?;
                Ok::<_, std::io::Error>(file)
            }
            .await;
            self.message = Some(match r {
                Ok(file) => Spool::File { file, path },
                Err(e) => {
                    let _ = tokio::fs::remove_file(&path).await;
                    Spool::Failed(format!("creating spool file {}: {e}", path.display()))
                }
            });
        }
    }

    async fn discard_spool(&mut self) {
        if let Some(Spool::File { path, .. }) = self.message.take() {
            let _ = tokio::fs::remove_file(&path).await;
        }
    }

    /// What the policy checks know of this client.
    fn client<'a>(
        &'a self,
        cfg: &'a mxguard_config::Config,
        sender: Option<&'a str>,
    ) -> Client<'a> {
        Client {
            ip: self.peer.ip(),
            local_ip: self.local_ip,
            account: self.account.as_deref().and_then(|a| cfg.account_for(a)),
            recent_pop: self.recent_pop(),
            whitelisted: self.facts.whitelisted,
            sender,
        }
    }

    /// RCPT TO: decided, then (past `limits.tarpit_start`) answered late.
    async fn rcpt(&mut self, to: Path) -> Decision {
        self.rcpts_in_session = self.rcpts_in_session.saturating_add(1);
        let decision = self.decide_rcpt(to);
        let n = self.rcpts_in_session;
        let delay = {
            let cfg = self.cfg.clone();
            let client = self.client(&cfg, None);
            tarpit_delay(&cfg, &client, n)
        };
        if !delay.is_zero() {
            // One line when the tarpit starts, not one a recipient.
            if n == self.cfg.limits.tarpit_start.saturating_add(1) {
                tracing::info!(session = %self.id, client = %self.peer.ip(), helo = %self.helo,
                    from = %self.sender_shown(), check = "tarpit", rcpt_number = n, delay = ?delay,
                    "RCPT replies delayed from now on (tarpit)");
            } else {
                tracing::debug!(session = %self.id, check = "tarpit", rcpt_number = n, delay = ?delay,
                    "RCPT reply delayed (tarpit)");
            }
            // A stopping server does not wait out a spammer's delay.
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        decision
    }

    /// The volume checks of an accepted recipient: greylisting,
    /// `recipients_per_hour` (counted here) and
    /// `messages_per_hour_per_recipient` (counted when the message is
    /// queued). A store that fails skips them (fail open).
    fn rcpt_limits(&self, shown: &str, mailbox: Option<&str>) -> Result<(), Verdict> {
        let cfg = &*self.cfg;
        let sender = self.sender.as_deref().unwrap_or("");
        let client = self.client(cfg, Some(sender).filter(|s| !s.is_empty()));
        let store = StoreCounters(&*self.ctx.store);
        let now = mxguard_store::unix_now();
        let ip = self.peer.ip();
        let open = |check: &str, r: Result<Result<(), Verdict>, StoreDown>| match r {
            Ok(r) => r,
            Err(StoreDown(e)) => {
                super::limits::store_down(check, &e);
                Ok(())
            }
        };
        if self.ctx.role == Role::Mx && greylist_applies(cfg, &client) {
            open("greylist", greylist(&store, cfg, ip, sender, shown, now))?;
        }
        if is_exempt(cfg, &client) {
            return Ok(());
        }
        let who = recipients_id(self.account.as_deref(), ip);
        let rate = Rate::RecipientsPerHour;
        open(rate.name(), check_rate(&store, cfg, rate, &who, 1, now))?;
        if let Some(mailbox) = mailbox {
            let rate = Rate::MessagesPerRecipient;
            open(rate.name(), check_rate(&store, cfg, rate, mailbox, 1, now))?;
        }
        if let Err(StoreDown(e)) = count_rate(&store, cfg, Rate::RecipientsPerHour, &who, 1, now) {
            super::limits::store_down(Rate::RecipientsPerHour.name(), &e);
        }
        Ok(())
    }

    /// `limits.messages_per_hour_per_ip`, at MAIL FROM.
    fn message_rate(&self) -> Result<(), Verdict> {
        let cfg = &*self.cfg;
        let client = self.client(cfg, None);
        if is_exempt(cfg, &client) {
            return Ok(());
        }
        let store = StoreCounters(&*self.ctx.store);
        let rate = Rate::MessagesPerIp;
        let id = client_key(self.peer.ip());
        match check_rate(&store, cfg, rate, &id, 1, mxguard_store::unix_now()) {
            Ok(r) => r,
            Err(StoreDown(e)) => {
                super::limits::store_down(rate.name(), &e);
                Ok(())
            }
        }
    }

    /// Counts a queued message: for its client address, and for each
    /// local mailbox it goes to.
    fn count_message(&self, mailboxes: &[String]) {
        let cfg = &*self.cfg;
        let client = self.client(cfg, None);
        if is_exempt(cfg, &client) {
            return;
        }
        let store = StoreCounters(&*self.ctx.store);
        let now = mxguard_store::unix_now();
        let id = client_key(self.peer.ip());
        let counts = std::iter::once((Rate::MessagesPerIp, id.as_str())).chain(
            mailboxes
                .iter()
                .map(|m| (Rate::MessagesPerRecipient, m.as_str())),
        );
        for (rate, id) in counts {
            if let Err(StoreDown(e)) = count_rate(&store, cfg, rate, id, 1, now) {
                super::limits::store_down(rate.name(), &e);
            }
        }
    }

    fn decide_rcpt(&mut self, to: Path) -> Decision {
        let shown = to.mailbox.to_string();
        let cfg = self.cfg.clone();
        let client = self.client(&cfg, self.sender.as_deref().filter(|s| !s.is_empty()));
        let routed = route_recipient(&cfg, &to, &client).and_then(|r| {
            let mailbox = match &r {
                Route::Local(l) => Some(l.mailbox.as_str()),
                Route::Relay { .. } => None,
                // A trap collects what the spammer sends: no limit there.
                Route::SpamTrap { .. } => return Ok(r),
            };
            self.rcpt_limits(&shown, mailbox).map(|()| r)
        });
        match routed {
            Ok(Route::Local(local)) => {
                tracing::debug!(session = %self.id, rcpt = %shown, mailbox = %local.mailbox,
                    via = local.via.as_str(), "RCPT OK (local mailbox)");
                self.recipients.push(Recipient::new(
                    shown,
                    Target::Local {
                        mailbox: local.mailbox,
                    },
                ));
                Decision::Accept(None)
            }
            Ok(Route::Relay { address, reason }) => {
                tracing::info!(
                    session = %self.id, client = %self.peer.ip(), helo = %self.helo, from = %self.sender_shown(),
                    rcpt = %shown, to = %address, check = "relay", account = self.account.as_deref().unwrap_or(""),
                    "RCPT OK ({})", reason.as_str()
                );
                self.recipients
                    .push(Recipient::new(address, Target::Remote));
                Decision::Accept(None)
            }
            Ok(Route::SpamTrap { line }) => {
                // Accepted for now: the spammer learns nothing before the
                // message is refused whole at the end of DATA.
                tracing::info!(
                    session = %self.id, client = %self.peer.ip(), helo = %self.helo, from = %self.sender_shown(),
                    rcpt = %shown, check = "spamtrap", line,
                    "RCPT to a spam trap: the message will be refused"
                );
                if self.spamtrap.is_none() {
                    self.spamtrap = Some((shown, line));
                }
                Decision::Accept(None)
            }
            Err(v) => {
                tracing::info!(
                    session = %self.id, client = %self.peer.ip(), helo = %self.helo, from = %self.sender_shown(),
                    rcpt = %shown, check = v.check.as_str(), reason = %v.reason, reply = %v.reply,
                    "RCPT denied ({})", v.check.as_str()
                );
                self.policy_refusal = true;
                Decision::Reject(v.reply)
            }
        }
    }

    fn verify(&mut self, arg: &str) -> Decision {
        let addr = arg.trim().trim_start_matches('<').trim_end_matches('>');
        match self.cfg.account_for(addr) {
            Some(a) => Decision::Accept(Some(Reply::fixed(
                250,
                2,
                1,
                5,
                &format!("<{}>", a.address),
            ))),
            None => {
                self.policy_refusal = true;
                tracing::info!(session = %self.id, client = %self.peer.ip(), check = "unknown_user",
                    address = %addr, "VRFY/EXPN: no such user");
                Decision::Reject(Reply::fixed(550, 5, 1, 1, "No such user here"))
            }
        }
    }

    fn start_message(&mut self) {
        self.queue_id = new_queue_id();
        let cfg = &self.cfg;
        let single = (self.recipients.len() == 1).then(|| self.recipients[0].address.as_str());
        let header = trace::received_header(&ReceivedFacts {
            helo: &self.helo,
            client_ip: self.peer.ip(),
            client_name: self.facts.ptr_names.first().map(String::as_str),
            hide_client_ip: cfg.server.hide_client_ip,
            hostname: &cfg.server.hostname,
            protocol: protocol_keyword(self.esmtp, self.tls, self.account.is_some()),
            queue_id: &self.queue_id,
            single_recipient: single,
            time: SystemTime::now(),
        });
        let mut m = Vec::with_capacity(header.len() + 4096);
        m.extend_from_slice(header.as_bytes());
        self.content_start = m.len();
        self.message = Some(Spool::Memory(m));
    }

    /// Adds Message-ID and Date to a submission that lacks them (RFC 6409 §8).
    fn complete_submission(&self, message: &mut Vec<u8>) {
        if self.ctx.role != Role::Submission {
            return;
        }
        let (no_id, no_date) = trace::missing_origin_headers(&message[self.content_start..]);
        let mut extra = String::new();
        if no_id {
            extra.push_str(&format!(
                "Message-ID: <{}@{}>\r\n",
                self.queue_id, self.cfg.server.hostname
            ));
        }
        if no_date {
            extra.push_str(&format!(
                "Date: {}\r\n",
                trace::rfc5322_date(SystemTime::now())
            ));
        }
        if !extra.is_empty() {
            message.splice(self.content_start..self.content_start, extra.into_bytes());
        }
    }

    async fn commit(&mut self, size: u64) -> Decision {
        self.score = None;
        if let Some((trap, line)) = self.spamtrap.take() {
            return self.refuse_spamtrap(&trap, line).await;
        }
        let body = match self.message.take() {
            Some(Spool::Memory(mut m)) => {
                self.complete_submission(&mut m);
                Body::Memory(m)
            }
            Some(Spool::File { mut file, path }) => {
                if let Err(e) = file.flush().await {
                    let _ = tokio::fs::remove_file(&path).await;
                    return self
                        .queue_failure(&format!("writing spool file {}: {e}", path.display()));
                }
                Body::File(path)
            }
            Some(Spool::Failed(why)) => return self.queue_failure(&why),
            None => return self.queue_failure("no message in progress"),
        };
        let body = match self.filter(body).await {
            Ok(body) => body,
            Err(decision) => return decision,
        };
        let body = match self.account.is_some() {
            true => match super::auth_check::sign(
                &self.cfg,
                &self.id,
                &self.queue_id,
                self.sender_shown(),
                self.content_start,
                body,
            )
            .await
            {
                Ok(body) => body,
                Err(why) => return self.queue_failure(&why),
            },
            false => body,
        };
        let envelope = Envelope {
            id: self.queue_id.clone(),
            received: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            sender: self.sender.clone().unwrap_or_default(),
            client_ip: self.peer.ip().to_string(),
            helo: self.helo.clone(),
            recipients: std::mem::take(&mut self.recipients),
            warned: false,
            // The after_accept programs judge what the filters judged.
            filter_score: self
                .score
                .take()
                .filter(|_| after_accept_rules(&self.cfg).next().is_some()),
        };
        let nrcpt = envelope.recipients.len();
        let mut mailboxes: Vec<String> = envelope
            .recipients
            .iter()
            .filter_map(|r| match &r.target {
                Target::Local { mailbox } => Some(mailbox.clone()),
                Target::Remote => None,
            })
            .collect();
        mailboxes.sort();
        mailboxes.dedup();
        let (tx, rx) = oneshot::channel();
        self.ctx.queue.commit(
            envelope,
            body,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let result = rx.await;
        self.sender = None;
        match result {
            Ok(Ok(queued)) => {
                tracing::info!(
                    session = %self.id, client = %self.peer.ip(), helo = %self.helo,
                    from = %queued.envelope.sender, queue_id = %queued.envelope.id, recipients = nrcpt, size,
                    "message queued"
                );
                let reply = Reply::fixed(
                    250,
                    2,
                    0,
                    0,
                    &format!("Ok: queued as {}", queued.envelope.id),
                );
                self.ctx.delivery.submit(queued);
                self.count_message(&mailboxes);
                Decision::Accept(Some(reply))
            }
            Ok(Err(e)) => self.queue_failure(&e.to_string()),
            Err(_) => self.queue_failure("the queue stopped"),
        }
    }

    /// The content rules and the score (`[[filter]]`, `[scoring]`), for
    /// clients that are neither authenticated nor whitelisted: the body to
    /// queue (recipients replaced by a redirect), or the decision that ends
    /// the transaction here.
    async fn filter(&mut self, body: Body) -> Result<Body, Decision> {
        if self.account.is_some() || self.facts.whitelisted {
            return Ok(body);
        }
        let body = match super::forged::strip(&self.cfg, body, self.content_start).await {
            Ok(body) => body,
            Err(why) => return Err(self.queue_failure(&why)),
        };
        let (body, auth) = match super::auth_check::check(self.auth_request(), body).await {
            super::auth_check::Checked::Pass(body, auth) => (body, auth),
            super::auth_check::Checked::Refuse(reply) => return Err(self.refuse(reply)),
            super::auth_check::Checked::Failed(why) => return Err(self.queue_failure(&why)),
        };
        let mut reasons = self.facts.score_reasons.clone();
        reasons.extend(auth.reasons);
        let input = super::content::Input {
            cfg: self.cfg.clone(),
            session: &self.id,
            queue_id: &self.queue_id,
            client_ip: self.peer.ip(),
            helo: &self.helo,
            hostname: self.facts.ptr_names.first().map(String::as_str),
            sender: self.sender.as_deref().unwrap_or(""),
            recipients: &self.recipients,
            connect_score: self.facts.score + auth.score,
            connect_reasons: &reasons,
            content_start: self.content_start,
            flagged: auth.flagged,
        };
        match super::content::filter(input, body).await {
            super::content::Outcome::Queue {
                body,
                recipients,
                score,
            } => {
                if let Some(r) = recipients {
                    self.recipients = r;
                }
                self.score = Some(score);
                Ok(body)
            }
            super::content::Outcome::Refuse(reply) => Err(self.refuse(reply)),
            super::content::Outcome::Discard => {
                self.recipients.clear();
                self.sender = None;
                Err(Decision::Accept(Some(Reply::fixed(
                    250,
                    2,
                    0,
                    0,
                    &format!("Ok: queued as {}", self.queue_id),
                ))))
            }
            super::content::Outcome::Failed(why) => Err(self.queue_failure(&why)),
        }
    }

    /// The message is refused at the end of DATA (already logged).
    fn refuse(&mut self, reply: Reply) -> Decision {
        self.recipients.clear();
        self.sender = None;
        self.policy_refusal = true;
        Decision::Reject(reply)
    }

    /// What `[verify]` needs of this transaction.
    fn auth_request(&self) -> super::auth_check::Request<'_> {
        super::auth_check::Request {
            cfg: &self.cfg,
            session: &self.id,
            queue_id: &self.queue_id,
            client_ip: self.peer.ip(),
            helo: &self.helo,
            sender: self.sender.as_deref().unwrap_or(""),
            // Asked only when needed (the POP-before-SMTP part asks the store).
            trusted: self.cfg.verify.is_active() && self.is_trusted(),
            content_start: self.content_start,
        }
    }

    fn queue_failure(&mut self, why: &str) -> Decision {
        tracing::error!(session = %self.id, client = %self.peer.ip(), queue_id = %self.queue_id,
            error = %why, check = "queue", "message not queued");
        self.policy_refusal = true;
        Decision::Reject(Reply::fixed(
            451,
            4,
            3,
            0,
            "Temporary queue failure; try again later",
        ))
    }
}

/// The `with` keyword of the Received: header (RFC 3848): ESMTP, plus S
/// over TLS and A after AUTH.
fn protocol_keyword(esmtp: bool, tls: bool, authenticated: bool) -> &'static str {
    match (esmtp, tls, authenticated) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    }
}

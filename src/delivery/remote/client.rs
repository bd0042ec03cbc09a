//! The outbound SMTP client: one TCP connection to a remote mail server,
//! over which the caller runs one or more transactions.
//!
//! [`SmtpClient::connect`] reads the greeting, says EHLO (HELO when EHLO is
//! refused with 5xx), and upgrades to TLS with STARTTLS when the server
//! offers it (opportunistic TLS, RFC 7435). [`SmtpClient::send`] runs one
//! transaction, with PIPELINING (RFC 2920) when offered, and returns one
//! [`RcptOutcome`] per recipient. The protocol pieces (reply parsing, EHLO
//! keywords, dot-stuffing) are the sans-IO ones of
//! [`mxguard_proto::client`]; this module adds sockets, TLS and timeouts
//! (RFC 5321 §4.5.3.2 defaults in [`ClientTimeouts`]).
//!
//! Outcomes: a [`ClientError`] means the connection failed (nothing was
//! delivered, or nothing is known to be): retry later. A
//! [`ClientError::Refused`] is the exception: the message cannot go to this
//! server at all (too big, 8-bit content, internationalised sender); its
//! reply code (4xx or 5xx) applies to every recipient. Otherwise each
//! recipient gets `Delivered` or `Failed` with a 4xx or 5xx reply: retry or
//! bounce.
//!
//! # Security
//! The server is untrusted. Every read runs under the stage's timeout, a
//! reply is capped in line length, line count and octets by
//! [`ReplyParser`], and nothing a server sends can make this code panic.
//! Reply text is cleaned of control characters before it is kept (it ends
//! up in logs and bounces). Bytes the server sends after its 220 to
//! STARTTLS and before the handshake are refused, so a man in the middle
//! cannot inject replies that would be read as if they came over TLS
//! (CVE-2011-0411 class). Certificates are not verified, as opportunistic
//! TLS allows: TLS here protects against passive eavesdropping only, and the
//! handshake signatures are still checked so the session keys belong to
//! whoever holds the certificate's key. A failed handshake falls back to a
//! clear-text connection, which an active attacker can force.
//!
//! Addresses and the HELO name go into command lines, so any with a control
//! character (CR, LF) is refused locally rather than sent. The message
//! content is dot-stuffed and its bare CR and LF made into CRLF, so no
//! content can end the DATA early on any receiver (SMTP smuggling).

use std::fmt;
use std::io::{self, SeekFrom};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mxguard_proto::client::{BodyEncoder, Extensions, ReplyParser};
use mxguard_proto::{EnhancedCode, Reply};
use mxguard_queue::Content;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Size of the pieces the message content is read and sent in.
const BODY_CHUNK: usize = 64 * 1024;
/// Size of one read from the socket.
const READ_BUF: usize = 8 * 1024;
/// Upper bound on the QUIT exchange, whatever the configured timeouts.
const QUIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each stage may take (RFC 5321 §4.5.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// The 220 greeting.
    pub greeting: Duration,
    /// EHLO/HELO, STARTTLS and the TLS handshake.
    pub ehlo: Duration,
    /// MAIL (also RSET and QUIT).
    pub mail: Duration,
    /// Each RCPT.
    pub rcpt: Duration,
    /// The reply to DATA.
    pub data_init: Duration,
    /// Each write of message content.
    pub data_block: Duration,
    /// The reply to the final `.`.
    pub data_done: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        ClientTimeouts {
            connect: Duration::from_secs(30),
            greeting: min(5),
            ehlo: min(5),
            mail: min(5),
            rcpt: min(5),
            data_init: min(2),
            data_block: min(3),
            data_done: min(10),
        }
    }
}

/// How the client behaves; shared by all connections.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO.
    pub helo_name: String,
    pub timeouts: ClientTimeouts,
    /// Use STARTTLS when the server offers it (opportunistic: never required).
    pub starttls: bool,
}

impl ClientConfig {
    /// Default timeouts, STARTTLS on.
    pub fn new(helo_name: &str) -> ClientConfig {
        ClientConfig {
            helo_name: helo_name.to_string(),
            timeouts: ClientTimeouts::default(),
            starttls: true,
        }
    }
}

/// A connection-level failure. All are temporary for the caller (retry
/// later, maybe at another MX), except [`ClientError::Refused`], whose
/// reply code says.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The stage that timed out: "connect", "greeting", "EHLO", "MAIL", ...
    #[error("timed out in {0}")]
    Timeout(&'static str),
    /// The message names the stage.
    #[error("{0}")]
    Io(io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("greeting refused: {0}")]
    Greeting(Reply),
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The message cannot be sent to this server; nothing was sent. The
    /// reply (made locally) applies to every recipient.
    #[error("refused before sending: {0}")]
    Refused(Reply),
}

impl ClientError {
    /// The reply when the error carries one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            ClientError::Greeting(r) | ClientError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// What happened to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Accepted; the server's reply to the end of data.
    Delivered(Reply),
    /// Refused, always with a 4xx (retry) or 5xx (bounce) reply: the
    /// server's reply to RCPT, MAIL, DATA or the end of data, or one made
    /// locally (an address that cannot be sent to this server).
    Failed(Reply),
}

impl RcptOutcome {
    pub fn reply(&self) -> &Reply {
        match self {
            RcptOutcome::Delivered(r) | RcptOutcome::Failed(r) => r,
        }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, RcptOutcome::Delivered(_))
    }
}

/// The result of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionResult {
    /// One per recipient, in the order given to [`SmtpClient::send`].
    pub rcpts: Vec<RcptOutcome>,
}

/// The socket, in clear or under TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while the stream is handed to the TLS handshake.
    Gone,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(data).await,
            Conn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
            Conn::Gone => Ok(()),
        };
    }
}

/// A connection to a remote SMTP server, greeted and ready for a
/// transaction.
pub struct SmtpClient {
    conn: Conn,
    parser: ReplyParser,
    ext: Extensions,
    peer: SocketAddr,
    tls: bool,
    timeouts: ClientTimeouts,
    /// Set after an IO error, a timeout, a protocol error or a 421: the
    /// connection must not be used again.
    broken: bool,
    buf: Vec<u8>,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .field("extensions", &self.ext)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// A reply made locally, from constants.
fn local(code: u16, e: (u8, u16, u16), text: &str) -> Reply {
    Reply::fixed(code, e.0, e.1, e.2, text)
}

fn is_2xx(r: &Reply) -> bool {
    (200..300).contains(&r.code())
}

/// A reply that must mean failure but is not 4xx/5xx (a 3xx to RCPT, a 2xx
/// to DATA): made into a local 451, so that `Failed` always carries a code
/// that tells retry from bounce.
fn as_failure(r: Reply) -> Reply {
    if r.code() >= 400 {
        return r;
    }
    Reply::new(
        451,
        Some(EnhancedCode::new(4, 5, 0)),
        &format!("Unexpected reply from server: {r}"),
    )
    .unwrap_or_else(|_| local(451, (4, 5, 0), "Unexpected reply from server"))
}

/// True when `s` cannot go into a command line.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn io_err(stage: &str, e: io::Error) -> ClientError {
    ClientError::Io(io::Error::new(e.kind(), format!("{stage}: {e}")))
}

impl SmtpClient {
    /// Connects, reads the 220 greeting, says EHLO (HELO if EHLO gets a
    /// 5xx), then STARTTLS when offered and `cfg.starttls`, then EHLO again.
    /// When the TLS handshake fails, connects once more without STARTTLS.
    pub async fn connect(addr: SocketAddr, cfg: &ClientConfig) -> Result<SmtpClient, ClientError> {
        SmtpClient::connect_named(addr, None, cfg).await
    }

    /// [`connect`](SmtpClient::connect), sending `server_name` (the MX host
    /// name) as TLS SNI.
    pub async fn connect_named(
        addr: SocketAddr,
        server_name: Option<&str>,
        cfg: &ClientConfig,
    ) -> Result<SmtpClient, ClientError> {
        let name = &cfg.helo_name;
        if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ClientError::Protocol(format!(
                "unusable helo_name {name:?}"
            )));
        }
        match SmtpClient::open(addr, server_name, cfg, cfg.starttls).await {
            Err(ClientError::Tls(e)) => {
                tracing::info!(peer = %addr, error = %e, "STARTTLS failed; reconnecting without TLS");
                SmtpClient::open(addr, server_name, cfg, false).await
            }
            r => r,
        }
    }

    async fn open(
        addr: SocketAddr,
        server_name: Option<&str>,
        cfg: &ClientConfig,
        try_tls: bool,
    ) -> Result<SmtpClient, ClientError> {
        let t = &cfg.timeouts;
        let tcp = match timeout(t.connect, TcpStream::connect(addr)).await {
            Err(_) => return Err(ClientError::Timeout("connect")),
            Ok(Err(e)) => return Err(ClientError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let mut c = SmtpClient {
            conn: Conn::Plain(tcp),
            parser: ReplyParser::new(),
            ext: Extensions::default(),
            peer: addr,
            tls: false,
            timeouts: t.clone(),
            broken: false,
            buf: vec![0; READ_BUF],
        };
        let greeting = c.read_reply("greeting", t.greeting).await?;
        if greeting.code() != 220 {
            return Err(ClientError::Greeting(greeting));
        }
        c.hello(&cfg.helo_name).await?;
        if try_tls && c.ext.starttls {
            let r = c.command("STARTTLS", "STARTTLS", t.ehlo).await?;
            if r.code() == 220 {
                if !c.parser.is_idle() {
                    return Err(ClientError::Protocol(
                        "server sent more after its 220 to STARTTLS".into(),
                    ));
                }
                c.start_tls(server_name).await?;
                c.hello(&cfg.helo_name).await?;
            } else {
                tracing::debug!(peer = %addr, reply = %r, "STARTTLS refused; staying in clear");
            }
        }
        Ok(c)
    }

    /// EHLO, or HELO after a 5xx to EHLO; records the extensions.
    async fn hello(&mut self, name: &str) -> Result<(), ClientError> {
        let t = self.timeouts.ehlo;
        let r = self.command(&format!("EHLO {name}"), "EHLO", t).await?;
        if is_2xx(&r) {
            self.ext = Extensions::from_ehlo(&r);
            return Ok(());
        }
        if r.code() >= 500 {
            let r = self.command(&format!("HELO {name}"), "HELO", t).await?;
            if is_2xx(&r) {
                self.ext = Extensions::default();
                return Ok(());
            }
            return Err(ClientError::Protocol(format!("HELO refused: {r}")));
        }
        Err(ClientError::Protocol(format!("EHLO refused: {r}")))
    }

    async fn start_tls(&mut self, server_name: Option<&str>) -> Result<(), ClientError> {
        let config = tls_config()?;
        let name = server_name
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(self.peer.ip().into()));
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            return Err(ClientError::Protocol("STARTTLS on a TLS connection".into()));
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match timeout(self.timeouts.ehlo, connector.connect(name, tcp)).await {
            Err(_) => Err(ClientError::Tls("handshake timed out".into())),
            Ok(Err(e)) => Err(ClientError::Tls(format!("handshake: {e}"))),
            Ok(Ok(s)) => {
                self.conn = Conn::Tls(Box::new(s));
                self.tls = true;
                self.parser = ReplyParser::new();
                self.ext = Extensions::default();
                Ok(())
            }
        }
    }

    /// What the server offered in its (last) EHLO reply.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// Whether the connection runs under TLS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// False once the connection failed or the server said 421: do not run
    /// another transaction on it.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Reads one reply within `limit`.
    async fn read_reply(
        &mut self,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        let r = match timeout(limit, self.read_reply_inner(stage)).await {
            Err(_) => Err(ClientError::Timeout(stage)),
            Ok(r) => r,
        };
        match &r {
            Err(_) => self.broken = true,
            Ok(reply) if reply.code() == 421 => self.broken = true,
            Ok(_) => {}
        }
        r
    }

    async fn read_reply_inner(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        loop {
            match self.parser.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("{stage}: {e}"))),
            }
            let n = self
                .conn
                .read(&mut self.buf)
                .await
                .map_err(|e| io_err(stage, e))?;
            if n == 0 {
                return Err(io_err(
                    stage,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by server"),
                ));
            }
            self.parser.push(&self.buf[..n]);
        }
    }

    /// Writes within `limit`.
    async fn write(
        &mut self,
        data: &[u8],
        stage: &'static str,
        limit: Duration,
    ) -> Result<(), ClientError> {
        let r = match timeout(limit, self.conn.write_all(data)).await {
            Err(_) => Err(ClientError::Timeout(stage)),
            Ok(r) => r.map_err(|e| io_err(stage, e)),
        };
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Sends one command line and reads its reply.
    async fn command(
        &mut self,
        line: &str,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        let mut l = Vec::with_capacity(line.len() + 2);
        l.extend_from_slice(line.as_bytes());
        l.extend_from_slice(b"\r\n");
        self.write(&l, stage, limit).await?;
        self.read_reply(stage, limit).await
    }

    /// Runs one transaction: MAIL, RCPT for each recipient, DATA and the
    /// content. See the module documentation for what the result means.
    pub async fn send(
        &mut self,
        from: &str,
        rcpts: &[String],
        content: &Content,
    ) -> Result<TransactionResult, ClientError> {
        if self.broken {
            return Err(ClientError::Protocol(
                "connection no longer usable after an earlier failure".into(),
            ));
        }
        let t = self.timeouts.clone();
        let ext = self.ext.clone();

        // Checks that need nothing from the server.
        if has_control(from) {
            return Err(ClientError::Refused(local(
                501,
                (5, 1, 7),
                "Sender address contains control characters",
            )));
        }
        let utf8_from = !from.is_ascii();
        if utf8_from && !ext.smtputf8 {
            return Err(ClientError::Refused(local(
                553,
                (5, 6, 7),
                "Non-ASCII sender address and the server does not support SMTPUTF8",
            )));
        }
        if let Some(max) = ext.max_size
            && content.len() > max
        {
            return Err(ClientError::Refused(Reply::fixed(
                552,
                5,
                3,
                4,
                &format!(
                    "Message size {} exceeds the server's limit of {max} octets",
                    content.len()
                ),
            )));
        }
        // When the server takes 8-bit content anyway, a stored message is
        // declared 8-bit without reading it twice.
        let eight_bit = match content {
            Content::Stored { .. } if ext.eight_bit_mime => true,
            _ => has_8bit(content).await?,
        };
        if eight_bit && !ext.eight_bit_mime {
            return Err(ClientError::Refused(local(
                554,
                (5, 6, 3),
                "Message has 8-bit content and the server does not support 8BITMIME",
            )));
        }

        let mut outcomes: Vec<Option<RcptOutcome>> = rcpts
            .iter()
            .map(|r| {
                if has_control(r) {
                    Some(RcptOutcome::Failed(local(
                        501,
                        (5, 1, 3),
                        "Recipient address contains control characters",
                    )))
                } else if !r.is_ascii() && !ext.smtputf8 {
                    Some(RcptOutcome::Failed(local(
                        553,
                        (5, 6, 7),
                        "Non-ASCII recipient address and the server does not support SMTPUTF8",
                    )))
                } else {
                    None
                }
            })
            .collect();
        let to_send: Vec<usize> = (0..rcpts.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if to_send.is_empty() {
            return Ok(finish(outcomes));
        }

        let mut mail_cmd = format!("MAIL FROM:<{from}>");
        if ext.size {
            mail_cmd.push_str(&format!(" SIZE={}", content.len()));
        }
        if eight_bit {
            mail_cmd.push_str(" BODY=8BITMIME");
        }
        if ext.smtputf8 && (utf8_from || to_send.iter().any(|&i| !rcpts[i].is_ascii())) {
            mail_cmd.push_str(" SMTPUTF8");
        }

        // MAIL, RCPTs and DATA, pipelined or one at a time. `closing` is a
        // 421 seen on the way: the server is going away, and the replies
        // still expected are taken to be that 421.
        let mail;
        let mut rcpt_replies: Vec<Reply> = Vec::with_capacity(to_send.len());
        let data: Option<Reply>;
        if ext.pipelining {
            let mut batch = mail_cmd.into_bytes();
            batch.extend_from_slice(b"\r\n");
            for &i in &to_send {
                batch.extend_from_slice(format!("RCPT TO:<{}>\r\n", rcpts[i]).as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.write(&batch, "MAIL", t.mail).await?;
            mail = self.read_reply("MAIL", t.mail).await?;
            let mut closing = (mail.code() == 421).then(|| mail.clone());
            for _ in &to_send {
                let r = match &closing {
                    Some(c) => c.clone(),
                    None => self.read_reply("RCPT", t.rcpt).await?,
                };
                if r.code() == 421 {
                    closing = Some(r.clone());
                }
                rcpt_replies.push(r);
            }
            data = Some(match &closing {
                Some(c) => c.clone(),
                None => self.read_reply("DATA", t.data_init).await?,
            });
        } else {
            mail = self.command(&mail_cmd, "MAIL", t.mail).await?;
            if !is_2xx(&mail) {
                for &i in &to_send {
                    outcomes[i] = Some(RcptOutcome::Failed(as_failure(mail.clone())));
                }
                return Ok(finish(outcomes));
            }
            let mut closing: Option<Reply> = None;
            for &i in &to_send {
                let r = match &closing {
                    Some(c) => c.clone(),
                    None => {
                        let line = format!("RCPT TO:<{}>", rcpts[i]);
                        self.command(&line, "RCPT", t.rcpt).await?
                    }
                };
                if r.code() == 421 {
                    closing = Some(r.clone());
                }
                rcpt_replies.push(r);
            }
            data = if closing.is_none() && rcpt_replies.iter().any(is_2xx) {
                Some(self.command("DATA", "DATA", t.data_init).await?)
            } else {
                None
            };
        }

        if !is_2xx(&mail) {
            for &i in &to_send {
                outcomes[i] = Some(RcptOutcome::Failed(as_failure(mail.clone())));
            }
            if data.as_ref().is_some_and(|d| d.code() == 354) {
                self.end_empty_data().await;
            }
            return Ok(finish(outcomes));
        }
        let mut accepted = Vec::new();
        for (&i, r) in to_send.iter().zip(rcpt_replies) {
            if is_2xx(&r) {
                accepted.push(i);
            } else {
                outcomes[i] = Some(RcptOutcome::Failed(as_failure(r)));
            }
        }
        if accepted.is_empty() {
            // With pipelining the DATA was sent anyway; its 503/554 is
            // expected. A server that said 354 regardless gets an empty
            // message ended at once, which it must refuse for lack of
            // recipients.
            if data.as_ref().is_some_and(|d| d.code() == 354) {
                self.end_empty_data().await;
            }
            if !self.broken {
                self.rset_after_failure().await;
            }
            return Ok(finish(outcomes));
        }
        let data = match data {
            Some(d) => d,
            None => {
                // Not pipelined, and a recipient took a 421 after another
                // was accepted: the server is closing.
                let c = local(421, (4, 4, 2), "Server closed the transaction");
                for &i in &accepted {
                    outcomes[i] = Some(RcptOutcome::Failed(c.clone()));
                }
                return Ok(finish(outcomes));
            }
        };
        if data.code() != 354 {
            let f = as_failure(data);
            for &i in &accepted {
                outcomes[i] = Some(RcptOutcome::Failed(f.clone()));
            }
            if !self.broken {
                self.rset_after_failure().await;
            }
            return Ok(finish(outcomes));
        }

        self.send_body(content).await?;
        let done = self.read_reply("end of data", t.data_done).await?;
        let outcome = if is_2xx(&done) {
            RcptOutcome::Delivered(done)
        } else {
            RcptOutcome::Failed(as_failure(done))
        };
        for &i in &accepted {
            outcomes[i] = Some(outcome.clone());
        }
        Ok(finish(outcomes))
    }

    /// Streams the content, dot-stuffed, then the terminating `.`. On an
    /// error the terminator is never sent, and the connection is marked
    /// unusable: the server drops the partial message when it closes.
    async fn send_body(&mut self, content: &Content) -> Result<(), ClientError> {
        let t = self.timeouts.data_block;
        let mut enc = BodyEncoder::new();
        let mut out = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 8);
        match content {
            Content::Memory(m) => {
                for chunk in m.chunks(BODY_CHUNK) {
                    out.clear();
                    enc.push(chunk, &mut out);
                    self.write(&out, "message content", t).await?;
                }
            }
            Content::Stored { path, offset, len } => {
                let mut reader = match open_stored(path, *offset).await {
                    Ok(f) => f,
                    Err(e) => {
                        self.broken = true;
                        return Err(io_err("reading message content", e));
                    }
                };
                let mut buf = vec![0; BODY_CHUNK];
                let mut remaining = *len;
                while remaining > 0 {
                    let want = usize::try_from(remaining)
                        .unwrap_or(BODY_CHUNK)
                        .min(BODY_CHUNK);
                    let n = match reader.read(&mut buf[..want]).await {
                        Ok(0) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{}: shorter than recorded", path.display()),
                        )),
                        Ok(n) => Ok(n),
                        Err(e) => Err(e),
                    };
                    let n = match n {
                        Ok(n) => n,
                        Err(e) => {
                            self.broken = true;
                            return Err(io_err("reading message content", e));
                        }
                    };
                    remaining -= n as u64;
                    out.clear();
                    enc.push(&buf[..n], &mut out);
                    self.write(&out, "message content", t).await?;
                }
            }
        }
        out.clear();
        enc.finish(&mut out);
        self.write(&out, "message content", t).await
    }

    /// Ends a DATA the server accepted when it should not have (no valid
    /// recipient, or MAIL refused); the reply does not matter.
    async fn end_empty_data(&mut self) {
        let t = self.timeouts.data_done;
        if self.write(b".\r\n", "end of data", t).await.is_ok() {
            let _ = self.read_reply("end of data", t).await;
        }
    }

    /// RSET after a transaction that went nowhere; a failure only makes the
    /// connection unusable.
    async fn rset_after_failure(&mut self) {
        if self.reset().await.is_err() {
            self.broken = true;
        }
    }

    /// RSET, to run another transaction on the same connection.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        if self.broken {
            return Err(ClientError::Protocol(
                "connection no longer usable after an earlier failure".into(),
            ));
        }
        let r = self.command("RSET", "RSET", self.timeouts.mail).await?;
        if is_2xx(&r) {
            Ok(())
        } else {
            self.broken = true;
            Err(ClientError::Protocol(format!("RSET refused: {r}")))
        }
    }

    /// QUIT and close; errors are ignored. A broken connection is just
    /// closed.
    pub async fn quit(mut self) {
        let limit = self.timeouts.mail.min(QUIT_TIMEOUT);
        if !self.broken {
            let _ = self.command("QUIT", "QUIT", limit).await;
        }
        let _ = timeout(limit, self.conn.shutdown()).await;
    }
}

fn finish(outcomes: Vec<Option<RcptOutcome>>) -> TransactionResult {
    TransactionResult {
        rcpts: outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    // Every path fills each outcome; this is a fallback that
                    // makes the caller retry rather than a panic.
                    RcptOutcome::Failed(local(451, (4, 3, 0), "Internal error"))
                })
            })
            .collect(),
    }
}

async fn open_stored(path: &std::path::Path, offset: u64) -> io::Result<tokio::fs::File> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(SeekFrom::Start(offset)).await?;
    Ok(f)
}

/// Whether the content has octets above 127.
async fn has_8bit(content: &Content) -> Result<bool, ClientError> {
    match content {
        Content::Memory(m) => Ok(!m.is_ascii()),
        Content::Stored { path, offset, len } => {
            let scan = async {
                let mut f = open_stored(path, *offset).await?.take(*len);
                let mut buf = vec![0; BODY_CHUNK];
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(false);
                    }
                    if !buf[..n].is_ascii() {
                        return Ok(true);
                    }
                }
            };
            scan.await
                .map_err(|e: io::Error| io_err("reading message content", e))
        }
    }
}

/// The rustls configuration of opportunistic TLS, built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
        .map_err(ClientError::Tls)
}

/// Accepts any certificate (RFC 7435: opportunistic TLS does not
/// authenticate the server) but checks the handshake signatures with the
/// certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! Against mxguard's own server started in-process, and against tiny
    //! scripted servers that play a transcript (with STARTTLS through
    //! tokio-rustls and an rcgen certificate).

    use super::*;
    use std::path::Path;
    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// A bound on every test wait, so that a bug fails instead of hanging.
    const TEST_LIMIT: Duration = Duration::from_secs(20);

    fn cfg() -> ClientConfig {
        let mut c = ClientConfig::new("client.test");
        let s = Duration::from_secs(10);
        c.timeouts = ClientTimeouts {
            connect: s,
            greeting: s,
            ehlo: s,
            mail: s,
            rcpt: s,
            data_init: s,
            data_block: s,
            data_done: s,
        };
        c
    }

    fn mem(s: &[u8]) -> Content {
        Content::Memory(Arc::new(s.to_vec()))
    }

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    // ---------------------------------------------------------------------
    // Scripted servers

    trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

    enum Step {
        /// Write these bytes.
        Write(String),
        /// Read one line; it must start with this.
        Expect(&'static str),
        /// As `Expect`, and nothing else may have arrived with it (the
        /// client waited for the reply: no pipelining).
        ExpectAlone(&'static str),
        /// Read content lines up to the lone "." (kept, raw, in the
        /// transcript).
        Data,
        /// Upgrade to TLS.
        StartTls(tokio_rustls::TlsAcceptor),
        /// Wait (longer than the client's timeout), then end.
        Stall,
    }
    use Step::*;

    fn send(s: &str) -> Step {
        Write(s.to_string())
    }

    /// What one scripted connection saw: every line read, or why the
    /// client did not follow the script.
    type Transcript = Result<Vec<String>, String>;

    /// Serves one connection per script, in order.
    async fn scripted(scripts: Vec<Vec<Step>>) -> (SocketAddr, JoinHandle<Vec<Transcript>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Connections are served concurrently (a stalled one does not
            // hold up the next), transcripts are returned in order.
            let mut conns = Vec::new();
            for script in scripts {
                let (sock, _) = listener.accept().await.unwrap();
                let sock: Box<dyn Stream> = Box::new(sock);
                conns.push(tokio::spawn(play(BufReader::new(sock), script)));
            }
            let mut out = Vec::new();
            for c in conns {
                out.push(c.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            out
        });
        (addr, task)
    }

    async fn play(mut r: BufReader<Box<dyn Stream>>, script: Vec<Step>) -> Transcript {
        let mut seen = Vec::new();
        async fn line(r: &mut BufReader<Box<dyn Stream>>) -> Result<String, String> {
            let mut l = Vec::new();
            match timeout(TEST_LIMIT, r.read_until(b'\n', &mut l)).await {
                Ok(Ok(0)) => Err("client closed".into()),
                Ok(Ok(_)) => Ok(String::from_utf8_lossy(&l).into_owned()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("client silent".into()),
            }
        }
        for step in script {
            match step {
                Write(s) => r
                    .get_mut()
                    .write_all(s.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?,
                Expect(p) | ExpectAlone(p) => {
                    let alone = matches!(step, ExpectAlone(_));
                    let l = line(&mut r).await?;
                    if !l.starts_with(p) {
                        return Err(format!("expected {p:?}, got {l:?} after {seen:?}"));
                    }
                    if alone && !r.buffer().is_empty() {
                        return Err(format!("{l:?} came with more: {:?}", r.buffer()));
                    }
                    seen.push(l);
                }
                Data => loop {
                    let l = line(&mut r).await?;
                    let end = l == ".\r\n";
                    seen.push(l);
                    if end {
                        break;
                    }
                },
                StartTls(acceptor) => {
                    let sock = r.into_inner();
                    let tls = acceptor.accept(sock).await.map_err(|e| e.to_string())?;
                    let sock: Box<dyn Stream> = Box::new(tls);
                    r = BufReader::new(sock);
                }
                Stall => {
                    tokio::time::sleep(TEST_LIMIT).await;
                    return Ok(seen);
                }
            }
        }
        Ok(seen)
    }

    async fn transcripts(task: JoinHandle<Vec<Transcript>>) -> Vec<Vec<String>> {
        timeout(TEST_LIMIT, task)
            .await
            .expect("scripted server finished")
            .expect("scripted server task")
            .into_iter()
            .map(|t| t.unwrap_or_else(|e| panic!("client left the script: {e}")))
            .collect()
    }

    const GREET: &str = "220 mx.test ESMTP\r\n";

    fn ehlo_reply(keywords: &[&str]) -> String {
        let mut lines = vec!["mx.test hello"];
        lines.extend_from_slice(keywords);
        let n = lines.len();
        let mut s = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            s.push_str(&format!("250{sep}{l}\r\n"));
        }
        s
    }

    fn codes(r: &TransactionResult) -> Vec<(bool, u16)> {
        r.rcpts
            .iter()
            .map(|o| (o.is_delivered(), o.reply().code()))
            .collect()
    }

    // ---------------------------------------------------------------------
    // mxguard's own server

    async fn start_mxguard(dir: &Path) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let toml = format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"{}\"\n\
             \n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             \n[domains]\nlocal = [\"example.test\"]\n\
             \n[[account]]\naddress = \"joe@example.test\"\n\
             \n[sender]\nverify_domain = false\n",
            dir.join("data").display()
        );
        let config = mxguard_config::Config::parse(&toml, &dir.join("mxguard.toml"))
            .unwrap_or_else(|e| panic!("test configuration: {e}"));
        let server = crate::Server::bind(config).await.expect("bind");
        let addr = server.local_addrs()[0].0;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    #[tokio::test]
    async fn delivers_to_mxguard_and_reports_each_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, stop) = start_mxguard(dir.path()).await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.expect("connect");
        assert!(c.extensions().pipelining && c.extensions().eight_bit_mime);
        assert!(c.extensions().size && c.extensions().smtputf8);
        assert!(!c.tls());
        assert_eq!(c.peer(), addr);
        let body = b"From: <sender@client.test>\r\nTo: <joe@example.test>\r\n\
            Subject: remote-client-test\r\n\r\nHello\r\n.hidden dot line\r\nno final line end";
        let r = c
            .send(
                "sender@client.test",
                &rcpts(&["joe@example.test", "nobody@example.test"]),
                &mem(body),
            )
            .await
            .expect("send");
        assert_eq!(codes(&r), vec![(true, 250), (false, 550)], "{r:?}");
        // The connection is reusable: a second transaction after RSET,
        // where no recipient is accepted.
        c.reset().await.expect("RSET");
        let r = c
            .send(
                "sender@client.test",
                &rcpts(&["nobody@example.test"]),
                &mem(b"Subject: x\r\n\r\nx\r\n"),
            )
            .await
            .expect("send");
        assert_eq!(codes(&r), vec![(false, 550)]);
        assert!(c.is_usable());
        c.reset()
            .await
            .expect("RSET after a transaction that went nowhere");
        c.quit().await;

        let new = dir.path().join("data/mail/example.test/joe/new");
        let deadline = tokio::time::Instant::now() + TEST_LIMIT;
        let text = loop {
            let files: Vec<_> = std::fs::read_dir(&new)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            if let Some(f) = files.first() {
                assert_eq!(files.len(), 1);
                break String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
            }
            assert!(tokio::time::Instant::now() < deadline, "nothing delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(text.contains("Subject: remote-client-test\r\n"), "{text}");
        assert!(text.contains("\r\n.hidden dot line\r\n"), "{text}");
        assert!(text.ends_with("no final line end\r\n"), "{text}");
        let _ = stop.send(());
    }

    // ---------------------------------------------------------------------
    // Scripted servers: transactions

    #[tokio::test]
    async fn pipelines_and_reports_rcpt_4xx() {
        let ehlo = ehlo_reply(&["PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8"]);
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO client.test\r\n"),
            Write(ehlo),
            Expect("MAIL FROM:<a@client.test> SIZE=22 BODY=8BITMIME\r\n"),
            Expect("RCPT TO:<b@mx.test>\r\n"),
            Expect("RCPT TO:<c@mx.test>\r\n"),
            Expect("DATA\r\n"),
            send("250 2.1.0 ok\r\n250 2.1.5 ok\r\n451 4.2.0 try later\r\n354 go\r\n"),
            Data,
            send("250 2.0.0 queued as X\r\n"),
            Expect("QUIT"),
            send("221 bye\r\n"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let r = c
            .send(
                "a@client.test",
                &rcpts(&["b@mx.test", "c@mx.test"]),
                &mem("Subject: caf\u{e9}\r\n\r\n.x\r\n".as_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(true, 250), (false, 451)]);
        assert_eq!(r.rcpts[0].reply().text(), "queued as X");
        c.quit().await;
        let t = transcripts(task).await;
        let data: Vec<&str> = t[0][5..8].iter().map(String::as_str).collect();
        assert_eq!(data, ["Subject: caf\u{e9}\r\n", "\r\n", "..x\r\n"]);
    }

    #[tokio::test]
    async fn without_pipelining_one_command_at_a_time() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["8BITMIME"])),
            ExpectAlone("MAIL FROM:<> BODY=8BITMIME\r\n"),
            send("250 ok\r\n"),
            ExpectAlone("RCPT TO:<b@mx.test>\r\n"),
            send("550 5.1.1 no such user\r\n"),
            ExpectAlone("RCPT TO:<c@mx.test>\r\n"),
            send("250 ok\r\n"),
            ExpectAlone("DATA\r\n"),
            send("354 go\r\n"),
            Data,
            send("250 ok\r\n"),
            Expect("QUIT"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let content = mem(b"\xff\r\n");
        let r = c
            .send("", &rcpts(&["b@mx.test", "c@mx.test"]), &content)
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(false, 550), (true, 250)]);
        assert_eq!(
            r.rcpts[0].reply().enhanced(),
            Some(EnhancedCode::new(5, 1, 1))
        );
        c.quit().await;
        transcripts(task).await;
    }

    #[tokio::test]
    async fn streams_stored_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut file = b"JUNK BEFORE".to_vec();
        let mut body = Vec::new();
        for i in 0..20_000 {
            body.extend_from_slice(format!("line {i}\r\n").as_bytes());
            if i % 1000 == 0 {
                body.extend_from_slice(b".\r\n");
            }
        }
        file.extend_from_slice(&body);
        file.extend_from_slice(b"JUNK AFTER");
        std::fs::write(&path, &file).unwrap();
        let content = Content::Stored {
            path,
            offset: 11,
            len: body.len() as u64,
        };
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["PIPELINING"])),
            Expect("MAIL FROM:<a@b>\r\n"),
            Expect("RCPT"),
            Expect("DATA"),
            send("250 ok\r\n250 ok\r\n354 go\r\n"),
            Data,
            send("250 ok\r\n"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let r = c.send("a@b", &rcpts(&["c@d"]), &content).await.unwrap();
        assert_eq!(codes(&r), vec![(true, 250)]);
        let t = transcripts(task).await;
        let got: String = t[0][4..].concat();
        let want = String::from_utf8(body)
            .unwrap()
            .replace("\r\n.\r\n", "\r\n..\r\n")
            + ".\r\n";
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn mail_5xx_fails_every_recipient() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["PIPELINING"])),
            Expect("MAIL"),
            Expect("RCPT"),
            Expect("RCPT"),
            Expect("DATA"),
            send("550 5.7.1 go away\r\n503 5.5.1 MAIL first\r\n503 5.5.1 MAIL first\r\n503 5.5.1 no\r\n"),
            // no RSET: nothing is open
            Expect("QUIT"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let r = c
            .send("a@b", &rcpts(&["c@d", "e@f"]), &mem(b"x\r\n"))
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(false, 550), (false, 550)]);
        assert_eq!(r.rcpts[1].reply().text(), "go away");
        c.quit().await;
        transcripts(task).await;
    }

    #[tokio::test]
    async fn no_recipient_accepted_means_rset_not_data() {
        let (addr, task) = scripted(vec![
            // pipelined: DATA was sent, its 554 is expected, then RSET
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&["PIPELINING"])),
                Expect("MAIL"),
                Expect("RCPT"),
                Expect("DATA"),
                send("250 ok\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n"),
                Expect("RSET\r\n"),
                send("250 ok\r\n"),
                Expect("QUIT"),
            ],
            // not pipelined: no DATA at all
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&[])),
                Expect("MAIL"),
                send("250 ok\r\n"),
                Expect("RCPT"),
                send("450 4.2.1 busy\r\n"),
                Expect("RSET\r\n"),
                send("250 ok\r\n"),
                Expect("QUIT"),
            ],
        ])
        .await;
        for want in [550, 450] {
            let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
            let r = c
                .send("a@b", &rcpts(&["c@d"]), &mem(b"x\r\n"))
                .await
                .unwrap();
            assert_eq!(codes(&r), vec![(false, want)]);
            assert!(c.is_usable());
            c.quit().await;
        }
        transcripts(task).await;
    }

    #[tokio::test]
    async fn final_reply_applies_to_accepted_recipients() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["PIPELINING"])),
            Expect("MAIL"),
            Expect("RCPT"),
            Expect("RCPT"),
            Expect("DATA"),
            send("250 ok\r\n250 ok\r\n551 5.1.6 moved\r\n354 go\r\n"),
            Data,
            send("554-5.7.1 rejected\r\n554 5.7.1 as spam\r\n"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let r = c
            .send("a@b", &rcpts(&["c@d", "e@f"]), &mem(b"x"))
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(false, 554), (false, 551)]);
        assert_eq!(r.rcpts[0].reply().lines(), ["rejected", "as spam"]);
        transcripts(task).await;
    }

    #[tokio::test]
    async fn ehlo_5xx_falls_back_to_helo() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO client.test\r\n"),
            send("502 5.5.2 what?\r\n"),
            Expect("HELO client.test\r\n"),
            send("250 mx.test\r\n"),
            Expect("QUIT"),
        ]])
        .await;
        let c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        assert_eq!(c.extensions(), &Extensions::default());
        c.quit().await;
        transcripts(task).await;
    }

    // ---------------------------------------------------------------------
    // Connection failures and local refusals

    #[tokio::test]
    async fn greeting_421_is_an_error() {
        let (addr, task) = scripted(vec![vec![send("421 4.3.2 busy, try later\r\n")]]).await;
        match SmtpClient::connect(addr, &cfg()).await {
            Err(ClientError::Greeting(r)) => assert_eq!(r.code(), 421),
            other => panic!("{other:?}"),
        }
        transcripts(task).await;
    }

    #[tokio::test]
    async fn stalled_server_times_out() {
        let mut quick = cfg();
        quick.timeouts.ehlo = Duration::from_millis(200);
        quick.timeouts.data_done = Duration::from_millis(200);
        let (addr, task) = scripted(vec![
            vec![send(GREET), Expect("EHLO"), Stall],
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&["PIPELINING"])),
                Expect("MAIL"),
                Expect("RCPT"),
                Expect("DATA"),
                send("250 ok\r\n250 ok\r\n354 go\r\n"),
                Data,
                Stall,
            ],
        ])
        .await;
        match SmtpClient::connect(addr, &quick).await {
            Err(e @ ClientError::Timeout("EHLO")) => assert_eq!(e.to_string(), "timed out in EHLO"),
            other => panic!("{other:?}"),
        }
        let mut c = SmtpClient::connect(addr, &quick).await.unwrap();
        match c.send("a@b", &rcpts(&["c@d"]), &mem(b"x\r\n")).await {
            Err(ClientError::Timeout("end of data")) => {}
            other => panic!("{other:?}"),
        }
        assert!(!c.is_usable());
        assert!(c.reset().await.is_err());
        task.abort();
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_errors() {
        let (addr, task) = scripted(vec![
            vec![send("HTTP/1.1 400 Bad Request\r\n")],
            vec![send(GREET), Expect("EHLO")],
        ])
        .await;
        assert!(matches!(
            SmtpClient::connect(addr, &cfg()).await,
            Err(ClientError::Protocol(_))
        ));
        match SmtpClient::connect(addr, &cfg()).await {
            Err(e @ ClientError::Io(_)) => assert!(e.to_string().starts_with("EHLO: "), "{e}"),
            other => panic!("{other:?}"),
        }
        transcripts(task).await;
    }

    #[tokio::test]
    async fn connect_refused_is_a_connect_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(
            SmtpClient::connect(addr, &cfg()).await,
            Err(ClientError::Connect(_))
        ));
    }

    #[tokio::test]
    async fn refuses_locally_what_the_server_cannot_take() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["PIPELINING", "SIZE 1000"])),
            // neither the big message nor the 8-bit one is offered
            Expect("MAIL FROM:<a@b> SIZE=5\r\n"),
            Expect("RCPT TO:<c@d>\r\n"),
            Expect("DATA"),
            send("250 ok\r\n250 ok\r\n354 go\r\n"),
            Data,
            send("250 ok\r\n"),
            Expect("QUIT"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let refused = |r: Result<TransactionResult, ClientError>| match r {
            Err(ClientError::Refused(r)) => (r.code(), r.enhanced().map(|e| e.to_string())),
            other => panic!("{other:?}"),
        };
        let big = mem(&vec![b'x'; 2000]);
        let got = refused(c.send("a@b", &rcpts(&["c@d"]), &big).await);
        assert_eq!(got, (552, Some("5.3.4".into())));
        let eight = mem("caf\u{e9}".as_bytes());
        let got = refused(c.send("a@b", &rcpts(&["c@d"]), &eight).await);
        assert_eq!(got, (554, Some("5.6.3".into())));
        let got = refused(c.send("\u{e9}@b", &rcpts(&["c@d"]), &mem(b"x")).await);
        assert_eq!(got, (553, Some("5.6.7".into())));
        let got = refused(c.send("a@b\r\nRSET", &rcpts(&["c@d"]), &mem(b"x")).await);
        assert_eq!(got.0, 501);
        // Recipients that cannot be sent fail alone; the others go.
        let r = c
            .send(
                "a@b",
                &rcpts(&["\u{e9}@d", "c@d", "x@y>\r\nRSET"]),
                &mem(b"abcde"),
            )
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(false, 553), (true, 250), (false, 501)]);
        assert!(c.is_usable());
        c.quit().await;
        transcripts(task).await;
    }

    #[tokio::test]
    async fn a_421_mid_transaction_fails_the_rest() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["PIPELINING"])),
            Expect("MAIL"),
            Expect("RCPT"),
            Expect("RCPT"),
            Expect("DATA"),
            send("250 ok\r\n250 ok\r\n421 4.3.0 shutting down\r\n"),
        ]])
        .await;
        let mut c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        let r = c
            .send("a@b", &rcpts(&["c@d", "e@f"]), &mem(b"x\r\n"))
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(false, 421), (false, 421)]);
        assert!(!c.is_usable());
        c.quit().await;
        transcripts(task).await;
    }

    // ---------------------------------------------------------------------
    // STARTTLS

    fn acceptor() -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let ck = rcgen::generate_simple_self_signed(vec!["mx.test".into()]).unwrap();
        let key: PrivateKeyDer<'static> =
            PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }

    #[tokio::test]
    async fn upgrades_with_starttls() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO client.test"),
            Write(ehlo_reply(&["STARTTLS", "SIZE 10"])),
            Expect("STARTTLS\r\n"),
            send("220 2.0.0 go ahead\r\n"),
            StartTls(acceptor()),
            Expect("EHLO client.test"),
            Write(ehlo_reply(&["PIPELINING", "8BITMIME"])),
            Expect("MAIL FROM:<a@b> BODY=8BITMIME\r\n"),
            Expect("RCPT"),
            Expect("DATA"),
            send("250 ok\r\n250 ok\r\n354 go\r\n"),
            Data,
            send("250 ok\r\n"),
            Expect("QUIT"),
            send("221 bye\r\n"),
        ]])
        .await;
        let mut c = SmtpClient::connect_named(addr, Some("mx.test"), &cfg())
            .await
            .unwrap();
        assert!(c.tls());
        // The extensions are those of the EHLO under TLS.
        assert!(c.extensions().pipelining && !c.extensions().starttls);
        assert_eq!(c.extensions().max_size, None);
        let r = c
            .send(
                "a@b",
                &rcpts(&["c@d"]),
                &mem("\u{e9}t\u{e9}\r\n".as_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(codes(&r), vec![(true, 250)]);
        c.quit().await;
        transcripts(task).await;
    }

    #[tokio::test]
    async fn failed_handshake_reconnects_in_clear() {
        let (addr, task) = scripted(vec![
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&["STARTTLS"])),
                Expect("STARTTLS"),
                send("220 go ahead\r\n"),
                send("this is not TLS\r\n"),
            ],
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&["STARTTLS"])),
                // no STARTTLS this time
                Expect("QUIT"),
            ],
        ])
        .await;
        let c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        assert!(!c.tls() && c.extensions().starttls);
        c.quit().await;
        transcripts(task).await;
    }

    #[tokio::test]
    async fn starttls_off_or_refused_stays_in_clear() {
        let (addr, task) = scripted(vec![
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&["STARTTLS"])),
                Expect("QUIT"),
            ],
            vec![
                send(GREET),
                Expect("EHLO"),
                Write(ehlo_reply(&["STARTTLS", "PIPELINING"])),
                Expect("STARTTLS"),
                send("454 4.7.0 TLS not available\r\n"),
                Expect("QUIT"),
            ],
        ])
        .await;
        let mut no_tls = cfg();
        no_tls.starttls = false;
        let c = SmtpClient::connect(addr, &no_tls).await.unwrap();
        assert!(!c.tls());
        c.quit().await;
        let c = SmtpClient::connect(addr, &cfg()).await.unwrap();
        assert!(!c.tls() && c.extensions().pipelining);
        c.quit().await;
        transcripts(task).await;
    }

    #[tokio::test]
    async fn replies_injected_before_the_handshake_are_refused() {
        let (addr, task) = scripted(vec![vec![
            send(GREET),
            Expect("EHLO"),
            Write(ehlo_reply(&["STARTTLS"])),
            Expect("STARTTLS"),
            send("220 go ahead\r\n250-mx.test\r\n250 PIPELINING\r\n"),
        ]])
        .await;
        match SmtpClient::connect(addr, &cfg()).await {
            Err(ClientError::Protocol(m)) => assert!(m.contains("STARTTLS"), "{m}"),
            other => panic!("{other:?}"),
        }
        transcripts(task).await;
    }
}

//! The POP3 driver: feeds a socket to a [`Pop3Session`], checks logins
//! against the accounts, and serves each account's Maildir (`new/` and
//! `cur/`).
//!
//! The maildrop is listed once at login; messages delivered during the
//! session are left for the next one. Deletions are done only at QUIT
//! (the session's UPDATE state); a message another session removed first
//! counts as removed. A successful login is logged (and, with
//! POP-before-SMTP, will let the address relay for a while).
//!
//! # Security
//! Passwords are checked with `auth::verify_password` (argon2 or
//! constant-time plain compare) and never logged; failed logins are
//! logged with the client address, and three close the session. Message
//! files are found by listing the account's own Maildir, never by a name
//! the client gives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mxguard_config::Role;
use mxguard_proto::pop3::{
    Pop3Answer, Pop3Config, Pop3Event, Pop3Message, Pop3Output, Pop3Session, top_of,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ListenerCtx;
use crate::auth;
use crate::delivery::maildir::Maildirs;

/// Idle time before autologout (RFC 1939 §3 asks for at least 10 minutes).
const IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// One message file of a maildrop.
struct Entry {
    path: PathBuf,
    uid: String,
    size: u64,
    /// Delivery time, for listing in arrival order.
    mtime: std::time::SystemTime,
}

/// Lists `new/` and `cur/` of a Maildir, oldest first.
fn list_maildrop(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        let d = dir.join(sub);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            // The unique part of a Maildir name is what precedes ":2,".
            let uid: String = name
                .split(':')
                .next()
                .unwrap_or(name)
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(70)
                .collect();
            out.push(Entry {
                path: entry.path(),
                uid,
                size: meta.len(),
                mtime: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
            });
        }
    }
    // Arrival order; Maildir names do not sort numerically.
    out.sort_by(|a, b| {
        a.mtime
            .cmp(&b.mtime)
            .then_with(|| natural_cmp(&a.uid, &b.uid))
    });
    Ok(out)
}

/// Compares names with their digit runs as numbers, so that
/// `1.M9P1Q2` comes before `1.M10P1Q1` (Maildir names are not padded).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let o = match (x, y) {
            ((true, x), (true, y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

enum Done {
    Closed,
    StartTls,
}

/// Serves one POP3 connection.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: String,
    ctx: Arc<ListenerCtx>,
) {
    let config = ctx.config.get();
    let cfg = &*config;
    // The same gate as SMTP's: bans (password guessers), the blacklist,
    // clients_only and the connection limits.
    let (_counted, total, from_ip) = ctx.conns.open(peer.ip());
    let whitelisted = match super::connect::check_lists_and_limits(
        cfg,
        &*ctx.store,
        peer.ip(),
        total,
        from_ip,
    ) {
        Ok(w) => w,
        Err(v) => {
            tracing::info!(session = %id, client = %peer.ip(), check = v.check.as_str(), reason = %v.reason,
                "POP3 connection refused ({})", v.check.as_str());
            let _ = stream
                .write_all(format!("-ERR {}\r\n", v.reply.text()).as_bytes())
                .await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let implicit_tls = ctx.role == Role::Pop3s;
    let tls = ctx.tls.clone();
    let pcfg = Pop3Config {
        hostname: cfg.server.hostname.clone(),
        tls_available: tls.is_some() && !implicit_tls,
        allow_plaintext_auth: cfg.tls.as_ref().is_some_and(|t| t.allow_plaintext_auth),
    };
    let mut conn = Conn {
        whitelisted,
        failures: 0,
        id,
        peer,
        ctx: ctx.clone(),
        maildrop: Vec::new(),
    };
    if implicit_tls {
        let Some(tls) = tls else { return };
        match tls.acceptor().accept(stream).await {
            Ok(s) => {
                let mut session = Pop3Session::new(pcfg, true);
                conn.run(s, &mut session).await;
            }
            Err(e) => {
                tracing::info!(session = %conn.id, client = %peer.ip(), error = %e, "TLS handshake failed")
            }
        }
        return;
    }
    let mut stream = stream;
    let mut session = Pop3Session::new(pcfg, false);
    if let Done::StartTls = conn.run(&mut stream, &mut session).await {
        let Some(tls) = tls else { return };
        match tls.acceptor().accept(stream).await {
            Ok(s) => {
                session.tls_started();
                conn.run(s, &mut session).await;
            }
            Err(e) => {
                tracing::info!(session = %conn.id, client = %peer.ip(), error = %e, "TLS handshake failed")
            }
        }
    }
}

struct Conn {
    whitelisted: bool,
    /// Failed logins in this session.
    failures: u32,
    id: String,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    maildrop: Vec<Entry>,
}

impl Conn {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        session: &mut Pop3Session,
    ) -> Done {
        let mut rbuf = vec![0u8; 4096];
        loop {
            let mut out = Vec::new();
            let mut close = false;
            let mut starttls = false;
            while let Some(o) = session.poll_output() {
                match o {
                    Pop3Output::Send(b) => out.extend_from_slice(&b),
                    Pop3Output::Close => close = true,
                    Pop3Output::Event(Pop3Event::StartTls) => starttls = true,
                    Pop3Output::Event(e) => {
                        let answer = self.handle(e).await;
                        session.respond(answer);
                    }
                }
            }
            if !out.is_empty() && stream.write_all(&out).await.is_err() {
                return Done::Closed;
            }
            if starttls {
                let _ = stream.flush().await;
                return Done::StartTls;
            }
            if close {
                let _ = stream.shutdown().await;
                return Done::Closed;
            }
            match tokio::time::timeout(IDLE, stream.read(&mut rbuf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    session.handle_eof();
                }
                Ok(Ok(n)) => session.handle_input(&rbuf[..n]),
                Err(_) => session.handle_timeout(),
            }
        }
    }

    async fn handle(&mut self, e: Pop3Event) -> Pop3Answer {
        match e {
            Pop3Event::Login { user, password } => {
                Pop3Answer::Login(self.login(&user, &password).await)
            }
            Pop3Event::Read { index, lines } => {
                let Some(entry) = self.maildrop.get(index) else {
                    return Pop3Answer::Content(Err("no such message".into()));
                };
                match tokio::fs::read(&entry.path).await {
                    Ok(data) => Pop3Answer::Content(Ok(match lines {
                        Some(n) => top_of(&data, n).to_vec(),
                        None => data,
                    })),
                    Err(_) => Pop3Answer::Content(Err("message no longer available".into())),
                }
            }
            Pop3Event::Commit { deleted } => {
                let mut failed = 0;
                for i in &deleted {
                    if let Some(entry) = self.maildrop.get(*i) {
                        match tokio::fs::remove_file(&entry.path).await {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(_) => failed += 1,
                        }
                    }
                }
                tracing::info!(session = %self.id, client = %self.peer.ip(), deleted = deleted.len(), failed,
                    "POP3 session ended");
                if failed == 0 {
                    Pop3Answer::Committed(Ok(()))
                } else {
                    Pop3Answer::Committed(Err(format!("{failed} could not be removed")))
                }
            }
            Pop3Event::StartTls => Pop3Answer::Committed(Ok(())),
        }
    }

    /// Password guessing over POP3 ends in the same ban as SMTP errors:
    /// the session closes after three failures (the POP3 session's rule),
    /// and the address is banned for `limits.auto_ban`.
    fn ban_guesser(&self) {
        let config = self.ctx.config.get();
        let limits = &config.limits;
        let Some(ban) = limits.auto_ban else { return };
        if self.whitelisted || self.failures < 3 {
            return;
        }
        let ip = self.peer.ip();
        let until = super::connect::now_secs() + ban.as_secs();
        let reason = format!("{} failed POP3 logins in one session", self.failures);
        match self.ctx.store.ban(&ip.to_string(), until, &reason) {
            Ok(()) => {
                tracing::info!(session = %self.id, client = %ip, check = "too_many_errors", ban = ?ban,
                "client banned")
            }
            Err(e) => {
                tracing::warn!(session = %self.id, client = %ip, error = %e, "cannot record the ban")
            }
        }
    }

    async fn login(&mut self, user: &str, password: &str) -> Result<Vec<Pop3Message>, String> {
        let config = self.ctx.config.get();
        let cfg = &*config;
        let account = auth::find_account(cfg, user);
        let good = match account.and_then(|a| a.password.as_ref()) {
            Some(secret) => {
                let secret = secret.clone();
                let password = password.as_bytes().to_vec();
                tokio::task::spawn_blocking(move || auth::verify_password(&secret, &password))
                    .await
                    .unwrap_or(false)
            }
            None => false,
        };
        let Some(account) = account.filter(|_| good) else {
            tracing::info!(session = %self.id, client = %self.peer.ip(), user = %user, check = "auth",
                "POP3 login failed");
            self.failures += 1;
            self.ban_guesser();
            return Err("invalid user name or password".into());
        };
        let maildirs = Maildirs::new(cfg.server.data_dir.join("mail"), &cfg.server.hostname);
        let Ok(dir) = maildirs.path_for(&account.address) else {
            return Err("cannot open the maildrop".into());
        };
        let listing = tokio::task::spawn_blocking(move || list_maildrop(&dir)).await;
        match listing {
            Ok(Ok(entries)) => {
                tracing::info!(session = %self.id, client = %self.peer.ip(), user = %account.address,
                    messages = entries.len(), "POP3 login");
                if account.mobile {
                    // POP-before-SMTP: this address may relay for a while.
                    super::popauth::record(
                        cfg,
                        &*self.ctx.store,
                        self.peer.ip(),
                        mxguard_store::unix_now(),
                    );
                }
                let msgs = entries
                    .iter()
                    .map(|e| Pop3Message {
                        uid: e.uid.clone(),
                        size: e.size,
                    })
                    .collect();
                self.maildrop = entries;
                Ok(msgs)
            }
            _ => Err("cannot open the maildrop".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_new_and_cur() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("cur/1.M1P1.host:2,S"), b"one!\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("new/2.M1P1.host"), b"two\r\n").unwrap();
        std::fs::write(dir.path().join("tmp/3.M1P1.host"), b"partial").unwrap();
        let l = list_maildrop(dir.path()).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].uid, "1.M1P1.host");
        assert_eq!(l[0].size, 6);
        assert_eq!(l[1].uid, "2.M1P1.host");
        assert!(
            list_maildrop(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn natural_order() {
        use std::cmp::Ordering::*;
        assert_eq!(natural_cmp("1.M9P1Q2", "1.M10P1Q1"), Less);
        assert_eq!(natural_cmp("1.M10P1Q1", "1.M10P1Q2"), Less);
        assert_eq!(natural_cmp("a", "a"), Equal);
        assert_eq!(natural_cmp("", "a"), Less);
    }
}

//! The control socket, `data_dir/control.sock`: how `mxguard queue` talks
//! to the running server.
//!
//! One request a connection: a line such as `queue list`, `queue show ID`,
//! `queue flush`, `queue delete ID`, `ban add NET SECONDS`, `ban remove NET`,
//! `ban list` or `check-ip IP`; the answer is text, then the server closes
//! the connection.
//!
//! # Security
//! The socket is created with mode 0600 inside data_dir, so only the user
//! mxguard runs as (and root) can use it. Requests are one bounded line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

use std::net::IpAddr;
use std::sync::Arc;

use mxguard_config::Config;
use mxguard_store::StateStore;

use crate::delivery::{Control, DeliveryHandle};
use crate::facts::dns::Dns;

/// What requests act on.
#[derive(Clone)]
pub struct ControlCtx {
    pub delivery: DeliveryHandle,
    pub store: Arc<dyn StateStore>,
    pub config: Arc<Config>,
    pub dns: Dns,
    pub tls: Option<Arc<super::tls::TlsState>>,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Queue(Control),
    BanAdd { net: String, seconds: u64 },
    BanRemove(String),
    BanList,
    CheckIp(IpAddr),
    Reload,
}

/// Where the socket lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Parses a request line.
pub fn parse_request(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["queue", "list"] => Ok(Request::Queue(Control::List)),
        ["queue", "flush"] => Ok(Request::Queue(Control::Flush)),
        ["queue", "show", id] => Ok(Request::Queue(Control::Show(id.to_string()))),
        ["queue", "delete", id] => Ok(Request::Queue(Control::Delete(id.to_string()))),
        ["ban", "add", net, secs] => Ok(Request::BanAdd {
            net: net.to_string(),
            seconds: secs.parse().map_err(|_| format!("bad duration {secs:?}"))?,
        }),
        ["ban", "remove", net] => Ok(Request::BanRemove(net.to_string())),
        ["ban", "list"] => Ok(Request::BanList),
        ["reload"] => Ok(Request::Reload),
        ["check-ip", ip] => Ok(Request::CheckIp(
            ip.parse().map_err(|_| format!("bad address {ip:?}"))?,
        )),
        _ => Err(format!(
            "unknown request {line:?}; expected queue list|show ID|flush|delete ID, ban add|remove|list, check-ip IP"
        )),
    }
}

/// Answers a ban or check-ip request (also used by the CLI when the server
/// is not running).
pub async fn answer(req: Request, store: &dyn StateStore, config: &Config, dns: &Dns) -> String {
    let now = super::connect::now_secs();
    match req {
        Request::Queue(_) => "error: the queue is only known to a running server\n".into(),
        Request::BanAdd { net, seconds } => {
            match store.ban(&net, now + seconds, "added by the administrator") {
                Ok(()) => {
                    tracing::info!(net = %net, seconds, check = "ban", "ban added by the administrator");
                    format!("banned {net} for {seconds}s\n")
                }
                Err(e) => format!("error: {e}\n"),
            }
        }
        Request::BanRemove(net) => match store.unban(&net) {
            Ok(true) => format!("removed the ban on {net}\n"),
            Ok(false) => format!("no ban on {net}\n"),
            Err(e) => format!("error: {e}\n"),
        },
        Request::BanList => match store.bans() {
            Ok(bans) if bans.is_empty() => "no bans\n".into(),
            Ok(bans) => bans
                .iter()
                .map(|b| {
                    format!(
                        "{}  {}s left  {}\n",
                        b.net,
                        b.until.saturating_sub(now),
                        b.reason
                    )
                })
                .collect(),
            Err(e) => format!("error: {e}\n"),
        },
        Request::CheckIp(ip) => super::connect::check_ip_report(config, dns, store, ip).await,
        Request::Reload => "error: mxguard is not running\n".into(),
    }
}

/// Binds the socket (replacing a stale one).
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until `stop`.
pub async fn serve(listener: UnixListener, ctx: ControlCtx, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut line = String::new();
                    let mut rd = BufReader::new(rd.take(1024));
                    let answer = match rd.read_line(&mut line).await {
                        Ok(_) => match parse_request(line.trim()) {
                            Ok(Request::Queue(c)) => ctx.delivery.control(c).await,
                            Ok(Request::Reload) => reload(&ctx.config, ctx.tls.as_deref()),
                            Ok(req) => answer(req, &*ctx.store, &ctx.config, &ctx.dns).await,
                            Err(e) => format!("error: {e}\n"),
                        },
                        Err(e) => format!("error: {e}\n"),
                    };
                    let _ = wr.write_all(answer.as_bytes()).await;
                    let _ = wr.shutdown().await;
                });
            }
            _ = stop.changed() => break,
        }
    }
}

/// `mxguard reload` and SIGHUP: reads the configuration file again and
/// puts a renewed TLS certificate and key in service (sessions already
/// open keep theirs). Other settings take effect at the next restart.
pub fn reload(config: &Config, tls: Option<&super::tls::TlsState>) -> String {
    let fresh = match Config::load(&config.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reload refused: the configuration has an error");
            return format!("error: {e}\n");
        }
    };
    match (tls, &fresh.tls) {
        (Some(state), Some(t)) => match state.reload(t) {
            Ok(()) => {
                tracing::info!(certificate = %t.certificate.display(), "reload: TLS certificate reloaded");
                "reloaded: TLS certificate and key; other settings apply at the next restart\n"
                    .into()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reload: the new certificate cannot be used; the old one stays");
                format!("error: {e:#}\n")
            }
        },
        _ => "reloaded: nothing to renew (no [tls]); other settings apply at the next restart\n"
            .into(),
    }
}

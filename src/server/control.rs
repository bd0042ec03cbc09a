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
    pub config: Arc<super::LiveConfig>,
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
                            Ok(req) => answer(req, &*ctx.store, &ctx.config.get(), &ctx.dns).await,
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

/// `mxguard reload` and SIGHUP: reads the configuration file (and the
/// files it names: router table, IP lists) again and puts it in service
/// for new sessions; sessions already open keep theirs. A renewed TLS
/// certificate and key are taken too. Settings fixed when the server
/// started (listeners, data_dir, the DNS resolver, the delivery worker's)
/// are named in the answer as needing a restart. A configuration with an
/// error changes nothing.
pub fn reload(live: &super::LiveConfig, tls: Option<&super::tls::TlsState>) -> String {
    let old = live.get();
    let fresh = match Config::load(&old.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reload refused: the configuration has an error; the running one stays");
            return format!("error: {e}\n");
        }
    };
    if let (Some(state), Some(t)) = (tls, &fresh.tls)
        && let Err(e) = state.reload(t)
    {
        tracing::warn!(error = %e, "reload refused: the new certificate cannot be used; the running configuration stays");
        return format!("error: {e:#}\n");
    }
    let restart = restart_only_changes(&old, &fresh);
    let records = fresh.router.records.len();
    live.set(std::sync::Arc::new(fresh));
    let mut answer =
        format!("reloaded: configuration for new sessions (router table: {records} records)");
    if tls.is_some() {
        answer.push_str("; TLS certificate and key");
    }
    if restart.is_empty() {
        tracing::info!(router_records = records, "reload: configuration in service");
    } else {
        let list = restart.join(", ");
        tracing::warn!(router_records = records, restart_needed = %list,
            "reload: configuration in service; some changed settings apply at the next restart");
        answer.push_str(&format!(
            "; changed but applied only at the next restart: {list}"
        ));
    }
    answer.push('\n');
    answer
}

/// The changed settings that the running server cannot take without a
/// restart: sockets, the queue, the resolver, the delivery worker and the
/// protocol settings fixed in each listener.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    // The queue's after_accept programs are run by the delivery worker.
    let after = |c: &Config| -> Vec<mxguard_config::FilterRule> {
        mxguard_policy::content::after_accept_rules(c)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let checks: [(&'static str, bool); 13] = [
        ("listener", old.listeners != new.listeners),
        (
            "server.data_dir",
            old.server.data_dir != new.server.data_dir,
        ),
        (
            "server.hostname",
            old.server.hostname != new.server.hostname,
        ),
        (
            "server.max_message_size",
            old.server.max_message_size != new.server.max_message_size,
        ),
        ("smtp", old.smtp != new.smtp),
        ("dns", old.dns != new.dns),
        ("queue", old.queue != new.queue),
        (
            "relay.smarthost/routes/mx_port",
            old.relay.smarthost != new.relay.smarthost
                || old.relay.routes != new.relay.routes
                || old.relay.mx_port != new.relay.mx_port,
        ),
        (
            "relay.pop_before_smtp",
            old.relay.pop_before_smtp != new.relay.pop_before_smtp
                || old.relay.pop_before_smtp_max != new.relay.pop_before_smtp_max,
        ),
        (
            "limits.max_errors",
            old.limits.max_errors != new.limits.max_errors,
        ),
        (
            "recipient.max_per_message",
            old.recipient.max_per_message != new.recipient.max_per_message,
        ),
        (
            "tls (added or removed)",
            old.tls.is_some() != new.tls.is_some(),
        ),
        ("filter (after_accept rules)", after(old) != after(new)),
    ];
    for (name, changed) in checks {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n{extra}"
        );
        match Config::parse(&text, std::path::Path::new("test.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn after_accept_rules_need_a_restart_other_rules_do_not() {
        let base = config("");
        let before = config("[[filter]]\nname = \"P\"\nexecute = [\"/bin/true\"]\n");
        let after =
            config("[[filter]]\nname = \"P\"\nexecute = [\"/bin/true\"]\nafter_accept = true\n");
        assert!(restart_only_changes(&base, &before).is_empty());
        assert_eq!(
            restart_only_changes(&base, &after),
            ["filter (after_accept rules)"]
        );
        assert_eq!(
            restart_only_changes(&before, &after),
            ["filter (after_accept rules)"]
        );
        assert!(restart_only_changes(&after, &after).is_empty());
    }
}

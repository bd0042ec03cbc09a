//! `mxguard queue`, `mxguard ban` and `mxguard check-ip`: requests to the
//! running server over its control socket. Bans and check-ip also work
//! with the server stopped, on the state store directly.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use mxguard_config::Config;

use crate::facts::dns::Dns;
use crate::server::control::{Request, answer, parse_request, socket_path};

/// Sends `line` (e.g. "queue list") and prints the answer.
pub fn run(config: Option<PathBuf>, line: &str) -> anyhow::Result<()> {
    let path = super::config_path(config)?;
    let cfg = Config::load(&path)?;
    let request = parse_request(line).map_err(anyhow::Error::msg)?;
    let sock = socket_path(&cfg.server.data_dir);
    let answer_text = match UnixStream::connect(&sock) {
        Ok(mut stream) => {
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            stream.write_all(format!("{line}\n").as_bytes())?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .context("reading the server's answer")?;
            answer
        }
        Err(e) => {
            if matches!(request, Request::Queue(_) | Request::Reload) {
                return Err(e).with_context(|| {
                    format!(
                        "cannot reach the running mxguard at {} (is it running with this configuration?)",
                        sock.display()
                    )
                });
            }
            local(&cfg, request)?
        }
    };
    print!("{answer_text}");
    if answer_text.starts_with("error:") {
        anyhow::bail!("the request failed");
    }
    Ok(())
}

/// Answers a ban or check-ip request without a running server.
fn local(cfg: &Config, request: Request) -> anyhow::Result<String> {
    let store = crate::server::open_store(cfg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let dns = Dns::from_config(&cfg.dns).context("cannot set up the DNS resolver of [dns]")?;
        Ok(answer(request, &*store, cfg, &dns).await)
    })
}

//! `mxguard serve`: run the server until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context as _;
use mxguard_config::Config;

use crate::server::Server;

pub fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let path = super::config_path(config)?;
    let cfg = Config::load(&path)?;
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(cfg).await?;
        tracing::info!(config = %path.display(), "mxguard started");
        server.run(stop_signal()).await
    })
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

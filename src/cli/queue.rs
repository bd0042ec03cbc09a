//! `mxguard queue list|show ID|flush|delete ID`: asks the running server
//! over its control socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use mxguard_config::Config;

use crate::server::control::socket_path;

/// Sends `request` (e.g. "queue list") and prints the answer.
pub fn run(config: Option<PathBuf>, request: &str) -> anyhow::Result<()> {
    let path = super::config_path(config)?;
    let cfg = Config::load(&path)?;
    let sock = socket_path(&cfg.server.data_dir);
    let mut stream = UnixStream::connect(&sock).with_context(|| {
        format!(
            "cannot reach the running mxguard at {} (is it running with this configuration?)",
            sock.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .context("reading the server's answer")?;
    print!("{answer}");
    if answer.starts_with("error:") {
        anyhow::bail!("the server refused the request");
    }
    Ok(())
}

//! The control socket, `data_dir/control.sock`: how `mxguard queue` talks
//! to the running server.
//!
//! One request a connection: a line such as `queue list`, `queue show ID`,
//! `queue flush` or `queue delete ID`; the answer is text, then the server
//! closes the connection.
//!
//! # Security
//! The socket is created with mode 0600 inside data_dir, so only the user
//! mxguard runs as (and root) can use it. Requests are one bounded line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::delivery::{Control, DeliveryHandle};

/// Where the socket lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Parses a request line into a queue request.
pub fn parse_request(line: &str) -> Result<Control, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["queue", "list"] => Ok(Control::List),
        ["queue", "flush"] => Ok(Control::Flush),
        ["queue", "show", id] => Ok(Control::Show(id.to_string())),
        ["queue", "delete", id] => Ok(Control::Delete(id.to_string())),
        _ => Err(format!(
            "unknown request {line:?}; expected queue list|show ID|flush|delete ID"
        )),
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
pub async fn serve(
    listener: UnixListener,
    delivery: DeliveryHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let delivery = delivery.clone();
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    let mut line = String::new();
                    let mut rd = BufReader::new(rd.take(1024));
                    let answer = match rd.read_line(&mut line).await {
                        Ok(_) => match parse_request(line.trim()) {
                            Ok(c) => delivery.control(c).await,
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

//! A real receiving SMTP server for the outbound tests: tests/sinks/sink.py
//! (Python aiosmtpd) run as a child process, with its JSON event log.
//!
//! ```ignore
//! let sink = Sink::start("127.0.0.12", SinkMode::Accept);
//! // ... mxguard delivers to 127.0.0.12:sink.port ...
//! let msgs = sink.wait_for_messages(1, Duration::from_secs(30));
//! ```
//!
//! The sink is killed when dropped, and exits by itself when the test
//! process goes away (it watches its standard input).
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The sink script.
pub const SINK_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sinks/sink.py");

/// How long the sink may take to print its port.
const SINK_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkMode {
    /// Accept everything.
    Accept,
    /// `451 4.3.0` to every RCPT of the first N transactions, then accept.
    Tempfail(u32),
    /// `550 5.1.1` to every RCPT.
    Reject,
    /// Recipients accepted, `554 5.6.0` at the end of DATA.
    RejectData,
}

impl SinkMode {
    pub fn arg(&self) -> String {
        match self {
            SinkMode::Accept => "accept".into(),
            SinkMode::Tempfail(n) => format!("tempfail:{n}"),
            SinkMode::Reject => "reject".into(),
            SinkMode::RejectData => "reject-data".into(),
        }
    }
}

/// One message the sink received (its DATA), accepted or not.
#[derive(Clone, Debug)]
pub struct SinkMessage {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub mail_options: Vec<String>,
    pub sha256: String,
    pub size: u64,
    pub tls: bool,
    /// The sink's reply to the final dot.
    pub reply: String,
    pub accepted: bool,
    /// The bytes received, dot-unstuffed, CRLF line ends as sent.
    pub data: Vec<u8>,
    /// The source address of the connection.
    pub peer: String,
}

impl SinkMessage {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// One RCPT command the sink answered.
#[derive(Clone, Debug)]
pub struct RcptAttempt {
    pub rcpt: String,
    pub reply: String,
    /// Counted from 1 over the sink's life; a transaction starts with MAIL.
    pub transaction: u64,
}

/// A running sink.
pub struct Sink {
    child: Option<Child>,
    /// Kept open: the sink exits when it closes.
    _stdin: Option<ChildStdin>,
    pub host: IpAddr,
    pub port: u16,
    pub mode: SinkMode,
    pub log_path: PathBuf,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sink {
    /// Starts a sink on `host` (like "127.0.0.12") with a port of the
    /// system's choosing.
    #[track_caller]
    pub fn start(host: &str, mode: SinkMode) -> Sink {
        Self::start_on(host, 0, mode)
    }

    /// Starts a sink on `host:port` (0: the system chooses).
    #[track_caller]
    pub fn start_on(host: &str, port: u16, mode: SinkMode) -> Sink {
        let host_ip: IpAddr = host
            .parse()
            .unwrap_or_else(|e| panic!("sink host {host:?} is not an IP address: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("mxguard-sink")
            .tempdir()
            .expect("a temporary directory for the sink");
        let log_path = dir.path().join("events.jsonl");
        let stderr_path = dir.path().join("stderr.txt");
        let stderr_file = fs::File::create(&stderr_path).expect("create the sink's stderr file");
        let mut child = Command::new(python())
            .arg(SINK_PY)
            .args(["--host", host, "--port", &port.to_string(), "--log"])
            .arg(&log_path)
            .args(["--mode", &mode.arg()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {SINK_PY}: {e}", python()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("sink stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if let Some(p) = line.trim().strip_prefix("PORT ") {
                            let _ = tx.send(p.trim().parse::<u16>().ok());
                            // Keep draining so that the sink never blocks on stdout.
                            let _ = std::io::copy(&mut r, &mut std::io::sink());
                            return;
                        }
                    }
                }
            }
        });
        let got = rx.recv_timeout(SINK_START_TIMEOUT);
        let port = match got {
            Ok(Some(p)) => p,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let err = fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!(
                    "the sink on {host}:{port} did not print its port ({other:?}); is aiosmtpd installed \
                     (`pip install aiosmtpd`, scripts/test.sh does it)? its stderr:\n{err}"
                );
            }
        };
        Sink {
            child: Some(child),
            _stdin: stdin,
            host: host_ip,
            port,
            mode,
            log_path,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Every event logged so far, in order.
    pub fn events(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        text.lines()
            // A line being written may be incomplete: only whole lines count.
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The log as text, for failure messages.
    pub fn log_text(&self) -> String {
        let mut s = fs::read_to_string(&self.log_path).unwrap_or_default();
        let err = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        if !err.trim().is_empty() {
            s.push_str("\n--- sink stderr ---\n");
            s.push_str(&err);
        }
        s
    }

    /// Every DATA the sink received, accepted or refused.
    pub fn all_messages(&self) -> Vec<SinkMessage> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "message")
            .map(|e| {
                let path = e["data_path"].as_str().unwrap_or_default();
                SinkMessage {
                    mail_from: str_of(&e["mail_from"]),
                    rcpt_tos: e["rcpt_tos"]
                        .as_array()
                        .map(|a| a.iter().map(str_of).collect())
                        .unwrap_or_default(),
                    mail_options: e["mail_options"]
                        .as_array()
                        .map(|a| a.iter().map(str_of).collect())
                        .unwrap_or_default(),
                    sha256: str_of(&e["sha256"]),
                    size: e["size"].as_u64().unwrap_or(0),
                    tls: e["tls"].as_bool().unwrap_or(false),
                    reply: str_of(&e["reply"]),
                    accepted: e["accepted"].as_bool().unwrap_or(false),
                    data: read_all(Path::new(path)),
                    peer: str_of(&e["peer"]),
                }
            })
            .collect()
    }

    /// The messages the sink accepted (replied 250 to).
    pub fn messages(&self) -> Vec<SinkMessage> {
        self.all_messages()
            .into_iter()
            .filter(|m| m.accepted)
            .collect()
    }

    /// Every RCPT the sink answered, with its reply.
    pub fn rcpt_attempts(&self) -> Vec<RcptAttempt> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "rcpt")
            .map(|e| RcptAttempt {
                rcpt: str_of(&e["rcpt"]),
                reply: str_of(&e["reply"]),
                transaction: e["transaction"].as_u64().unwrap_or(0),
            })
            .collect()
    }

    /// The RCPT attempts for one address (compared case-insensitively).
    pub fn rcpt_attempts_for(&self, rcpt: &str) -> Vec<RcptAttempt> {
        self.rcpt_attempts()
            .into_iter()
            .filter(|a| a.rcpt.eq_ignore_ascii_case(rcpt))
            .collect()
    }

    /// How many connections were made to the sink.
    pub fn connections(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "connect")
            .count()
    }

    /// Waits until `pred` holds of the sink; panics past `timeout` with the
    /// sink's log.
    #[track_caller]
    pub fn wait_until(&self, what: &str, timeout: Duration, pred: impl Fn(&Sink) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "sink {}: {what}: not within {timeout:?}; its log:\n{}",
                    self.addr(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for at least `n` accepted messages; returns them all.
    #[track_caller]
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SinkMessage> {
        self.wait_until(&format!("{n} accepted message(s)"), timeout, |s| {
            s.messages().len() >= n
        });
        self.messages()
    }

    /// Waits for at least `n` RCPT attempts; returns them all.
    #[track_caller]
    pub fn wait_for_rcpt_attempts(&self, n: usize, timeout: Duration) -> Vec<RcptAttempt> {
        self.wait_until(&format!("{n} RCPT attempt(s)"), timeout, |s| {
            s.rcpt_attempts().len() >= n
        });
        self.rcpt_attempts()
    }

    /// Stops the sink now (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self._stdin = None;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python interpreter: `$PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut out);
    }
    out
}

//! Outbound delivery helpers: the configuration sections of outbound
//! delivery, the `mxguard queue` command line, and a scripted receiving
//! server that stalls before its final reply.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{BIN, toml_str, toml_str_array};

// ---------------------------------------------------------------------------
// Configuration

/// The outbound settings of a [`super::ConfigBuilder`]; each section is
/// written only when one of its keys is set.
#[derive(Clone, Debug, Default)]
pub struct OutboundSettings {
    /// `domains.relay_to`.
    pub relay_to: Vec<String>,
    /// `dns.nameservers`.
    pub nameservers: Vec<String>,
    /// `dns.timeout`.
    pub dns_timeout: Option<String>,
    /// `relay.clients`.
    pub relay_clients: Option<Vec<String>>,
    /// `relay.smarthost`.
    pub smarthost: Option<String>,
    /// `relay.routes`, in order.
    pub routes: Vec<(String, String)>,
    /// `relay.mx_port`.
    pub mx_port: Option<u16>,
    /// Raw TOML keys written inside `[relay]` (see
    /// [`super::ConfigBuilder::relay_keys`]).
    pub relay_extra: String,
    /// `queue.retry`.
    pub queue_retry: Option<Vec<String>>,
    /// `queue.max_age`.
    pub queue_max_age: Option<String>,
    /// `queue.delay_warning`.
    pub delay_warning: Option<String>,
}

impl OutboundSettings {
    /// Keys that go inside `[domains]`.
    pub fn render_domains(&self, s: &mut String) {
        if !self.relay_to.is_empty() {
            writeln!(s, "relay_to = {}", toml_str_array(&self.relay_to)).unwrap();
        }
    }

    /// The `[dns]`, `[relay]` and `[queue]` sections.
    pub fn render_sections(&self, s: &mut String) {
        if !self.nameservers.is_empty() || self.dns_timeout.is_some() {
            s.push_str("\n[dns]\n");
            if !self.nameservers.is_empty() {
                writeln!(s, "nameservers = {}", toml_str_array(&self.nameservers)).unwrap();
            }
            if let Some(t) = &self.dns_timeout {
                writeln!(s, "timeout = {}", toml_str(t)).unwrap();
            }
        }
        if self.relay_clients.is_some()
            || self.smarthost.is_some()
            || !self.routes.is_empty()
            || self.mx_port.is_some()
            || !self.relay_extra.is_empty()
        {
            s.push_str("\n[relay]\n");
            if let Some(c) = &self.relay_clients {
                writeln!(s, "clients = {}", toml_str_array(c)).unwrap();
            }
            if let Some(h) = &self.smarthost {
                writeln!(s, "smarthost = {}", toml_str(h)).unwrap();
            }
            if !self.routes.is_empty() {
                let parts: Vec<String> = self
                    .routes
                    .iter()
                    .map(|(d, a)| format!("{} = {}", toml_str(d), toml_str(a)))
                    .collect();
                writeln!(s, "routes = {{ {} }}", parts.join(", ")).unwrap();
            }
            if let Some(p) = self.mx_port {
                writeln!(s, "mx_port = {p}").unwrap();
            }
            s.push_str(&self.relay_extra);
        }
        if self.queue_retry.is_some()
            || self.queue_max_age.is_some()
            || self.delay_warning.is_some()
        {
            s.push_str("\n[queue]\n");
            if let Some(r) = &self.queue_retry {
                writeln!(s, "retry = {}", toml_str_array(r)).unwrap();
            }
            if let Some(a) = &self.queue_max_age {
                writeln!(s, "max_age = {}", toml_str(a)).unwrap();
            }
            if let Some(w) = &self.delay_warning {
                writeln!(s, "delay_warning = {}", toml_str(w)).unwrap();
            }
        }
    }
}

/// The configuration of the outbound tests: local domain example.test
/// only (so other.test is foreign), relay_to backup.test, relay client
/// 127.0.0.1, the test DNS with a 1s timeout, retries every second, a 5d
/// maximum age and delay warnings off (`"0s"`).
pub fn outbound_config(nameserver: &str) -> super::ConfigBuilder {
    super::ConfigBuilder::new()
        .local_domains(&["example.test"])
        .relay_to(&["backup.test"])
        .nameserver(nameserver)
        .dns_timeout("1s")
        .relay_clients(&["127.0.0.1"])
        .queue_retry(&["1s"])
        .queue_max_age("5d")
        .delay_warning("0s")
}

// ---------------------------------------------------------------------------
// The `mxguard` command line

/// How long one `mxguard queue ...` may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a command printed.
#[derive(Clone, Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect_success(self, what: &str) -> CliOutput {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `mxguard ARGS...` (bounded by [`CLI_TIMEOUT`]).
#[track_caller]
pub fn mxguard(args: &[&str]) -> CliOutput {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn mxguard {args:?}: {e}"));
    let out = reader_thread(child.stdout.take().expect("stdout piped"));
    let err = reader_thread(child.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait on mxguard") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mxguard {args:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    })
}

/// `mxguard queue SUBCOMMAND [ARGS] --config FILE`.
#[track_caller]
pub fn queue_cmd(config: &Path, sub: &[&str]) -> CliOutput {
    let cfg = config.display().to_string();
    let mut args = vec!["queue"];
    args.extend_from_slice(sub);
    args.extend_from_slice(&["--config", &cfg]);
    mxguard(&args)
}

/// `mxguard queue list --config FILE`, asserted successful; its stdout.
#[track_caller]
pub fn queue_list(config: &Path) -> String {
    queue_cmd(config, &["list"])
        .expect_success("mxguard queue list")
        .stdout
}

/// Runs `queue list` until `pred` holds of its stdout; returns that
/// output. Panics past `timeout` with the last output.
#[track_caller]
pub fn wait_queue_list(
    config: &Path,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = queue_list(config);
        if pred(&out) {
            return out;
        }
        if Instant::now() >= deadline {
            panic!("`mxguard queue list`: {what}: not within {timeout:?}; last output:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a CLI output that mention `needle`, with the lines right
/// after them up to the next blank line (a record may span lines).
pub fn block_mentioning(out: &str, needle: &str) -> String {
    let mut res = String::new();
    let mut inside = false;
    for l in out.lines() {
        if l.contains(needle) {
            inside = true;
        } else if l.trim().is_empty() {
            inside = false;
        }
        if inside {
            res.push_str(l);
            res.push('\n');
        }
    }
    res
}

// ---------------------------------------------------------------------------
// A receiving server that stalls before its final reply

/// A scripted SMTP server on 127.0.0.1:<ephemeral>: it answers the
/// greeting, EHLO, MAIL, RCPT and DATA normally, reads the whole message,
/// and then never answers the final dot, holding the connection open until
/// dropped.
pub struct StallingServer {
    pub addr: SocketAddr,
    /// Messages (dot-unstuffed, CRLF kept) read to their final dot.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StallingServer {
    pub fn start() -> StallingServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the stalling server");
        let addr = l.local_addr().expect("local address");
        l.set_nonblocking(true).expect("nonblocking listener");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => {
                            let received = received.clone();
                            let stop = stop.clone();
                            workers.push(std::thread::spawn(move || {
                                let _ = stall_session(s, &received, &stop);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        StallingServer {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("received lock").clone()
    }

    /// Waits until a whole message has been read; returns it.
    #[track_caller]
    pub fn wait_for_message(&self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.received().into_iter().next() {
                return m;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the stalling server at {} got no whole message within {timeout:?}",
                    self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stall_session(
    s: TcpStream,
    received: &Mutex<Vec<Vec<u8>>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"220 stall.test ESMTP scripted\r\n")?;
    let mut line = Vec::new();
    let mut in_data = false;
    let mut data = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // A read timeout may leave a partial line in `line`: keep it.
        match r.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) if !line.ends_with(b"\n") => continue,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        let l = std::mem::take(&mut line);
        if in_data {
            if l == b".\r\n" || l == b".\n" {
                received
                    .lock()
                    .expect("received lock")
                    .push(std::mem::take(&mut data));
                // The final reply never comes: hold the connection, read
                // and ignore whatever follows, until told to stop.
                let mut sink = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) {
                    match r.read(&mut sink) {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(_) => {}
                    }
                }
                return Ok(());
            }
            let content = if l.starts_with(b".") { &l[1..] } else { &l[..] };
            data.extend_from_slice(content);
            continue;
        }
        let cmd = String::from_utf8_lossy(&l).to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-stall.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
        } else if cmd.starts_with("HELO") {
            b"250 stall.test\r\n"
        } else if cmd.starts_with("MAIL") {
            b"250 2.1.0 OK\r\n"
        } else if cmd.starts_with("RCPT") {
            b"250 2.1.5 OK\r\n"
        } else if cmd.starts_with("DATA") {
            in_data = true;
            b"354 go ahead\r\n"
        } else if cmd.starts_with("RSET") || cmd.starts_with("NOOP") {
            b"250 2.0.0 OK\r\n"
        } else if cmd.starts_with("QUIT") {
            w.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            b"502 5.5.2 not here\r\n"
        };
        w.write_all(reply)?;
    }
}

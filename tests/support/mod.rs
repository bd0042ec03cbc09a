//! Shared helpers of the integration tests: a configuration builder, a
//! real server process (the `mxguard` binary) with its log, a transcript
//! SMTP client and Maildir helpers.
//!
//! Every wait here is bounded: a helper that gives up panics with what it
//! saw (the server's log, the files found), never hangs.
#![allow(dead_code)]

pub mod dns;
pub mod net;
pub mod outbound;
pub mod redis;
pub mod rspamd;
pub mod sink;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The mxguard binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mxguard");

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client waits for one reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Configuration

/// Builds a test configuration: hostname mx.example.test, local domains
/// example.test and other.test, accounts joe@example.test (alias
/// joseph@example.test) and postmaster@example.test, and a catchall that
/// sends everything for other.test to postmaster@example.test. Listeners
/// use 127.0.0.1:0.
#[derive(Clone, Debug, Default)]
pub struct ConfigBuilder {
    pub hide_client_ip: bool,
    pub max_message_size: Option<String>,
    pub submission: bool,
    pub command_timeout: Option<String>,
    pub data_timeout: Option<String>,
    /// Raw TOML appended at the end of the file.
    pub extra: String,
    /// Replaces the local domains (default example.test and other.test);
    /// the other.test catchall is kept only while other.test is listed.
    pub local_domains: Option<Vec<String>>,
    /// Outbound delivery: `domains.relay_to`, `[dns]`, `[relay]`, `[queue]`.
    pub outbound: outbound::OutboundSettings,
    /// Raw TOML keys written inside `[domains]` (after `local`, `catchall`
    /// and `relay_to`).
    pub domains_extra: String,
    /// Raw TOML keys written inside `[sender]`.
    pub sender_extra: String,
    /// Keep `sender.verify_domain` on (the server's default). Off unless
    /// asked: most tests send from domains that no test DNS knows.
    pub verify_sender_domain: bool,
}

impl ConfigBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn hide_client_ip(mut self, on: bool) -> Self {
        self.hide_client_ip = on;
        self
    }

    pub fn max_message_size(mut self, size: &str) -> Self {
        self.max_message_size = Some(size.to_string());
        self
    }

    pub fn with_submission(mut self) -> Self {
        self.submission = true;
        self
    }

    pub fn command_timeout(mut self, d: &str) -> Self {
        self.command_timeout = Some(d.to_string());
        self
    }

    pub fn data_timeout(mut self, d: &str) -> Self {
        self.data_timeout = Some(d.to_string());
        self
    }

    /// Appends raw TOML at the end of the file (see `extra`), e.g. an
    /// `[access]` or `[[dnsbl]]` section. Calls accumulate.
    pub fn extra(mut self, toml: &str) -> Self {
        if !self.extra.is_empty() && !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self.extra.push('\n');
        self.extra.push_str(toml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Raw TOML keys written inside `[domains]`, e.g.
    /// `domain_literals = false`. Calls accumulate.
    pub fn domains_keys(mut self, toml: &str) -> Self {
        push_lines(&mut self.domains_extra, toml);
        self
    }

    /// Raw TOML keys written inside `[sender]`, e.g. `spoofing =
    /// "authenticated-only"`. Calls accumulate.
    pub fn sender_keys(mut self, toml: &str) -> Self {
        push_lines(&mut self.sender_extra, toml);
        self
    }

    /// Leaves `sender.verify_domain` at its default (on).
    pub fn verify_sender_domain(mut self) -> Self {
        self.verify_sender_domain = true;
        self
    }

    /// Raw TOML keys written inside `[relay]` (the section is then always
    /// written), e.g. `pop_before_smtp = "2s"`. Calls accumulate.
    pub fn relay_keys(mut self, toml: &str) -> Self {
        push_lines(&mut self.outbound.relay_extra, toml);
        self
    }

    /// Only these local domains (see `local_domains`).
    pub fn local_domains(mut self, domains: &[&str]) -> Self {
        self.local_domains = Some(domains.iter().map(|d| d.to_string()).collect());
        self
    }

    /// `domains.relay_to`: domains accepted from anyone and relayed on.
    pub fn relay_to(mut self, domains: &[&str]) -> Self {
        self.outbound.relay_to = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Adds a `dns.nameservers` entry ("127.0.0.1:PORT").
    pub fn nameserver(mut self, addr: &str) -> Self {
        self.outbound.nameservers.push(addr.to_string());
        self
    }

    /// `dns.timeout`.
    pub fn dns_timeout(mut self, d: &str) -> Self {
        self.outbound.dns_timeout = Some(d.to_string());
        self
    }

    /// `relay.clients`.
    pub fn relay_clients(mut self, clients: &[&str]) -> Self {
        self.outbound.relay_clients = Some(clients.iter().map(|c| c.to_string()).collect());
        self
    }

    /// `relay.smarthost`.
    pub fn smarthost(mut self, addr: &str) -> Self {
        self.outbound.smarthost = Some(addr.to_string());
        self
    }

    /// One entry of `relay.routes` (replaces an earlier one for `domain`).
    pub fn route(mut self, domain: &str, addr: &str) -> Self {
        self.outbound.routes.retain(|(d, _)| d != domain);
        self.outbound
            .routes
            .push((domain.to_string(), addr.to_string()));
        self
    }

    /// `relay.mx_port`.
    pub fn mx_port(mut self, port: u16) -> Self {
        self.outbound.mx_port = Some(port);
        self
    }

    /// `queue.retry`.
    pub fn queue_retry(mut self, delays: &[&str]) -> Self {
        self.outbound.queue_retry = Some(delays.iter().map(|d| d.to_string()).collect());
        self
    }

    /// `queue.max_age`.
    pub fn queue_max_age(mut self, d: &str) -> Self {
        self.outbound.queue_max_age = Some(d.to_string());
        self
    }

    /// `queue.delay_warning`.
    pub fn delay_warning(mut self, d: &str) -> Self {
        self.outbound.delay_warning = Some(d.to_string());
        self
    }

    /// How many listeners the file declares.
    pub fn listener_count(&self) -> usize {
        if self.submission { 2 } else { 1 }
    }

    /// The TOML text, with `data_dir` as given.
    pub fn render(&self, data_dir: &Path) -> String {
        let mut s = String::new();
        s.push_str("[server]\nhostname = \"mx.example.test\"\n");
        writeln!(
            s,
            "data_dir = {}",
            toml_str(&data_dir.display().to_string())
        )
        .unwrap();
        if let Some(size) = &self.max_message_size {
            writeln!(s, "max_message_size = {}", toml_str(size)).unwrap();
        }
        writeln!(s, "hide_client_ip = {}", self.hide_client_ip).unwrap();
        s.push_str("\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n");
        if self.submission {
            s.push_str("\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"submission\"\n");
        }
        match &self.local_domains {
            None => s.push_str(
                "\n[domains]\nlocal = [\"example.test\", \"other.test\"]\n\
                 catchall = { \"other.test\" = \"postmaster@example.test\" }\n",
            ),
            Some(local) => {
                writeln!(s, "\n[domains]\nlocal = {}", toml_str_array(local)).unwrap();
                if local.iter().any(|d| d == "other.test") {
                    s.push_str("catchall = { \"other.test\" = \"postmaster@example.test\" }\n");
                }
            }
        }
        self.outbound.render_domains(&mut s);
        s.push_str(&self.domains_extra);
        s.push_str(
            "\n[[account]]\naddress = \"joe@example.test\"\naliases = [\"joseph@example.test\"]\n\
             \n[[account]]\naddress = \"postmaster@example.test\"\n",
        );
        if self.command_timeout.is_some() || self.data_timeout.is_some() {
            s.push_str("\n[smtp.timeouts]\n");
            if let Some(c) = &self.command_timeout {
                writeln!(s, "command = {}", toml_str(c)).unwrap();
            }
            if let Some(d) = &self.data_timeout {
                writeln!(s, "data = {}", toml_str(d)).unwrap();
            }
        }
        self.outbound.render_sections(&mut s);
        s.push_str("\n[sender]\n");
        if !self.verify_sender_domain {
            s.push_str("verify_domain = false\n");
        }
        s.push_str(&self.sender_extra);
        s.push_str(&self.extra);
        s
    }
}

/// Appends `toml` to `buf` as whole lines.
fn push_lines(buf: &mut String, toml: &str) {
    buf.push_str(toml);
    if !buf.is_empty() && !buf.ends_with('\n') {
        buf.push('\n');
    }
}

/// A TOML array of basic strings.
pub fn toml_str_array<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|i| toml_str(i.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// The server's log

/// Every line the server wrote to stderr, shared with the reader thread.
#[derive(Clone, Default)]
pub struct Logs {
    lines: Arc<Mutex<Vec<String>>>,
    ended: Arc<Mutex<bool>>,
}

impl Logs {
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("log buffer lock").clone()
    }

    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    fn ended(&self) -> bool {
        *self.ended.lock().expect("log end lock")
    }

    pub fn any(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.snapshot().iter().any(|l| pred(l))
    }

    /// Waits until a line holding every one of `parts` shows up; returns it.
    pub fn wait_for(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .snapshot()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no log line containing all of {parts:?} within {timeout:?}; the log:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many lines hold every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.snapshot()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }
}

// ---------------------------------------------------------------------------
// The server process

/// A running `mxguard serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub logs: Logs,
    pub mx: SocketAddr,
    pub submission: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
}

impl Server {
    /// Writes the configuration to `root/mxguard.toml` (data in
    /// `root/data`) and starts a server on it.
    pub fn start(cfg: &ConfigBuilder, root: &Path) -> Server {
        let data_dir = root.join("data");
        let config_path = root.join("mxguard.toml");
        fs::write(&config_path, cfg.render(&data_dir)).expect("write the test configuration");
        Self::start_with(&config_path, data_dir, cfg.listener_count())
    }

    /// Starts a server on an existing configuration file.
    pub fn start_with(config_path: &Path, data_dir: PathBuf, listeners: usize) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the mxguard binary");
        let stderr = child.stderr.take().expect("child stderr is piped");
        let logs = Logs::default();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                            logs.lines.lock().expect("log buffer lock").push(line);
                        }
                    }
                }
                *logs.ended.lock().expect("log end lock") = true;
            });
        }
        let mut server = Server {
            child: Some(child),
            logs,
            mx: "0.0.0.0:0".parse().expect("placeholder address"),
            submission: None,
            data_dir,
            config_path: config_path.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found: Vec<(SocketAddr, String)> = server
                .logs
                .snapshot()
                .iter()
                .filter_map(|l| parse_listening(l))
                .collect();
            if found.len() >= listeners {
                for (addr, role) in found {
                    match role.as_str() {
                        "mx" => server.mx = addr,
                        "submission" => server.submission = Some(addr),
                        // Other roles' tests look their port up in the log.
                        _ => {}
                    }
                }
                assert_ne!(server.mx.port(), 0, "no mx listener in the log");
                return server;
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                // Let the reader drain what is left.
                let end = Instant::now() + Duration::from_secs(2);
                while !server.logs.ended() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
                panic!(
                    "mxguard exited ({status}) before listening; its log:\n{}",
                    server.logs.text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "mxguard did not log {listeners} `listening` lines within {START_TIMEOUT:?}; its log:\n{}",
                    server.logs.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("server process").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() with a pid of a child we own and have not reaped.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// SIGKILL and reap: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit; panics past `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("server process");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait on the server") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "mxguard did not exit within {timeout:?}; its log:\n{}",
                    self.logs.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The Maildir `new/` of an account.
    pub fn new_dir(&self, account: &str) -> PathBuf {
        maildir_new(&self.data_dir, account)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.mx)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill() on our own unreaped child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `... INFO listening address=127.0.0.1:41234 role="mx"`.
pub fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("address=")? + "address=".len()..];
    let addr = rest.split_whitespace().next()?.parse().ok()?;
    let role = &line[line.find("role=")? + "role=".len()..];
    let role = role
        .split_whitespace()
        .next()?
        .trim_matches('"')
        .to_string();
    Some((addr, role))
}

// ---------------------------------------------------------------------------
// SMTP client

/// One SMTP reply, all its lines (without CRLF).
#[derive(Clone, Debug)]
pub struct Reply {
    pub lines: Vec<String>,
}

impl Reply {
    pub fn code(&self) -> u16 {
        self.lines[0][..3].parse().expect("3-digit reply code")
    }

    /// The reply with the first line's separator normalised to a space:
    /// `250 mx.example.test` for `250-mx.example.test`.
    pub fn first(&self) -> String {
        let l = &self.lines[0];
        if l.len() > 3 {
            format!("{} {}", &l[..3], &l[4..])
        } else {
            l.clone()
        }
    }

    /// Asserts that the reply starts with `prefix` (e.g. "250 2.1.0").
    #[track_caller]
    pub fn expect(self, prefix: &str) -> Reply {
        assert!(
            self.first().starts_with(prefix),
            "expected a reply starting with {prefix:?}, got {:?}",
            self.lines
        );
        self
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The queue id of "250 2.0.0 Ok: queued as ID".
    #[track_caller]
    pub fn queue_id(&self) -> String {
        let l = self.first();
        let i = l
            .find("queued as ")
            .unwrap_or_else(|| panic!("no queue id in {l:?}"));
        l[i + "queued as ".len()..].trim().to_string()
    }
}

/// A transcript client: plain std TcpStream, read timeout, CRLF lines.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub banner: Reply,
}

impl Client {
    /// Connects and reads the 220 banner.
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Self::connect_no_banner(addr);
        c.banner = c.read_reply().expect("220 ");
        c
    }

    /// Connects without reading the banner.
    #[track_caller]
    pub fn connect_no_banner(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(REPLY_TIMEOUT))
            .expect("set write timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the socket"));
        Client {
            stream,
            reader,
            banner: Reply { lines: vec![] },
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    #[track_caller]
    pub fn send(&mut self, line: &str) -> Reply {
        self.write_line(line);
        self.read_reply()
    }

    /// EHLO, returning the reply (asserted 250).
    #[track_caller]
    pub fn ehlo(&mut self, name: &str) -> Reply {
        self.send(&format!("EHLO {name}")).expect("250")
    }

    #[track_caller]
    pub fn write_line(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        self.send_raw(&b);
    }

    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Reads one reply; panics on timeout or end of stream.
    #[track_caller]
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply() {
            Ok(r) => r,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    /// Reads one reply, with end of stream as an `UnexpectedEof` error.
    pub fn try_read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {lines:?}"),
                ));
            }
            let line = String::from_utf8_lossy(&buf);
            let Some(line) = line.strip_suffix("\r\n") else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("reply line without CRLF: {line:?}"),
                ));
            };
            let b = line.as_bytes();
            if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                ));
            }
            let more = b.get(3) == Some(&b'-');
            lines.push(line.to_string());
            if !more {
                return Ok(Reply { lines });
            }
        }
    }

    /// Asserts the server closes the connection (within the read timeout),
    /// with no further reply.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 512];
        match self.reader.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close, got error {e}"),
        }
    }

    /// MAIL, RCPT for each recipient, DATA, the message (dot-stuffed here),
    /// and the final dot; returns the queue id.
    #[track_caller]
    pub fn send_message(&mut self, from: &str, to: &[&str], message: &str) -> String {
        self.send(&format!("MAIL FROM:<{from}>"))
            .expect("250 2.1.0");
        for t in to {
            self.send(&format!("RCPT TO:<{t}>")).expect("250 2.1.5");
        }
        self.send("DATA").expect("354");
        self.send_raw(&dot_stuff(message));
        self.send_raw(b".\r\n");
        self.read_reply().expect("250 2.0.0").queue_id()
    }

    pub fn quit(mut self) {
        let _ = self.send("QUIT").expect("221");
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A message with CRLF line ends, dot-stuffed, ending in CRLF.
pub fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.lines() {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A small message with a Subject and Message-ID.
pub fn simple_message(subject: &str) -> String {
    format!(
        "From: <sender@client.test>\r\nTo: <joe@example.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\nHello, this is {subject}.\r\n"
    )
}

// ---------------------------------------------------------------------------
// Maildirs

/// `data_dir/mail/<domain>/<local>/new`.
pub fn maildir_new(data_dir: &Path, account: &str) -> PathBuf {
    let (local, domain) = account.split_once('@').expect("an address with @");
    data_dir.join("mail").join(domain).join(local).join("new")
}

/// The files in `dir` (none when it does not exist), sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Every regular file below `dir`, recursively.
pub fn all_files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Waits until `dir` holds at least `n` files; returns them. Panics past
/// `timeout`, listing what it found.
#[track_caller]
pub fn wait_for_files(dir: &Path, n: usize, timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let files = files_in(dir);
        if files.len() >= n {
            return files;
        }
        if Instant::now() >= deadline {
            panic!(
                "expected {n} files in {} within {timeout:?}, found {}: {files:?}",
                dir.display(),
                files.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn read_string(path: &Path) -> String {
    String::from_utf8_lossy(&read(path)).into_owned()
}

/// The messages in a Maildir `new/`, as text.
pub fn messages_in(dir: &Path) -> Vec<String> {
    files_in(dir).iter().map(|p| read_string(p)).collect()
}

/// Sends a marker message to postmaster@ on a new connection and waits for
/// it to be delivered. Delivery is in queue order, so once the marker is in
/// its Maildir every message queued before it has been dealt with; a
/// "nothing was delivered" check after this is meaningful.
#[track_caller]
pub fn send_marker_and_wait(server: &Server, subject: &str) {
    let before = files_in(&server.new_dir("postmaster@example.test")).len();
    let mut c = server.client();
    c.ehlo("marker.test");
    c.send_message(
        "marker@client.test",
        &["postmaster@example.test"],
        &simple_message(subject),
    );
    c.quit();
    let files = wait_for_files(
        &server.new_dir("postmaster@example.test"),
        before + 1,
        Duration::from_secs(10),
    );
    assert!(
        files.iter().any(|p| read_string(p).contains(subject)),
        "marker {subject} not found in postmaster's Maildir"
    );
}

/// Collects the files of a Maildir `new/` that contain `needle`.
pub fn find_message(dir: &Path, needle: &str) -> Vec<String> {
    messages_in(dir)
        .into_iter()
        .filter(|m| m.contains(needle))
        .collect()
}

/// Whether a message starts with our Received: header for `helo` from
/// 127.0.0.1; the reverse DNS name, if the resolver has one, stands before
/// the address: `from HELO (NAME [127.0.0.1])` or `from HELO ([127.0.0.1])`.
pub fn received_from(message: &str, helo: &str) -> bool {
    let first = message.lines().next().unwrap_or("");
    let Some(rest) = first.strip_prefix(&format!("Received: from {helo} (")) else {
        return false;
    };
    rest.ends_with("[127.0.0.1])")
        && !rest[..rest.len() - "[127.0.0.1])".len()].contains(['(', ')'])
}

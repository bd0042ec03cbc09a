//! A real rspamd for the tests of `[rspamd]`: started in the foreground
//! with nothing but a temporary directory, its normal worker alone on a
//! free loopback port, and stopped (its whole process group) when dropped.
//! scripts/test.sh installs rspamd when it is missing; [`Rspamd::start`]
//! returns `None` (and says why) only when there is no `rspamd` binary.
//!
//! The configuration, written to the temporary directory, is the stock one
//! of the package (`$CONFDIR/common.conf`: the rules, the modules, the
//! actions) with these changes:
//! - only the normal worker, on `127.0.0.1:<free port>`; no controller, no
//!   proxy, no fuzzy storage (nothing on rspamd's fixed ports);
//! - `DBDIR`, `RUNDIR`, `LOGDIR` and `LOCAL_CONFDIR` (`--var`) in the
//!   temporary directory: no state of the machine's rspamd is read or
//!   written, `/etc/rspamd/local.d` included;
//! - DNS goes to a [`TestDns`] of its own (test. and arpa. zones, every
//!   other name refused at once): no lookup leaves the machine, and none
//!   waits out a timeout;
//! - `url_tld`: a short list of top-level domains instead of the public
//!   suffix list, whose compilation alone takes 10-25 s at every start
//!   (URLs in other TLDs are not recognised: no test here depends on them);
//! - no Redis: the modules that need it (Bayes, greylisting, ratelimit,
//!   history) disable themselves.
//!
//! Running as root, it is told `-u root -g root` (rspamd refuses to run
//! its workers as root otherwise).
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dns::{TestDns, Zones};

/// How long rspamd may take to answer `/ping` (about 2 s on an idle
/// machine with the short TLD list; rule compilation is CPU-bound).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The top-level domains rspamd knows (its `url_tld` file).
const TLDS: &str = "com\nnet\norg\nedu\ngov\nint\nmil\ninfo\nbiz\nio\nco\nuk\nco.uk\nde\nfr\n\
                    nl\nru\ncn\njp\nly\nme\ntest\nexample\ninvalid\nlocalhost\n";

/// A running rspamd.
pub struct Rspamd {
    /// Its normal worker's port on 127.0.0.1.
    pub port: u16,
    /// How long it took to answer `/ping`.
    pub startup: Duration,
    child: Option<Child>,
    /// Its DNS server.
    pub dns: TestDns,
    dir: tempfile::TempDir,
}

/// `name` in one of the directories of PATH.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Rspamd {
    /// Starts one and waits until it answers `/ping`; `None` when rspamd
    /// is not installed. Panics, with its log, when it does not start.
    pub fn start() -> Option<Rspamd> {
        let Some(bin) = find_in_path("rspamd") else {
            eprintln!(
                "rspamd is not installed (no `rspamd` in PATH): skipping; \
                 scripts/test.sh installs it (apt-get install rspamd)"
            );
            return None;
        };
        let dns = TestDns::start(Zones::new());
        let dir = tempfile::tempdir().expect("a temporary directory for rspamd");
        let root = dir.path();
        for sub in ["db", "run", "local", "tmp"] {
            fs::create_dir(root.join(sub)).expect("rspamd's directories");
        }
        fs::write(root.join("tld.dat"), TLDS).expect("write the TLD list");
        let port = super::net::free_port("127.0.0.1");
        let conf = root.join("rspamd.conf");
        fs::write(&conf, config(root, port, &dns.nameserver())).expect("write rspamd.conf");

        let log = fs::File::create(root.join("stdout.log")).expect("rspamd's output file");
        let mut cmd = Command::new(&bin);
        cmd.arg("-f").arg("-c").arg(&conf);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "root", "-g", "root"]);
        }
        for (var, sub) in [
            ("LOCAL_CONFDIR", "local"),
            ("DBDIR", "db"),
            ("RUNDIR", "run"),
            ("LOGDIR", "."),
        ] {
            cmd.arg("--var")
                .arg(format!("{var}={}", root.join(sub).display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the output file"))
            .stderr(log)
            // Its own process group: Drop stops the workers with it.
            .process_group(0);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut r = Rspamd {
            port,
            startup: Duration::ZERO,
            child: Some(child),
            dns,
            dir,
        };
        loop {
            if r.ping() {
                break;
            }
            if let Some(c) = r.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                r.child = None;
                panic!("rspamd exited at start-up ({status}):\n{}", r.log_tail());
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "rspamd on port {port} did not answer /ping within {READY_TIMEOUT:?}:\n{}",
                    r.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        r.startup = started.elapsed();
        Some(r)
    }

    /// `http://127.0.0.1:PORT`, for `rspamd.url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether it answers `GET /ping` with `pong` now.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = Vec::new();
        let _ = s.take(4096).read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        answer.starts_with("HTTP/1.1 200") && answer.contains("\r\n\r\npong")
    }

    /// The temporary directory (configuration, `rspamd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of its log (rspamd.log, then what it wrote to stdout/stderr).
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["rspamd.log", "stdout.log"] {
            let text = fs::read_to_string(self.dir().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            out.push_str(&format!("--- {f} (last {} lines)\n", lines.len() - from));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Stops it: SIGTERM to its process group, SIGKILL past STOP_TIMEOUT.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the group the child
        // leads (process_group(0)); no memory is involved.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        // The main process waits for its workers before it exits.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Not reaped yet, so the group id is still this one.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The top-level configuration (see the module's documentation).
fn config(root: &Path, port: u16, nameserver: &str) -> String {
    // Options given before the `.include` win: UCL keeps the first of
    // duplicate keys.
    format!(
        r#".include "$CONFDIR/common.conf"

options {{
    pidfile = "$RUNDIR/rspamd.pid";
    tempdir = "{tmp}";
    url_tld = "{tld}";
    dns {{
        nameserver = ["{nameserver}"];
    }}
    .include "$CONFDIR/options.inc"
}}

logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    .include "$CONFDIR/logging.inc"
}}

worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
"#,
        tmp = root.join("tmp").display(),
        tld = root.join("tld.dat").display(),
    )
}

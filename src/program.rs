//! Running an external filter program (`[[filter]] execute`).
//!
//! The program gets the message on its standard input and the envelope in
//! its environment; its exit code and the first line of its standard
//! output are its answer, read by
//! [`mxguard_policy::content::program_verdict`]. The contract, as
//! documented for administrators (docs/configuration.md):
//!
//! - argv is `execute` as written: no shell, no PATH search;
//! - the environment is cleared, then `PATH=/usr/local/bin:/usr/bin:/bin`
//!   and the `MXGUARD_*` variables of [`Env`] are set;
//! - stdin is the whole message as it will be delivered (our `Received:`
//!   and `Authentication-Results:` included), CRLF line ends;
//! - the program runs in its own process group; past `timeout` (reading
//!   and writing included) the whole group is killed;
//! - at most `max_running` copies of a rule's program run at once; a
//!   message waits for a free one, within the same `timeout`.
//!
//! # Security
//! The environment values come from the SMTP client (HELO, addresses);
//! they are passed as values, never through a shell. A program that does
//! not read its input, writes endlessly, forks children that keep its
//! pipes open or never exits is bounded by the timeout: what is read of
//! its output is capped ([`MAX_STDOUT`], [`MAX_STDERR`]) and the rest
//! drained and dropped.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mxguard_config::FilterProgram;
use mxguard_policy::content::{ProgramVerdict, program_verdict};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

/// What of the program's standard output is kept (its first line is the
/// answer).
const MAX_STDOUT: usize = 4096;
/// What of its standard error is kept, for the log.
const MAX_STDERR: usize = 1024;
/// The PATH a program is given.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The message to feed on stdin.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    Bytes(&'a [u8]),
    /// `len` bytes at `offset` of a file (`None`: to its end).
    File {
        path: &'a Path,
        offset: u64,
        len: Option<u64>,
    },
}

/// The envelope, in the program's environment.
#[derive(Clone, Debug)]
pub struct Env<'a> {
    /// `MXGUARD_QUEUE_ID`
    pub queue_id: &'a str,
    /// `MXGUARD_SENDER`: the MAIL FROM address, empty for `<>`.
    pub sender: &'a str,
    /// `MXGUARD_RECIPIENTS`: the recipient addresses, separated by spaces.
    pub recipients: &'a [String],
    /// `MXGUARD_CLIENT_IP`
    pub client_ip: &'a str,
    /// `MXGUARD_HELO`
    pub helo: &'a str,
    /// `MXGUARD_RULE`: the rule's name.
    pub rule: &'a str,
    /// `MXGUARD_SCORE`: the message score so far.
    pub score: f64,
    /// `MXGUARD_STAGE`: `before_accept` or `after_accept`.
    pub stage: &'static str,
}

/// How the program ended.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Its exit code; `None` when a signal ended it.
    pub exit: Option<i32>,
    /// The first line of its standard output, without the line end.
    pub first_line: String,
    /// The start of its standard error, on one line, for the log.
    pub stderr: String,
    pub elapsed: Duration,
}

/// Why the program gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{max_running} copies of {program} already running for {timeout:?}")]
    Busy {
        program: String,
        max_running: usize,
        timeout: Duration,
    },
    #[error("{program} did not finish within {timeout:?}; killed")]
    Timeout { program: String, timeout: Duration },
    #[error("reading the message for {program}: {source}")]
    Input {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// The running copies of each rule's program: (rule, max_running) ->
/// its slots. A reload that changes `max_running` gets new slots.
static SLOTS: Mutex<Option<SlotMap>> = Mutex::new(None);

type SlotMap = HashMap<(String, usize), Arc<Semaphore>>;

fn slots(rule: &str, max: usize) -> Arc<Semaphore> {
    let mut guard = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(HashMap::new)
        .entry((rule.to_string(), max))
        .or_insert_with(|| Arc::new(Semaphore::new(max.max(1))))
        .clone()
}

/// Runs `program` on `input` with `env`, within its timeout: the wait for
/// one of its `max_running` slots included.
pub async fn run(
    program: &FilterProgram,
    env: &Env<'_>,
    input: Source<'_>,
) -> Result<Finished, RunError> {
    let name = program.argv.first().cloned().unwrap_or_default();
    let started = Instant::now();
    let slots = slots(env.rule, program.max_running);
    let _slot = match tokio::time::timeout(program.timeout, slots.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        // The semaphore is never closed; a timeout is what gets here.
        Ok(Err(_)) | Err(_) => {
            return Err(RunError::Busy {
                program: name,
                max_running: program.max_running,
                timeout: program.timeout,
            });
        }
    };
    let timeout = program.timeout.saturating_sub(started.elapsed());
    let mut cmd = Command::new(&name);
    cmd.args(program.argv.iter().skip(1))
        .env_clear()
        .env("PATH", PATH)
        .env("MXGUARD_QUEUE_ID", env.queue_id)
        .env("MXGUARD_SENDER", env.sender)
        .env("MXGUARD_RECIPIENTS", env.recipients.join(" "))
        .env("MXGUARD_CLIENT_IP", env.client_ip)
        .env("MXGUARD_HELO", env.helo)
        .env("MXGUARD_RULE", env.rule)
        .env(
            "MXGUARD_SCORE",
            mxguard_policy::content::format_score(env.score),
        )
        .env("MXGUARD_STAGE", env.stage)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own group, so a timeout kills what it started too.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: name.clone(),
        source,
    })?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let work = async {
        let feed = async {
            let Some(mut stdin) = stdin else {
                return Ok(());
            };
            let r = feed(&mut stdin, input).await;
            drop(stdin);
            match r {
                // A program may answer without reading all of it.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r,
            }
        };
        let (fed, out, err) = tokio::join!(
            feed,
            read_capped(stdout, MAX_STDOUT),
            read_capped(stderr, MAX_STDERR)
        );
        let status = child.wait().await;
        (fed, out, err, status)
    };
    let (fed, out, err, status) = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            kill_group(pid);
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            return Err(RunError::Timeout {
                program: name,
                timeout: program.timeout,
            });
        }
    };
    // Whatever it left behind in its group goes too.
    kill_group(pid);
    let status = status.map_err(|source| RunError::Wait {
        program: name.clone(),
        source,
    })?;
    fed.map_err(|source| RunError::Input {
        program: name.clone(),
        source,
    })?;
    let first_line = String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_string();
    let stderr: String = String::from_utf8_lossy(&err)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string();
    Ok(Finished {
        exit: status.code(),
        first_line,
        stderr,
        elapsed: started.elapsed(),
    })
}

/// Runs `program` and reads its answer: the verdict (with how it ended,
/// for the log), or why there is none (stderr included when the answer
/// is not understood).
pub async fn ask(
    program: &FilterProgram,
    env: &Env<'_>,
    input: Source<'_>,
) -> Result<(ProgramVerdict, Finished), String> {
    let finished = run(program, env, input).await.map_err(|e| e.to_string())?;
    match program_verdict(finished.exit, &finished.first_line) {
        Ok(verdict) => Ok((verdict, finished)),
        Err(why) if finished.stderr.is_empty() => Err(why),
        Err(why) => Err(format!("{why}; stderr: {}", finished.stderr)),
    }
}

/// Writes the message to the program's stdin.
async fn feed(stdin: &mut tokio::process::ChildStdin, input: Source<'_>) -> std::io::Result<()> {
    match input {
        Source::Bytes(b) => stdin.write_all(b).await?,
        Source::File { path, offset, len } => {
            let mut file = tokio::fs::File::open(path).await?;
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            match len {
                Some(len) => {
                    tokio::io::copy(&mut file.take(len), stdin).await?;
                }
                None => {
                    tokio::io::copy(&mut file, stdin).await?;
                }
            }
        }
    }
    stdin.flush().await
}

/// Reads a pipe to its end, keeping the first `cap` bytes.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, cap: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Kills the process group the program leads (it was started with
/// `process_group(0)`, so its group id is its pid).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // a negative pid names the process group, which holds only the program
    // and what it started (never mxguard: its group was made new).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(script: &str, timeout_ms: u64) -> FilterProgram {
        FilterProgram {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
            max_running: 20,
        }
    }

    fn env() -> Env<'static> {
        Env {
            queue_id: "Q1",
            sender: "bob@sender.test",
            recipients: &[],
            client_ip: "192.0.2.7",
            helo: "client.test",
            rule: "T",
            score: 2.5,
            stage: "before_accept",
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn answers_environment_and_input() {
        let rt = rt();
        let p = program(
            "read first; echo \"$first $MXGUARD_SENDER $MXGUARD_SCORE $MXGUARD_RULE $MXGUARD_STAGE ${HOME:-nohome}\"; echo oops >&2; exit 3",
            5000,
        );
        let f = rt
            .block_on(run(
                &p,
                &env(),
                Source::Bytes(b"Subject: hi\r\n\r\nbody\r\n"),
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.exit, Some(3));
        assert_eq!(
            f.first_line.replace('\r', ""),
            "Subject: hi bob@sender.test 2.5 T before_accept nohome"
        );
        assert_eq!(f.stderr, "oops");
    }

    #[test]
    fn a_program_that_reads_nothing_or_floods_is_fine() {
        let rt = rt();
        let big = vec![b'x'; 4 << 20];
        let p = program("echo ACCEPT; yes | head -c 10000000", 10_000);
        let f = rt
            .block_on(run(&p, &env(), Source::Bytes(&big)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((f.exit, f.first_line.as_str()), (Some(0), "ACCEPT"));
    }

    #[test]
    fn a_hung_program_and_its_children_are_killed() {
        let rt = rt();
        // The child sleep keeps stdout open after sh is gone: only killing
        // the group ends it.
        let p = program("sleep 30 & sleep 30", 300);
        let started = Instant::now();
        let r = rt.block_on(run(&p, &env(), Source::Bytes(b"x")));
        assert!(matches!(r, Err(RunError::Timeout { .. })), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let rt = rt();
        let p = FilterProgram {
            argv: vec!["/nonexistent/filter".into()],
            timeout: Duration::from_secs(1),
            max_running: 20,
        };
        let r = rt.block_on(run(&p, &env(), Source::Bytes(b"x")));
        assert!(
            matches!(&r, Err(RunError::Spawn { program, .. }) if program == "/nonexistent/filter"),
            "{r:?}"
        );
    }

    #[test]
    fn a_file_source_is_fed_from_its_offset() {
        let rt = rt();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m");
        std::fs::write(&path, b"JUNKSubject: filed\r\n\r\nbody\r\nTAIL")
            .unwrap_or_else(|e| panic!("{e}"));
        let p = program("head -n1; wc -c", 5000);
        let f = rt
            .block_on(run(
                &p,
                &env(),
                Source::File {
                    path: &path,
                    offset: 4,
                    len: Some(26),
                },
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.first_line, "Subject: filed");
    }

    #[test]
    fn copies_beyond_max_running_wait_for_a_slot() {
        let rt = rt();
        let mut p = program("sleep 0.4; echo ACCEPT", 3000);
        p.max_running = 1;
        let mut e = env();
        e.rule = "ONE_AT_A_TIME";
        // Two at once with one slot: the second waits for the first.
        let started = Instant::now();
        let (a, b) = rt.block_on(async {
            tokio::join!(
                run(&p, &e, Source::Bytes(b"x")),
                run(&p, &e, Source::Bytes(b"x"))
            )
        });
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert!(started.elapsed() >= Duration::from_millis(800));
        // A wait longer than the timeout: no answer, nothing run.
        let mut long = program("sleep 0.5; echo ACCEPT", 3000);
        long.max_running = 1;
        let short = FilterProgram {
            timeout: Duration::from_millis(200),
            ..long.clone()
        };
        e.rule = "ONE_AT_A_TIME_SHORT";
        let (a, b) = rt.block_on(async {
            let first = run(&long, &e, Source::Bytes(b"x"));
            let second = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                run(&short, &e, Source::Bytes(b"x")).await
            };
            tokio::join!(first, second)
        });
        assert!(a.is_ok(), "{a:?}");
        assert!(matches!(b, Err(RunError::Busy { .. })), "{b:?}");
    }
}

//! The end of DATA: the content rules (`[[filter]]`) and the message score
//! (`[scoring]`), applied to a received message before its 250.
//!
//! The decision is a [`mxguard_policy::content::Judgement`]'s; this module
//! does the IO around it: it reads the message (from memory, or the first
//! [`READ_LIMIT`] bytes of a spool file), runs the parse and the rules off
//! the executor, asks the filter programs ([`crate::program`]) and rspamd
//! ([`crate::facts::rspamd`]) when the rules come to them, and applies the
//! verdict: a refusal removes the spool file,
//! a discard answers 250 and queues nothing, a redirect replaces the
//! recipients, and added headers go at the top of the message, right after
//! our `Received:` (a spool file is rewritten for that). Every decision is
//! one log line with `check="filter"` or `check="scoring"`, the rules that
//! fired and the score.
//!
//! # Security
//! The message is the client's. What is parsed is bounded (a spool file
//! is read up to [`READ_LIMIT`]); the parse runs in `spawn_blocking` under
//! `catch_unwind`, and a parser failure lets the message through unjudged
//! (logged as an error) rather than losing it. Added header values come
//! from the configuration or the score, never from the message.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mxguard_config::{Config, FilterRule};
use mxguard_policy::content::{
    ContentAction, Judgement, MessageFacts, ProgramVerdict, format_score, is_active, needs_message,
};
use mxguard_proto::Reply;
use mxguard_queue::{Body, Recipient, Target};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::facts::rspamd;
use crate::program;

/// At most this much of a message in a spool file is read for the rules:
/// the header section and the start of the body.
pub(crate) const READ_LIMIT: u64 = 4 * 1024 * 1024;

/// What the driver knows of the message, for the rules and the log.
pub(crate) struct Input<'a> {
    pub cfg: Arc<Config>,
    pub session: &'a str,
    pub queue_id: &'a str,
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// The client's reverse DNS name, if it has one.
    pub hostname: Option<&'a str>,
    pub sender: &'a str,
    pub recipients: &'a [Recipient],
    /// The connection-stage score and what made it.
    pub connect_score: f64,
    pub connect_reasons: &'a [String],
    /// Where the client's content starts (after our `Received:`).
    pub content_start: usize,
    /// `X-Spam-Flag: YES` is already there (DMARC quarantine, `[verify]`).
    pub flagged: bool,
}

/// What the driver does with the message.
pub(crate) enum Outcome {
    /// Queue it: `body` (with its added headers), to `recipients` when
    /// they were replaced.
    Queue {
        body: Body,
        recipients: Option<Vec<Recipient>>,
        /// The message score (for the `after_accept` programs).
        score: f64,
    },
    /// Refuse it with this reply (logged; the spool file is removed).
    Refuse(Reply),
    /// Answer 250 and queue nothing (logged; the spool file is removed).
    Discard,
    /// The message could not be read or rewritten: a 451 (the spool file
    /// is removed).
    Failed(String),
}

/// Judges `body` and applies the verdict.
pub(crate) async fn filter(input: Input<'_>, body: Body) -> Outcome {
    if !is_active(&input.cfg) {
        return Outcome::Queue {
            body,
            recipients: None,
            score: input.connect_score,
        };
    }
    let start = input.content_start;
    let needs_message = needs_message(&input.cfg);
    // The text the rules see: the client's content only.
    let (body, text) = match body {
        Body::Memory(m) => (Body::Memory(m), None),
        Body::File(path) if !needs_message => (Body::File(path), Some(Vec::new())),
        Body::File(path) => match read_head(&path, start).await {
            Ok(text) => (Body::File(path), Some(text)),
            Err(e) => {
                let why = format!("reading spool file {} for the filters: {e}", path.display());
                let _ = tokio::fs::remove_file(&path).await;
                return Outcome::Failed(why);
            }
        },
    };
    let owned = Arc::new(OwnedFacts {
        sender: input.sender.to_string(),
        recipients: input.recipients.iter().map(|r| r.address.clone()).collect(),
        client_ip: input.client_ip,
        helo: input.helo.to_string(),
        connect_score: input.connect_score,
        connect_reasons: input.connect_reasons.to_vec(),
    });
    let cfg = input.cfg.clone();
    // The pattern rules up to the first program (the parse included), off
    // the executor when the message is read.
    let step = {
        let (cfg, owned) = (cfg.clone(), owned.clone());
        // The body goes to the blocking thread and comes back, whatever
        // happens there.
        blocking(needs_message, move || {
            let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let facts = owned.facts();
                let bytes: &[u8] = match (&text, &body) {
                    (Some(t), _) => t,
                    (None, Body::Memory(m)) if needs_message => m.get(start..).unwrap_or_default(),
                    (None, _) => &[],
                };
                let mut j = Judgement::start(&cfg, bytes, &facts);
                let next = j.next_program(&cfg, &facts);
                (j, next)
            }))
            .ok();
            (body, judged)
        })
        .await
    };
    let (body, judged) = match step {
        Some(step) => step,
        // Only a cancelled runtime gets here; the body is gone with it.
        None => return Outcome::Failed("content filter task failed".into()),
    };
    let Some((mut judgement, mut next)) = judged else {
        tracing::error!(session = %input.session, client = %input.client_ip, queue_id = %input.queue_id,
            check = "filter", "the message could not be parsed for the content rules; accepted unjudged");
        return Outcome::Queue {
            body,
            recipients: None,
            score: input.connect_score,
        };
    };
    while let Some(i) = next {
        let Some(rule) = cfg.filters.get(i) else {
            break;
        };
        let answer = ask_program(&input, rule, judgement.score(), &body).await;
        match answer {
            Ok(answer) => judgement.program_answered(&cfg, i, answer),
            Err(why) => {
                remove_spool(&body).await;
                tracing::warn!(
                    session = %input.session, client = %input.client_ip, helo = %input.helo, from = %input.sender,
                    queue_id = %input.queue_id, check = "filter", rule = %rule.name, error = %why,
                    reply = "451 4.3.0", "DATA deferred (filter program failed)"
                );
                return Outcome::Refuse(Reply::fixed(
                    451,
                    4,
                    3,
                    0,
                    "Temporary content filter failure; try again later",
                ));
            }
        }
        let step = {
            let (cfg, owned) = (cfg.clone(), owned.clone());
            blocking(needs_message, move || {
                let next = judgement.next_program(&cfg, &owned.facts());
                (judgement, next)
            })
            .await
        };
        match step {
            Some((j, n)) => (judgement, next) = (j, n),
            None => {
                tracing::error!(session = %input.session, client = %input.client_ip, queue_id = %input.queue_id,
                    check = "filter", "the content rules failed; accepted unjudged");
                return Outcome::Queue {
                    body,
                    recipients: None,
                    score: input.connect_score,
                };
            }
        }
    }
    if let Some(rspamd) = &cfg.rspamd
        && !judgement.is_stopped()
        && let Some(answer) = ask_rspamd(&input, rspamd, &body).await
    {
        // rspamd's score, then the symbols that made it.
        let reasons = std::iter::once(format!("rspamd={}", format_score(answer.score))).chain(
            answer
                .symbols
                .iter()
                .map(|(name, _)| format!("rspamd:{name}")),
        );
        judgement.add_external(answer.score, reasons);
    }
    let verdict = judgement.finish(&cfg, &owned.facts());
    let fired = if verdict.fired.is_empty() {
        "none".to_string()
    } else {
        verdict.fired.join(",")
    };
    let score = format_score(verdict.score);
    let reasons = input.connect_reasons.join(",");
    match verdict.action {
        ContentAction::Reject(v) => {
            remove_spool(&body).await;
            tracing::info!(
                session = %input.session, client = %input.client_ip, helo = %input.helo, from = %input.sender,
                queue_id = %input.queue_id, recipients = input.recipients.len(), check = v.check.as_str(),
                rules = %fired, score = %score, connect = %reasons, reason = %v.reason, reply = %v.reply,
                "DATA refused ({})", v.check.as_str()
            );
            Outcome::Refuse(v.reply)
        }
        ContentAction::Discard { rule } => {
            remove_spool(&body).await;
            tracing::info!(
                session = %input.session, client = %input.client_ip, helo = %input.helo, from = %input.sender,
                queue_id = %input.queue_id, recipients = input.recipients.len(), check = "filter",
                rules = %fired, score = %score, "message discarded (filter {rule})"
            );
            Outcome::Discard
        }
        action => {
            let recipients = match &action {
                ContentAction::Redirect { rule, address } => {
                    let to = redirect_recipient(&input.cfg, address);
                    let was: Vec<&str> = input
                        .recipients
                        .iter()
                        .map(|r| r.address.as_str())
                        .collect();
                    tracing::info!(
                        session = %input.session, client = %input.client_ip, helo = %input.helo, from = %input.sender,
                        queue_id = %input.queue_id, check = "filter", rules = %fired, score = %score,
                        to = %address, local = matches!(to.target, Target::Local { .. }),
                        was = %was.join(","), "message redirected (filter {rule})"
                    );
                    Some(vec![to])
                }
                _ => {
                    let noteworthy = !verdict.fired.is_empty() || verdict.score != 0.0;
                    let tagged = verdict.score > input.cfg.scoring.tag_above;
                    let check = if verdict.fired.is_empty() {
                        "scoring"
                    } else {
                        "filter"
                    };
                    if noteworthy {
                        tracing::info!(
                            session = %input.session, client = %input.client_ip, helo = %input.helo,
                            from = %input.sender, queue_id = %input.queue_id, check, rules = %fired,
                            score = %score, connect = %reasons, tagged, "message scored"
                        );
                    } else {
                        tracing::debug!(session = %input.session, queue_id = %input.queue_id, check,
                            score = %score, "message scored");
                    }
                    None
                }
            };
            let mut headers = verdict.add_headers;
            if input.flagged {
                headers.retain(|(name, _)| name != "X-Spam-Flag");
            }
            match add_headers(body, start, &headers).await {
                Ok(body) => Outcome::Queue {
                    body,
                    recipients,
                    score: verdict.score,
                },
                Err(why) => Outcome::Failed(why),
            }
        }
    }
}

/// Runs `work` on the blocking pool when `heavy` (a parse or regexes over
/// the message), inline otherwise; `None` if it panicked.
async fn blocking<T: Send + 'static>(
    heavy: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let guarded = move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok();
    if heavy {
        tokio::task::spawn_blocking(guarded).await.ok().flatten()
    } else {
        guarded()
    }
}

/// Runs rule's program on the message; its answer, or why there is none.
async fn ask_program(
    input: &Input<'_>,
    rule: &FilterRule,
    score: f64,
    body: &Body,
) -> Result<ProgramVerdict, String> {
    let Some(program) = rule.program() else {
        return Ok(ProgramVerdict::Accept);
    };
    let recipients: Vec<String> = input.recipients.iter().map(|r| r.address.clone()).collect();
    let client_ip = input.client_ip.to_string();
    let env = program::Env {
        queue_id: input.queue_id,
        sender: input.sender,
        recipients: &recipients,
        client_ip: &client_ip,
        helo: input.helo,
        rule: &rule.name,
        score,
        stage: "before_accept",
    };
    let source = match body {
        Body::Memory(m) => program::Source::Bytes(m),
        Body::File(path) => program::Source::File {
            path,
            offset: 0,
            len: None,
        },
    };
    let (verdict, finished) = program::ask(program, &env, source).await?;
    tracing::debug!(session = %input.session, queue_id = %input.queue_id, check = "filter",
        rule = %rule.name, exit = ?finished.exit, answer = %finished.first_line,
        elapsed_ms = finished.elapsed.as_millis() as u64, "filter program answered");
    Ok(verdict)
}

/// rspamd's answer on the message (as it will be delivered), or `None`
/// when there is none: rspamd down, slow or confused is logged and the
/// message flows on without its score.
async fn ask_rspamd(
    input: &Input<'_>,
    cfg: &mxguard_config::RspamdConfig,
    body: &Body,
) -> Option<rspamd::Answer> {
    let recipients: Vec<String> = input.recipients.iter().map(|r| r.address.clone()).collect();
    let request = rspamd::Request {
        client_ip: input.client_ip,
        helo: input.helo,
        hostname: input.hostname,
        sender: input.sender,
        recipients: &recipients,
        queue_id: input.queue_id,
    };
    let file;
    let message: &[u8] = match body {
        Body::Memory(m) => m,
        Body::File(path) => {
            let size = tokio::fs::metadata(path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if size > cfg.max_size {
                tracing::debug!(session = %input.session, queue_id = %input.queue_id, check = "rspamd",
                    size, max_size = cfg.max_size, "message not sent to rspamd: larger than rspamd.max_size");
                return None;
            }
            file = match tokio::fs::read(path).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(session = %input.session, queue_id = %input.queue_id, check = "rspamd",
                        error = %e, "cannot read the spool file for rspamd; the message flows without its score");
                    return None;
                }
            };
            &file
        }
    };
    match rspamd::check(cfg, &request, message).await {
        Ok(answer) => {
            tracing::debug!(session = %input.session, queue_id = %input.queue_id, check = "rspamd",
                score = %format_score(answer.score), action = %answer.action,
                symbols = answer.symbols.len(), "rspamd answered");
            Some(answer)
        }
        Err(rspamd::RspamdError::TooLarge { size, max }) => {
            tracing::debug!(session = %input.session, queue_id = %input.queue_id, check = "rspamd",
                size, max_size = max, "message not sent to rspamd: larger than rspamd.max_size");
            None
        }
        Err(e) => {
            tracing::warn!(session = %input.session, client = %input.client_ip, queue_id = %input.queue_id,
                check = "rspamd", error = %e, "rspamd gave no answer; the message flows without its score");
            None
        }
    }
}

/// The envelope facts, owned, for the blocking thread.
struct OwnedFacts {
    sender: String,
    recipients: Vec<String>,
    client_ip: IpAddr,
    helo: String,
    connect_score: f64,
    connect_reasons: Vec<String>,
}

impl OwnedFacts {
    fn facts(&self) -> MessageFacts<'_> {
        MessageFacts {
            sender: &self.sender,
            recipients: &self.recipients,
            client_ip: self.client_ip,
            helo: &self.helo,
            connect_score: self.connect_score,
            connect_reasons: &self.connect_reasons,
        }
    }
}

/// The recipient a `redirect:` address becomes: a local account (or alias,
/// or catchall) is delivered to its Maildir, anything else is relayed.
fn redirect_recipient(cfg: &Config, address: &str) -> Recipient {
    let local = cfg.account_for(address).or_else(|| {
        let domain = address.rsplit_once('@').map(|(_, d)| d)?;
        if !cfg.is_local_domain(domain) {
            return None;
        }
        cfg.catchall_for(domain).and_then(|c| cfg.account_for(c))
    });
    match local {
        Some(account) => Recipient::new(
            address.to_string(),
            Target::Local {
                mailbox: account.address.clone(),
            },
        ),
        None => Recipient::new(address.to_string(), Target::Remote),
    }
}

/// The client's content of a spool file, up to [`READ_LIMIT`] bytes.
pub(crate) async fn read_head(path: &Path, start: usize) -> std::io::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(start as u64)).await?;
    let mut out = Vec::new();
    file.take(READ_LIMIT).read_to_end(&mut out).await?;
    Ok(out)
}

/// Removes the spool file of a message that will not be queued.
pub(crate) async fn remove_spool(body: &Body) {
    if let Body::File(path) = body {
        let _ = tokio::fs::remove_file(path).await;
    }
}

/// `body` with `headers` inserted at `start` (after our `Received:`). A
/// spool file is rewritten next to itself, then renamed over itself.
pub(crate) async fn add_headers(
    body: Body,
    start: usize,
    headers: &[(String, String)],
) -> Result<Body, String> {
    if headers.is_empty() {
        return Ok(body);
    }
    let mut lines = Vec::new();
    for (name, value) in headers {
        lines.extend_from_slice(name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    match body {
        Body::Memory(mut m) => {
            let at = start.min(m.len());
            m.splice(at..at, lines);
            Ok(Body::Memory(m))
        }
        Body::File(path) => match rewrite(&path, start, &lines).await {
            Ok(()) => Ok(Body::File(path)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(format!(
                    "adding headers to spool file {}: {e}",
                    path.display()
                ))
            }
        },
    }
}

async fn rewrite(path: &Path, start: usize, lines: &[u8]) -> std::io::Result<()> {
    rewrite_spool(path, ".hdr", async |src, dst| {
        tokio::io::copy(&mut src.take(start as u64), dst).await?;
        dst.write_all(lines).await?;
        tokio::io::copy(src, dst).await?;
        Ok(())
    })
    .await
}

/// Rewrites the spool file `path`: `edit` copies it (`src`, at its start)
/// into a sibling (`path` + `suffix`), which then replaces it. The sibling
/// is removed when anything fails.
pub(crate) async fn rewrite_spool(
    path: &Path,
    suffix: &str,
    edit: impl AsyncFnOnce(
        &mut tokio::fs::File,
        &mut tokio::io::BufWriter<tokio::fs::File>,
    ) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp: PathBuf = {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let r = async {
        let mut src = tokio::fs::File::open(path).await?;
        let mut dst =
            tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(&tmp).await?);
        edit(&mut src, &mut dst).await?;
        dst.flush().await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    r
}

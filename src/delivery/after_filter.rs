//! The `after_accept` filter programs: they judge a message after its 250,
//! before any copy of it is delivered.
//!
//! A queued message whose envelope carries a `filter` score (set by the
//! session when the configuration has `after_accept` rules and the content
//! filters judged the message) is held by the tracker until [`judge`]
//! says what becomes of it: delivered (perhaps with added headers, which
//! re-queues it), refused (every recipient fails and the sender gets a
//! bounce, RFC 3464, through the usual path) or discarded. A program that
//! fails, hangs or is missing is a temporary failure: the message waits
//! and is judged again on the queue's retry schedule, and bounces only if
//! that lasts past `queue.max_age`. Nothing is delivered unjudged.

use mxguard_config::Config;
use mxguard_policy::content::{AfterVerdict, Judgement, after_accept_rules, format_score};
use mxguard_queue::{Content, Envelope, RcptStatus};

use crate::program;

/// What the programs made of the message.
pub(crate) enum AfterResult {
    Judged(AfterVerdict),
    /// A program gave no answer: try again later.
    Failed {
        rule: String,
        why: String,
    },
}

/// Runs the `after_accept` programs of `cfg` in file order on the queued
/// message, until one refuses or discards it.
pub(crate) async fn judge(cfg: &Config, env: &Envelope, content: &Content) -> AfterResult {
    let accepted = env.filter_score.unwrap_or(0.0);
    let mut judgement = Judgement::after_accept(accepted);
    let recipients: Vec<String> = env
        .recipients
        .iter()
        .filter(|r| r.status == RcptStatus::Pending)
        .map(|r| r.address.clone())
        .collect();
    for (i, rule) in after_accept_rules(cfg) {
        let Some(prog) = rule.program() else {
            continue;
        };
        let run_env = program::Env {
            queue_id: &env.id,
            sender: &env.sender,
            recipients: &recipients,
            client_ip: &env.client_ip,
            helo: &env.helo,
            rule: &rule.name,
            score: judgement.score(),
            stage: "after_accept",
        };
        let source = match content {
            Content::Memory(m) => program::Source::Bytes(m),
            Content::Stored { path, offset, len } => program::Source::File {
                path,
                offset: *offset,
                len: Some(*len),
            },
        };
        let (answer, finished) = match program::ask(prog, &run_env, source).await {
            Ok(a) => a,
            Err(why) => {
                return AfterResult::Failed {
                    rule: rule.name.clone(),
                    why,
                };
            }
        };
        tracing::debug!(queue_id = %env.id, check = "filter", rule = %rule.name, exit = ?finished.exit,
            answer = %finished.first_line, elapsed_ms = finished.elapsed.as_millis() as u64,
            "after_accept filter program answered");
        judgement.program_answered(cfg, i, answer);
        if judgement.is_stopped() {
            break;
        }
    }
    let verdict = judgement.finish_after(cfg, accepted);
    let fired = if verdict.fired.is_empty() {
        "none".to_string()
    } else {
        verdict.fired.join(",")
    };
    tracing::debug!(queue_id = %env.id, check = "filter", rules = %fired,
        score = %format_score(verdict.score), "after_accept filters judged the message");
    AfterResult::Judged(verdict)
}

/// `content` with `headers` added at its top, for re-queueing.
pub(crate) fn with_headers(
    content: &Content,
    headers: &[(String, String)],
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(content.len() as usize + 256);
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    content.write_to(&mut out)?;
    Ok(out)
}

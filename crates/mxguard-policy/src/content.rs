//! Content rules (`[[filter]]`) and the message score (`[scoring]`), judged
//! at the end of DATA.
//!
//! A [`Judgement`] takes the message as the client sent it (header section
//! and body, without our `Received:`) and what the envelope and the
//! connection stage know, runs the rules in file order (stopping where a
//! filter program must be asked, whose answer [`program_verdict`] reads)
//! and ends in a [`ContentVerdict`]: what to do with the message, the
//! headers to add, the score and the rules that fired. [`judge_content`]
//! does it all at once when no program is involved. The message is read as text by
//! `mail-parser`: header values are decoded (RFC 2047 encoded words), and
//! the body is every text part, whatever its transfer encoding
//! (quoted-printable, base64), plus the text of HTML parts without their
//! tags, so that an encoding cannot hide a phrase from a rule.
//!
//! # Security
//! The message is untrusted input. Parsing is best effort and never fails:
//! a message `mail-parser` cannot read at all is matched as raw text.
//! Regular expressions are Rust's (`regex`): linear time, whatever the
//! input. The driver bounds the size of what it hands here.

use std::net::IpAddr;

use mail_parser::{HeaderValue, MessageParser, PartType};
use mxguard_config::{Config, FilterAction, FilterCondition, FilterRule, FilterTarget, FilterTest};
use mxguard_proto::Reply;

use crate::{CheckId, Verdict};

/// Nested `message/rfc822` parts read for the body, at most this deep.
const MAX_NESTING: usize = 3;

/// What is known of the message besides its content.
#[derive(Clone, Debug)]
pub struct MessageFacts<'a> {
    /// The `MAIL FROM` address, `""` for `<>`.
    pub sender: &'a str,
    /// The recipient addresses.
    pub recipients: &'a [String],
    /// The client's address.
    pub client_ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The connection-stage score (DNSBL zones with a score, the PTR score).
    pub connect_score: f64,
    /// What made the connection-stage score (`zone=answer`, `ptr`).
    pub connect_reasons: &'a [String],
}

/// What happens to the message.
#[derive(Clone, Debug, PartialEq)]
pub enum ContentAction {
    /// Queued as it is (with the headers to add).
    Accept,
    /// Refused at the end of DATA: by a rule (`CheckId::Filter`) or by the
    /// score (`CheckId::Scoring`).
    Reject(Verdict),
    /// `250` to the client, delivered nowhere.
    Discard {
        /// The rule that discarded it.
        rule: String,
    },
    /// Queued, every recipient replaced by `address` (plus the headers).
    Redirect {
        /// The (last) rule that redirected it.
        rule: String,
        /// Where it goes instead, lowercased.
        address: String,
    },
}

/// The outcome of the content rules and the score.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentVerdict {
    /// What to do with the message.
    pub action: ContentAction,
    /// Header fields to add at the top of the message, in order (name,
    /// value): those of `header:` actions, then the scoring headers.
    pub add_headers: Vec<(String, String)>,
    /// The message score: the connection-stage score plus the scores of
    /// the rules that fired (those that ran: a reject or discard stops).
    pub score: f64,
    /// The names of the rules that fired, in order.
    pub fired: Vec<String>,
}

impl ContentVerdict {
    /// The rules that fired and the connection-stage reasons, as in
    /// `X-Spam-Status` (`none` when there are none).
    pub fn tests(&self, facts: &MessageFacts<'_>) -> String {
        tests_list(&self.fired, facts.connect_reasons)
    }
}

fn tests_list(fired: &[String], reasons: &[String]) -> String {
    let all: Vec<&str> = fired
        .iter()
        .chain(reasons.iter())
        .map(String::as_str)
        .collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join(",")
    }
}

/// A score as written in headers, replies and logs: at most two decimals,
/// at least one (`5.0`, `2.5`, `10.25`).
pub fn format_score(score: f64) -> String {
    // `+ 0.0` turns -0.0 into 0.0.
    let s = format!("{:.2}", score + 0.0);
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// The message read as text, once, when a rule needs it.
#[derive(Debug)]
struct MessageText {
    /// Header fields of the top-level header section: name, decoded value.
    headers: Vec<(String, String)>,
    /// The body as text (text parts, HTML without tags), parts separated by
    /// a line break.
    body: String,
}

impl MessageText {
    fn parse(message: &[u8]) -> MessageText {
        let parser = MessageParser::new()
            .with_mime_headers()
            .default_header_text();
        let Some(parsed) = parser.parse(message) else {
            // No header section at all: everything is body.
            return MessageText {
                headers: Vec::new(),
                body: String::from_utf8_lossy(message).into_owned(),
            };
        };
        let raw = parsed.raw_message();
        let headers = parsed
            .headers()
            .iter()
            .map(|h| {
                let value = match h.value() {
                    HeaderValue::Text(t) => t.to_string(),
                    HeaderValue::TextList(l) => l.join(", "),
                    HeaderValue::Empty => String::new(),
                    // Content-Type and the like: the value as written, unfolded.
                    _ => {
                        let start = usize::try_from(h.offset_start()).unwrap_or(usize::MAX);
                        let end = usize::try_from(h.offset_end()).unwrap_or(0);
                        raw.get(start..end)
                            .map(|b| unfold(&String::from_utf8_lossy(b)))
                            .unwrap_or_default()
                    }
                };
                (h.name().to_string(), value)
            })
            .collect();
        let mut body = String::new();
        body_text(&parsed, &mut body, 0);
        MessageText { headers, body }
    }

    /// Every value of the header field `name` (case-insensitive).
    fn header<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A header value on one line, spaces around it removed.
fn unfold(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Appends the text of every text and HTML part of `message` to `out`,
/// nested messages included (at most [`MAX_NESTING`] deep).
fn body_text(message: &mail_parser::Message<'_>, out: &mut String, depth: usize) {
    for part in &message.parts {
        match &part.body {
            PartType::Text(text) => push_part(out, text),
            PartType::Html(html) => {
                push_part(out, &mail_parser::decoders::html::html_to_text(html));
            }
            PartType::Message(nested) if depth < MAX_NESTING => {
                body_text(nested, out, depth + 1);
            }
            _ => {}
        }
    }
}

fn push_part(out: &mut String, text: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(text);
}

/// Whether [`judge_content`] has anything to do: a `[[filter]]`, or
/// scoring that can add headers or refuse.
pub fn is_active(cfg: &Config) -> bool {
    !cfg.filters.is_empty() || cfg.scoring.active
}

/// Whether some rule looks at the message itself (headers or body), so
/// that [`judge_content`] needs its bytes; when not, the envelope is
/// enough and `message` may be empty.
pub fn needs_message(cfg: &Config) -> bool {
    cfg.filters.iter().any(|r| {
        matches!(
            r.target(),
            Some(
                FilterTarget::Header(_)
                    | FilterTarget::Subject
                    | FilterTarget::From
                    | FilterTarget::Body
            )
        )
    })
}

/// What an `execute` rule's program answered, read by [`program_verdict`].
#[derive(Clone, Debug, PartialEq)]
pub enum ProgramVerdict {
    /// Exit 0, no output or `ACCEPT`: the rule does not fire.
    Accept,
    /// Exit 1, or `REJECT`: refused, with the program's reply when it gave
    /// a valid one, else the rule's `reply`.
    Reject(Option<Reply>),
    /// Exit 2, or `DISCARD`: 250, delivered nowhere.
    Discard,
    /// `SCORE n`: the rule fires and adds `n` (besides its own score).
    Score(f64),
    /// `HEADER Name: value`: the rule fires and adds this header.
    Header(String, String),
}

/// The longest header line a program may have added (name included).
const MAX_PROGRAM_HEADER: usize = 998;

/// Reads a filter program's answer: its exit code (`None`: killed by a
/// signal) and the first line of its standard output. `Err` says why the
/// answer is not one (the driver then answers 451 4.3.0).
///
/// The contract (docs/configuration.md, "Filter programs"):
/// - exit 0: the first line decides: empty or `ACCEPT`, `REJECT [reply]`,
///   `DISCARD`, `SCORE n`, `HEADER Name: value` (keywords without case);
/// - exit 1: reject (the first line may be the reply, `550 5.7.1 text`);
/// - exit 2: discard;
/// - anything else (75 = EX_TEMPFAIL included, a signal): a failure.
pub fn program_verdict(exit: Option<i32>, first_line: &str) -> Result<ProgramVerdict, String> {
    let line = first_line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match exit {
        Some(0) => match word.to_ascii_uppercase().as_str() {
            "" | "ACCEPT" => Ok(ProgramVerdict::Accept),
            "REJECT" => Ok(ProgramVerdict::Reject(refusal(rest))),
            "DISCARD" => Ok(ProgramVerdict::Discard),
            "SCORE" => rest
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && n.abs() < 1e6)
                .map(ProgramVerdict::Score)
                .ok_or_else(|| format!("SCORE needs a number, got {:?}", shorten(rest))),
            "HEADER" => {
                let (name, value) = rest.split_once(':').ok_or_else(|| {
                    format!("HEADER needs \"Name: value\", got {:?}", shorten(rest))
                })?;
                let (name, value) = (name.trim(), value.trim());
                let name_ok =
                    !name.is_empty() && name.chars().all(|c| ('!'..='~').contains(&c) && c != ':');
                let value_ok = value.chars().all(|c| (' '..='~').contains(&c));
                if !name_ok || !value_ok || name.len() + value.len() + 2 > MAX_PROGRAM_HEADER {
                    return Err(format!(
                        "HEADER needs a field name and a printable ASCII value, got {:?}",
                        shorten(rest)
                    ));
                }
                Ok(ProgramVerdict::Header(name.to_string(), value.to_string()))
            }
            _ => Err(format!(
                "exit code 0 with an answer that is none of ACCEPT, REJECT, DISCARD, SCORE, HEADER: {:?}",
                shorten(line)
            )),
        },
        Some(1) => Ok(ProgramVerdict::Reject(refusal(line))),
        Some(2) => Ok(ProgramVerdict::Discard),
        Some(75) => Err("exit code 75 (the program asks to try later)".into()),
        Some(n) => Err(format!("exit code {n}")),
        None => Err("killed by a signal".into()),
    }
}

/// A program's reply, if it is a refusal (4xx or 5xx) that parses.
fn refusal(text: &str) -> Option<Reply> {
    Reply::parse(text)
        .ok()
        .filter(|r| r.is_transient() || r.is_permanent())
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A judgement in progress: the rules run in file order, and where an
/// `execute` rule comes the driver runs the program (IO) and hands its
/// answer back. Nothing here does IO.
///
/// ```text
/// let mut j = Judgement::start(cfg, message, facts);
/// while let Some(i) = j.next_program(cfg, facts) {
///     let answer = /* run cfg.filters[i]'s program */;
///     j.program_answered(cfg, i, answer);
/// }
/// // optionally: j.add_external(score, reasons) (rspamd)
/// let verdict = j.finish(cfg, facts);
/// ```
#[derive(Debug)]
pub struct Judgement {
    text: Option<MessageText>,
    /// The next rule to look at.
    next: usize,
    score: f64,
    fired: Vec<String>,
    add_headers: Vec<(String, String)>,
    redirect: Option<(String, String)>,
    /// Reasons from outside the rules (rspamd's symbols).
    external: Vec<String>,
    /// A reject or discard: the end.
    stopped: Option<ContentAction>,
}

impl Judgement {
    /// Starts judging `message` (the client's content, without our trace
    /// header): it is parsed here when a rule needs it.
    pub fn start(cfg: &Config, message: &[u8], facts: &MessageFacts<'_>) -> Judgement {
        Judgement {
            text: needs_message(cfg).then(|| MessageText::parse(message)),
            next: 0,
            score: facts.connect_score,
            fired: Vec::new(),
            add_headers: Vec::new(),
            redirect: None,
            external: Vec::new(),
            stopped: None,
        }
    }

    /// Runs the pattern rules from where it stands, up to the next
    /// `execute` rule that runs before the 250: its index in
    /// `cfg.filters`, or `None` when the rules are done (or a rule stopped
    /// them). Rules marked `after_accept` are skipped here.
    pub fn next_program(&mut self, cfg: &Config, facts: &MessageFacts<'_>) -> Option<usize> {
        while self.stopped.is_none() {
            let i = self.next;
            let rule = cfg.filters.get(i)?;
            self.next += 1;
            match &rule.test {
                FilterTest::Execute(_) if rule.after_accept => {}
                FilterTest::Execute(_) => return Some(i),
                FilterTest::Match { target, condition } => {
                    if fires(target, condition, self.text.as_ref(), facts) {
                        self.fire(rule, &rule.action, describe_target(target));
                    }
                }
            }
        }
        None
    }

    /// Whether a rule refused or discarded the message (nothing more to
    /// ask anyone).
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// The score so far.
    pub fn score(&self) -> f64 {
        self.score
    }

    /// Applies the answer of rule `index`'s program.
    pub fn program_answered(&mut self, cfg: &Config, index: usize, answer: ProgramVerdict) {
        let Some(rule) = cfg.filters.get(index) else {
            return;
        };
        let action = match answer {
            ProgramVerdict::Accept => return,
            ProgramVerdict::Reject(reply) => match (reply, &rule.action) {
                (Some(reply), _) => FilterAction::Reject(reply),
                (None, action) => action.clone(),
            },
            ProgramVerdict::Discard => FilterAction::Discard,
            ProgramVerdict::Score(n) => {
                self.score += n;
                FilterAction::Accept
            }
            ProgramVerdict::Header(name, value) => FilterAction::AddHeader { name, value },
        };
        self.fire(rule, &action, "program".to_string());
    }

    /// Adds a score from outside the rules (rspamd) and what made it.
    pub fn add_external(&mut self, score: f64, reasons: impl IntoIterator<Item = String>) {
        if self.stopped.is_none() {
            self.score += score;
            self.external.extend(reasons);
        }
    }

    fn fire(&mut self, rule: &FilterRule, action: &FilterAction, what: String) {
        self.score += rule.score;
        self.fired.push(rule.name.clone());
        match action {
            FilterAction::Accept => {}
            FilterAction::Reject(reply) => {
                let reason = format!(
                    "filter {} fired ({what}); score {}",
                    rule.name,
                    format_score(self.score)
                );
                self.stopped = Some(ContentAction::Reject(Verdict {
                    reply: reply.clone(),
                    check: CheckId::Filter,
                    reason,
                }));
            }
            FilterAction::Discard => {
                self.stopped = Some(ContentAction::Discard {
                    rule: rule.name.clone(),
                });
            }
            FilterAction::Redirect(address) => {
                self.redirect = Some((rule.name.clone(), address.clone()));
            }
            FilterAction::AddHeader { name, value } => {
                self.add_headers.push((name.clone(), value.clone()));
            }
        }
    }

    /// The verdict: a rule's refusal or discard, or `[scoring]` applied to
    /// the total.
    pub fn finish(self, cfg: &Config, facts: &MessageFacts<'_>) -> ContentVerdict {
        let Judgement {
            score,
            fired,
            mut add_headers,
            redirect,
            external,
            stopped,
            ..
        } = self;
        if let Some(action) = stopped {
            return ContentVerdict {
                action,
                add_headers: Vec::new(),
                score,
                fired,
            };
        }
        let reasons: Vec<String> = facts
            .connect_reasons
            .iter()
            .cloned()
            .chain(external)
            .collect();
        let scoring = &cfg.scoring;
        let tests = tests_list(&fired, &reasons);
        if scoring.active && score > scoring.reject_above {
            let shown = format_score(score);
            return ContentVerdict {
                action: ContentAction::Reject(Verdict::refuse(
                    550,
                    (5, 7, 1),
                    &format!("Message rejected as spam (score {shown})"),
                    CheckId::Scoring,
                    format!(
                        "score {shown} above scoring.reject_above {}: tests={tests}",
                        format_score(scoring.reject_above)
                    ),
                )),
                add_headers: Vec::new(),
                score,
                fired,
            };
        }
        let spam = scoring.active && score > scoring.tag_above;
        if spam {
            add_headers.push(("X-Spam-Flag".into(), "YES".into()));
        }
        if scoring.active && scoring.headers {
            add_headers.push(("X-Spam-Score".into(), format_score(score)));
            add_headers.push((
                "X-Spam-Status".into(),
                format!(
                    "{}, score={} tag={} reject={} tests={tests}",
                    if spam { "Yes" } else { "No" },
                    format_score(score),
                    format_score(scoring.tag_above),
                    format_score(scoring.reject_above),
                ),
            ));
        }
        let action = match redirect {
            Some((rule, address)) => ContentAction::Redirect { rule, address },
            None => ContentAction::Accept,
        };
        ContentVerdict {
            action,
            add_headers,
            score,
            fired,
        }
    }
}

/// Runs the `[[filter]]` rules of `cfg` on `message` (the client's content,
/// without our trace header) and `facts`, then `[scoring]`. A program
/// (`execute`) is taken to accept: the server drives a [`Judgement`]
/// instead, which runs them.
pub fn judge_content(cfg: &Config, message: &[u8], facts: &MessageFacts<'_>) -> ContentVerdict {
    let mut judgement = Judgement::start(cfg, message, facts);
    while let Some(i) = judgement.next_program(cfg, facts) {
        judgement.program_answered(cfg, i, ProgramVerdict::Accept);
    }
    judgement.finish(cfg, facts)
}

/// What happens to a message after the 250, once its `after_accept`
/// programs have answered.
#[derive(Clone, Debug, PartialEq)]
pub struct AfterVerdict {
    /// Deliver (with `add_headers`), refuse (a bounce to the sender) or
    /// discard; never a redirect (that is decided before the 250).
    pub action: ContentAction,
    /// Header fields to add before delivery.
    pub add_headers: Vec<(String, String)>,
    /// The score at acceptance plus the programs' scores.
    pub score: f64,
    /// The `after_accept` rules that fired.
    pub fired: Vec<String>,
}

/// The `after_accept` rules of `cfg`, in file order.
pub fn after_accept_rules(cfg: &Config) -> impl Iterator<Item = (usize, &FilterRule)> {
    cfg.filters
        .iter()
        .enumerate()
        .filter(|(_, r)| r.after_accept && r.program().is_some())
}

impl Judgement {
    /// Starts judging a message after its 250, accepted with
    /// `accepted_score`: only [`Judgement::program_answered`] (for the
    /// `after_accept` rules, in file order) and [`Judgement::finish_after`]
    /// apply.
    pub fn after_accept(accepted_score: f64) -> Judgement {
        Judgement {
            text: None,
            next: usize::MAX,
            score: accepted_score,
            fired: Vec::new(),
            add_headers: Vec::new(),
            redirect: None,
            external: Vec::new(),
            stopped: None,
        }
    }

    /// The verdict after the 250. The score can still refuse the message
    /// (then it is bounced) or tag it, when it crosses `[scoring]`'s
    /// thresholds now; the scoring headers of the acceptance stay.
    pub fn finish_after(self, cfg: &Config, accepted_score: f64) -> AfterVerdict {
        let facts = MessageFacts {
            sender: "",
            recipients: &[],
            client_ip: IpAddr::from([0, 0, 0, 0]),
            helo: "",
            connect_score: accepted_score,
            connect_reasons: &[],
        };
        let scoring = &cfg.scoring;
        let tagged_before = scoring.active && accepted_score > scoring.tag_above;
        let verdict = self.finish(cfg, &facts);
        let action = match verdict.action {
            ContentAction::Redirect { .. } => ContentAction::Accept,
            a => a,
        };
        // Only a newly earned flag and the programs' own headers are added.
        let add_headers = verdict
            .add_headers
            .into_iter()
            .filter(|(n, _)| n != "X-Spam-Score" && n != "X-Spam-Status")
            .filter(|(n, _)| !(tagged_before && n == "X-Spam-Flag"))
            .collect();
        AfterVerdict {
            action,
            add_headers,
            score: verdict.score,
            fired: verdict.fired,
        }
    }
}

/// What a rule looks at, for the log.
fn describe_target(target: &FilterTarget) -> String {
    match target {
        FilterTarget::Header(name) => format!("header {name}"),
        other => FilterTarget::ON_VALUES
            .iter()
            .find(|(_, t)| t == other)
            .map_or_else(String::new, |(n, _)| (*n).to_string()),
    }
}

/// Whether a pattern rule fires on this message.
fn fires(
    target: &FilterTarget,
    condition: &FilterCondition,
    text: Option<&MessageText>,
    facts: &MessageFacts<'_>,
) -> bool {
    let ip = facts.client_ip.to_string();
    let values: Vec<&str> = match target {
        FilterTarget::Header(name) => text.map(|t| t.header(name).collect()).unwrap_or_default(),
        FilterTarget::Subject => text
            .map(|t| t.header("Subject").collect())
            .unwrap_or_default(),
        FilterTarget::From => text.map(|t| t.header("From").collect()).unwrap_or_default(),
        FilterTarget::Body => text
            .map(|t| {
                if t.body.trim().is_empty() {
                    Vec::new()
                } else {
                    vec![t.body.as_str()]
                }
            })
            .unwrap_or_default(),
        FilterTarget::EnvelopeFrom => vec![facts.sender],
        FilterTarget::EnvelopeTo => facts.recipients.iter().map(String::as_str).collect(),
        FilterTarget::ClientIp => vec![ip.as_str()],
        FilterTarget::Helo => vec![facts.helo],
    };
    match condition {
        FilterCondition::Matches(re) => match target {
            // The body is matched even when empty (a rule for an empty body).
            FilterTarget::Body => re.is_match(text.map_or("", |t| t.body.as_str())),
            _ => values.iter().any(|v| re.is_match(v)),
        },
        FilterCondition::Missing => match target {
            FilterTarget::EnvelopeFrom | FilterTarget::Helo => {
                values.iter().all(|v| v.trim().is_empty())
            }
            _ => values.is_empty(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
[[account]]
address = "joe@example.test"
[[account]]
address = "ann@example.test"
"#;

    fn config(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}"), Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `[[filter]]` with `body` as its key/value lines, and `extra` after.
    fn rule(name: &str, body: &str) -> String {
        format!("[[filter]]\nname = \"{name}\"\n{body}\n")
    }

    const RCPTS: &[String] = &[];

    fn facts<'a>(recipients: &'a [String], reasons: &'a [String]) -> MessageFacts<'a> {
        MessageFacts {
            sender: "bob@sender.test",
            recipients,
            client_ip: "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            helo: "client.sender.test",
            connect_score: 0.0,
            connect_reasons: reasons,
        }
    }

    fn judge(extra: &str, message: &str) -> ContentVerdict {
        let rcpts = vec!["joe@example.test".to_string()];
        judge_content(&config(extra), message.as_bytes(), &facts(&rcpts, RCPTS))
    }

    fn fired(extra: &str, message: &str) -> Vec<String> {
        judge(extra, message).fired
    }

    const PLAIN: &str = "From: Bob <bob@sender.test>\r\nTo: joe@example.test\r\nSubject: Hello\r\n\r\nJust a note.\r\n";

    #[test]
    fn header_rules_see_every_occurrence_decoded() {
        let msg = "From: bob@sender.test\r\nX-Tag: one\r\nX-Tag: two\r\nSubject: =?UTF-8?B?R2V0IHJpY2ggcXVpY2s=?=\r\n\r\nbody\r\n";
        assert_eq!(
            fired(&rule("TWO", "header = \"x-tag\"\nmatches = '^two$'"), msg),
            ["TWO"]
        );
        assert!(fired(&rule("THREE", "header = \"X-Tag\"\nmatches = 'three'"), msg).is_empty());
        // RFC 2047 in Subject, by `on` and by `header`.
        assert_eq!(
            fired(
                &rule("RICH", "on = \"subject\"\nmatches = 'rich quick'"),
                msg
            ),
            ["RICH"]
        );
        assert_eq!(
            fired(
                &rule("RICH", "header = \"Subject\"\nmatches = '^Get rich'"),
                msg
            ),
            ["RICH"]
        );
        // Quoted-printable encoded words, and case-insensitive regexes.
        let qp = "Subject: =?ISO-8859-1?Q?Cr=E9dit_gratuit?=\r\n\r\nx\r\n";
        assert_eq!(
            fired(
                &rule("CREDIT", "on = \"subject\"\nmatches = '(?i)crédit GRATUIT'"),
                qp
            ),
            ["CREDIT"]
        );
        assert!(fired(&rule("CASE", "on = \"subject\"\nmatches = 'CRÉDIT'"), qp).is_empty());
    }

    #[test]
    fn from_is_decoded() {
        let msg = "From: =?UTF-8?Q?Pay=C2=A0Pal?= <x@phish.test>\r\n\r\nx\r\n";
        assert_eq!(
            fired(
                &rule("FAKE", "on = \"from\"\nmatches = 'Pay.Pal.*phish\\.test'"),
                msg
            ),
            ["FAKE"]
        );
    }

    #[test]
    fn missing_headers() {
        let no_to = "From: a@b.test\r\nSubject: x\r\n\r\nbody\r\n";
        let empty_to = "From: a@b.test\r\nTo: \r\nSubject: x\r\n\r\nbody\r\n";
        let missing = rule("NO_TO", "header = \"To\"\nmissing = true");
        let empty = rule("EMPTY_TO", "header = \"To\"\nmatches = '^\\s*$'");
        assert_eq!(fired(&missing, no_to), ["NO_TO"]);
        assert!(fired(&missing, empty_to).is_empty());
        assert!(fired(&missing, PLAIN).is_empty());
        assert_eq!(fired(&empty, empty_to), ["EMPTY_TO"]);
        assert!(fired(&empty, no_to).is_empty());
        assert!(fired(&empty, PLAIN).is_empty());
        let no_subject = rule("NO_SUBJECT", "on = \"subject\"\nmissing = true");
        assert_eq!(
            fired(&no_subject, no_to.replace("Subject: x\r\n", "").as_str()),
            ["NO_SUBJECT"]
        );
        assert!(fired(&no_subject, PLAIN).is_empty());
        let no_from = rule("NO_FROM", "on = \"from\"\nmissing = true");
        assert_eq!(fired(&no_from, "Subject: x\r\n\r\nbody\r\n"), ["NO_FROM"]);
        let no_body = rule("NO_BODY", "on = \"body\"\nmissing = true");
        assert_eq!(fired(&no_body, "Subject: x\r\n\r\n  \r\n"), ["NO_BODY"]);
        assert!(fired(&no_body, PLAIN).is_empty());
    }

    #[test]
    fn base64_and_quoted_printable_bodies_are_decoded() {
        // "Buy cheap pills now" in base64.
        let b64 = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nQnV5IGNoZWFwIHBpbGxzIG5vdw==\r\n";
        let r = rule("PILLS", "on = \"body\"\nmatches = 'cheap pills'");
        assert_eq!(fired(&r, b64), ["PILLS"]);
        // The raw text does not contain the phrase.
        assert!(!b64.contains("cheap pills"));
        let qp = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nBuy ch=\r\neap=20pills now\r\n";
        assert_eq!(fired(&r, qp), ["PILLS"]);
        // A multipart message: the phrase in the second part, in base64.
        let multi = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHello\r\n--b1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nQnV5IGNoZWFwIHBpbGxzIG5vdw==\r\n--b1--\r\n";
        assert_eq!(fired(&r, multi), ["PILLS"]);
        // A binary attachment is not body text.
        let attached = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHello\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nQnV5IGNoZWFwIHBpbGxzIG5vdw==\r\n--b1--\r\n";
        assert!(fired(&r, attached).is_empty());
    }

    #[test]
    fn html_bodies_lose_their_tags() {
        let html = "Subject: x\r\nContent-Type: text/html\r\n\r\n<html><body><p>Buy <b>cheap</b> pills</p></body></html>\r\n";
        let r = rule("PILLS", "on = \"body\"\nmatches = 'Buy\\s+cheap\\s+pills'");
        assert_eq!(fired(&r, html), ["PILLS"]);
        let tag = rule("TAG", "on = \"body\"\nmatches = '<b>'");
        assert!(fired(&tag, html).is_empty());
        // HTML in base64, in a multipart/alternative.
        let alt = "Subject: x\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHi\r\n--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPHA+QnV5IDxpPmNoZWFwPC9pPiBwaWxsczwvcD4=\r\n--b--\r\n";
        assert_eq!(fired(&r, alt), ["PILLS"]);
    }

    #[test]
    fn envelope_rules() {
        let rcpts = vec![
            "joe@example.test".to_string(),
            "ann@example.test".to_string(),
        ];
        let no_reasons: Vec<String> = Vec::new();
        let run = |extra: &str, f: &MessageFacts<'_>| {
            judge_content(&config(extra), PLAIN.as_bytes(), f).fired
        };
        let f = facts(&rcpts, &no_reasons);
        assert_eq!(
            run(&rule("ANN", "on = \"envelope_to\"\nmatches = '^ann@'"), &f),
            ["ANN"]
        );
        assert!(run(&rule("BOB", "on = \"envelope_to\"\nmatches = '^bob@'"), &f).is_empty());
        assert_eq!(
            run(
                &rule(
                    "FROM",
                    "on = \"envelope_from\"\nmatches = '@sender\\.test$'"
                ),
                &f
            ),
            ["FROM"]
        );
        assert_eq!(
            run(
                &rule("NET", "on = \"client_ip\"\nmatches = '^192\\.0\\.2\\.'"),
                &f
            ),
            ["NET"]
        );
        assert_eq!(
            run(&rule("HELO", "on = \"helo\"\nmatches = 'sender'"), &f),
            ["HELO"]
        );
        let null = rule("NULL", "on = \"envelope_from\"\nmissing = true");
        assert!(run(&null, &f).is_empty());
        let bounce = MessageFacts {
            sender: "",
            ..f.clone()
        };
        assert_eq!(run(&null, &bounce), ["NULL"]);
        let no_helo = rule("NOHELO", "on = \"helo\"\nmissing = true");
        assert!(run(&no_helo, &f).is_empty());
        assert_eq!(
            run(
                &no_helo,
                &MessageFacts {
                    helo: "",
                    ..f.clone()
                }
            ),
            ["NOHELO"]
        );
    }

    #[test]
    fn actions() {
        // reject, with the default and a custom reply; later rules do not run.
        let v = judge(
            &format!(
                "{}{}",
                rule(
                    "NOTE",
                    "on = \"body\"\nmatches = 'note'\naction = \"reject\"\nscore = 1"
                ),
                rule("LATER", "on = \"body\"\nmatches = 'note'\nscore = 2")
            ),
            PLAIN,
        );
        let ContentAction::Reject(verdict) = &v.action else {
            panic!("{v:?}")
        };
        assert_eq!(verdict.reply.to_wire(), "550 5.7.1 Message rejected\r\n");
        assert_eq!(verdict.check, CheckId::Filter);
        assert!(verdict.reason.contains("NOTE"), "{}", verdict.reason);
        assert_eq!(v.fired, ["NOTE"]);
        assert_eq!(v.score, 1.0);
        assert!(v.add_headers.is_empty());
        let v = judge(
            &rule(
                "NOTE",
                "on = \"body\"\nmatches = 'note'\naction = \"reject\"\nreply = \"554 5.7.0 No notes\"",
            ),
            PLAIN,
        );
        assert!(
            matches!(&v.action, ContentAction::Reject(r) if r.reply.to_wire() == "554 5.7.0 No notes\r\n")
        );
        // discard
        let v = judge(
            &format!(
                "{}{}",
                rule(
                    "DROP",
                    "on = \"subject\"\nmatches = 'Hello'\naction = \"discard\""
                ),
                rule("LATER", "on = \"body\"\nmatches = 'note'")
            ),
            PLAIN,
        );
        assert_eq!(
            v.action,
            ContentAction::Discard {
                rule: "DROP".into()
            }
        );
        assert_eq!(v.fired, ["DROP"]);
        // redirect: the last one wins; later rules still run.
        let v = judge(
            &format!(
                "{}{}{}",
                rule(
                    "R1",
                    "on = \"subject\"\nmatches = 'Hello'\naction = \"redirect:ann@example.test\""
                ),
                rule(
                    "R2",
                    "on = \"body\"\nmatches = 'note'\naction = \"redirect:Quarantine@Elsewhere.Test\""
                ),
                rule(
                    "H",
                    "on = \"body\"\nmatches = 'note'\naction = \"header:X-Filtered: yes, by H\""
                )
            ),
            PLAIN,
        );
        assert_eq!(
            v.action,
            ContentAction::Redirect {
                rule: "R2".into(),
                address: "quarantine@elsewhere.test".into()
            }
        );
        assert_eq!(v.fired, ["R1", "R2", "H"]);
        assert_eq!(
            v.add_headers[0],
            ("X-Filtered".to_string(), "yes, by H".to_string())
        );
        // accept: only the score counts.
        let v = judge(
            &rule("A", "on = \"body\"\nmatches = 'note'\nscore = -1.5"),
            PLAIN,
        );
        assert_eq!(v.action, ContentAction::Accept);
        assert_eq!(v.score, -1.5);
        assert_eq!(v.fired, ["A"]);
    }

    fn header<'a>(v: &'a ContentVerdict, name: &str) -> Option<&'a str> {
        v.add_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn scoring_headers_and_thresholds() {
        // Nothing in the configuration can score a message: no header.
        let v = judge("", PLAIN);
        assert_eq!(v.action, ContentAction::Accept);
        assert!(v.add_headers.is_empty(), "{v:?}");
        // A [scoring] section, defaults: headers on every message, no flag at 0.
        let v = judge("[scoring]\n", PLAIN);
        assert_eq!(v.action, ContentAction::Accept);
        assert_eq!(header(&v, "X-Spam-Flag"), None);
        assert_eq!(header(&v, "X-Spam-Score"), Some("0.0"));
        assert_eq!(
            header(&v, "X-Spam-Status"),
            Some("No, score=0.0 tag=5.0 reject=10.0 tests=none")
        );
        // Above tag_above: flagged; the connection score counts.
        let rcpts = vec!["joe@example.test".to_string()];
        let reasons = vec!["bl.example.net=127.0.0.2".to_string()];
        let mut f = facts(&rcpts, &reasons);
        f.connect_score = 2.5;
        let cfg = config(&format!(
            "{}{}",
            rule("ONE", "on = \"subject\"\nmatches = 'Hello'\nscore = 2"),
            rule("TWO", "on = \"body\"\nmatches = 'note'\nscore = 0.75")
        ));
        let v = judge_content(&cfg, PLAIN.as_bytes(), &f);
        assert_eq!(v.score, 5.25);
        assert_eq!(header(&v, "X-Spam-Flag"), Some("YES"));
        assert_eq!(header(&v, "X-Spam-Score"), Some("5.25"));
        assert_eq!(
            header(&v, "X-Spam-Status"),
            Some("Yes, score=5.25 tag=5.0 reject=10.0 tests=ONE,TWO,bl.example.net=127.0.0.2")
        );
        // Exactly at tag_above: not above.
        f.connect_score = 2.25;
        let v = judge_content(&cfg, PLAIN.as_bytes(), &f);
        assert_eq!(header(&v, "X-Spam-Flag"), None);
        // Above reject_above: refused, with the score in the reply.
        let cfg = config(&format!(
            "{}[scoring]\ntag_above = 1\nreject_above = 3\nheaders = false\n",
            rule("ONE", "on = \"subject\"\nmatches = 'Hello'\nscore = 2")
        ));
        f.connect_score = 1.5;
        let v = judge_content(&cfg, PLAIN.as_bytes(), &f);
        let ContentAction::Reject(verdict) = &v.action else {
            panic!("{v:?}")
        };
        assert_eq!(
            verdict.reply.to_wire(),
            "550 5.7.1 Message rejected as spam (score 3.5)\r\n"
        );
        assert_eq!(verdict.check, CheckId::Scoring);
        assert!(
            verdict.reason.contains("tests=ONE,bl.example.net"),
            "{}",
            verdict.reason
        );
        // headers = false: only the flag.
        f.connect_score = 0.0;
        let v = judge_content(&cfg, PLAIN.as_bytes(), &f);
        assert_eq!(
            v.add_headers,
            [("X-Spam-Flag".to_string(), "YES".to_string())]
        );
    }

    #[test]
    fn what_needs_the_message() {
        let none = config("");
        assert!(!is_active(&none) && !needs_message(&none));
        let scoring = config("[scoring]\n");
        assert!(is_active(&scoring) && !needs_message(&scoring));
        let envelope = config(&rule("E", "on = \"helo\"\nmissing = true"));
        assert!(is_active(&envelope) && !needs_message(&envelope));
        for target in [
            "header = \"To\"",
            "on = \"subject\"",
            "on = \"from\"",
            "on = \"body\"",
        ] {
            let cfg = config(&rule("M", &format!("{target}\nmissing = true")));
            assert!(needs_message(&cfg), "{target}");
        }
    }

    #[test]
    fn scores_are_formatted_shortly() {
        assert_eq!(format_score(0.0), "0.0");
        assert_eq!(format_score(-0.0), "0.0");
        assert_eq!(format_score(5.0), "5.0");
        assert_eq!(format_score(2.5), "2.5");
        assert_eq!(format_score(10.25), "10.25");
        assert_eq!(format_score(1.0 / 3.0), "0.33");
        assert_eq!(format_score(-1.5), "-1.5");
    }

    #[test]
    fn broken_messages_never_panic() {
        let r = format!(
            "{}{}{}",
            rule("B", "on = \"body\"\nmatches = 'x'"),
            rule("S", "on = \"subject\"\nmissing = true"),
            rule("H", "header = \"Content-Type\"\nmatches = 'multipart'")
        );
        let cfg = config(&r);
        let rcpts = vec!["joe@example.test".to_string()];
        let f = facts(&rcpts, RCPTS);
        let samples: &[&[u8]] = &[
            b"",
            b"\r\n",
            b"no header at all x",
            b"Subject: =?UTF-8?B?####?=\r\n\r\nx",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\nx",
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!===\xff\xfe",
            b"Content-Type: text/html\r\n\r\n<<<<>>>&#99999999;&amp<script>x",
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: deep\r\n\r\nx",
            b"\xff\xfe\x00Subject\x00: \xff\r\n\r\n\xff",
        ];
        for m in samples {
            let _ = judge_content(&cfg, m, &f);
        }
        let v = judge_content(
            &cfg,
            b"Content-Type: multipart/alternative;\r\n boundary=b\r\n\r\n--b\r\n\r\ny\r\n--b--\r\n",
            &f,
        );
        assert!(v.fired.contains(&"H".to_string()), "{v:?}");
    }

    #[test]
    fn program_answers() {
        let ok = |exit, line: &str| program_verdict(exit, line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok(Some(0), ""), ProgramVerdict::Accept);
        assert_eq!(ok(Some(0), "  accept  "), ProgramVerdict::Accept);
        assert_eq!(ok(Some(0), "DISCARD"), ProgramVerdict::Discard);
        assert_eq!(ok(Some(2), "whatever"), ProgramVerdict::Discard);
        assert_eq!(ok(Some(0), "SCORE 4.5"), ProgramVerdict::Score(4.5));
        assert_eq!(ok(Some(0), "score -2"), ProgramVerdict::Score(-2.0));
        assert_eq!(
            ok(Some(0), "HEADER X-Checked: clean, v1"),
            ProgramVerdict::Header("X-Checked".into(), "clean, v1".into())
        );
        assert_eq!(ok(Some(0), "REJECT"), ProgramVerdict::Reject(None));
        let ProgramVerdict::Reject(Some(r)) = ok(Some(0), "REJECT 554 5.7.1 Virus found: Eicar")
        else {
            panic!()
        };
        assert_eq!(r.to_wire(), "554 5.7.1 Virus found: Eicar\r\n");
        let ProgramVerdict::Reject(Some(r)) = ok(Some(1), "451 4.7.1 later please") else {
            panic!()
        };
        assert_eq!(r.code(), 451);
        // Exit 1 with anything else: the rule's own reply.
        assert_eq!(ok(Some(1), "bad stuff"), ProgramVerdict::Reject(None));
        // A 2xx is no refusal.
        assert_eq!(ok(Some(1), "250 2.0.0 fine"), ProgramVerdict::Reject(None));
        for (exit, line, why) in [
            (Some(0), "MAYBE", "none of ACCEPT"),
            (Some(0), "SCORE lots", "SCORE needs a number"),
            (Some(0), "SCORE NaN", "SCORE needs a number"),
            (Some(0), "SCORE inf", "SCORE needs a number"),
            (Some(0), "HEADER nocolon", "HEADER needs"),
            (Some(0), "HEADER X Bad: v", "field name"),
            (Some(0), "HEADER X-T: caf\u{e9}", "printable ASCII"),
            (Some(75), "", "try later"),
            (Some(3), "", "exit code 3"),
            (Some(127), "", "exit code 127"),
            (None, "", "signal"),
        ] {
            let e = program_verdict(exit, line).err().unwrap_or_default();
            assert!(e.contains(why), "{exit:?} {line:?}: {e}");
        }
    }

    const PROGRAMS: &str = r#"
[[filter]]
name = "FIRST"
on = "body"
matches = 'note'
score = 1
[[filter]]
name = "PROG"
execute = ["/bin/true"]
score = 0.5
reply = "550 5.7.1 Refused by PROG"
[[filter]]
name = "LATER"
execute = ["/bin/true"]
after_accept = true
score = 2
[[filter]]
name = "LAST"
on = "subject"
matches = 'Hello'
score = 1
"#;

    #[test]
    fn programs_run_in_file_order() {
        let cfg = config(PROGRAMS);
        let rcpts = vec!["joe@example.test".to_string()];
        let f = facts(&rcpts, RCPTS);
        let run = |answer: ProgramVerdict| {
            let mut j = Judgement::start(&cfg, PLAIN.as_bytes(), &f);
            // FIRST runs before the program is asked for.
            assert_eq!(j.next_program(&cfg, &f), Some(1));
            assert_eq!(j.score(), 1.0);
            j.program_answered(&cfg, 1, answer);
            // LATER (after_accept) is not asked for here.
            assert_eq!(j.next_program(&cfg, &f), None);
            j.finish(&cfg, &f)
        };
        let v = run(ProgramVerdict::Accept);
        assert_eq!(v.fired, ["FIRST", "LAST"]);
        assert_eq!(v.score, 2.0);
        assert_eq!(v.action, ContentAction::Accept);
        let v = run(ProgramVerdict::Score(3.0));
        assert_eq!(v.fired, ["FIRST", "PROG", "LAST"]);
        assert_eq!(v.score, 5.5);
        let v = run(ProgramVerdict::Header("X-Prog".into(), "seen".into()));
        assert_eq!(v.add_headers[0], ("X-Prog".into(), "seen".into()));
        // A refusal stops: LAST does not run.
        let v = run(ProgramVerdict::Reject(None));
        assert_eq!(v.fired, ["FIRST", "PROG"]);
        let ContentAction::Reject(r) = &v.action else {
            panic!("{v:?}")
        };
        assert_eq!(r.reply.to_wire(), "550 5.7.1 Refused by PROG\r\n");
        assert!(
            r.reason.contains("filter PROG fired (program)"),
            "{}",
            r.reason
        );
        let v = run(ProgramVerdict::Reject(Reply::parse("554 5.7.0 Virus").ok()));
        assert!(matches!(&v.action, ContentAction::Reject(r) if r.reply.code() == 554));
        let v = run(ProgramVerdict::Discard);
        assert_eq!(
            v.action,
            ContentAction::Discard {
                rule: "PROG".into()
            }
        );
        // rspamd's score joins before the thresholds, its symbols the tests.
        let mut j = Judgement::start(&cfg, PLAIN.as_bytes(), &f);
        while let Some(i) = j.next_program(&cfg, &f) {
            j.program_answered(&cfg, i, ProgramVerdict::Accept);
        }
        j.add_external(9.5, ["rspamd:GTUBE".to_string()]);
        let v = j.finish(&cfg, &f);
        assert!(
            matches!(&v.action, ContentAction::Reject(r) if r.check == CheckId::Scoring && r.reason.contains("rspamd:GTUBE")),
            "{v:?}"
        );
    }

    /// Judges the answers of the `after_accept` programs, `answers` in file
    /// order (a refusal or discard ends the list), for a message accepted with
    /// `accepted_score`.
    fn judge_after(
        cfg: &Config,
        accepted_score: f64,
        answers: &[(usize, ProgramVerdict)],
    ) -> AfterVerdict {
        let mut j = Judgement::after_accept(accepted_score);
        for (i, answer) in answers {
            if j.is_stopped() {
                break;
            }
            j.program_answered(cfg, *i, answer.clone());
        }
        j.finish_after(cfg, accepted_score)
    }

    #[test]
    fn after_accept_answers() {
        let cfg = config(&format!(
            "{PROGRAMS}[scoring]\ntag_above = 3\nreject_above = 6\n"
        ));
        let later = after_accept_rules(&cfg).map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(later, [2]);
        // Nothing to say: delivered as it is.
        let v = judge_after(&cfg, 1.0, &[(2, ProgramVerdict::Accept)]);
        assert_eq!(v.action, ContentAction::Accept);
        assert!(v.add_headers.is_empty(), "{v:?}");
        // Its score crosses tag_above: flagged now (the rule's 2 + 0.5).
        let v = judge_after(&cfg, 1.0, &[(2, ProgramVerdict::Score(0.5))]);
        assert_eq!(
            v.add_headers,
            [("X-Spam-Flag".to_string(), "YES".to_string())]
        );
        assert_eq!(v.score, 3.5);
        // Already flagged at acceptance: no second flag.
        let v = judge_after(
            &cfg,
            4.0,
            &[(2, ProgramVerdict::Header("X-A".into(), "b".into()))],
        );
        assert_eq!(v.add_headers, [("X-A".to_string(), "b".to_string())]);
        // Past reject_above: refused (a bounce).
        let v = judge_after(&cfg, 4.0, &[(2, ProgramVerdict::Score(1.0))]);
        assert!(matches!(&v.action, ContentAction::Reject(r) if r.check == CheckId::Scoring));
        // The program refuses: the rule's reply (the default one).
        let v = judge_after(&cfg, 0.0, &[(2, ProgramVerdict::Reject(None))]);
        assert!(
            matches!(&v.action, ContentAction::Reject(r) if r.reply.to_wire() == "550 5.7.1 Message rejected\r\n" && r.check == CheckId::Filter),
            "{v:?}"
        );
    }
}

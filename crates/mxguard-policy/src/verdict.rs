//! The outcome of a policy check.

use mxguard_proto::Reply;

/// Names a check in logs and counters; stable across versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckId {
    /// A local recipient that does not exist.
    UnknownUser,
    /// A recipient outside our domains, with no right to relay.
    Relay,
}

impl CheckId {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::UnknownUser => "unknown_user",
            CheckId::Relay => "relay",
        }
    }
}

/// A refusal: what the client is told, which check decided, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reply: Reply,
    pub check: CheckId,
    /// For the log: may name the rule or address that decided.
    pub reason: String,
}

impl Verdict {
    pub(crate) fn refuse(
        code: u16,
        enhanced: (u8, u16, u16),
        text: &str,
        check: CheckId,
        reason: String,
    ) -> Verdict {
        Verdict {
            reply: Reply::fixed(code, enhanced.0, enhanced.1, enhanced.2, text),
            check,
            reason,
        }
    }
}

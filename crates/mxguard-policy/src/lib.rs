//! mxguard's policy: pure decisions from configuration and gathered facts.
//!
//! Each check returns a [`Verdict`]: accept, or refuse with a [`Reply`](mxguard_proto::Reply)
//! for the client, a stable [`CheckId`] naming the check, and a reason for
//! the log that may say more than the client is told. Checks do no IO;
//! the server gathers facts (DNS answers, counters) and applies verdicts.
//!
//! - [`connect`]: who may connect and say HELO (lists, bans, limits,
//!   DNSBL, reverse DNS, early talkers, HELO names, too many errors).
//! - [`content`]: the content rules (`[[filter]]`) and the message score
//!   (`[scoring]`), at the end of DATA.
//! - [`recipient`]: where an RCPT TO address goes (a local mailbox) or why
//!   it is refused (unknown user, relay denied).

pub mod connect;
pub mod content;
pub mod limits;
pub mod pattern;
pub mod recipient;
pub mod router;
pub mod sender;
mod verdict;

#[cfg(test)]
mod rules_tests;

pub use verdict::{CheckId, Verdict};

//! mxguard's policy: pure decisions from configuration and gathered facts.
//!
//! Each check returns a [`Verdict`]: accept, or refuse with a [`Reply`]
//! for the client, a stable [`CheckId`] naming the check, and a reason for
//! the log that may say more than the client is told. Checks do no IO;
//! the server gathers facts (DNS answers, counters) and applies verdicts.
//!
//! - [`recipient`]: where an RCPT TO address goes (a local mailbox) or why
//!   it is refused (unknown user, relay denied).

pub mod recipient;
mod verdict;

pub use verdict::{CheckId, Verdict};

//! mxguard's protocol core: SMTP sessions, commands, addresses and replies,
//! with no IO and no clock.
//!
//! - [`reply::Reply`]: a reply code, an RFC 3463 enhanced code and text,
//!   validated in one constructor.
//! - [`address`]: RFC 5321 paths and mailboxes, with source routes kept.
//! - [`command`]: one command line into a [`command::Command`].
//! - [`client`]: the sans-IO parts of the outbound client: a reply parser,
//!   EHLO extensions and the DATA body encoder.
//! - [`smtp::Session`]: the server side state machine. Bytes in, replies
//!   and events out; the tokio driver in the `mxguard` binary feeds it.
//!
//! Nothing in this crate opens a socket, reads a file or looks at the time:
//! tests drive it directly, and fuzzing it needs no setup.

pub mod address;
pub mod client;
pub mod command;
pub mod pop3;
pub mod reply;
pub mod smtp;

pub use address::{Mailbox, Path};
pub use reply::{EnhancedCode, Reply, ReplyError};

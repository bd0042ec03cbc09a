//! mxguard: an SMTP server that keeps spam out and spammers from using it.
//!
//! This crate is the IO edge of mxguard: the tokio server that feeds the
//! protocol sessions of `mxguard-proto`, applies the verdicts of
//! `mxguard-policy`, commits mail to `mxguard-queue` and delivers it. The
//! `mxguard` binary's subcommands live in [`cli`].

pub mod auth;
pub mod cli;
pub mod delivery;
pub mod facts;
pub mod program;
pub mod server;

pub use server::Server;

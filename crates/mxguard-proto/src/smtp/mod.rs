//! The SMTP server session: a state machine that does no IO.
//!
//! The driver feeds bytes with [`Session::handle_input`] (and end of
//! stream, timeouts, shutdown) and drains [`Output`]s with
//! [`Session::poll_output`]: replies to write, events to act on, and the
//! order to close. Events that need a decision (HELO, MAIL, RCPT, VRFY,
//! EXPN, end of message) stop the session until the driver calls
//! [`Session::respond`], so policy checks may take their time (DNS, store,
//! tarpit delays) while later pipelined commands wait in the buffer.
//!
//! # Security
//! Everything here is untrusted client input. Command lines are limited to
//! 512 octets and text lines to 1000 (RFC 5321 §4.5.3.1); bare CR or LF,
//! NUL bytes and invalid UTF-8 in commands get a 500 reply; DATA ends only
//! at CRLF.CRLF and a message with bare CR or LF is refused whole, which
//! closes the SMTP smuggling hole; a message over the size limit is read to
//! its end and then refused (552), so the session stays usable. Memory per
//! session is bounded by the line limits whatever the client sends.

mod data;
mod session;

pub use session::{Decision, Event, Output, Session, SessionConfig, TimeoutKind, VrfyPolicy};

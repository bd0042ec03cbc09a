//! The SMTP server session: a state machine that does no IO.
//!
//! The driver feeds bytes with [`Session::handle_input`] (and end of
//! stream, timeouts, shutdown) and drains [`Output`]s with
//! [`Session::poll_output`]: replies to write, events to act on, and the
//! order to close. Events that need a decision (HELO, MAIL, RCPT, VRFY,
//! EXPN, AUTH, end of message) stop the session until the driver calls
//! [`Session::respond`], so policy checks may take their time (DNS, store,
//! tarpit delays) while later pipelined commands wait in the buffer.
//!
//! STARTTLS (RFC 3207) is answered with 220 and [`Event::StartTls`]; the
//! driver runs the handshake and calls [`Session::tls_started`], which
//! puts the session back to where it was right after the greeting. AUTH
//! PLAIN and LOGIN (RFC 4954, RFC 4616) are decoded here; the driver gets
//! [`Event::Auth`] with the login and password and decides.
//!
//! # Security
//! Everything here is untrusted client input. Command lines are limited to
//! 512 octets and text lines to 1000 (RFC 5321 §4.5.3.1); bare CR or LF,
//! NUL bytes and invalid UTF-8 in commands get a 500 reply; DATA ends only
//! at CRLF.CRLF and a message with bare CR or LF is refused whole, which
//! closes the SMTP smuggling hole; a message over the size limit is read to
//! its end and then refused (552), so the session stays usable. Memory per
//! session is bounded by the line limits whatever the client sends.
//! Anything the client pipelined after STARTTLS is discarded unread, so no
//! plaintext command can be injected into the TLS session (RFC 3207 §4.2,
//! CVE-2011-0411). AUTH lines may be up to 12288 octets (RFC 4954 §4); a
//! malformed response is refused without reaching the driver, a refused
//! login counts toward the error limit, and passwords never appear in
//! `Debug` output.

mod data;
mod session;

pub use session::{
    AuthMechanism, Decision, Event, Output, Password, Session, SessionConfig, TimeoutKind,
    VrfyPolicy,
};

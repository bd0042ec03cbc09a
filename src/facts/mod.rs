//! Facts gathered from the outside world for decisions and delivery.

pub mod dns;
pub mod rspamd;

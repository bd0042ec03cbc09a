//! Delivery to other mail servers over SMTP.
//!
//! - [`client`]: the tokio SMTP client (one connection, one or more
//!   transactions), with opportunistic STARTTLS.
//!
//! # Security
//! Everything read here comes from remote servers; see the `# Security`
//! paragraph of each module.

pub mod client;

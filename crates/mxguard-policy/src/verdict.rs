//! The outcome of a policy check.

use mxguard_proto::Reply;

/// Names a check in logs and counters; stable across versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckId {
    /// A local recipient that does not exist.
    UnknownUser,
    /// A recipient outside our domains, with no right to relay.
    Relay,
    /// A MAIL FROM the client may not use (`[sender]`).
    Spoofing,
    /// The client is in `access.blacklist`.
    Blacklist,
    /// `relay.clients_only` is set and the client is not a relay client.
    ClientsOnly,
    /// The client is banned (auto-ban after too many errors, or manual).
    Banned,
    /// The client is listed in a `[[dnsbl]]` zone that refuses.
    Dnsbl,
    /// The client's reverse DNS fails `access.ptr`.
    Ptr,
    /// The HELO/EHLO name contains an `access.ehlo_block` entry.
    EhloBlock,
    /// The HELO/EHLO name is neither a domain name nor an address literal.
    HeloSyntax,
    /// The client talked before the banner.
    EarlyTalker,
    /// `limits.max_connections` or `limits.connections_per_ip` reached.
    ConnectionLimit,
    /// `limits.max_errors` failed commands in one session.
    TooManyErrors,
    /// The router table sends the address to `error`, or round in a loop.
    Router,
    /// A recipient is a spam trap: the message is refused whole.
    SpamTrap,
    /// The `MAIL FROM` matches a `sender.ban` pattern.
    SenderBan,
    /// The `RCPT TO` matches a `recipient.ban` pattern.
    RecipientBan,
    /// A `sender.exclude` entry refuses this local part from this client.
    SenderExclude,
    /// `sender.verify_domain`: the return path's domain has no mail
    /// server, does not exist, or cannot be checked now.
    SenderDomain,
    /// `limits.messages_per_hour_per_ip` reached.
    MessageRate,
    /// `limits.recipients_per_hour` reached.
    RecipientRate,
    /// `limits.messages_per_hour_per_recipient` reached.
    InboundRate,
    /// A new greylist triplet (`[greylist]`).
    Greylist,
    /// RCPT replies slowed down (`limits.tarpit_start`); never a refusal.
    Tarpit,
    /// A `[[filter]]` rule refused (or discarded, redirected, tagged) the
    /// message.
    Filter,
    /// The message score is above `scoring.reject_above`.
    Scoring,
}

impl CheckId {
    /// Every check, for counters that must exist before they first count.
    pub const ALL: [CheckId; 26] = [
        CheckId::UnknownUser,
        CheckId::Relay,
        CheckId::Spoofing,
        CheckId::Blacklist,
        CheckId::ClientsOnly,
        CheckId::Banned,
        CheckId::Dnsbl,
        CheckId::Ptr,
        CheckId::EhloBlock,
        CheckId::HeloSyntax,
        CheckId::EarlyTalker,
        CheckId::ConnectionLimit,
        CheckId::TooManyErrors,
        CheckId::Router,
        CheckId::SpamTrap,
        CheckId::SenderBan,
        CheckId::RecipientBan,
        CheckId::SenderExclude,
        CheckId::SenderDomain,
        CheckId::MessageRate,
        CheckId::RecipientRate,
        CheckId::InboundRate,
        CheckId::Greylist,
        CheckId::Tarpit,
        CheckId::Filter,
        CheckId::Scoring,
    ];

    /// The name in logs and counters: `"relay"`, `"dnsbl"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::UnknownUser => "unknown_user",
            CheckId::Relay => "relay",
            CheckId::Spoofing => "spoofing",
            CheckId::Blacklist => "blacklist",
            CheckId::ClientsOnly => "clients_only",
            CheckId::Banned => "ban",
            CheckId::Dnsbl => "dnsbl",
            CheckId::Ptr => "ptr",
            CheckId::EhloBlock => "ehlo_block",
            CheckId::HeloSyntax => "helo_syntax",
            CheckId::EarlyTalker => "early_talker",
            CheckId::ConnectionLimit => "connection_limit",
            CheckId::TooManyErrors => "too_many_errors",
            CheckId::Router => "router",
            CheckId::SpamTrap => "spamtrap",
            CheckId::SenderBan => "sender_ban",
            CheckId::RecipientBan => "recipient_ban",
            CheckId::SenderExclude => "sender_exclude",
            CheckId::SenderDomain => "sender_domain",
            CheckId::MessageRate => "messages_per_hour_per_ip",
            CheckId::RecipientRate => "recipients_per_hour",
            CheckId::InboundRate => "messages_per_hour_per_recipient",
            CheckId::Greylist => "greylist",
            CheckId::Tarpit => "tarpit",
            CheckId::Filter => "filter",
            CheckId::Scoring => "scoring",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let want = [
            "unknown_user",
            "relay",
            "spoofing",
            "blacklist",
            "clients_only",
            "ban",
            "dnsbl",
            "ptr",
            "ehlo_block",
            "helo_syntax",
            "early_talker",
            "connection_limit",
            "too_many_errors",
            "router",
            "spamtrap",
            "sender_ban",
            "recipient_ban",
            "sender_exclude",
            "sender_domain",
            "messages_per_hour_per_ip",
            "recipients_per_hour",
            "messages_per_hour_per_recipient",
            "greylist",
            "tarpit",
            "filter",
            "scoring",
        ];
        let got: Vec<&str> = CheckId::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(got, want);
    }
}

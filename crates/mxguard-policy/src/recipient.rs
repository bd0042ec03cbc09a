//! Where an RCPT TO address goes.
//!
//! A recipient in one of `domains.local` must be an account or an alias
//! (550 5.1.1 otherwise), or falls to the domain's catchall. The bare
//! `<Postmaster>` of RFC 5321 §4.1.1.3 goes to `postmaster@` the first local
//! domain. Anything else is not ours to take: 554 5.7.1 Relay access denied
//! (the ways to relay come with relay control).
//!
//! An address with more than one route (`user%host@local`, `host!user@local`,
//! a source route, a quoted local part holding `@` or `%`) is looked up as
//! written: it names no account, so it is refused, never passed on.

use mxguard_config::Config;
use mxguard_proto::Path;

use crate::{CheckId, Verdict};

/// How a local recipient was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Account,
    Alias,
    Catchall,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Account => "account",
            Via::Alias => "alias",
            Via::Catchall => "catchall",
        }
    }
}

/// An accepted recipient: the account whose Maildir receives the copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRecipient {
    /// The account's canonical address (lowercase).
    pub mailbox: String,
    pub via: Via,
}

/// Decides one RCPT TO.
pub fn route_recipient(cfg: &Config, to: &Path) -> Result<LocalRecipient, Verdict> {
    let mb = &to.mailbox;
    let domain = if mb.is_bare_postmaster() {
        match cfg.domains.local.first() {
            Some(d) => d.clone(),
            None => return Err(relay_denied(&mb.to_string())),
        }
    } else {
        mb.domain.clone()
    };
    let shown = format!("{}@{}", mb.local_part, domain);
    if !to.route.is_empty() || !cfg.is_local_domain(&domain) {
        return Err(relay_denied(&shown));
    }
    let local = mb.local_part_unquoted();
    let address = format!("{local}@{domain}");
    if let Some(account) = cfg.account_for(&address) {
        let via = if account.address.eq_ignore_ascii_case(&address) {
            Via::Account
        } else {
            Via::Alias
        };
        return Ok(LocalRecipient {
            mailbox: account.address.clone(),
            via,
        });
    }
    if let Some(account) = cfg.catchall_for(&domain).and_then(|t| cfg.account_for(t)) {
        return Ok(LocalRecipient {
            mailbox: account.address.clone(),
            via: Via::Catchall,
        });
    }
    Err(Verdict::refuse(
        550,
        (5, 1, 1),
        &format!("<{shown}>: Recipient address rejected: no such user here"),
        CheckId::UnknownUser,
        format!("no account, alias or catchall for {address}"),
    ))
}

fn relay_denied(shown: &str) -> Verdict {
    Verdict::refuse(
        554,
        (5, 7, 1),
        "Relay access denied",
        CheckId::Relay,
        format!("{shown} is not in a local domain and this client may not relay"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxguard_proto::address::parse_path;

    const CONFIG: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test", "other.test"]
catchall = { "other.test" = "joe@example.test" }
[[account]]
address = "joe@example.test"
aliases = ["Joseph@example.test", "postmaster@example.test"]
"#;

    #[test]
    fn table() {
        let cfg = Config::parse(CONFIG, std::path::Path::new("t.toml")).unwrap();
        // Ok((mailbox, via)) or Err((reply code, check))
        type Want = Result<(&'static str, Via), (u16, CheckId)>;
        let cases: &[(&str, Want)] = &[
            ("<joe@example.test>", Ok(("joe@example.test", Via::Account))),
            ("<JOE@Example.Test>", Ok(("joe@example.test", Via::Account))),
            (
                "<\"joe\"@example.test>",
                Ok(("joe@example.test", Via::Account)),
            ),
            (
                "<joseph@example.test>",
                Ok(("joe@example.test", Via::Alias)),
            ),
            ("<Postmaster>", Ok(("joe@example.test", Via::Alias))),
            (
                "<anyone@other.test>",
                Ok(("joe@example.test", Via::Catchall)),
            ),
            ("<nobody@example.test>", Err((550, CheckId::UnknownUser))),
            ("<joe@elsewhere.test>", Err((554, CheckId::Relay))),
            (
                "<joe%elsewhere.test@example.test>",
                Err((550, CheckId::UnknownUser)),
            ),
            (
                "<elsewhere.test!joe@example.test>",
                Err((550, CheckId::UnknownUser)),
            ),
            (
                "<\"joe@elsewhere.test\"@example.test>",
                Err((550, CheckId::UnknownUser)),
            ),
            (
                "<@example.test:joe@elsewhere.test>",
                Err((554, CheckId::Relay)),
            ),
            (
                "<@example.test:joe@example.test>",
                Err((554, CheckId::Relay)),
            ),
            ("<joe@[127.0.0.1]>", Err((554, CheckId::Relay))),
        ];
        for (input, want) in cases {
            let path = parse_path(input, true).unwrap().unwrap();
            let got = route_recipient(&cfg, &path);
            match (got, want) {
                (Ok(r), Ok((mb, via))) => {
                    assert_eq!(r.mailbox, *mb, "{input}");
                    assert_eq!(r.via, *via, "{input}");
                }
                (Err(v), Err((code, check))) => {
                    assert_eq!(v.reply.code(), *code, "{input}");
                    assert_eq!(v.check, *check, "{input}");
                }
                (got, _) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn disabled_catchalls() {
        let text = CONFIG.replace("[[account]]", "disable_catchalls = true\n[[account]]");
        let cfg = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let path = parse_path("<anyone@other.test>", false).unwrap().unwrap();
        assert_eq!(
            route_recipient(&cfg, &path).unwrap_err().check,
            CheckId::UnknownUser
        );
    }
}

//! Account passwords: checking what a client sends against an account's
//! [`Secret`], making the argon2id hashes printed by `mxguard passwd`, and
//! finding the account a login name belongs to.
//!
//! # Security
//!
//! `password` and `login` come from the network (AUTH PLAIN/LOGIN, POP3
//! USER/PASS). Nothing here logs or formats them. A plain-text secret is
//! compared in constant time (for equal lengths; the length itself may
//! leak), an argon2 hash with argon2's own comparison. The hash costs
//! about 19 MiB and tens of milliseconds per check (argon2's default
//! parameters, those of `mxguard passwd`): callers limit failed attempts,
//! and run checks off the async executor (`spawn_blocking`).

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use mxguard_config::{Account, Config, Secret};
use subtle::ConstantTimeEq;

/// Hashing failed: the system's random generator failed, or the password
/// is longer than argon2 accepts (4 GiB).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// Whether `password` is the one of `secret`.
///
/// An [`Secret::Argon2`] hash is verified with the parameters written in
/// it; a hash that does not parse (the configuration checks them, so only
/// a hand-made `Secret` can be bad) never matches. A [`Secret::Plain`]
/// password is compared in constant time.
pub fn verify_password(secret: &Secret, password: &[u8]) -> bool {
    match secret {
        Secret::Argon2(phc) => match PasswordHash::new(phc) {
            Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
            Err(_) => false,
        },
        Secret::Plain(plain) => bool::from(plain.as_bytes().ct_eq(password)),
    }
}

/// An argon2id hash of `password` in PHC form
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), with a random 16-byte
/// salt from the operating system and argon2's default (OWASP) parameters:
/// what `account.password` takes.
pub fn hash_password(password: &[u8]) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// The account a client logs in as: `login` is the account's address or
/// one of its aliases, case-insensitive.
pub fn find_account<'a>(cfg: &'a Config, login: &str) -> Option<&'a Account> {
    cfg.account_for(login)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
address = "127.0.0.1:0"
role = "mx"
[domains]
local = ["example.test"]
[[account]]
address = "alice@example.test"
aliases = ["Al@Example.Test"]
password = "open sesame"
relay = true
[[account]]
address = "bob@example.test"
"#;

    #[test]
    fn argon2_round_trip() {
        let phc = hash_password(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        let secret = Secret::Argon2(phc.clone());
        assert!(verify_password(&secret, b"correct horse"));
        assert!(!verify_password(&secret, b"correct hors"));
        assert!(!verify_password(&secret, b""));
        // A new salt every time.
        assert_ne!(hash_password(b"correct horse").unwrap(), phc);
    }

    #[test]
    fn plain_compare() {
        let secret = Secret::Plain("open sesame".into());
        assert!(verify_password(&secret, b"open sesame"));
        assert!(!verify_password(&secret, b"open sesamE"));
        assert!(!verify_password(&secret, b"open sesame "));
        assert!(!verify_password(&secret, b"open"));
        assert!(!verify_password(&secret, b""));
        assert!(!verify_password(&Secret::Plain(String::new()), b"x"));
    }

    #[test]
    fn bad_hash_never_matches() {
        for bad in ["$argon2id$garbage", "", "$argon2id$v=19$m=19456,t=2,p=1$"] {
            assert!(!verify_password(&Secret::Argon2(bad.into()), b""));
            assert!(!verify_password(
                &Secret::Argon2(bad.into()),
                bad.as_bytes()
            ));
        }
    }

    #[test]
    fn accounts_by_login() {
        let cfg = Config::parse(CONFIG, Path::new("mxguard.toml")).unwrap();
        let alice = find_account(&cfg, "ALICE@example.test").unwrap();
        assert_eq!(alice.address, "alice@example.test");
        assert!(alice.relay && !alice.mobile);
        assert_eq!(
            find_account(&cfg, "al@example.test").unwrap().address,
            "alice@example.test"
        );
        assert!(verify_password(
            alice.password.as_ref().unwrap(),
            b"open sesame"
        ));
        let bob = find_account(&cfg, "bob@example.test").unwrap();
        assert!(bob.password.is_none());
        assert!(find_account(&cfg, "carol@example.test").is_none());
        assert!(find_account(&cfg, "alice").is_none());
        assert!(find_account(&cfg, "").is_none());
    }
}

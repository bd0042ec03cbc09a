//! POP-before-SMTP: the addresses from which a `mobile` account logged in
//! over POP3 lately, so a road warrior's mail client may relay without
//! SMTP AUTH (`relay.pop_before_smtp`).
//!
//! They live in the state store (`pop:<address>`, expiring at the end of
//! the window), so they survive a restart and, on Redis, a login on one
//! node lets the client relay through every node. A store that does not
//! answer grants nothing: the client is asked to authenticate instead.

use std::net::IpAddr;

use mxguard_config::Config;
use mxguard_policy::limits::client_key;
use mxguard_store::StateStore;

fn key(ip: IpAddr) -> String {
    format!("pop:{}", client_key(ip))
}

/// Remembers a POP3 login from `ip` at `now` (Unix seconds).
pub(crate) fn record(cfg: &Config, store: &dyn StateStore, ip: IpAddr, now: u64) {
    let Some(window) = cfg.relay.pop_before_smtp else {
        return;
    };
    if let Err(e) = store.put(&key(ip), now, now + window.as_secs()) {
        super::limits::store_down("pop_before_smtp", &e.to_string());
    }
}

/// Whether `ip` logged in over POP3 within the window.
pub(crate) fn recent(cfg: &Config, store: &dyn StateStore, ip: IpAddr, now: u64) -> bool {
    if cfg.relay.pop_before_smtp.is_none() {
        return false;
    }
    match store.get(&key(ip), now) {
        Ok(v) => v.is_some(),
        Err(e) => {
            super::limits::store_down("pop_before_smtp", &e.to_string());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxguard_store::MemoryStore;

    #[test]
    fn a_login_opens_its_window() {
        let text = "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
                    [relay]\npop_before_smtp = \"2m\"\n";
        let cfg = Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        let store = MemoryStore::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!recent(&cfg, &store, ip, 1000));
        record(&cfg, &store, ip, 1000);
        assert!(recent(&cfg, &store, ip, 1119));
        assert!(recent(
            &cfg,
            &store,
            "::ffff:192.0.2.1".parse().unwrap(),
            1119
        ));
        assert!(!recent(&cfg, &store, ip, 1120));
        assert!(!recent(&cfg, &store, "192.0.2.2".parse().unwrap(), 1001));
        let off = Config::parse(
            &text.replace("\"2m\"", "\"0s\""),
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        record(&off, &store, "192.0.2.9".parse().unwrap(), 1000);
        assert!(!recent(&off, &store, "192.0.2.9".parse().unwrap(), 1001));
    }
}

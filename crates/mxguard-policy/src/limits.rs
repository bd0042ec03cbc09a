//! Volume limits, greylisting and the tarpit (SPEC §2 `[limits]`,
//! `[greylist]`).
//!
//! Spammers win by volume; these checks take it away:
//!
//! - **Hourly rates** (`messages_per_hour_per_ip`, DMail's fromip_max;
//!   `recipients_per_hour`, per authenticated account else per client
//!   address, MailEnable's; `messages_per_hour_per_recipient`, what one
//!   local mailbox may receive, DMail's): counted in hourly buckets of the
//!   state store and read as a sliding window (the current bucket plus the
//!   previous one weighted by how much of it the last hour still covers),
//!   so a sender cannot pass twice the limit across a bucket boundary.
//!   Over the limit: 451 4.7.1.
//! - **Greylisting**: a (client /24 or /64, sender, recipient) triplet seen
//!   for the first time gets 451 4.7.1 until `greylist.delay` has passed; a
//!   retry after that passes and is remembered for `greylist.pass_after`.
//! - **Tarpit**: past `limits.tarpit_start` recipients in a session, each
//!   RCPT reply waits `tarpit_delay` times the recipients past the
//!   threshold. This module computes the delay; the driver sleeps it
//!   without holding a thread.
//!
//! The counts live in the state store, reached through [`Counters`]. A
//! store that does not answer must not stop mail (fail open): every
//! function here reports it as [`StoreDown`], and the caller logs it and
//! lets the message through.

use std::net::IpAddr;
use std::time::Duration;

use mxguard_config::Config;

use crate::recipient::Client;
use crate::{CheckId, Verdict};

/// The length of a rate window.
pub const HOUR: u64 = 3600;

/// How long a greylisted triplet that was never retried is remembered.
pub const GREYLIST_RETRY_WINDOW: u64 = 24 * 3600;

/// The state store as the limits see it: expiring counters and values.
pub trait Counters {
    fn get(&self, key: &str, now: u64) -> Result<Option<u64>, String>;
    fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), String>;
    fn incr(&self, key: &str, n: u64, expires: u64, now: u64) -> Result<u64, String>;
}

/// The store failed: the check was not made (the caller logs this and lets
/// the mail through).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDown(pub String);

/// One of the hourly rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// `messages_per_hour_per_ip`, by client address.
    MessagesPerIp,
    /// `recipients_per_hour`, by account or client address.
    RecipientsPerHour,
    /// `messages_per_hour_per_recipient`, by local mailbox.
    MessagesPerRecipient,
}

impl Rate {
    fn key(self) -> &'static str {
        match self {
            Rate::MessagesPerIp => "msg_ip",
            Rate::RecipientsPerHour => "rcpt",
            Rate::MessagesPerRecipient => "inbound",
        }
    }

    /// The configuration key, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Rate::MessagesPerIp => "limits.messages_per_hour_per_ip",
            Rate::RecipientsPerHour => "limits.recipients_per_hour",
            Rate::MessagesPerRecipient => "limits.messages_per_hour_per_recipient",
        }
    }

    fn check(self) -> CheckId {
        match self {
            Rate::MessagesPerIp => CheckId::MessageRate,
            Rate::RecipientsPerHour => CheckId::RecipientRate,
            Rate::MessagesPerRecipient => CheckId::InboundRate,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Rate::MessagesPerIp => "Too many messages from your address this hour; try again later",
            Rate::RecipientsPerHour => "Too many recipients this hour; try again later",
            Rate::MessagesPerRecipient => {
                "This recipient gets too much mail this hour; try again later"
            }
        }
    }

    /// The limit configured for this rate (0: none).
    pub fn limit(self, cfg: &Config) -> u64 {
        match self {
            Rate::MessagesPerIp => cfg.limits.messages_per_hour_per_ip,
            Rate::RecipientsPerHour => cfg.limits.recipients_per_hour,
            Rate::MessagesPerRecipient => cfg.limits.messages_per_hour_per_recipient,
        }
    }
}

/// How a client address is counted: IPv4 alone, IPv6 by its /64 (what one
/// site gets), IPv4-mapped IPv6 as IPv4.
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The client network of a greylist triplet: /24 or /64 (a sender's pool
/// of outgoing servers retries from another address of the same network).
pub fn greylist_net(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => greylist_net(IpAddr::V4(v4)),
            None => client_key(ip),
        },
    }
}

/// Whether the client is exempt from rates and tarpit: `limits.exempt`
/// and whitelisted hosts.
pub fn is_exempt(cfg: &Config, client: &Client<'_>) -> bool {
    client.whitelisted || cfg.limits.exempt.contains(client.ip)
}

fn bucket_key(rate: Rate, id: &str, bucket: u64) -> String {
    format!("rate:{}:{id}:{bucket}", rate.key())
}

/// The sliding count of the last hour: the current bucket, plus the
/// previous one weighted by the part of it the last hour still covers
/// (rounded up).
pub fn sliding(current: u64, previous: u64, now: u64) -> u64 {
    let into = now % HOUR;
    // Rounded up: a sender never gets more than the limit.
    current + previous.saturating_mul(HOUR - into).div_ceil(HOUR)
}

/// Who `recipients_per_hour` counts: the account a session logged in as,
/// else the client address.
pub fn recipients_id(account: Option<&str>, ip: IpAddr) -> String {
    match account {
        Some(a) => format!("account:{}", a.to_ascii_lowercase()),
        None => format!("ip:{}", client_key(ip)),
    }
}

/// The sliding count of `rate` for `id` over the last hour.
pub fn current_count(
    store: &dyn Counters,
    rate: Rate,
    id: &str,
    now: u64,
) -> Result<u64, StoreDown> {
    let bucket = now / HOUR;
    let current = store
        .get(&bucket_key(rate, id, bucket), now)
        .map_err(StoreDown)?
        .unwrap_or(0);
    let previous = store
        .get(&bucket_key(rate, id, bucket.saturating_sub(1)), now)
        .map_err(StoreDown)?
        .unwrap_or(0);
    Ok(sliding(current, previous, now))
}

/// Whether adding `adding` to `rate` for `id` would pass its limit.
/// `Ok(Ok(()))` when under it (or no limit), `Ok(Err(verdict))` when over.
pub fn check_rate(
    store: &dyn Counters,
    cfg: &Config,
    rate: Rate,
    id: &str,
    adding: u64,
    now: u64,
) -> Result<Result<(), Verdict>, StoreDown> {
    let limit = rate.limit(cfg);
    if limit == 0 {
        return Ok(Ok(()));
    }
    let count = current_count(store, rate, id, now)?;
    if count.saturating_add(adding) <= limit {
        return Ok(Ok(()));
    }
    Ok(Err(Verdict::refuse(
        451,
        (4, 7, 1),
        rate.text(),
        rate.check(),
        format!("{id}: {count} in the last hour, {} = {limit}", rate.name()),
    )))
}

/// Counts `n` more for `rate` and `id` (nothing when the rate has no
/// limit).
pub fn count_rate(
    store: &dyn Counters,
    cfg: &Config,
    rate: Rate,
    id: &str,
    n: u64,
    now: u64,
) -> Result<(), StoreDown> {
    if rate.limit(cfg) == 0 || n == 0 {
        return Ok(());
    }
    let bucket = now / HOUR;
    // Kept for the next hour too: the sliding count reads it then.
    let expires = (bucket + 2) * HOUR;
    store
        .incr(&bucket_key(rate, id, bucket), n, expires, now)
        .map(|_| ())
        .map_err(StoreDown)
}

/// Whether a client is greylisted at all: never for relay clients, logged
/// in sessions (AUTH or POP-before-SMTP), whitelisted or exempt hosts.
pub fn greylist_applies(cfg: &Config, client: &Client<'_>) -> bool {
    cfg.greylist.enabled
        && client.account.is_none()
        && !client.recent_pop
        && !client.whitelisted
        && !cfg.limits.exempt.contains(client.ip)
        && !cfg.is_relay_client(client.ip)
}

/// Greylists one (client network, sender, recipient) triplet; see the
/// module header. `sender` is empty for `<>`.
pub fn greylist(
    store: &dyn Counters,
    cfg: &Config,
    ip: IpAddr,
    sender: &str,
    recipient: &str,
    now: u64,
) -> Result<Result<(), Verdict>, StoreDown> {
    let triplet = format!(
        "{}|{}|{}",
        greylist_net(ip),
        sender.to_ascii_lowercase(),
        recipient.to_ascii_lowercase()
    );
    let pass_key = format!("grey:pass:{triplet}");
    let first_key = format!("grey:first:{triplet}");
    let pass_until = now + cfg.greylist.pass_after.as_secs();
    if store.get(&pass_key, now).map_err(StoreDown)?.is_some() {
        // Remembered for pass_after from its last use.
        store.put(&pass_key, now, pass_until).map_err(StoreDown)?;
        return Ok(Ok(()));
    }
    let delay = cfg.greylist.delay.as_secs();
    match store.get(&first_key, now).map_err(StoreDown)? {
        Some(first) if now >= first.saturating_add(delay) => {
            store.put(&pass_key, now, pass_until).map_err(StoreDown)?;
            Ok(Ok(()))
        }
        Some(first) => Ok(Err(greylisted(
            &triplet,
            format!("first seen {}s ago", now.saturating_sub(first)),
            first.saturating_add(delay).saturating_sub(now),
        ))),
        None => {
            store
                .put(&first_key, now, now + GREYLIST_RETRY_WINDOW.max(delay * 2))
                .map_err(StoreDown)?;
            Ok(Err(greylisted(&triplet, "new triplet".into(), delay)))
        }
    }
}

fn greylisted(triplet: &str, why: String, wait: u64) -> Verdict {
    Verdict::refuse(
        451,
        (4, 7, 1),
        &format!("Greylisted: please try again in {wait} seconds"),
        CheckId::Greylist,
        format!("{triplet}: {why}"),
    )
}

/// The delay before the reply to the `n`-th RCPT of a session (counted
/// from 1): `tarpit_delay` times the recipients past `tarpit_start`, zero
/// before it, without a tarpit, or for a client that is exempt, logged in
/// or a relay client.
pub fn tarpit_delay(cfg: &Config, client: &Client<'_>, n: u32) -> Duration {
    let start = cfg.limits.tarpit_start;
    if start == 0
        || n <= start
        || is_exempt(cfg, client)
        || client.account.is_some()
        || cfg.is_relay_client(client.ip)
    {
        return Duration::ZERO;
    }
    cfg.limits.tarpit_delay.saturating_mul(n - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Counters in a map, and a switch to make them fail.
    #[derive(Default)]
    struct Map {
        values: RefCell<HashMap<String, (u64, u64)>>,
        down: std::cell::Cell<bool>,
    }

    impl Counters for Map {
        fn get(&self, key: &str, now: u64) -> Result<Option<u64>, String> {
            if self.down.get() {
                return Err("connection refused".into());
            }
            Ok(self
                .values
                .borrow()
                .get(key)
                .filter(|(_, e)| *e > now)
                .map(|(v, _)| *v))
        }
        fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), String> {
            if self.down.get() {
                return Err("connection refused".into());
            }
            self.values
                .borrow_mut()
                .insert(key.into(), (value, expires));
            Ok(())
        }
        fn incr(&self, key: &str, n: u64, expires: u64, now: u64) -> Result<u64, String> {
            if self.down.get() {
                return Err("connection refused".into());
            }
            let mut v = self.values.borrow_mut();
            let e = v.entry(key.into()).or_insert((0, expires));
            if e.1 <= now {
                *e = (0, expires);
            }
            e.0 += n;
            Ok(e.0)
        }
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nhostname = \"mx.example.test\"\n[[listener]]\naddress = \"127.0.0.1:0\"\nrole = \"mx\"\n\
             [domains]\nlocal = [\"example.test\"]\n[relay]\nclients = [\"10.0.0.0/8\"]\n\
             [[account]]\naddress = \"joe@example.test\"\n{extra}"
        );
        Config::parse(&text, std::path::Path::new("t.toml")).unwrap()
    }

    #[test]
    fn hourly_rate_with_a_sliding_window() {
        let cfg = config("[limits]\nmessages_per_hour_per_ip = 3\n");
        let store = Map::default();
        let t0 = 1_800_000_000 - 1_800_000_000 % HOUR; // the start of an hour
        let rate = Rate::MessagesPerIp;
        let check = |now| check_rate(&store, &cfg, rate, "192.0.2.1", 1, now).unwrap();
        for i in 0..3 {
            assert_eq!(check(t0 + 10 + i), Ok(()), "message {i}");
            count_rate(&store, &cfg, rate, "192.0.2.1", 1, t0 + 10 + i).unwrap();
        }
        let v = check(t0 + 20).unwrap_err();
        assert_eq!(
            v.reply.to_string(),
            "451 4.7.1 Too many messages from your address this hour; try again later"
        );
        assert_eq!(v.check, CheckId::MessageRate);
        assert!(v.reason.contains("3 in the last hour"), "{}", v.reason);
        // another address is counted apart
        assert_eq!(
            check_rate(&store, &cfg, rate, "192.0.2.2", 1, t0 + 20).unwrap(),
            Ok(())
        );
        // just past the bucket boundary the previous hour still counts...
        assert!(check(t0 + HOUR + 60).is_err());
        // ...less and less: two thirds through, 3 * 1/3 = 1 left
        assert_eq!(check(t0 + HOUR + 2 * HOUR / 3), Ok(()));
        // an hour after the bucket's end it is gone
        assert_eq!(check(t0 + 2 * HOUR + 5), Ok(()));
    }

    #[test]
    fn no_limit_touches_no_store() {
        let cfg = config("");
        let store = Map::default();
        store.down.set(true);
        for rate in [
            Rate::MessagesPerIp,
            Rate::RecipientsPerHour,
            Rate::MessagesPerRecipient,
        ] {
            assert_eq!(check_rate(&store, &cfg, rate, "x", 1, 100), Ok(Ok(())));
            assert_eq!(count_rate(&store, &cfg, rate, "x", 1, 100), Ok(()));
        }
    }

    #[test]
    fn a_store_that_fails_is_reported_not_refused() {
        let cfg = config("[limits]\nrecipients_per_hour = 1\n[greylist]\nenabled = true\n");
        let store = Map::default();
        store.down.set(true);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(check_rate(&store, &cfg, Rate::RecipientsPerHour, "x", 1, 100).is_err());
        assert!(count_rate(&store, &cfg, Rate::RecipientsPerHour, "x", 1, 100).is_err());
        assert!(greylist(&store, &cfg, ip, "a@b.test", "joe@example.test", 100).is_err());
    }

    #[test]
    fn greylisting_a_triplet() {
        let cfg = config("[greylist]\nenabled = true\ndelay = \"5m\"\npass_after = \"36d\"\n");
        let store = Map::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = 1_800_000_000;
        let grey =
            |ip, from: &str, to: &str, now| greylist(&store, &cfg, ip, from, to, now).unwrap();
        let v = grey(ip, "a@far.test", "joe@example.test", t).unwrap_err();
        assert_eq!(
            v.reply.to_string(),
            "451 4.7.1 Greylisted: please try again in 300 seconds"
        );
        assert_eq!(v.check, CheckId::Greylist);
        // too soon
        assert!(grey(ip, "a@far.test", "joe@example.test", t + 299).is_err());
        // after the delay, from another address of the same /24, any case
        let sibling: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(
            grey(sibling, "A@Far.test", "joe@example.test", t + 300),
            Ok(())
        );
        // remembered for pass_after from its last use
        assert_eq!(
            grey(ip, "a@far.test", "joe@example.test", t + 35 * 86_400),
            Ok(())
        );
        assert_eq!(
            grey(ip, "a@far.test", "joe@example.test", t + 70 * 86_400),
            Ok(())
        );
        assert!(grey(ip, "a@far.test", "joe@example.test", t + 107 * 86_400).is_err());
        // another network, sender or recipient is another triplet
        let other: IpAddr = "192.0.3.1".parse().unwrap();
        assert!(grey(other, "a@far.test", "joe@example.test", t + 400).is_err());
        assert!(grey(ip, "b@far.test", "joe@example.test", t + 400).is_err());
        assert!(grey(ip, "", "joe@example.test", t + 400).is_err());
        // IPv6 by /64
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(grey(a, "v6@far.test", "joe@example.test", t).is_err());
        assert_eq!(grey(b, "v6@far.test", "joe@example.test", t + 300), Ok(()));
    }

    #[test]
    fn who_is_greylisted() {
        let cfg = config("[greylist]\nenabled = true\n[limits]\nexempt = [\"198.51.100.0/24\"]\n");
        let stranger = Client::at("192.0.2.1".parse().unwrap());
        assert!(greylist_applies(&cfg, &stranger));
        assert!(!greylist_applies(
            &cfg,
            &Client::at("10.1.1.1".parse().unwrap())
        ));
        assert!(!greylist_applies(
            &cfg,
            &Client::at("198.51.100.7".parse().unwrap())
        ));
        assert!(!greylist_applies(
            &cfg,
            &Client {
                whitelisted: true,
                ..stranger
            }
        ));
        assert!(!greylist_applies(
            &cfg,
            &Client {
                recent_pop: true,
                ..stranger
            }
        ));
        let joe = cfg.account_for("joe@example.test");
        assert!(!greylist_applies(
            &cfg,
            &Client {
                account: joe,
                ..stranger
            }
        ));
        assert!(!greylist_applies(&config(""), &stranger));
    }

    #[test]
    fn tarpit_grows_with_each_recipient_past_the_start() {
        let cfg = config(
            "[limits]\ntarpit_start = 10\ntarpit_delay = \"2s\"\nexempt = [\"198.51.100.0/24\"]\n",
        );
        let s = Client::at("192.0.2.1".parse().unwrap());
        assert_eq!(tarpit_delay(&cfg, &s, 1), Duration::ZERO);
        assert_eq!(tarpit_delay(&cfg, &s, 10), Duration::ZERO);
        assert_eq!(tarpit_delay(&cfg, &s, 11), Duration::from_secs(2));
        assert_eq!(tarpit_delay(&cfg, &s, 13), Duration::from_secs(6));
        for exempt in ["198.51.100.9", "10.0.0.1"] {
            assert_eq!(
                tarpit_delay(&cfg, &Client::at(exempt.parse().unwrap()), 50),
                Duration::ZERO
            );
        }
        let joe = cfg.account_for("joe@example.test");
        assert_eq!(
            tarpit_delay(&cfg, &Client { account: joe, ..s }, 50),
            Duration::ZERO
        );
        assert_eq!(tarpit_delay(&config(""), &s, 1000), Duration::ZERO);
    }

    #[test]
    fn recipients_are_counted_per_account_else_per_address() {
        let cfg = config("[limits]\nrecipients_per_hour = 2\n");
        let store = Map::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let rate = Rate::RecipientsPerHour;
        let joe = recipients_id(Some("Joe@Example.test"), ip);
        assert_eq!(joe, "account:joe@example.test");
        let anon = recipients_id(None, ip);
        assert_eq!(anon, "ip:192.0.2.1");
        let t = 1_800_000_000;
        count_rate(&store, &cfg, rate, &joe, 2, t).unwrap();
        // the account is at its limit wherever it logs in from...
        assert!(
            check_rate(
                &store,
                &cfg,
                rate,
                &recipients_id(Some("joe@example.test"), "198.51.100.1".parse().unwrap()),
                1,
                t
            )
            .unwrap()
            .is_err()
        );
        // ...while strangers at the same address are counted apart
        assert_eq!(check_rate(&store, &cfg, rate, &anon, 1, t).unwrap(), Ok(()));
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key("192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(client_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
        assert_eq!(
            client_key("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(greylist_net("192.0.2.99".parse().unwrap()), "192.0.2.0/24");
    }
}

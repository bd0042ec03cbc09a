//! The in-memory ban index both backends answer [`StateStore::banned`]
//! from.
//!
//! Bans are kept in a hash map keyed by normalised network, plus a count of
//! the prefix lengths in use per address family. A lookup tries, longest
//! prefix first, the one network of each length in use that could contain
//! the address: at most 33 probes for IPv4 and 129 for IPv6, usually one or
//! two, whatever the number of bans.
//!
//! # Security
//!
//! The address looked up is the client's; it is canonicalised
//! (IPv4-mapped IPv6 as IPv4) like the stored networks, so both spellings
//! of one client meet the same bans. Networks and reasons arrive already
//! normalised and cleaned by the backends (`normalize_net`, `clean_reason`).
//!
//! [`StateStore::banned`]: crate::StateStore::banned

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::Ban;

/// What is kept per banned network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BanEntry {
    pub until: u64,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct BanIndex {
    bans: HashMap<IpNet, BanEntry>,
    /// Prefix length -> how many bans use it, per family.
    v4_prefixes: BTreeMap<u8, usize>,
    v6_prefixes: BTreeMap<u8, usize>,
}

impl BanIndex {
    fn prefixes(&mut self, net: &IpNet) -> &mut BTreeMap<u8, usize> {
        match net {
            IpNet::V4(_) => &mut self.v4_prefixes,
            IpNet::V6(_) => &mut self.v6_prefixes,
        }
    }

    /// Adds or replaces the ban of `net` (already normalised).
    pub fn insert(&mut self, net: IpNet, entry: BanEntry) {
        if self.bans.insert(net, entry).is_none() {
            *self.prefixes(&net).entry(net.prefix_len()).or_default() += 1;
        }
    }

    /// Removes the ban of `net` (already normalised); whether there was one.
    pub fn remove(&mut self, net: &IpNet) -> bool {
        if self.bans.remove(net).is_none() {
            return false;
        }
        let prefixes = self.prefixes(net);
        if let Some(n) = prefixes.get_mut(&net.prefix_len()) {
            *n -= 1;
            if *n == 0 {
                prefixes.remove(&net.prefix_len());
            }
        }
        true
    }

    /// The most specific ban in force at `now` covering `ip`.
    pub fn lookup(&self, ip: IpAddr, now: u64) -> Option<Ban> {
        let ip = ip.to_canonical();
        let prefixes = match ip {
            IpAddr::V4(_) => &self.v4_prefixes,
            IpAddr::V6(_) => &self.v6_prefixes,
        };
        prefixes.keys().rev().find_map(|&len| {
            let net = IpNet::new(ip, len).ok()?.trunc();
            let entry = self.bans.get(&net)?;
            (now < entry.until).then(|| to_ban(&net, entry))
        })
    }

    /// The bans in force at `now`, sorted by network.
    pub fn list(&self, now: u64) -> Vec<Ban> {
        let mut live: Vec<(&IpNet, &BanEntry)> =
            self.bans.iter().filter(|(_, e)| now < e.until).collect();
        live.sort_by_key(|(net, _)| **net);
        live.into_iter().map(|(net, e)| to_ban(net, e)).collect()
    }

    /// The networks whose ban has expired at `now`.
    pub fn expired(&self, now: u64) -> Vec<IpNet> {
        self.bans
            .iter()
            .filter(|(_, e)| now >= e.until)
            .map(|(net, _)| *net)
            .collect()
    }
}

fn to_ban(net: &IpNet, entry: &BanEntry) -> Ban {
    Ban {
        net: net.to_string(),
        until: entry.until,
        reason: entry.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(until: u64) -> BanEntry {
        BanEntry {
            until,
            reason: String::new(),
        }
    }

    #[test]
    fn most_specific_live_ban_wins() {
        let mut idx = BanIndex::default();
        idx.insert("198.51.100.0/24".parse().unwrap(), entry(100));
        idx.insert("198.51.100.7/32".parse().unwrap(), entry(50));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        // (now, want net)
        let cases: &[(u64, Option<&str>)] = &[
            (10, Some("198.51.100.7/32")),
            (50, Some("198.51.100.0/24")),
            (100, None),
        ];
        for (now, want) in cases {
            let got = idx.lookup(ip, *now).map(|b| b.net);
            assert_eq!(got.as_deref(), *want, "now {now}");
        }
        assert!(idx.remove(&"198.51.100.0/24".parse().unwrap()));
        assert!(!idx.remove(&"198.51.100.0/24".parse().unwrap()));
        assert_eq!(idx.v4_prefixes.len(), 1);
        assert_eq!(idx.lookup(ip, 60), None);
    }
}

//! IP address lists as CommuniGate Pro writes them (`relay.clients`,
//! `relay.clients_file`): addresses, CIDR blocks and ranges, IPv4 and IPv6.
//!
//! A list is stored as merged, sorted, non-overlapping ranges of integers
//! (`u32` for IPv4, `u128` for IPv6), so that [`IpList::contains`] is a
//! binary search whose cost does not grow (beyond its logarithm) with the
//! size of the list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::ConfigError;

/// The first address of `::ffff:0.0.0.0/96`, the IPv4-mapped IPv6
/// addresses.
const MAPPED_START: u128 = 0xffff_u128 << 32;
/// The last address of `::ffff:0.0.0.0/96`.
const MAPPED_END: u128 = MAPPED_START | u32::MAX as u128;

/// What a malformed entry is told, after the entry itself.
const EXPECTED: &str = "expected an address, CIDR or range";

/// One entry of an IP list: an inclusive range of addresses of one family.
/// A single address and a CIDR block are ranges too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpRange {
    /// From the first address to the second, both included.
    V4(Ipv4Addr, Ipv4Addr),
    /// From the first address to the second, both included.
    V6(Ipv6Addr, Ipv6Addr),
}

impl IpRange {
    /// Parses one entry: `a.b.c.d`, `a.b.c.d/nn`, `a.b.c.d-e.f.g.h`, or the
    /// same with IPv6 addresses (`2001:db8::1`, `2001:db8::/32`,
    /// `2001:db8::1-2001:db8::ff`). Spaces around the entry and around `-`
    /// are allowed. A CIDR block with host bits set (`10.1.2.3/8`) means
    /// its whole block (`10.0.0.0/8`).
    ///
    /// The error is a sentence to show after the entry, like
    /// `expected an address, CIDR or range`.
    pub fn parse(text: &str) -> Result<IpRange, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("{EXPECTED}, got an empty entry"));
        }
        if let Some((addr, prefix)) = text.split_once('/') {
            let addr: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("{EXPECTED}: {:?} is not an IP address", addr.trim()))?;
            let prefix = prefix.trim();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits: u32 = match prefix.parse() {
                Ok(n) if prefix.bytes().all(|b| b.is_ascii_digit()) && n <= max => n,
                _ => {
                    return Err(format!(
                        "{EXPECTED}: the prefix length after / must be a number from 0 to {max}, got {prefix:?}"
                    ));
                }
            };
            return Ok(match addr {
                IpAddr::V4(a) => {
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    let start = u32::from(a) & mask;
                    IpRange::V4(start.into(), (start | !mask).into())
                }
                IpAddr::V6(a) => {
                    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                    let start = u128::from(a) & mask;
                    IpRange::V6(start.into(), (start | !mask).into())
                }
            });
        }
        if let Some((first, last)) = text.split_once('-') {
            let parse = |s: &str| {
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{EXPECTED}: {:?} is not an IP address", s.trim()))
            };
            let (first, last) = (parse(first)?, parse(last)?);
            let range = match (first, last) {
                (IpAddr::V4(a), IpAddr::V4(b)) => IpRange::V4(a, b),
                (IpAddr::V6(a), IpAddr::V6(b)) => IpRange::V6(a, b),
                _ => {
                    return Err(format!(
                        "{EXPECTED}: a range goes from an address to another of the same family (IPv4 or IPv6)"
                    ));
                }
            };
            if range.start() > range.end() {
                return Err(format!(
                    "the range is reversed: {first} comes after {last} (write the lower address first)"
                ));
            }
            return Ok(range);
        }
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(IpRange::V4(a, a)),
            Ok(IpAddr::V6(a)) => Ok(IpRange::V6(a, a)),
            Err(_) => Err(EXPECTED.to_string()),
        }
    }

    /// The first address of the range.
    pub fn start(&self) -> IpAddr {
        match *self {
            IpRange::V4(a, _) => a.into(),
            IpRange::V6(a, _) => a.into(),
        }
    }

    /// The last address of the range.
    pub fn end(&self) -> IpAddr {
        match *self {
            IpRange::V4(_, b) => b.into(),
            IpRange::V6(_, b) => b.into(),
        }
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) is the IPv4 address `a.b.c.d`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self
                .v4_part()
                .is_some_and(|(s, e)| (s..=e).contains(&u32::from(a))),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.contains(v4.into()),
                None => match *self {
                    IpRange::V6(s, e) => (u128::from(s)..=u128::from(e)).contains(&u128::from(a)),
                    IpRange::V4(..) => false,
                },
            },
        }
    }

    /// The number of addresses in the range, minus one (so that `::/0`
    /// fits): 0 for a single address, 255 for a `/24`.
    pub fn span(&self) -> u128 {
        match *self {
            IpRange::V4(a, b) => u128::from(u32::from(b) - u32::from(a)),
            IpRange::V6(a, b) => u128::from(b) - u128::from(a),
        }
    }

    /// The IPv4 addresses the range covers: itself for IPv4, and for IPv6
    /// the part of it in `::ffff:0.0.0.0/96` (IPv4-mapped addresses).
    pub(crate) fn v4_part(&self) -> Option<(u32, u32)> {
        match *self {
            IpRange::V4(a, b) => Some((a.into(), b.into())),
            IpRange::V6(a, b) => {
                let (a, b) = (
                    u128::from(a).max(MAPPED_START),
                    u128::from(b).min(MAPPED_END),
                );
                // Both are within the mapped block when a <= b: the casts
                // keep the low 32 bits, the IPv4 address.
                (a <= b).then_some((a as u32, b as u32))
            }
        }
    }

    /// Whether the range lies entirely in `::ffff:0.0.0.0/96`, so that it
    /// is really about IPv4 addresses.
    pub(crate) fn is_mapped_v4(&self) -> bool {
        match *self {
            IpRange::V4(..) => true,
            IpRange::V6(a, b) => u128::from(a) >= MAPPED_START && u128::from(b) <= MAPPED_END,
        }
    }
}

/// `10.0.0.7`, `10.0.0.0/8` when the range is a CIDR block, else
/// `10.0.0.7-10.0.0.9`.
impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpRange::V4(a, b) => {
                let (s, e) = (u32::from(a), u32::from(b));
                let size = e - s;
                if s == e {
                    write!(f, "{a}")
                } else if size.wrapping_add(1) & size == 0 && s & size == 0 {
                    write!(f, "{a}/{}", 32 - (size.count_ones()))
                } else {
                    write!(f, "{a}-{b}")
                }
            }
            IpRange::V6(a, b) => {
                let (s, e) = (u128::from(a), u128::from(b));
                let size = e - s;
                if s == e {
                    write!(f, "{a}")
                } else if size.wrapping_add(1) & size == 0 && s & size == 0 {
                    write!(f, "{a}/{}", 128 - (size.count_ones()))
                } else {
                    write!(f, "{a}-{b}")
                }
            }
        }
    }
}

/// One entry of an IP list file, as read: its line, its text, its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileEntry {
    pub line: usize,
    pub text: String,
    pub range: IpRange,
}

/// A list of IP addresses, CIDR blocks and ranges, IPv4 and IPv6, kept as
/// merged, sorted, non-overlapping ranges for a lookup in logarithmic time.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for an IPv4 client) is looked up as the IPv4 address `a.b.c.d`;
/// accordingly, the part of an IPv6 entry inside `::ffff:0.0.0.0/96` applies
/// to the IPv4 addresses it maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpList {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpList {
    /// An empty list.
    pub fn new() -> IpList {
        IpList::default()
    }

    /// Builds a list from ranges, in any order, overlapping or not.
    pub fn from_ranges(ranges: impl IntoIterator<Item = IpRange>) -> IpList {
        let mut list = IpList::default();
        for range in ranges {
            list.add(range);
        }
        list.normalize();
        list
    }

    /// Parses entries ([`IpRange::parse`]); the error names the first bad
    /// entry: `"10.0.0.300": expected an address, CIDR or range`.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<IpList, String> {
        let mut list = IpList::default();
        for entry in entries {
            let range = IpRange::parse(entry).map_err(|m| format!("{:?}: {m}", entry.trim()))?;
            list.add(range);
        }
        list.normalize();
        Ok(list)
    }

    /// Reads an IP list file: one entry a line ([`IpRange::parse`]), `;`
    /// starts a comment (at the start of a line or after an entry), blank
    /// lines are ignored. A bad line is an error naming the file and the
    /// line: `clients.txt:12: "10.0.0.300": expected an address, CIDR or
    /// range`.
    pub fn load(path: &Path) -> Result<IpList, ConfigError> {
        let entries = read_file(path)?;
        Ok(IpList::from_ranges(entries.into_iter().map(|e| e.range)))
    }

    /// Parses `text`, the content of the IP list file `path` (used in error
    /// messages), like [`IpList::load`].
    pub fn parse(text: &str, path: &Path) -> Result<IpList, ConfigError> {
        let entries = parse_file(text, path)?;
        Ok(IpList::from_ranges(entries.into_iter().map(|e| e.range)))
    }

    /// Whether `ip` is in the list. IPv4-mapped IPv6 addresses are looked up
    /// as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(a)),
            },
        }
    }

    /// The number of ranges stored once merged (adjacent and overlapping
    /// entries count once; an IPv6 entry reaching into the IPv4-mapped
    /// addresses counts for both families).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the list holds no address at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The merged ranges, IPv4 first, each in ascending order.
    pub fn ranges(&self) -> impl Iterator<Item = IpRange> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|&(a, b)| IpRange::V4(a.into(), b.into()));
        let v6 = self
            .v6
            .iter()
            .map(|&(a, b)| IpRange::V6(a.into(), b.into()));
        v4.chain(v6)
    }

    /// Whether every IPv4 address is in the list.
    pub(crate) fn covers_all_v4(&self) -> bool {
        self.v4 == [(0, u32::MAX)]
    }

    /// Whether every IPv6 address is in the list.
    pub(crate) fn covers_all_v6(&self) -> bool {
        self.v6 == [(0, u128::MAX)]
    }

    /// The first part of `range` that is also in the list, if any.
    pub(crate) fn overlap(&self, range: &IpRange) -> Option<IpRange> {
        if let Some((a, b)) = range.v4_part()
            && let Some((s, e)) = first_overlap(&self.v4, a, b)
        {
            return Some(IpRange::V4(s.into(), e.into()));
        }
        if let IpRange::V6(a, b) = *range
            && let Some((s, e)) = first_overlap(&self.v6, a.into(), b.into())
        {
            return Some(IpRange::V6(s.into(), e.into()));
        }
        None
    }

    /// Adds a range without restoring the invariants: call `normalize`.
    fn add(&mut self, range: IpRange) {
        if let IpRange::V6(a, b) = range {
            self.v6.push((a.into(), b.into()));
        }
        if let Some(v4) = range.v4_part() {
            self.v4.push(v4);
        }
    }

    fn normalize(&mut self) {
        merge(&mut self.v4);
        merge(&mut self.v6);
    }
}

/// Sorts `ranges` and merges those that overlap or touch.
fn merge<T: Copy + Ord + num::One>(ranges: &mut Vec<(T, T)>) {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges.iter() {
        match out.last_mut() {
            Some(last) if last.1 >= start || last.1.checked_inc() == Some(start) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    *ranges = out;
}

/// Binary search in merged, sorted ranges.
fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// The first part of `start..=end` covered by merged, sorted `ranges`.
fn first_overlap<T: Copy + Ord>(ranges: &[(T, T)], start: T, end: T) -> Option<(T, T)> {
    // The first range that ends at or after `start`.
    let i = ranges.partition_point(|&(_, e)| e < start);
    let &(s, e) = ranges.get(i)?;
    (s <= end).then(|| (s.max(start), e.min(end)))
}

mod num {
    /// `x + 1` when it does not overflow.
    pub(super) trait One: Sized {
        fn checked_inc(self) -> Option<Self>;
    }
    impl One for u32 {
        fn checked_inc(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl One for u128 {
        fn checked_inc(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

/// Reads and parses an IP list file, keeping each entry's line.
pub(crate) fn read_file(path: &Path) -> Result<Vec<FileEntry>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => parse_file(&text, path),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            Err(list_error(path, line, "", "the line is not valid UTF-8"))
        }
    }
}

/// Parses the text of an IP list file, keeping each entry's line.
pub(crate) fn parse_file(text: &str, path: &Path) -> Result<Vec<FileEntry>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split(';').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let range = IpRange::parse(entry).map_err(|m| list_error(path, i + 1, entry, &m))?;
        out.push(FileEntry {
            line: i + 1,
            text: entry.to_string(),
            range,
        });
    }
    Ok(out)
}

fn list_error(path: &Path, line: usize, entry: &str, message: &str) -> ConfigError {
    ConfigError::List {
        path: PathBuf::from(path),
        line,
        entry: entry.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn list(entries: &[&str]) -> IpList {
        IpList::from_entries(entries.iter().copied()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn entries() {
        let ok: &[(&str, &str, &str)] = &[
            ("10.0.0.1", "10.0.0.1", "10.0.0.1"),
            (" 10.0.0.1 ", "10.0.0.1", "10.0.0.1"),
            ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
            ("10.1.2.3/8", "10.0.0.0", "10.255.255.255"),
            ("10.0.0.1/32", "10.0.0.1", "10.0.0.1"),
            ("0.0.0.0/0", "0.0.0.0", "255.255.255.255"),
            ("192.168.1.10-192.168.1.99", "192.168.1.10", "192.168.1.99"),
            (
                "192.168.1.10 - 192.168.1.99",
                "192.168.1.10",
                "192.168.1.99",
            ),
            ("192.168.1.10-192.168.1.10", "192.168.1.10", "192.168.1.10"),
            ("2001:db8::1", "2001:db8::1", "2001:db8::1"),
            (
                "2001:db8::/32",
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1", "::ffff:10.0.0.1"),
        ];
        for (text, start, end) in ok {
            let r = IpRange::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((r.start(), r.end()), (ip(start), ip(end)), "{text}");
        }
        let bad = [
            "",
            "10.0.0.300",
            "10.0.0",
            "10.0.0.1.2",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0.1/-1",
            "10.0.0.1/+8",
            "10.0.0.1/8/8",
            "2001:db8::/129",
            "10.0.0.9-10.0.0.1",
            "2001:db8::ff-2001:db8::1",
            "10.0.0.1-::1",
            "10.0.0.1-",
            "-10.0.0.1",
            "10.0.0.1 10.0.0.2",
            "example.test",
            "fe80::1%eth0",
            "10.0.0.*",
            "010.0.0.1",
        ];
        for text in bad {
            assert!(IpRange::parse(text).is_err(), "{text:?} should be refused");
        }
        assert_eq!(
            IpRange::parse("10.0.0.300").unwrap_err(),
            "expected an address, CIDR or range"
        );
        assert!(
            IpRange::parse("10.0.0.9-10.0.0.1")
                .unwrap_err()
                .contains("reversed")
        );
    }

    #[test]
    fn display() {
        for (text, shown) in [
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0-255.255.255.255", "0.0.0.0/0"),
            ("10.0.0.0-10.0.0.255", "10.0.0.0/24"),
            ("10.0.0.1-10.0.0.2", "10.0.0.1-10.0.0.2"),
            ("10.0.0.1-10.0.1.0", "10.0.0.1-10.0.1.0"),
            ("::/0", "::/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8::1-2001:db8::3", "2001:db8::1-2001:db8::3"),
        ] {
            assert_eq!(IpRange::parse(text).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn lookups_and_merging() {
        let l = list(&[
            "127.0.0.1",
            "10.0.0.0/8",
            "192.168.1.10-192.168.1.99",
            "192.168.1.100",
            "192.168.1.50-192.168.1.60",
            "2001:db8::/32",
            "255.255.255.255",
            "0.0.0.0",
        ]);
        // 127.0.0.1, 10/8, 192.168.1.10-100 (merged: adjacent and inside),
        // 0.0.0.0, 255.255.255.255, and the IPv6 block.
        assert_eq!(l.len(), 6);
        assert!(!l.is_empty());
        for yes in [
            "127.0.0.1",
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.10",
            "192.168.1.99",
            "192.168.1.100",
            "0.0.0.0",
            "255.255.255.255",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(l.contains(ip(yes)), "{yes}");
        }
        for no in [
            "127.0.0.2",
            "9.255.255.255",
            "11.0.0.0",
            "192.168.1.9",
            "192.168.1.101",
            "0.0.0.1",
            "255.255.255.254",
            "::ffff:11.0.0.0",
            "::1",
            "::",
            // IPv4-compatible (deprecated) is not IPv4-mapped.
            "::10.0.0.1",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
        ] {
            assert!(!l.contains(ip(no)), "{no}");
        }

        let empty = IpList::new();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert!(!empty.contains(ip("10.0.0.1")));
        assert!(!empty.contains(ip("::1")));

        // Mapped entries apply to IPv4 clients too, and a v6 range reaching
        // into the mapped block covers the IPv4 addresses it maps.
        let l = list(&["::ffff:10.0.0.0/104"]);
        assert!(l.contains(ip("10.9.9.9")) && l.contains(ip("::ffff:10.9.9.9")));
        assert!(!l.contains(ip("11.0.0.0")));
        let all = list(&["::/0"]);
        assert!(all.contains(ip("1.2.3.4")) && all.covers_all_v4() && all.covers_all_v6());
        let l = list(&["0.0.0.0/1", "128.0.0.0/1"]);
        assert!(l.covers_all_v4() && !l.covers_all_v6());
        assert_eq!(l.len(), 1);

        let ranges: Vec<String> = list(&["10.0.0.2", "10.0.0.1", "::1"])
            .ranges()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(ranges, ["10.0.0.1-10.0.0.2", "::1"]);

        let r = IpRange::parse("10.0.0.0/8").unwrap();
        assert!(r.contains(ip("10.2.3.4")) && r.contains(ip("::ffff:10.2.3.4")));
        assert!(!r.contains(ip("11.0.0.0")) && !r.contains(ip("::1")));
        let r = IpRange::parse("::/0").unwrap();
        assert!(r.contains(ip("10.2.3.4")) && r.contains(ip("::1")));
        let r = IpRange::parse("2001:db8::/32").unwrap();
        assert!(r.contains(ip("2001:db8::1")) && !r.contains(ip("10.2.3.4")));
        assert_eq!(
            IpList::from_entries(["10.0.0.1", " 10.0.0.300 "]).unwrap_err(),
            "\"10.0.0.300\": expected an address, CIDR or range"
        );
    }

    /// A large list: every entry is found, its neighbours are not, and
    /// building it takes no noticeable time.
    #[test]
    fn large_list() {
        // 100 000 /30 blocks (4 addresses each) with a gap of 4 between
        // them, spread over 10.0.0.0/8 and 2001:db8::/32, in reverse order.
        let mut text = String::new();
        for i in (0..50_000u32).rev() {
            let v4 = Ipv4Addr::from(0x0a00_0000 + i * 8);
            text.push_str(&format!("{v4}/30 ; block {i}\n"));
            let v6 = Ipv6Addr::from((0x2001_0db8_u128 << 96) + u128::from(i) * 8);
            let v6_end = Ipv6Addr::from(u128::from(v6) + 3);
            text.push_str(&format!("{v6}-{v6_end}\n"));
        }
        let started = std::time::Instant::now();
        let l = IpList::parse(&text, Path::new("big.txt")).unwrap_or_else(|e| panic!("{e}"));
        let built = started.elapsed();
        assert!(built.as_secs() < 5, "building took {built:?}");
        assert_eq!(l.len(), 100_000);
        for i in [0u32, 1, 2, 24_999, 25_000, 49_998, 49_999] {
            let base = 0x0a00_0000 + i * 8;
            for (offset, inside) in [(0, true), (3, true), (4, false), (7, false)] {
                let v4 = Ipv4Addr::from(base + offset);
                assert_eq!(l.contains(v4.into()), inside, "{v4}");
                assert_eq!(
                    l.contains(v4.to_ipv6_mapped().into()),
                    inside,
                    "{v4} mapped"
                );
                let v6 =
                    Ipv6Addr::from((0x2001_0db8_u128 << 96) + u128::from(i) * 8 + offset as u128);
                assert_eq!(l.contains(v6.into()), inside, "{v6}");
            }
        }
        assert!(!l.contains(ip("9.255.255.255")));
        assert!(!l.contains(ip("10.6.26.128")));
        assert!(!l.contains(ip("2001:db7::")));

        // Many lookups stay fast.
        let started = std::time::Instant::now();
        let mut found = 0;
        for i in 0..1_000_000u32 {
            if l.contains(Ipv4Addr::from(0x0a00_0000 + (i % 400_000)).into()) {
                found += 1;
            }
        }
        assert_eq!(found, 500_000);
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn files() {
        let text = "; relay clients\n\n127.0.0.1\n  10.0.0.0/8   ; the office\r\n192.168.1.10-192.168.1.99;no space\n;172.16.0.1\n   \n2001:db8::/32\n";
        let entries = parse_file(text, Path::new("clients.txt")).unwrap();
        let lines: Vec<(usize, &str)> = entries.iter().map(|e| (e.line, e.text.as_str())).collect();
        assert_eq!(
            lines,
            [
                (3, "127.0.0.1"),
                (4, "10.0.0.0/8"),
                (5, "192.168.1.10-192.168.1.99"),
                (8, "2001:db8::/32"),
            ]
        );
        let l = IpList::parse(text, Path::new("clients.txt")).unwrap();
        assert!(l.contains(ip("192.168.1.50")));
        assert!(!l.contains(ip("172.16.0.1")));
        assert!(IpList::parse("", Path::new("x")).unwrap().is_empty());
        assert!(
            IpList::parse("; only comments\n\n", Path::new("x"))
                .unwrap()
                .is_empty()
        );

        let bad: &[(&str, &str)] = &[
            (
                "10.0.0.1\n10.0.0.300\n",
                "clients.txt:2: \"10.0.0.300\": expected an address, CIDR or range",
            ),
            (
                "\n\n10.0.0.9-10.0.0.1 ; oops\n",
                "clients.txt:3: \"10.0.0.9-10.0.0.1\": the range is reversed",
            ),
            (
                "10.0.0.1/33",
                "clients.txt:1: \"10.0.0.1/33\": expected an address, CIDR or range: the prefix length",
            ),
            (
                "10.0.0.1 # comment",
                "clients.txt:1: \"10.0.0.1 # comment\": expected",
            ),
            (
                "10.0.0.1, 10.0.0.2",
                "clients.txt:1: \"10.0.0.1, 10.0.0.2\"",
            ),
            ("\u{0}", "clients.txt:1: \"\\0\": expected"),
        ];
        for (text, expected) in bad {
            let err = IpList::parse(text, Path::new("clients.txt"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.txt");
        std::fs::write(&path, "10.0.0.0/8\n").unwrap();
        assert!(IpList::load(&path).unwrap().contains(ip("10.1.1.1")));
        std::fs::write(&path, b"10.0.0.1\n10.0.0.2 ; caf\xe9\n").unwrap();
        let err = IpList::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2: ", path.display())) && err.contains("UTF-8"),
            "{err}"
        );
        let missing = dir.path().join("missing.txt");
        let err = IpList::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err}");
    }
}

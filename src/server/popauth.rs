//! POP-before-SMTP: the addresses from which a `mobile` account logged in
//! over POP3 lately, so a road warrior's mail client may relay without
//! SMTP AUTH (`relay.pop_before_smtp`, `relay.pop_before_smtp_max`).
//!
//! Lookups are one hash probe whatever the window (DMail's note on large
//! windows); at most `max` addresses are kept, the oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct PopBeforeSmtp {
    window: Option<Duration>,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    until: HashMap<IpAddr, Instant>,
    /// Insertion order, for evicting the oldest; entries may be stale.
    order: VecDeque<(IpAddr, Instant)>,
}

impl PopBeforeSmtp {
    pub(crate) fn new(window: Option<Duration>, max: usize) -> PopBeforeSmtp {
        PopBeforeSmtp {
            window,
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers a POP3 login from `ip`.
    pub(crate) fn record(&self, ip: IpAddr, now: Instant) {
        let Some(window) = self.window else { return };
        let Ok(mut g) = self.inner.lock() else { return };
        let until = now + window;
        g.until.insert(ip, until);
        g.order.push_back((ip, until));
        while g.until.len() > self.max || g.order.len() > 2 * self.max {
            let Some((old, at)) = g.order.pop_front() else {
                break;
            };
            if g.until.get(&old) == Some(&at) {
                g.until.remove(&old);
            }
        }
    }

    /// Whether `ip` logged in within the window.
    pub(crate) fn recent(&self, ip: IpAddr, now: Instant) -> bool {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.until.get(&ip).copied())
            .is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_capacity() {
        let p = PopBeforeSmtp::new(Some(Duration::from_secs(120)), 2);
        let t = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(!p.recent(a, t));
        p.record(a, t);
        assert!(p.recent(a, t + Duration::from_secs(119)));
        assert!(!p.recent(a, t + Duration::from_secs(120)));
        p.record(b, t);
        p.record(a, t + Duration::from_secs(1)); // refreshed: a is now newer than b
        p.record(c, t + Duration::from_secs(2));
        assert!(
            !p.recent(b, t + Duration::from_secs(3)),
            "the oldest is dropped"
        );
        assert!(p.recent(a, t + Duration::from_secs(3)));
        assert!(p.recent(c, t + Duration::from_secs(3)));
        let off = PopBeforeSmtp::new(None, 10);
        off.record(a, t);
        assert!(!off.recent(a, t));
    }
}

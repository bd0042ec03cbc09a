//! When to try a recipient again, and when to give up: a pure function of
//! the recipient's state, the outcome of an attempt and the time.

use std::time::Duration;

use crate::envelope::{Envelope, RcptStatus, Recipient};

/// The administrator's retry policy (`[queue]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Waits between attempts; past the end of the list the last repeats.
    pub retry: Vec<Duration>,
    /// A recipient still failing this long after arrival is given up.
    pub max_age: Duration,
    /// Tell the sender once when a message is this old and still pending.
    pub delay_warning: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        RetryPolicy {
            retry: vec![m(5), m(15), m(30), m(60), m(120), m(240)],
            max_age: Duration::from_secs(5 * 86_400),
            delay_warning: Some(m(240)),
        }
    }
}

/// What one delivery attempt to one recipient came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    /// 4xx, connection failure, DNS failure: try again later.
    Temporary(String),
    /// 5xx or a local refusal that cannot change: bounce.
    Permanent(String),
}

/// Applies an outcome to a recipient (`now` and `received` in Unix seconds).
pub fn apply(r: &mut Recipient, outcome: Outcome, received: u64, now: u64, policy: &RetryPolicy) {
    match outcome {
        Outcome::Delivered(reply) => {
            r.status = RcptStatus::Delivered;
            r.last_error = reply;
            r.next_attempt = 0;
        }
        Outcome::Permanent(error) => {
            r.status = RcptStatus::Failed;
            r.last_error = error;
            r.next_attempt = 0;
        }
        Outcome::Temporary(error) => {
            r.attempts += 1;
            if now.saturating_sub(received) >= policy.max_age.as_secs() {
                r.status = RcptStatus::Failed;
                r.last_error = format!(
                    "gave up after {} attempts over {}; last error: {error}",
                    r.attempts,
                    human(policy.max_age)
                );
                r.next_attempt = 0;
                return;
            }
            let idx = (r.attempts as usize).saturating_sub(1);
            let wait = policy
                .retry
                .get(idx)
                .or(policy.retry.last())
                .copied()
                .unwrap_or(Duration::from_secs(300));
            r.status = RcptStatus::Pending;
            r.last_error = error;
            r.next_attempt = now + wait.as_secs().max(1);
        }
    }
}

/// Whether the sender should now get its one delay notice.
pub fn needs_delay_warning(env: &Envelope, now: u64, policy: &RetryPolicy) -> bool {
    let Some(after) = policy.delay_warning else {
        return false;
    };
    !env.warned
        && !env.sender.is_empty()
        && now.saturating_sub(env.received) >= after.as_secs()
        && env
            .recipients
            .iter()
            .any(|r| r.status == RcptStatus::Pending)
}

/// The earliest next attempt of the pending recipients, if any.
pub fn next_attempt(env: &Envelope) -> Option<u64> {
    env.recipients
        .iter()
        .filter(|r| r.status == RcptStatus::Pending)
        .map(|r| r.next_attempt)
        .min()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Target;

    fn rcpt() -> Recipient {
        Recipient::new("a@b.test".into(), Target::Remote)
    }

    #[test]
    fn backoff_follows_the_list_then_repeats_the_last() {
        let p = RetryPolicy::default();
        let mut r = rcpt();
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            apply(
                &mut r,
                Outcome::Temporary("451 later".into()),
                1_000_000,
                now,
                &p,
            );
            assert_eq!(r.status, RcptStatus::Pending);
            waits.push((r.next_attempt - now) / 60);
            now = r.next_attempt;
        }
        assert_eq!(waits, [5, 15, 30, 60, 120, 240, 240, 240]);
        assert_eq!(r.attempts, 8);
    }

    #[test]
    fn gives_up_after_max_age() {
        let p = RetryPolicy::default();
        let mut r = rcpt();
        let received = 1_000_000;
        apply(
            &mut r,
            Outcome::Temporary("451 later".into()),
            received,
            received + 5 * 86_400,
            &p,
        );
        assert_eq!(r.status, RcptStatus::Failed);
        assert!(
            r.last_error.contains("gave up after 1 attempts over 5d"),
            "{}",
            r.last_error
        );
        assert!(r.last_error.contains("451 later"));
    }

    #[test]
    fn permanent_and_delivered_are_final() {
        let p = RetryPolicy::default();
        let mut r = rcpt();
        apply(&mut r, Outcome::Permanent("550 5.1.1 no".into()), 0, 10, &p);
        assert_eq!(r.status, RcptStatus::Failed);
        let mut r = rcpt();
        apply(&mut r, Outcome::Delivered("250 ok".into()), 0, 10, &p);
        assert_eq!(r.status, RcptStatus::Delivered);
    }

    #[test]
    fn delay_warning_once_and_never_to_null_sender() {
        let p = RetryPolicy::default();
        let mut env = Envelope {
            id: "X".into(),
            received: 0,
            sender: "s@x.test".into(),
            client_ip: String::new(),
            helo: String::new(),
            recipients: vec![rcpt()],
            warned: false,
            filter_score: None,
        };
        assert!(!needs_delay_warning(&env, 3 * 3600, &p));
        assert!(needs_delay_warning(&env, 4 * 3600, &p));
        env.warned = true;
        assert!(!needs_delay_warning(&env, 5 * 3600, &p));
        env.warned = false;
        env.sender.clear();
        assert!(!needs_delay_warning(&env, 5 * 3600, &p));
        let off = RetryPolicy {
            delay_warning: None,
            ..RetryPolicy::default()
        };
        env.sender = "s@x.test".into();
        assert!(!needs_delay_warning(&env, 5 * 3600, &off));
    }
}

//! The state store as the policy's limits see it, and the log of checks
//! skipped because the store did not answer (fail open: mail flows).

use std::sync::atomic::{AtomicU64, Ordering};

use mxguard_policy::limits::Counters;
use mxguard_store::StateStore;

/// [`Counters`] on the server's state store.
pub(crate) struct StoreCounters<'a>(pub &'a dyn StateStore);

impl Counters for StoreCounters<'_> {
    fn get(&self, key: &str, now: u64) -> Result<Option<u64>, String> {
        self.0.get(key, now).map_err(|e| e.to_string())
    }

    fn put(&self, key: &str, value: u64, expires: u64) -> Result<(), String> {
        self.0.put(key, value, expires).map_err(|e| e.to_string())
    }

    fn incr(&self, key: &str, n: u64, expires: u64, now: u64) -> Result<u64, String> {
        self.0.incr(key, n, expires, now).map_err(|e| e.to_string())
    }
}

/// When the last "store down" warning was logged (Unix seconds).
static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
/// Checks skipped since then.
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Logs that `check` was skipped because the store failed: at most one
/// line every 10 seconds, with how many checks were skipped meanwhile, so a
/// dead Redis does not flood the log.
pub(crate) fn store_down(check: &str, error: &str) {
    let skipped = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = mxguard_store::unix_now();
    let last = LAST_WARNING.load(Ordering::Relaxed);
    if now < last + 10
        || LAST_WARNING
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    SKIPPED.store(0, Ordering::Relaxed);
    tracing::warn!(
        check,
        error,
        skipped,
        "state store unavailable: check skipped, mail accepted without it (fail open)"
    );
}

//! Polling until something holds.

use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it holds; false if it still does not after `timeout`.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_for`] that panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    assert!(wait_for(timeout, check), "{what}: not within {timeout:?}");
}

/// [`wait_for`] for async tests: sleeps on the Tokio timer between checks instead of blocking
/// the thread.
pub async fn wait_for_async(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

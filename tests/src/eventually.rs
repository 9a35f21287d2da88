//! Bounded polling: retry a check until it passes or a deadline passes, with
//! a short backoff. Tests use this instead of bare sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// First pause between two attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Calls `check` until it returns `Ok`, for at most `timeout`; then the last
/// error, with how long and how often it was tried.
pub fn eventually<T>(
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match check() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).context(format!(
                    "condition still false after {timeout:?} ({attempts} attempts)"
                ))
            }
            Err(_) => {}
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`eventually`] for async checks, sleeping on the tokio timer between
/// attempts.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match check().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).context(format!(
                    "condition still false after {timeout:?} ({attempts} attempts)"
                ))
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

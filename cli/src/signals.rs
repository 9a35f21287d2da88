//! SIGINT and SIGTERM.
//!
//! The first signal asks the running command to stop: `sync`, `backfill` and `tail` drain what
//! is in flight (a connect or a back-off in progress is dropped at once), every other command
//! stops at once. The drain is bounded by `--shutdown-timeout`; a second signal, or the timeout,
//! stops at once. Either way the state left behind is resumable: green holds only whole
//! transactions and the slot was never told more than green holds.
//!
//! The handlers are installed before anything else runs, so a signal that arrives while the
//! first connection is still being opened is never lost to the default action.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The signals received so far, shared by whoever waits on them.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    /// Installs the SIGINT and SIGTERM handlers and starts counting.
    pub(crate) fn install() -> Signals {
        let (tx, count) = watch::channel(0u32);
        let streams = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        tokio::spawn(async move {
            let (mut int, mut term) = match streams {
                (Ok(int), Ok(term)) => (int, term),
                (int, term) => {
                    let error = int.err().or(term.err()).map(|e| e.to_string());
                    tracing::warn!(
                        error = error.as_deref().unwrap_or_default(),
                        "cannot listen for SIGINT/SIGTERM; a signal stops blueshift without draining"
                    );
                    return;
                }
            };
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                let n = *tx.borrow() + 1;
                if n == 1 {
                    tracing::info!(
                        signal = name,
                        "shutdown requested; a second signal stops at once"
                    );
                } else {
                    tracing::warn!(signal = name, "second signal: stopping at once");
                }
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        Signals { count }
    }

    /// Completes at the first signal.
    pub(crate) fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut count = self.count.clone();
        async move {
            let _ = count.wait_for(|n| *n >= 1).await;
        }
    }

    /// Completes when the command must stop at once: a second signal, or `timeout` after the
    /// first. Returns what happened, for the error message.
    pub(crate) fn forced(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = String> + Send + 'static {
        let mut count = self.count.clone();
        async move {
            let first = count.wait_for(|n| *n >= 1).await.is_ok();
            if !first {
                return std::future::pending().await;
            }
            let second = async move {
                let seen = count.wait_for(|n| *n >= 2).await.is_ok();
                if !seen {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = second => "a second signal stopped it at once".to_owned(),
                () = tokio::time::sleep(timeout) => format!(
                    "the drain did not finish within --shutdown-timeout ({}s)",
                    timeout.as_secs()
                ),
            }
        }
    }
}

//! A background task of an attempt (the blue monitor, the lag heartbeat) that can be asked to
//! stop and close its connection with a `Terminate`, rather than being aborted.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stopping task may take to close its connection.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running background task.
#[derive(Debug)]
pub(crate) struct Background {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A stop request, for the task to select on between units of work.
pub(crate) type StopRequest = oneshot::Receiver<()>;

impl Background {
    /// Spawns `work`, handing it the stop request.
    pub(crate) fn spawn<F>(work: impl FnOnce(StopRequest) -> F) -> Background
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, requested) = oneshot::channel();
        Background {
            stop,
            task: tokio::spawn(work(requested)),
        }
    }

    /// Completes when the task ends by itself (it was not asked to stop). Cancellation-safe.
    pub(crate) async fn ended(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Whether the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the task to stop and waits for it (at most five seconds, then it is aborted).
    pub(crate) async fn stop(self) {
        let Background { stop, mut task } = self;
        let _ = stop.send(());
        // A task that ended by itself may have been awaited already by `ended`: polling its
        // handle again would panic ("JoinHandle polled after completion").
        if task.is_finished() {
            return;
        }
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

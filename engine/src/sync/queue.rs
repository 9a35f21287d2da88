//! The queue between the reader and the appliers, and which applier takes from it.
//!
//! The first applier takes the next job whenever it is free. The others (**helpers**) take one
//! only while the queue is at least [`HELPERS_JOIN_AT`] jobs deep, and otherwise park until the
//! reader finds it that deep. Live traffic then goes to one applier, one green session:
//! transactions that arrive one or two at a time would gain nothing from more, since the next
//! one usually depends on the one before (TPC-B's keyless history table and hot branch rows chain
//! every transaction), and spreading them over four sessions cost green 13–19 % more CPU per
//! change (`blueshift bench live` at 80 %: four appliers in turn against `--workers 1` and
//! against this rule; BENCHMARKS.md): each session's backend comes to the work with cold
//! caches, on two cores. A backlog (catch-up, a burst) fills the queue at once, and every
//! applier takes from it as before.
//!
//! Parking is a heuristic of speed only: a parked helper holds no job, and every job an applier
//! holds depends only on jobs taken before it, so the first applier alone always progresses. A
//! parked helper also looks again now and then ([`PARKED_AT_MOST`]), so a wake-up the reader
//! could miss costs time, never progress. When the reader ends, the queue closes and every helper
//! wakes to see it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex, MutexGuard, Notify};

use super::worker::Job;

/// Helpers take from the queue while this many jobs (or more) wait in it.
pub(crate) const HELPERS_JOIN_AT: usize = 4;

/// A parked helper looks at the queue again after this long, woken or not.
const PARKED_AT_MOST: Duration = Duration::from_millis(100);

/// The appliers' end: the jobs, and the helpers' parking place.
#[derive(Debug)]
pub(crate) struct JobQueue {
    jobs: Mutex<mpsc::Receiver<Job>>,
    wake: Notify,
    /// Helpers waiting to join (parked, or about to look at the queue).
    parked: AtomicUsize,
    /// [`HELPERS_JOIN_AT`], or the queue's capacity when smaller (a queue that cannot get that
    /// deep would keep the helpers out for good).
    join_at: usize,
}

/// The reader's end.
#[derive(Debug)]
pub(crate) struct JobSender {
    /// `None` only while dropping: the channel closes before the helpers are woken.
    jobs: Option<mpsc::Sender<Job>>,
    queue: Arc<JobQueue>,
}

/// A queue of `capacity` jobs (at least one).
pub(crate) fn channel(capacity: usize) -> (JobSender, Arc<JobQueue>) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let queue = Arc::new(JobQueue {
        jobs: Mutex::new(rx),
        wake: Notify::new(),
        parked: AtomicUsize::new(0),
        join_at: HELPERS_JOIN_AT.min(capacity),
    });
    let sender = JobSender {
        jobs: Some(tx),
        queue: Arc::clone(&queue),
    };
    (sender, queue)
}

/// The queue lost its appliers.
#[derive(Debug)]
pub(crate) struct Closed;

impl JobSender {
    /// Queues `job`, waiting while the queue is full; wakes the helpers once it is deep.
    pub(crate) async fn send(&self, job: Job) -> Result<(), Closed> {
        let jobs = self.jobs.as_ref().ok_or(Closed)?;
        jobs.send(job).await.map_err(|_| Closed)?;
        if self.queue.parked.load(Ordering::Acquire) > 0 && self.depth() >= self.queue.join_at {
            self.queue.wake.notify_waiters();
        }
        Ok(())
    }

    /// How many jobs wait in the queue (not those the appliers hold).
    pub(crate) fn depth(&self) -> usize {
        self.jobs
            .as_ref()
            .map_or(0, |jobs| jobs.max_capacity() - jobs.capacity())
    }
}

impl Drop for JobSender {
    fn drop(&mut self) {
        // Closed first, then woken: a helper that wakes finds the queue closed.
        drop(self.jobs.take());
        self.queue.wake.notify_waiters();
    }
}

impl JobQueue {
    /// The queue, to take from: at once for the first applier; for a helper, once the queue is
    /// deep enough or closed (see the module docs).
    pub(crate) async fn take(&self, helper: bool) -> MutexGuard<'_, mpsc::Receiver<Job>> {
        if !helper {
            return self.jobs.lock().await;
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        let jobs = loop {
            // Registered before looking, so a wake-up between the look and the wait counts.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let jobs = self.jobs.lock().await;
            if jobs.len() >= self.join_at || jobs.is_closed() {
                break jobs;
            }
            drop(jobs);
            // Timed out or woken: either way, look again.
            let _ = tokio::time::timeout(PARKED_AT_MOST, woken).await;
        };
        self.parked.fetch_sub(1, Ordering::AcqRel);
        jobs
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use blueshift_decoder::Lsn;

    use super::*;

    fn job(seq: u64) -> Job {
        Job {
            queued: Instant::now(),
            seq,
            after: 0,
            deps: Vec::new(),
            barrier: false,
            tx: None,
            end_lsn: Lsn(seq),
            _memory: None,
            streamed: None,
        }
    }

    #[tokio::test]
    async fn a_helper_waits_for_a_deep_queue_the_first_applier_does_not() {
        let (sender, queue) = channel(16);
        sender.send(job(1)).await.unwrap();
        // The first applier takes the only job at once.
        assert_eq!(queue.take(false).await.recv().await.unwrap().seq, 1);

        let helper = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.take(true).await.recv().await.map(|j| j.seq) })
        };
        for seq in 2..=u64::try_from(HELPERS_JOIN_AT).unwrap() {
            sender.send(job(seq)).await.unwrap();
        }
        // Three waiting: not deep enough yet (and longer than one park).
        tokio::time::sleep(PARKED_AT_MOST * 2).await;
        assert!(!helper.is_finished());
        assert_eq!(sender.depth(), HELPERS_JOIN_AT - 1);
        // The fourth wakes it; it takes the head of the queue.
        sender.send(job(5)).await.unwrap();
        let took = tokio::time::timeout(Duration::from_secs(5), helper)
            .await
            .expect("the helper joined")
            .unwrap();
        assert_eq!(took, Some(2));
    }

    #[tokio::test]
    async fn a_parked_helper_wakes_when_the_reader_ends() {
        let (sender, queue) = channel(16);
        let helper = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.take(true).await.recv().await.is_none() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(sender);
        let closed = tokio::time::timeout(PARKED_AT_MOST / 2, helper)
            .await
            .expect("woken at once, not at its next look")
            .unwrap();
        assert!(closed);
    }

    #[tokio::test]
    async fn a_queue_smaller_than_the_threshold_still_lets_helpers_in() {
        let (sender, queue) = channel(2);
        sender.send(job(1)).await.unwrap();
        sender.send(job(2)).await.unwrap();
        let took = tokio::time::timeout(Duration::from_secs(5), async {
            queue.take(true).await.recv().await.map(|j| j.seq)
        })
        .await
        .expect("a full queue of two is deep enough");
        assert_eq!(took, Some(1));
    }
}

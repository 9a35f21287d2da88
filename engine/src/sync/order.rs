//! Commit order: transaction `n` commits on green only after `n - 1` has, whichever applier
//! runs it. This is what keeps green a transaction-consistent past state of blue while the
//! appliers' statements run in parallel.

use std::time::Duration;

use tokio::sync::watch;

/// The highest transaction number committed on green, shared by every applier.
#[derive(Debug, Clone)]
pub(crate) struct CommitOrder {
    committed: watch::Sender<u64>,
}

impl CommitOrder {
    /// Starts with `committed` as the last committed number.
    pub(crate) fn new(committed: u64) -> CommitOrder {
        CommitOrder {
            committed: watch::Sender::new(committed),
        }
    }

    /// The highest number committed so far.
    pub(crate) fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Records that everything up to `seq` committed (a group commit covers several numbers).
    /// Called in order, by the applier that committed it.
    pub(crate) fn mark_committed(&self, seq: u64) {
        self.committed.send_modify(|c| {
            debug_assert!(*c < seq, "commits are recorded in order");
            *c = (*c).max(seq);
        });
    }

    /// Waits until `seq` has committed (at once when `seq` is 0 or already committed), for at
    /// most `limit` when given. False when the limit passed first.
    pub(crate) async fn wait_for(&self, seq: u64, limit: Option<Duration>) -> bool {
        let mut rx = self.committed.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let wait = async move { rx.wait_for(|c| *c >= seq).await.is_ok() };
        match limit {
            None => wait.await,
            Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_the_number_commits() {
        let order = CommitOrder::new(4);
        assert!(order.wait_for(3, None).await);
        assert!(!order.wait_for(5, Some(Duration::from_millis(20))).await);
        let o2 = order.clone();
        let waiter = tokio::spawn(async move { o2.wait_for(6, None).await });
        order.mark_committed(5);
        order.mark_committed(6);
        assert!(waiter.await.unwrap());
        assert_eq!(order.committed(), 6);
    }
}

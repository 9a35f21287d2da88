//! One applier task: takes the next scheduled transaction, waits for the transactions it
//! conflicts with, runs its changes on green, waits for its turn, commits, and queues the commit
//! for the durability tracker, which tells the slot once green has flushed it.
//!
//! Deadlock breaking: a transaction whose changes ran but whose turn does not come within
//! `turn_timeout` may hold a row lock the head-of-line transaction waits for — a cycle
//! PostgreSQL cannot see, since one edge of it is our commit order. It then rolls back, waits
//! for its turn without holding anything, and runs again. A transaction read back from a spill
//! file is scheduled as a barrier, so its turn has come before it runs and it never re-runs.
//!
//! A transaction applied while blue streamed it ([`streamed`](super::streamed)) comes with a
//! ticket: its streamed applier commits it at its turn, and the applier that took the job only
//! records the commit — or, when the streamed apply gave up, applies it as any other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blueshift_applier::{failpoint, Applier, Changes, Transaction};
use blueshift_decoder::Lsn;
use tokio::sync::OwnedSemaphorePermit;

use super::durability::Durability;
use super::hold::Hold;
use super::order::CommitOrder;
use super::queue::JobQueue;
use super::scheduler::Slot;
use super::SyncError;
use crate::metrics::{Metrics, Stage};

/// A transaction with its place in the order.
#[derive(Debug)]
pub(crate) struct Job {
    /// When the reader queued it.
    pub(crate) queued: Instant,
    /// Its number in blue's commit order.
    pub(crate) seq: u64,
    /// Wait for this number to commit before running (0: none).
    pub(crate) after: u64,
    /// Every transaction in flight it conflicts with, ascending (`after` is the last): a group
    /// waits for those before its first member (see [`Slot`](super::scheduler::Slot)).
    pub(crate) deps: Vec<u64>,
    /// A barrier (TRUNCATE): it waits for every earlier transaction, so a group holding it
    /// waits for everything before the group.
    pub(crate) barrier: bool,
    /// The transaction; `None` for one that is only passed through to keep the order (dropped
    /// by loop prevention): nothing to apply, but the slot may move past it.
    pub(crate) tx: Option<Transaction>,
    /// Where blue's commit of it ends: acknowledged once it is durable on green.
    pub(crate) end_lsn: Lsn,
    /// Its share of the memory budget of queued transactions, returned once it committed.
    pub(crate) _memory: Option<OwnedSemaphorePermit>,
    /// Applied while blue streamed it: the streamed apply's outcome (see
    /// [`streamed`](super::streamed)). Such a job is never grouped.
    pub(crate) streamed: Option<super::streamed::Ticket>,
}

/// At most this many source transactions are applied as one green transaction.
const GROUP_MAX_TRANSACTIONS: usize = 512;

/// A group stops growing past this many changes.
const GROUP_MAX_CHANGES: usize = 8192;

/// Runs one applier until the queue closes.
///
/// **Group commit**: a free applier takes not just the next job but, while more are already
/// queued (the pipeline is catching up), the contiguous run after it, and applies their changes
/// in blue's order as one green transaction whose origin progress is the last one's commit LSN.
/// Green still moves from one transaction-consistent state of blue to a later one, a crash still
/// rolls the whole group back (and it is sent again), and a caught-up pipeline, whose queue is
/// empty, applies each transaction on its own for the lowest latency. Transactions read back
/// from a spill file are never merged.
///
/// **Adaptive batching**: when the group so formed took everything queued and depends on a
/// transaction still in flight, its applier waits for that transaction *with the queue in
/// hand* and then takes what arrived meanwhile. Without that, the other appliers would take the
/// arrivals one each, and each would wait for the one before it: under a steady stream of
/// dependent transactions (TPC-B: every one touches `pgbench_history`, keyless, and a hot branch
/// row) that is one green transaction, one round trip and a dozen context switches per source
/// transaction, serialised. With it, what arrives while a green transaction is in flight goes
/// in the next one: one at a time while the stream is slow, larger groups as it speeds up. A
/// full group never waits with the queue, so catch-up (full groups) is unchanged, and so are
/// independent transactions (nothing to wait for).
///
/// Applier `index` 0 takes from the queue whenever it is free; the others only while the queue
/// is deep (see [`queue`](super::queue)): live traffic stays on one green session.
#[allow(clippy::too_many_arguments)] // the applier's shared handles, one each
pub(crate) async fn run(
    index: usize,
    mut applier: Applier,
    jobs: Arc<JobQueue>,
    order: CommitOrder,
    durability: Arc<Durability>,
    metrics: Metrics,
    turn_timeout: Duration,
    hold: Arc<Hold>,
) -> Result<(), SyncError> {
    let mut carried: Option<Job> = None;
    // Transactions a backfill's fences apply to are applied one by one: fences compare each
    // change's own commit position, which a merged group no longer has.
    // So are those of two-way mode: each row written must carry its own transaction's commit
    // time, which conflicts compare.
    let fenced_until = if applier.detects_conflicts() {
        Lsn(u64::MAX)
    } else {
        applier
            .fences()
            .values()
            .map(|f| f.reconcile_before.max(f.skip_before))
            .max()
            .unwrap_or(Lsn::INVALID)
    };
    loop {
        let helper = index > 0;
        let group = match take_group(&jobs, &mut carried, fenced_until, &hold, &order, helper).await
        {
            Some(group) => group,
            None => {
                tracing::debug!(applier = index, "no more transactions");
                applier.close().await;
                return Ok(());
            }
        };
        let Group {
            first,
            last,
            after,
            first_end,
            end_lsn,
            transactions,
            mut tx,
            _memory,
            queued,
            streamed,
        } = group;
        let taken = Instant::now();
        metrics.stage(Stage::Queue, taken.duration_since(queued));
        order.wait_for(after, None).await;
        let started = Instant::now();
        metrics.stage(Stage::Depends, started.duration_since(taken));
        // Committed by its streamed applier at its turn, or `None`: applied here as any other.
        let streamed = match streamed {
            Some(ticket) => ticket.wait(last).await?,
            None => None,
        };
        let mut applied;
        // Only a group of several source transactions is folded (see blueshift_applier's fold
        // module): a single one, however large, goes row by row.
        applier.set_group(transactions > 1);
        let commit_time = tx.as_ref().and_then(|tx| tx.commit_time.to_system_time());
        let outcome = match (streamed, tx.as_mut()) {
            (Some(outcome), _) => {
                applied = Instant::now();
                metrics.stage(Stage::Apply, applied.duration_since(started));
                Some(outcome)
            }
            (None, None) => {
                order.wait_for(first - 1, None).await;
                hold.at_turn(first_end, end_lsn).await;
                None
            }
            // Its turn has come already (the usual case when caught up): BEGIN, the changes
            // and the COMMIT go down the connection together, one round trip.
            (None, Some(tx)) if order.committed() + 1 >= first => {
                // Verify's hold, as below: the COMMIT leaves with the changes here.
                hold.at_turn(first_end, end_lsn).await;
                let outcome = applier
                    .apply(tx)
                    .await
                    .map_err(|e| SyncError::apply(last, e))?;
                failpoint::hit("after-green-commit");
                applied = Instant::now();
                metrics.stage(Stage::Apply, applied.duration_since(started));
                metrics.stage(Stage::Turn, Duration::ZERO);
                metrics.stage(Stage::Commit, Duration::ZERO);
                Some(outcome)
            }
            (None, Some(tx)) => {
                let mut attempts = 0u32;
                loop {
                    attempts += 1;
                    // Whether every transaction before it had committed when it started: only
                    // then is a unique conflict real.
                    let at_head = order.committed() + 1 >= first;
                    match applier.begin_and_apply(tx).await {
                        Ok(_) => {}
                        // A unique value the transaction takes may be freed by one ahead of
                        // it that has not committed yet: writesets see the old values of
                        // unique columns only when blue sends them (the key, or REPLICA
                        // IDENTITY FULL). Re-run it at the head of the line, where such a
                        // conflict is real. The same for a change green refuses as it is
                        // (blocked: sync waits for green to be fixed): failing there, with every
                        // earlier transaction committed, nothing before it is rolled back and
                        // re-sent. (It rolled back already; a spill is never ahead of anything,
                        // being a barrier.)
                        Err(e)
                            if (is_unique_conflict(&e) || e.is_blocked())
                                && !at_head
                                && tx.changes.in_memory().is_some() =>
                        {
                            tracing::debug!(
                                applier = index,
                                seq = first,
                                error = %e,
                                "conflict or refused change before its turn; re-running at the head of the line"
                            );
                            order.wait_for(first - 1, None).await;
                            continue;
                        }
                        Err(e) => return Err(SyncError::apply(last, e)),
                    }
                    applied = Instant::now();
                    if order.wait_for(first - 1, Some(turn_timeout)).await {
                        break;
                    }
                    tracing::debug!(
                        applier = index,
                        seq = first,
                        attempts,
                        "turn did not come in time; rolling back to release row locks"
                    );
                    applier
                        .rollback()
                        .await
                        .map_err(|e| SyncError::apply(last, e))?;
                    order.wait_for(first - 1, None).await;
                }
                // Verify's hold: the first commit past its position waits for the release.
                hold.at_turn(first_end, end_lsn).await;
                let turn = Instant::now();
                metrics.stage(Stage::Apply, applied.duration_since(started));
                metrics.stage(Stage::Turn, turn.duration_since(applied));
                let outcome = applier
                    .commit()
                    .await
                    .map_err(|e| SyncError::apply(last, e))?;
                failpoint::hit("after-green-commit");
                metrics.stage(Stage::Commit, turn.elapsed());
                Some(outcome)
            }
        };
        // Queued before the next transaction may commit, so the queue is in commit order.
        let green_lsn = outcome
            .as_ref()
            .and_then(|o| o.green_lsn)
            .unwrap_or(Lsn::INVALID);
        durability.committed(green_lsn, end_lsn);
        order.mark_committed(last);
        if let Some(outcome) = outcome {
            metrics.transactions_applied(transactions, &outcome.rows, started.elapsed());
        }
        for (kind, resolution) in applier.take_conflicts() {
            metrics.conflict(kind, resolution);
        }
        // Green holds everything up to `last`: the lag now grows from the next one.
        metrics.lag().applied(last, commit_time);
    }
}

/// A unique or exclusion constraint violation (`23505`, `23P01`).
fn is_unique_conflict(e: &blueshift_applier::ApplyError) -> bool {
    matches!(e.sqlstate(), Some("23505" | "23P01"))
}

/// Contiguous jobs applied as one green transaction.
struct Group {
    first: u64,
    last: u64,
    /// Wait for this number to commit before running.
    after: u64,
    /// Where blue's commit of its first transaction ends (verify's hold compares it).
    first_end: Lsn,
    end_lsn: Lsn,
    /// Source transactions in the group (those dropped for their origin included).
    transactions: u64,
    /// The merged transaction; `None` when no member has changes to apply.
    tx: Option<Transaction>,
    _memory: Vec<OwnedSemaphorePermit>,
    /// When its first job was queued.
    queued: Instant,
    /// The streamed apply's ticket of a job applied alone.
    streamed: Option<super::streamed::Ticket>,
}

/// Takes the next job and, while more are queued, the contiguous mergeable run after it. A job
/// that cannot join (a spilled transaction) is carried to the next call.
async fn take_group(
    jobs: &JobQueue,
    carried: &mut Option<Job>,
    fenced_until: Lsn,
    hold: &Hold,
    order: &CommitOrder,
    helper: bool,
) -> Option<Group> {
    let alone = |job: &Job| {
        job.streamed.is_some()
            || job
                .tx
                .as_ref()
                .is_some_and(|tx| tx.changes.in_memory().is_none() || tx.commit_lsn < fenced_until)
    };
    // A carried job goes alone: the jobs after it in the queue may be taken by another applier
    // already, so a group started from it would not be contiguous. It is taken without the
    // queue's lock: another applier may hold that lock while it waits for the next job, which
    // would hold this one (the last one in, until the source writes again).
    let (first, from_carried, queue) = match carried.take() {
        Some(job) => (job, true, None),
        None => {
            let mut queue = jobs.take(helper).await;
            let job = queue.recv().await?;
            (job, false, Some(queue))
        }
    };
    let first_alone = from_carried || alone(&first);
    let mut group = Group {
        queued: first.queued,
        first: first.seq,
        last: first.seq,
        after: first.after,
        first_end: first.end_lsn,
        end_lsn: first.end_lsn,
        transactions: 1,
        tx: None,
        _memory: first._memory.into_iter().collect(),
        streamed: first.streamed,
    };
    let mut changes = match first.tx {
        Some(tx) if first_alone => {
            // Spilled, fenced or carried: applied on its own.
            group.tx = Some(tx);
            return Some(group);
        }
        Some(tx) => Some(tx),
        None if from_carried => return Some(group),
        None => None,
    };
    let Some(mut queue) = queue else {
        return Some(group);
    };
    let mut count = changes
        .as_ref()
        .and_then(|tx| tx.changes.in_memory().map(<[_]>::len))
        .unwrap_or(0);
    loop {
        let mut drained = false;
        while group.transactions < GROUP_MAX_TRANSACTIONS as u64 && count < GROUP_MAX_CHANGES {
            let Ok(next) = queue.try_recv() else {
                drained = true;
                break;
            };
            if alone(&next) || hold.splits(group.end_lsn, next.end_lsn) {
                *carried = Some(next);
                break;
            }
            group.last = next.seq;
            group.end_lsn = next.end_lsn;
            group.transactions += 1;
            // Waits on members inside the group are satisfied by the group itself; a member's
            // latest dependency may be inside while an earlier one is not, which the group must
            // wait for all the same.
            group.after = group
                .after
                .max(Slot::after_outside(&next.deps, group.first));
            // A barrier's dependency on everything before it is not in `deps` (its only entry,
            // the one just before it, is a member here): the group waits for all before it.
            if next.barrier {
                group.after = group.after.max(group.first.saturating_sub(1));
            }
            group._memory.extend(next._memory);
            if let Some(tx) = next.tx {
                count += tx.changes.in_memory().map_or(0, <[_]>::len);
                changes = Some(match changes {
                    None => tx,
                    Some(merged) => merge(merged, tx),
                });
            }
        }
        // Adaptive batching (see `run`): a group that took everything queued and must wait for
        // a transaction still in flight waits with the queue in hand, then takes what arrived
        // meanwhile. Nothing it waits for needs the queue: every earlier transaction was taken
        // already, and its applier finishes it without taking another.
        if !drained || order.committed() >= group.after {
            break;
        }
        order.wait_for(group.after, None).await;
    }
    group.tx = changes;
    Some(group)
}

/// `later` appended to `earlier`: one transaction ending where `later` ends.
fn merge(earlier: Transaction, later: Transaction) -> Transaction {
    let mut changes = match earlier.changes {
        Changes::InMemory(changes) => changes,
        Changes::Spilled(_) => unreachable!("spilled transactions are never merged"),
    };
    if let Changes::InMemory(more) = later.changes {
        changes.extend(more);
    }
    Transaction {
        changes: Changes::InMemory(changes),
        ..later
    }
}

#[cfg(test)]
mod tests {
    //! The deadlock breaker against a real green: a later transaction that took a row lock the
    //! head of line needs must let go, or both wait forever.

    use std::sync::Arc;
    use std::time::Duration;

    use blueshift_applier::{Applier, ApplierOptions, Change, Changes, Transaction};
    use blueshift_decoder::config::ConnectConfig;
    use blueshift_decoder::pgoutput::{
        ColumnValue, PgTimestamp, RelationBody, RelationColumn, ReplicaIdentity, TupleData,
    };
    use blueshift_decoder::relation::RelationInfo;
    use blueshift_decoder::stream::FeedbackHandle;
    use blueshift_decoder::{Lsn, Oid, Xid};
    use blueshift_tests::{eventually_async, Cluster, ClusterOptions, PgBinaries};
    use bytes::Bytes;

    use super::{run, take_group, Job};
    use crate::metrics::Metrics;
    use crate::sync::acknowledge::Acks;
    use crate::sync::durability::{self, Durability};
    use crate::sync::order::CommitOrder;
    use crate::sync::queue;

    fn update(relation: &Arc<RelationInfo>, id: &str, v: &str) -> Change {
        Change::Update {
            relation: Arc::clone(relation),
            old: None,
            new: TupleData {
                columns: vec![
                    ColumnValue::Text(Bytes::copy_from_slice(id.as_bytes())),
                    ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes())),
                ],
            },
        }
    }

    fn tx(n: u32, changes: Vec<Change>) -> Transaction {
        Transaction {
            xid: Xid(n),
            commit_lsn: Lsn(u64::from(n) * 0x100),
            end_lsn: Lsn(u64::from(n) * 0x100 + 0x10),
            commit_time: PgTimestamp(0),
            origin: None,
            changes: Changes::InMemory(changes),
        }
    }

    #[tokio::test]
    async fn a_later_transaction_holding_a_lock_the_head_needs_rolls_back_and_reruns() {
        let green = Cluster::start(
            ClusterOptions::new(PgBinaries::from_env().expect("binaries")).name("deadlock"),
        )
        .expect("green");
        green.create_database("app").unwrap();
        green
            .psql(
                "app",
                "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)",
            )
            .unwrap();
        let config = ConnectConfig::from_conninfo_with_env(&green.uri("app"), |_| None).unwrap();
        let relation = Arc::new(RelationInfo::from_message(&RelationBody {
            xid: None,
            oid: Oid(1),
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "id".into(),
                    type_oid: Oid(23),
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "v".into(),
                    type_oid: Oid(23),
                    type_modifier: -1,
                },
            ],
        }));
        let order = CommitOrder::new(0);
        let durability = Arc::new(Durability::default());
        let mut workers = Vec::new();
        let mut queues = Vec::new();
        for n in 0..2 {
            let applier =
                Applier::connect(&config, ApplierOptions::new(format!("blueshift_t_{n}")))
                    .await
                    .unwrap();
            let (send, queue) = queue::channel(4);
            queues.push(send);
            // Each has a queue of its own, and is its first applier (0: never parked).
            workers.push(tokio::spawn(run(
                0,
                applier,
                queue,
                order.clone(),
                Arc::clone(&durability),
                Metrics::new(),
                Duration::from_millis(300),
                Arc::new(crate::sync::hold::Hold::default()),
            )));
        }
        let client = green.connect("app").await.unwrap();

        // Transaction 2 runs first and locks row 2 (the scheduler would never allow this, as
        // both touch row 2: it stands for a conflict a writeset could not see).
        queues[1]
            .send(Job {
                queued: std::time::Instant::now(),
                seq: 2,
                after: 0,
                deps: Vec::new(),
                barrier: false,
                tx: Some(tx(2, vec![update(&relation, "2", "20")])),
                end_lsn: Lsn(0x210),
                _memory: None,
                streamed: None,
            })
            .await
            .unwrap();
        eventually_async(Duration::from_secs(10), || async {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'",
                    &[],
                )
                .await?
                .get(0);
            anyhow::ensure!(n == 1, "transaction 2 has not run yet");
            Ok(())
        })
        .await
        .unwrap();
        // Transaction 1, the head of line, needs row 2 too.
        queues[0]
            .send(Job {
                queued: std::time::Instant::now(),
                seq: 1,
                after: 0,
                deps: Vec::new(),
                barrier: false,
                tx: Some(tx(
                    1,
                    vec![update(&relation, "1", "10"), update(&relation, "2", "10")],
                )),
                end_lsn: Lsn(0x110),
                _memory: None,
                streamed: None,
            })
            .await
            .unwrap();
        let committed = order.clone();
        tokio::time::timeout(Duration::from_secs(30), async move {
            committed.wait_for(2, None).await;
        })
        .await
        .expect("both commit: the later transaction let go of its lock");
        drop(queues);
        for w in workers {
            w.await.unwrap().unwrap();
        }
        let rows: Vec<(i32, i32)> = client
            .query("SELECT id, v FROM t ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(rows, [(1, 10), (2, 20)], "applied in blue's order");
        // Both commits are handed to the acknowledger once green has flushed them.
        let feedback = FeedbackHandle::default();
        let acks = Acks::new(feedback.clone());
        durability::drain(&durability, &client, &acks, Duration::from_secs(10)).await;
        assert_eq!(acks.wanted(), Lsn(0x210));
        assert_eq!(feedback.applied(), Lsn(0x210));
        assert_eq!(
            feedback.flushed(),
            Lsn::INVALID,
            "not before it is recorded"
        );
    }

    /// A job with nothing to apply (only its place in the order matters to `take_group`).
    fn job(seq: u64, deps: Vec<u64>) -> Job {
        Job {
            queued: std::time::Instant::now(),
            seq,
            after: deps.last().copied().unwrap_or(0),
            deps,
            barrier: false,
            tx: None,
            end_lsn: Lsn(seq * 0x100),
            _memory: None,
            streamed: None,
        }
    }

    /// The group `take_group` forms from `jobs`, queued in this order, while everything up to
    /// `committed` has committed.
    async fn group_of(jobs: Vec<Job>, committed: u64) -> super::Group {
        let (send, queue) = queue::channel(jobs.len());
        for job in jobs {
            send.send(job).await.unwrap();
        }
        let mut carried = None;
        let hold = crate::sync::hold::Hold::default();
        let order = CommitOrder::new(committed);
        take_group(&queue, &mut carried, Lsn::INVALID, &hold, &order, false)
            .await
            .expect("a group")
    }

    /// A group waits for every dependency of its members that lies before it: here 6's latest
    /// one (5) is in the group, its earlier one (3) is not, and 3 must commit first.
    #[tokio::test]
    async fn a_group_waits_for_what_any_member_needs_before_it() {
        // 3 committed already: the group is formed without waiting (adaptive batching waits,
        // with the queue, for a dependency still in flight).
        let jobs = vec![job(5, vec![]), job(6, vec![3, 5]), job(7, vec![6])];
        let group = group_of(jobs, 3).await;
        assert_eq!((group.first, group.last, group.after), (5, 7, 3));
    }

    /// A barrier (TRUNCATE) inside a group makes the group wait for everything before it: its
    /// one dependency (the transaction just before it) is a member, but 4, before the group,
    /// must have committed too, though no member names it.
    #[tokio::test]
    async fn a_group_holding_a_barrier_waits_for_everything_before_it() {
        let barrier = Job {
            barrier: true,
            ..job(6, vec![5])
        };
        let group = group_of(vec![job(5, vec![]), barrier, job(7, vec![6])], 4).await;
        assert_eq!((group.first, group.last, group.after), (5, 7, 4));
    }

    /// Adaptive batching: a group that took everything queued and depends on a transaction
    /// still in flight waits for it with the queue in hand, then takes what arrived meanwhile
    /// (here 6 and 7, queued while 4 was in flight) instead of leaving them to other appliers
    /// one by one; with nothing to wait for it goes at once, alone.
    #[tokio::test]
    async fn a_group_waiting_for_a_commit_takes_what_arrives_meanwhile() {
        let (send, queue) = queue::channel(8);
        let hold = Arc::new(crate::sync::hold::Hold::default());
        let order = CommitOrder::new(3);
        // Nothing in flight to wait for: taken alone at once.
        send.send(job(4, vec![3])).await.unwrap();
        let mut carried = None;
        let group = take_group(&queue, &mut carried, Lsn::INVALID, &hold, &order, false)
            .await
            .expect("a group");
        assert_eq!((group.first, group.last), (4, 4));
        // 5 depends on 4, still in flight.
        send.send(job(5, vec![4])).await.unwrap();
        let taking = {
            let (queue, hold, order) = (Arc::clone(&queue), Arc::clone(&hold), order.clone());
            tokio::spawn(async move {
                let mut carried = None;
                take_group(&queue, &mut carried, Lsn::INVALID, &hold, &order, false).await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!taking.is_finished(), "it waits for 4");
        send.send(job(6, vec![5])).await.unwrap();
        send.send(job(7, vec![])).await.unwrap();
        order.mark_committed(4);
        let group = taking.await.unwrap().expect("a group");
        assert_eq!((group.first, group.last, group.after), (5, 7, 4));
    }
}

//! The sidecar's side of a verify hold (see [`crate::control`]): commit every transaction that
//! blue committed before L, then hold green's next commit until verify has opened its snapshot.
//!
//! Verify **arms** the hold before it knows L ([`Hold::arm`]): every commit waits, so green
//! stays at or before any position blue reaches from then on, L included; and every group formed
//! meanwhile is one transaction ([`Hold::splits`]), so none can straddle the L to come. Once L is
//! known ([`Hold::request`]) the commits that end at or before L go on.
//!
//! A transaction is in blue's snapshot at L exactly when its commit record ends at or before L
//! (L, a slot's consistent point, is a record boundary), so the appliers compare each group's
//! `end_lsn` with L:
//!
//! - [`Hold::at_turn`], called by the applier whose turn came (every earlier transaction has
//!   committed), before it commits: a group whose first transaction ends after L is the first
//!   one past L — green now holds exactly what blue held at L: the hold is *held*, and the commit
//!   waits for the release. A group straddling L (formed before the request came) makes the hold
//!   *passed*: verify retries at a new L. [`Hold::splits`] keeps groups formed while a hold is
//!   requested from straddling L.
//! - [`Hold::idle_at`], called by the reader on a keepalive while nothing is in flight: blue's
//!   stream is past L and everything before it is committed — *held* too.
//! - [`serve`], a background task of the attempt, polls green for requests, answers them and
//!   lets commits go on release, or by itself after [`HOLD_TIMEOUT`] (the row is marked
//!   `expired` first, so verify refuses the snapshot it may have taken after that).
//!
//! The hold never blocks the stream: the reader keeps reading and scheduling; only commits wait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::stream::FeedbackHandle;
use blueshift_decoder::Lsn;
use tokio::sync::watch;
use tokio_postgres::Client;

use super::background::StopRequest;
use crate::control::{self, HoldState, BUSY_POLL, HOLD_TIMEOUT, IDLE_POLL, REACH_TIMEOUT};

/// Where the hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request.
    Idle,
    /// Armed (since): every commit waits until L is known.
    Armed(Instant),
    /// Requested at L (after an arm that stopped commits for so long): commits of transactions
    /// ending at or before L go on.
    Waiting(Lsn, Duration),
    /// Green holds exactly what ends at or before L; the next commit waits (since then; after an
    /// arm that stopped commits for so long).
    Held(Lsn, Instant, Duration),
    /// Green went past L before it could hold.
    Passed,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// The end of the last group that got past [`Hold::at_turn`].
    through: Lsn,
    /// The highest `wal_end` of a keepalive that found nothing in flight: every transaction
    /// ending at or before it had been received, and committed, then.
    idle: Lsn,
    /// Asks blue for a keepalive (see [`Hold::idle_at`]).
    feedback: Option<FeedbackHandle>,
}

/// The hold shared by the appliers, the reader and [`serve`].
#[derive(Debug)]
pub(crate) struct Hold {
    inner: Mutex<Inner>,
    /// Bumped at every phase change.
    changed: watch::Sender<u64>,
}

impl Default for Hold {
    fn default() -> Hold {
        Hold {
            inner: Mutex::new(Inner {
                phase: Phase::Idle,
                through: Lsn::INVALID,
                idle: Lsn::INVALID,
                feedback: None,
            }),
            changed: watch::Sender::new(0),
        }
    }
}

impl Hold {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the phase half-changed: recover it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The applier whose turn came, before it commits a group of transactions whose first ends
    /// at `first_end` and last at `last_end`: waits while green is held.
    pub(crate) async fn at_turn(&self, first_end: Lsn, last_end: Lsn) {
        loop {
            let mut changed = self.changed.subscribe();
            {
                let mut inner = self.lock();
                match inner.phase {
                    Phase::Armed(_) => {}
                    Phase::Waiting(l, armed) if first_end > l => {
                        inner.phase = Phase::Held(l, Instant::now(), armed);
                        drop(inner);
                        self.bump();
                    }
                    Phase::Held(l, ..) if first_end > l => {}
                    Phase::Waiting(l, _) if last_end > l => {
                        inner.phase = Phase::Passed;
                        inner.through = inner.through.max(last_end);
                        drop(inner);
                        self.bump();
                        return;
                    }
                    _ => {
                        inner.through = inner.through.max(last_end);
                        return;
                    }
                }
            }
            // Armed or held: wait for the phase to change (L known, release, or expiry).
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether a group ending at `group_end` must not take in a transaction ending at
    /// `next_end`: it would straddle a requested hold.
    pub(crate) fn splits(&self, group_end: Lsn, next_end: Lsn) -> bool {
        match self.lock().phase {
            Phase::Armed(_) => true,
            Phase::Waiting(l, _) | Phase::Held(l, ..) => group_end <= l && next_end > l,
            Phase::Idle | Phase::Passed => false,
        }
    }

    /// The stream's status updates, through which a request asks blue for a keepalive: an
    /// idle stream gets none by itself once blue has nothing new to send.
    pub(crate) fn set_feedback(&self, feedback: FeedbackHandle) {
        self.lock().feedback = Some(feedback);
    }

    /// The reader, on a keepalive at `wal_end` while nothing is in flight.
    pub(crate) fn idle_at(&self, wal_end: Lsn) {
        let mut inner = self.lock();
        inner.idle = inner.idle.max(wal_end);
        if let Phase::Waiting(l, armed) = inner.phase {
            if wal_end >= l && inner.through <= l {
                inner.phase = Phase::Held(l, Instant::now(), armed);
                drop(inner);
                self.bump();
            }
        }
    }

    /// Arms a hold whose L is not known yet: every commit waits from now on.
    fn arm(&self) {
        self.lock().phase = Phase::Armed(Instant::now());
        self.bump();
    }

    /// A hold requested at `l` (armed before, or not); false when green is already past it.
    fn request(&self, l: Lsn) -> bool {
        let mut inner = self.lock();
        let armed = match inner.phase {
            Phase::Armed(since) => since.elapsed(),
            _ => Duration::ZERO,
        };
        if inner.through > l {
            return false;
        }
        // An idle stream seen at or past L with nothing past L committed: green holds exactly
        // what ends at or before L already. Otherwise the appliers, or the keepalive asked for
        // here, settle it.
        inner.phase = if inner.idle >= l {
            Phase::Held(l, Instant::now(), armed)
        } else {
            Phase::Waiting(l, armed)
        };
        if let Some(feedback) = &inner.feedback {
            feedback.request_reply();
        }
        drop(inner);
        // Commits waiting on the arm look again.
        self.bump();
        true
    }

    /// Lets commits go; returns how long they were stopped: while armed, and while held (not
    /// while they caught up to L in between).
    fn release(&self) -> Option<Duration> {
        let mut inner = self.lock();
        let held = match inner.phase {
            Phase::Held(_, since, armed) => Some(armed + since.elapsed()),
            Phase::Armed(since) => Some(since.elapsed()),
            Phase::Waiting(_, armed) if !armed.is_zero() => Some(armed),
            _ => None,
        };
        inner.phase = Phase::Idle;
        drop(inner);
        self.bump();
        held
    }

    /// Waits until the hold is held (true) or passed (false), at most `limit` (`None`).
    async fn settled(&self, limit: Duration) -> Option<bool> {
        let mut changed = self.changed.subscribe();
        let wait = async {
            loop {
                match self.lock().phase {
                    Phase::Held(..) => return true,
                    Phase::Passed | Phase::Idle => return false,
                    Phase::Armed(_) | Phase::Waiting(..) => {}
                }
                if changed.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.ok()
    }
}

/// Releases the hold when dropped: whatever happens to [`serve`], commits never stay held.
struct ReleaseOnDrop<'a>(&'a Hold);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Serves hold requests for `slot` from green, on a session of its own (a hold's round trips
/// never queue behind other work), until asked to stop. Errors are logged and the loop goes on
/// after a second: the control channel never stops sync.
pub(crate) async fn serve(
    hold: Arc<Hold>,
    target: ConnectConfig,
    slot: String,
    mut stop: StopRequest,
) {
    let _release = ReleaseOnDrop(&hold);
    let mut session: Option<(Client, tokio::task::JoinHandle<()>)> = None;
    let mut table = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(IDLE_POLL) => {}
        }
        if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let connected = tokio::select! {
                _ = &mut stop => break,
                connected = crate::client::connect(&target, "blueshift sync (verify hold)") => connected,
            };
            match connected {
                Ok(s) => {
                    session = Some(s);
                    table = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "verify hold: cannot connect to green; retrying");
                    tokio::select! {
                        _ = &mut stop => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
        }
        let green = &session.as_ref().expect("connected just above").0;
        let step = async {
            if !table {
                table = control::exists(green).await?;
                if !table {
                    return Ok(());
                }
            }
            match control::next_request(green, &slot).await? {
                Some((id, lsn)) => one(&hold, green, id, lsn).await,
                None => Ok(()),
            }
        };
        let result = tokio::select! {
            _ = &mut stop => break,
            result = step => result,
        };
        if let Err(e) = result {
            hold.release();
            table = false;
            if let Some((client, conn)) = session.take() {
                crate::client::close(client, conn).await;
            }
            tracing::warn!(error = %e, "verify hold: could not serve a request; retrying");
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    if let Some((client, conn)) = session.take() {
        crate::client::close(client, conn).await;
    }
}

/// Serves request `id` at `lsn` ([`Lsn::INVALID`]: armed, L to follow).
async fn one(hold: &Hold, green: &Client, id: i64, lsn: Lsn) -> Result<(), tokio_postgres::Error> {
    let _release = ReleaseOnDrop(hold);
    let taken = Instant::now();
    let (from, lsn) = if lsn == Lsn::INVALID {
        match armed(hold, green, id).await? {
            Some(lsn) => (HoldState::Located, lsn),
            None => return Ok(()),
        }
    } else {
        (HoldState::Requested, lsn)
    };
    if !hold.request(lsn) {
        tracing::debug!(id, lsn = %lsn, "verify hold: green is past the requested position");
        hold.release();
        control::answer(green, id, from, HoldState::Passed).await?;
        return Ok(());
    }
    tracing::debug!(id, lsn = %lsn, since_taken_ms = taken.elapsed().as_secs_f64() * 1000.0, "verify hold: located");
    if !control::answer(green, id, from, HoldState::Waiting).await? {
        // Verify abandoned the request meanwhile.
        return Ok(());
    }
    match hold.settled(REACH_TIMEOUT).await {
        None => {
            hold.release();
            control::answer(green, id, HoldState::Waiting, HoldState::Lagging).await?;
            return Ok(());
        }
        Some(false) => {
            hold.release();
            control::answer(green, id, HoldState::Waiting, HoldState::Passed).await?;
            return Ok(());
        }
        Some(true) => {}
    }
    tracing::debug!(id, lsn = %lsn, since_taken_ms = taken.elapsed().as_secs_f64() * 1000.0, "verify hold: held at L");
    if !control::answer(green, id, HoldState::Waiting, HoldState::Held).await? {
        // Verify abandoned the request meanwhile.
        hold.release();
        return Ok(());
    }
    let deadline = Instant::now() + HOLD_TIMEOUT;
    loop {
        let (state, _) = control::state(green, id).await?;
        if state != Some(HoldState::Held) {
            break;
        }
        if Instant::now() >= deadline {
            // Marked first: a snapshot verify takes from now on is refused by its release.
            if control::answer(green, id, HoldState::Held, HoldState::Expired).await? {
                tracing::warn!(id, lsn = %lsn, "verify hold: not released in time; letting commits go");
                break;
            }
            // Released just now.
            break;
        }
        tokio::time::sleep(BUSY_POLL).await;
    }
    let pause = hold.release().unwrap_or_default();
    tracing::info!(id, lsn = %lsn, pause_ms = pause.as_secs_f64() * 1000.0, "verify hold released");
    control::record_pause(green, id, pause).await
}

/// Arms the hold for request `id` and waits for verify to locate it; its L, or `None` when verify
/// abandoned it or did not locate it within [`HOLD_TIMEOUT`] (then commits go on).
async fn armed(hold: &Hold, green: &Client, id: i64) -> Result<Option<Lsn>, tokio_postgres::Error> {
    hold.arm();
    if !control::answer(green, id, HoldState::Requested, HoldState::Armed).await? {
        // Verify abandoned the request meanwhile.
        hold.release();
        return Ok(None);
    }
    let deadline = Instant::now() + HOLD_TIMEOUT;
    loop {
        match control::position(green, id).await? {
            (Some(HoldState::Located), lsn) => return Ok(Some(lsn)),
            (Some(HoldState::Armed), _) if Instant::now() >= deadline => {
                // Marked first: verify's locate finds the row expired and takes a new point.
                if control::answer(green, id, HoldState::Armed, HoldState::Expired).await? {
                    let pause = hold.release().unwrap_or_default();
                    tracing::warn!(
                        id,
                        pause_ms = pause.as_secs_f64() * 1000.0,
                        "verify hold: not located in time (blue was slow to create verify's \
                         slot); letting commits go"
                    );
                    return Ok(None);
                }
                // Located just now: read it again.
            }
            (Some(HoldState::Armed), _) => {}
            _ => {
                hold.release();
                return Ok(None);
            }
        }
        tokio::time::sleep(BUSY_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_first_commit_past_the_position_until_released() {
        let hold = Arc::new(Hold::default());
        assert!(hold.request(Lsn(100)));
        // Before L: goes through.
        hold.at_turn(Lsn(50), Lsn(90)).await;
        assert!(hold.splits(Lsn(90), Lsn(120)));
        assert!(!hold.splits(Lsn(120), Lsn(130)));
        let h = Arc::clone(&hold);
        let held = tokio::spawn(async move { h.at_turn(Lsn(120), Lsn(130)).await });
        assert_eq!(hold.settled(Duration::from_secs(5)).await, Some(true));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!held.is_finished(), "the commit past L waits");
        assert!(hold.release().is_some());
        held.await.unwrap();
        // Past L now: a new request at an older position is refused.
        assert!(!hold.request(Lsn(110)));
    }

    #[tokio::test]
    async fn a_group_straddling_the_position_passes_it() {
        let hold = Hold::default();
        assert!(hold.request(Lsn(100)));
        hold.at_turn(Lsn(90), Lsn(110)).await;
        assert_eq!(hold.settled(Duration::from_secs(1)).await, Some(false));
    }

    #[tokio::test]
    async fn an_armed_hold_stops_every_commit_until_the_position_is_known() {
        let hold = Arc::new(Hold::default());
        hold.at_turn(Lsn(10), Lsn(20)).await;
        hold.arm();
        assert!(
            hold.splits(Lsn(30), Lsn(40)),
            "one transaction per group while armed"
        );
        let h = Arc::clone(&hold);
        let before = tokio::spawn(async move { h.at_turn(Lsn(30), Lsn(30)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!before.is_finished(), "armed: even a commit before L waits");
        assert!(hold.request(Lsn(35)));
        before.await.unwrap();
        let h = Arc::clone(&hold);
        let after = tokio::spawn(async move { h.at_turn(Lsn(40), Lsn(40)).await });
        assert_eq!(hold.settled(Duration::from_secs(5)).await, Some(true));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!after.is_finished(), "the commit past L waits");
        let pause = hold.release().expect("held");
        assert!(
            pause >= Duration::from_millis(40),
            "the pause counts from the arm: {pause:?}"
        );
        after.await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_stream_seen_past_the_position_before_it_came_holds_at_once() {
        let hold = Hold::default();
        hold.at_turn(Lsn(10), Lsn(20)).await;
        hold.idle_at(Lsn(120));
        hold.arm();
        assert!(hold.request(Lsn(100)));
        assert_eq!(hold.settled(Duration::from_millis(20)).await, Some(true));
    }

    #[tokio::test]
    async fn an_idle_stream_past_the_position_holds() {
        let hold = Hold::default();
        assert!(hold.request(Lsn(100)));
        hold.idle_at(Lsn(99));
        assert_eq!(hold.settled(Duration::from_millis(20)).await, None);
        hold.idle_at(Lsn(100));
        assert_eq!(hold.settled(Duration::from_secs(1)).await, Some(true));
    }
}

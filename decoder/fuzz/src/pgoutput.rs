//! The `pgoutput` target's checks: what a decoded frame and a decode error must satisfy, and a
//! replication session (frames → [`PgOutputDecoder`] → [`TxAssembler`]) run beside a model of
//! the protocol that predicts, message by message, what the assembler must accept, refuse and
//! hand out.
//!
//! The model is written from the protocol's rules, not from the assembler's code: a change is
//! accepted only inside an open transaction, with an xid prefix exactly inside a streamed
//! block, for a relation a Relation message announced, with one value per announced column and,
//! in a key-only old row (`K`), NULL outside the key; Stream Start and Stream Stop alternate, a
//! first segment opens a new transaction and a later one continues an open one; Stream Commit
//! and Stream Abort name an open streamed transaction; every committed transaction comes out
//! with exactly the changes the model kept for it, in order, whether it was spilled or not.
//! When the assembler refuses a message, its error must be the one (or one of those) the model
//! predicted, and must format; the session then restarts, as the sidecar does.
//!
//! Format: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use blueshift_applier::{Change, Origin};
use blueshift_decoder::pgoutput::{
    encode, DecodeError, DecodeErrorKind, OldTuple, PgOutputMessage, ProtocolVersion, TupleData,
};
use blueshift_decoder::relation::RelationInfo;
use blueshift_decoder::{Lsn, Oid, PgOutputDecoder, Xid};
use blueshift_engine::assembler::{
    collect_changes, AssembleError, Assembled, AssemblerOptions, TxAssembler,
};
use bytes::{Bytes, BytesMut};

/// The origin prefix dropped in sessions that drop origins (loop prevention).
const SKIP_PREFIX: &str = "blueshift";

/// Relation OIDs are folded onto this many (`16384 + oid % RELATION_SLOTS`), so that a change
/// names an announced relation often enough to get past the lookup. 32 keeps the relations of
/// each golden capture apart.
const RELATION_SLOTS: u32 = 32;

/// In a spilling session, the run ends when this many streamed transactions are open and
/// another first segment arrives: each spilled transaction holds a 64 KiB write buffer, which
/// the allocation budget allows only a few of.
pub const MAX_OPEN_SPILLED: usize = 4;

/// Asserts that an accepted frame is the canonical encoding of what it decoded to.
pub fn assert_round_trip(message: &PgOutputMessage, in_stream: bool, frame: &[u8]) {
    let mut out = BytesMut::new();
    encode(message, in_stream, &mut out).expect("a decoded message encodes");
    assert_eq!(
        &out[..],
        frame,
        "decode → encode changed the bytes of {message:?}"
    );
}

/// Asserts what a decode error says about `frame`: its offset lies inside the frame (or at its
/// end, for a field the frame ends before) and points at what the kind names, its tag is the
/// frame's first byte, and it formats.
pub fn check_decode_error(e: &DecodeError, frame: &[u8]) {
    let (offset, len) = (e.offset(), frame.len());
    assert!(
        offset <= len,
        "offset {offset} past a {len}-byte frame: {e:?}"
    );
    let at = frame.get(offset).copied();
    if let Some(tag) = e.tag() {
        assert_eq!(
            frame.first(),
            Some(&tag),
            "error tag is not the frame's: {e:?}"
        );
    }
    match e.kind() {
        DecodeErrorKind::Empty => assert_eq!(len, 0, "{e:?}"),
        DecodeErrorKind::UnknownTag { tag }
        | DecodeErrorKind::TagNotInVersion { tag, .. }
        | DecodeErrorKind::NotAllowedInStream { tag }
        | DecodeErrorKind::NotAllowedOutsideStream { tag } => {
            assert_eq!((offset, at), (0, Some(*tag)), "{e:?}")
        }
        DecodeErrorKind::UnknownColumnKind { kind: byte }
        | DecodeErrorKind::UnknownReplicaIdentity { identity: byte }
        | DecodeErrorKind::UnexpectedSubmessage { found: byte, .. }
        | DecodeErrorKind::InvalidFlags { value: byte, .. } => {
            assert_eq!(at, Some(*byte), "offset does not point at the byte: {e:?}")
        }
        DecodeErrorKind::Truncated {
            needed, remaining, ..
        } => {
            assert_eq!(*remaining, len - offset, "{e:?}");
            assert!(needed > remaining, "{e:?}");
        }
        DecodeErrorKind::NegativeLength { value, .. } => {
            let field = frame
                .get(offset..offset + 4)
                .map(|b| i32::from_be_bytes(b.try_into().expect("a 4-byte slice")));
            assert_eq!(
                field,
                Some(*value),
                "offset does not point at the length: {e:?}"
            );
            assert!(*value < 0, "{e:?}");
        }
        DecodeErrorKind::CountExceedsInput {
            min_bytes,
            remaining,
            ..
        } => {
            assert!(*remaining < len - offset, "{e:?}");
            assert!(*min_bytes > *remaining as u64, "{e:?}");
        }
        DecodeErrorKind::MissingNul { .. } => {
            assert!(!frame[offset..].contains(&0), "a NUL follows: {e:?}")
        }
        DecodeErrorKind::InvalidUtf8 { .. } => assert!(offset < len, "{e:?}"),
        DecodeErrorKind::TrailingBytes { count } => {
            assert!(*count > 0 && offset + count == len, "{e:?}")
        }
        DecodeErrorKind::LengthOverflow { .. } => {}
        other => panic!("a decode error kind this target does not know: {other:?}"),
    }
    assert!(!e.to_string().is_empty());
    assert!(!e.kind().to_string().is_empty());
}

/// Whether `BLUESHIFT_FUZZ_TRACE` is set: then a session prints what it does with each frame,
/// for reading a crash's input.
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("BLUESHIFT_FUZZ_TRACE").is_some())
}

/// Folds a relation OID onto the small index.
fn fold(oid: Oid) -> Oid {
    Oid(16384 + oid.0 % RELATION_SLOTS)
}

/// The message with every relation OID folded (type OIDs stay).
fn fold_relations(message: PgOutputMessage) -> PgOutputMessage {
    use PgOutputMessage as M;
    match message {
        M::Relation(mut m) => {
            m.oid = fold(m.oid);
            M::Relation(m)
        }
        M::Insert(mut m) => {
            m.relation = fold(m.relation);
            M::Insert(m)
        }
        M::Update(mut m) => {
            m.relation = fold(m.relation);
            M::Update(m)
        }
        M::Delete(mut m) => {
            m.relation = fold(m.relation);
            M::Delete(m)
        }
        M::Truncate(mut m) => {
            m.relations.iter_mut().for_each(|oid| *oid = fold(*oid));
            M::Truncate(m)
        }
        other => other,
    }
}

/// A folder of this process's own for spill files.
fn spill_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("blueshift-fuzz-spill-{}", std::process::id()))
    })
    .clone()
}

/// What the model says the assembler must do with a message.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Refusal {
    BeginInsideTransaction,
    CommitWithoutBegin,
    CommitLsnMismatch,
    OutsideTransaction,
    StreamXidPrefix,
    StreamMisplaced,
    StreamRestarted,
    UnknownStreamedTransaction,
    StreamStopOutsideBlock,
    UnknownRelation,
    ColumnCount,
    ValueOutsideKey,
    TwoPhaseNotRequested,
}

fn refusal_of(e: &AssembleError) -> Refusal {
    match e {
        AssembleError::BeginInsideTransaction { .. } => Refusal::BeginInsideTransaction,
        AssembleError::CommitWithoutBegin { .. } => Refusal::CommitWithoutBegin,
        AssembleError::CommitLsnMismatch { .. } => Refusal::CommitLsnMismatch,
        AssembleError::OutsideTransaction { .. } => Refusal::OutsideTransaction,
        AssembleError::StreamXidPrefix { .. } => Refusal::StreamXidPrefix,
        AssembleError::StreamMisplaced { .. } => Refusal::StreamMisplaced,
        AssembleError::StreamRestarted { .. } => Refusal::StreamRestarted,
        AssembleError::UnknownStreamedTransaction { .. } => Refusal::UnknownStreamedTransaction,
        AssembleError::StreamStopOutsideBlock => Refusal::StreamStopOutsideBlock,
        AssembleError::UnknownRelation { .. } => Refusal::UnknownRelation,
        AssembleError::ColumnCount { .. } => Refusal::ColumnCount,
        AssembleError::ValueOutsideKey { .. } => Refusal::ValueOutsideKey,
        AssembleError::TwoPhaseNotRequested { .. } => Refusal::TwoPhaseNotRequested,
        other => panic!("the assembler failed for a reason outside the stream: {other:?}"),
    }
}

/// One open transaction of the model.
#[derive(Debug)]
struct ModelTxn {
    xid: Xid,
    origin: Option<Origin>,
    skipped: bool,
    /// The changes kept, each with the subtransaction that made it.
    changes: Vec<(Xid, Change)>,
}

impl ModelTxn {
    fn new(xid: Xid) -> Self {
        ModelTxn {
            xid,
            origin: None,
            skipped: false,
            changes: Vec::new(),
        }
    }
}

/// The model's view of the session.
#[derive(Debug, Default)]
struct Model {
    /// Every relation announced, as its latest Relation message described it.
    relations: HashMap<Oid, Arc<RelationInfo>>,
    /// The open plain transaction and its Begin's final LSN.
    plain: Option<(Lsn, ModelTxn)>,
    /// The open streamed transactions.
    streams: HashMap<Xid, ModelTxn>,
    /// The streamed transaction whose block is open.
    block: Option<Xid>,
}

/// Why `row` does not fit `relation`: another number of values, or (in a key-only row) a value
/// outside the key. Both, when both are true: the rules do not say which is noticed first.
fn row_problems(relation: &RelationInfo, row: &TupleData, key_only: bool) -> Vec<Refusal> {
    let mut problems = Vec::new();
    if row.columns.len() != relation.columns().len() {
        problems.push(Refusal::ColumnCount);
    }
    let value_outside_key = row
        .columns
        .iter()
        .zip(relation.columns())
        .any(|(value, column)| !column.is_key && !value.is_null());
    if key_only && value_outside_key {
        problems.push(Refusal::ValueOutsideKey);
    }
    problems
}

fn old_row_problems(relation: &RelationInfo, old: &OldTuple) -> Vec<Refusal> {
    match old {
        OldTuple::Key(row) => row_problems(relation, row, true),
        OldTuple::Full(row) => row_problems(relation, row, false),
    }
}

/// What the model expects of one push.
enum Expect {
    /// Refused, with one of these errors (several where the rules do not order the checks).
    Refused(Vec<Refusal>),
    /// Accepted, nothing out.
    Nothing,
    /// Accepted: this transaction comes out whole.
    Committed {
        txn: ModelTxn,
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
}

impl Model {
    /// The transaction a change or Origin goes to, and whether a block is what is open.
    fn target(&mut self) -> Option<(&mut ModelTxn, bool)> {
        if let Some((_, txn)) = &mut self.plain {
            return Some((txn, false));
        }
        let top = self.block?;
        let txn = self
            .streams
            .get_mut(&top)
            .expect("the model opens a block only for a transaction it holds");
        Some((txn, true))
    }

    /// The change a change message stands for, or why the rows do not fit.
    fn change(&self, message: &PgOutputMessage) -> Result<Change, Vec<Refusal>> {
        use PgOutputMessage as M;
        let relation = |oid: &Oid| {
            self.relations
                .get(oid)
                .cloned()
                .ok_or(vec![Refusal::UnknownRelation])
        };
        let mut problems = Vec::new();
        let change = match message {
            M::Insert(m) => {
                let relation = relation(&m.relation)?;
                problems.extend(row_problems(&relation, &m.new, false));
                Change::Insert {
                    relation,
                    new: m.new.clone(),
                }
            }
            M::Update(m) => {
                let relation = relation(&m.relation)?;
                if let Some(old) = &m.old {
                    problems.extend(old_row_problems(&relation, old));
                }
                problems.extend(row_problems(&relation, &m.new, false));
                Change::Update {
                    relation,
                    old: m.old.clone(),
                    new: m.new.clone(),
                }
            }
            M::Delete(m) => {
                let relation = relation(&m.relation)?;
                problems.extend(old_row_problems(&relation, &m.old));
                Change::Delete {
                    relation,
                    old: m.old.clone(),
                }
            }
            M::Truncate(m) => Change::Truncate {
                relations: m.relations.iter().map(relation).collect::<Result<_, _>>()?,
                cascade: m.cascade,
                restart_identity: m.restart_identity,
            },
            other => unreachable!("{} is not a change", other.name()),
        };
        if problems.is_empty() {
            Ok(change)
        } else {
            Err(problems)
        }
    }

    /// Applies `message` to the model; returns what the assembler must do with it.
    fn push(&mut self, message: &PgOutputMessage) -> Expect {
        use PgOutputMessage as M;
        use Refusal as R;
        let refused = |r: Refusal| Expect::Refused(vec![r]);
        let open = self.plain.is_some() || self.block.is_some();
        match message {
            M::Begin(b) => {
                if open {
                    return refused(R::BeginInsideTransaction);
                }
                self.plain = Some((b.final_lsn, ModelTxn::new(b.xid)));
                Expect::Nothing
            }
            M::Commit(c) => match self.plain.take() {
                None => refused(R::CommitWithoutBegin),
                Some((final_lsn, _)) if final_lsn != c.commit_lsn => refused(R::CommitLsnMismatch),
                Some((_, txn)) => Expect::Committed {
                    txn,
                    commit_lsn: c.commit_lsn,
                    end_lsn: c.end_lsn,
                },
            },
            M::Origin(o) => {
                let Some((txn, _)) = self.target() else {
                    return refused(R::OutsideTransaction);
                };
                if o.name.starts_with(SKIP_PREFIX) && !txn.skipped {
                    txn.skipped = true;
                    txn.changes.clear();
                }
                txn.origin = Some(Origin {
                    name: o.name.clone(),
                    lsn: o.commit_lsn,
                });
                Expect::Nothing
            }
            M::Relation(r) => {
                self.relations
                    .insert(r.oid, Arc::new(RelationInfo::from_message(r)));
                Expect::Nothing
            }
            M::Type(_) | M::Message(_) => Expect::Nothing,
            M::Insert(_) | M::Update(_) | M::Delete(_) | M::Truncate(_) => {
                let prefix = message.stream_xid();
                let change = self.change(message);
                let Some((txn, in_block)) = self.target() else {
                    return refused(R::OutsideTransaction);
                };
                let subxid = match (in_block, prefix) {
                    (true, Some(subxid)) => subxid,
                    (false, None) => txn.xid,
                    _ => return refused(R::StreamXidPrefix),
                };
                if txn.skipped {
                    return Expect::Nothing;
                }
                match change {
                    Ok(change) => {
                        txn.changes.push((subxid, change));
                        Expect::Nothing
                    }
                    Err(problems) => Expect::Refused(problems),
                }
            }
            M::StreamStart(s) => {
                if open {
                    return refused(R::StreamMisplaced);
                }
                match (s.first_segment, self.streams.contains_key(&s.xid)) {
                    (true, true) => return refused(R::StreamRestarted),
                    (false, false) => return refused(R::UnknownStreamedTransaction),
                    (true, false) => {
                        self.streams.insert(s.xid, ModelTxn::new(s.xid));
                    }
                    (false, true) => {}
                }
                self.block = Some(s.xid);
                Expect::Nothing
            }
            M::StreamStop => match self.block.take() {
                Some(_) => Expect::Nothing,
                None => refused(R::StreamStopOutsideBlock),
            },
            M::StreamCommit(c) => {
                if open {
                    return refused(R::StreamMisplaced);
                }
                match self.streams.remove(&c.xid) {
                    None => refused(R::UnknownStreamedTransaction),
                    Some(txn) => Expect::Committed {
                        txn,
                        commit_lsn: c.commit_lsn,
                        end_lsn: c.end_lsn,
                    },
                }
            }
            M::StreamAbort(a) => {
                if open {
                    return refused(R::StreamMisplaced);
                }
                if a.subxid == a.xid {
                    return match self.streams.remove(&a.xid) {
                        Some(_) => Expect::Nothing,
                        None => refused(R::UnknownStreamedTransaction),
                    };
                }
                match self.streams.get_mut(&a.xid) {
                    Some(txn) => {
                        txn.changes.retain(|(subxid, _)| *subxid != a.subxid);
                        Expect::Nothing
                    }
                    None => refused(R::UnknownStreamedTransaction),
                }
            }
            M::BeginPrepare(_)
            | M::Prepare(_)
            | M::StreamPrepare(_)
            | M::CommitPrepared(_)
            | M::RollbackPrepared(_) => refused(R::TwoPhaseNotRequested),
        }
    }
}

/// How a session is set up.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// The negotiated protocol version.
    pub version: ProtocolVersion,
    /// `streaming 'parallel'`.
    pub parallel: bool,
    /// Spill (almost) every change to disk.
    pub spill: bool,
    /// Drop transactions whose origin starts with `blueshift`.
    pub skip_origins: bool,
}

/// A replication session: decoder, assembler and model.
#[derive(Debug)]
pub struct Session {
    options: SessionOptions,
    decoder: PgOutputDecoder,
    assembler: TxAssembler,
    model: Model,
}

impl Session {
    /// A session at the start of a replication connection.
    pub fn new(options: SessionOptions) -> Session {
        let assembler = TxAssembler::new(AssemblerOptions {
            max_memory: if options.spill { 256 } else { usize::MAX },
            spill_dir: spill_dir(),
            skip_origin_prefix: options.skip_origins.then(|| SKIP_PREFIX.to_owned()),
        })
        .expect("the spill folder can be prepared");
        Session {
            options,
            decoder: PgOutputDecoder::new(options.version)
                .with_parallel_streaming(options.parallel),
            assembler,
            model: Model::default(),
        }
    }

    /// Takes the next frame; false when the run should end here (see [`MAX_OPEN_SPILLED`]).
    pub fn frame(&mut self, frame: &[u8]) -> bool {
        let in_stream = self.decoder.in_stream();
        let message = match self.decoder.decode(Bytes::copy_from_slice(frame)) {
            Ok(message) => message,
            Err(e) => {
                if tracing() {
                    eprintln!("frame of {} bytes: {e}: {}", frame.len(), e.kind());
                }
                check_decode_error(&e, frame);
                assert_eq!(
                    self.decoder.in_stream(),
                    in_stream,
                    "a frame that failed to decode changed the decoder's state"
                );
                return true;
            }
        };
        assert_round_trip(&message, in_stream, frame);
        self.check_stream_state(&message, in_stream);
        if self.options.spill
            && self.model.streams.len() >= MAX_OPEN_SPILLED
            && matches!(&message, PgOutputMessage::StreamStart(s) if s.first_segment)
        {
            return false;
        }
        let message = fold_relations(message);
        let name = message.name();
        let expect = self.model.push(&message);
        let result = self.assembler.push(message);
        if tracing() {
            match &result {
                Ok(None) => eprintln!("{name}: accepted"),
                Ok(Some(_)) => eprintln!("{name}: completed a transaction"),
                Err(e) => eprintln!("{name}: refused: {e}"),
            }
        }
        match (expect, result) {
            (Expect::Refused(allowed), Err(e)) => {
                let refusal = refusal_of(&e);
                assert!(
                    allowed.contains(&refusal),
                    "{name}: the assembler refused with {refusal:?}, the model expected one of \
                     {allowed:?}: {e}"
                );
                check_error_text(&e);
                self.restart();
            }
            (Expect::Refused(allowed), Ok(out)) => panic!(
                "{name}: the assembler accepted what the model refuses ({allowed:?}); out: \
                 {out:?}"
            ),
            (_, Err(e)) => panic!("{name}: the assembler refused what the model accepts: {e:?}"),
            (Expect::Nothing, Ok(None)) => {}
            (Expect::Nothing, Ok(Some(out))) => {
                panic!("{name}: the assembler completed a transaction: {out:?}")
            }
            (Expect::Committed { .. }, Ok(None)) => {
                panic!("{name}: the assembler completed nothing")
            }
            (
                Expect::Committed {
                    txn,
                    commit_lsn,
                    end_lsn,
                },
                Ok(Some(out)),
            ) => check_output(txn, commit_lsn, end_lsn, out),
        }
        assert_eq!(
            self.decoder.in_stream(),
            self.model.block.is_some(),
            "the decoder and the assembler disagree on whether a streamed block is open"
        );
        assert_eq!(
            self.assembler.in_transaction(),
            self.model.plain.is_some() || self.model.block.is_some()
        );
        true
    }

    /// Stream Start and Stream Stop alternate in the decoder, and an xid prefix is there exactly
    /// inside a block.
    fn check_stream_state(&self, message: &PgOutputMessage, was_in_stream: bool) {
        use PgOutputMessage as M;
        let now = self.decoder.in_stream();
        match message {
            M::StreamStart(_) => assert!(!was_in_stream && now, "Stream Start inside a block"),
            M::StreamStop => assert!(was_in_stream && !now, "Stream Stop outside a block"),
            _ => assert_eq!(was_in_stream, now),
        }
        if let M::Relation(_)
        | M::Type(_)
        | M::Insert(_)
        | M::Update(_)
        | M::Delete(_)
        | M::Truncate(_)
        | M::Message(_) = message
        {
            assert_eq!(
                message.stream_xid().is_some(),
                was_in_stream,
                "xid prefix present outside a block or missing inside one: {message:?}"
            );
        }
    }

    /// After a refused message: what the sidecar does, a new replication session.
    fn restart(&mut self) {
        self.assembler.reset();
        self.decoder.reset();
        self.model = Model::default();
        assert!(!self.assembler.in_transaction());
        assert_eq!(self.assembler.stats().buffered_bytes, 0);
    }
}

/// An error formats, with its whole source chain.
fn check_error_text(e: &AssembleError) {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(!text.is_empty());
}

/// A completed transaction is what the model kept.
fn check_output(txn: ModelTxn, commit_lsn: Lsn, end_lsn: Lsn, out: Assembled) {
    match out {
        Assembled::Skipped {
            xid,
            commit_lsn: lsn,
            end_lsn: end,
            origin,
            ..
        } => {
            assert!(txn.skipped, "transaction {xid} skipped, the model keeps it");
            assert_eq!((xid, lsn, end), (txn.xid, commit_lsn, end_lsn));
            assert!(origin.name.starts_with(SKIP_PREFIX));
        }
        Assembled::Transaction(t) => {
            assert!(
                !txn.skipped,
                "transaction {} kept, the model skips it",
                t.xid
            );
            assert_eq!(
                (t.xid, t.commit_lsn, t.end_lsn),
                (txn.xid, commit_lsn, end_lsn)
            );
            assert_eq!(t.origin, txn.origin);
            let changes = collect_changes(t.changes).expect("spilled changes read back");
            let expected: Vec<Change> = txn.changes.into_iter().map(|(_, c)| c).collect();
            assert_eq!(changes.len(), expected.len(), "transaction {}", t.xid);
            for (got, want) in changes.iter().zip(&expected) {
                assert_eq!(got, want, "transaction {}", t.xid);
                check_fits(got);
            }
        }
    }
}

/// Every row of a change handed out fits its relation (checked on the output, whatever the
/// model said).
fn check_fits(change: &Change) {
    let rows: Vec<(&RelationInfo, &TupleData, bool)> = match change {
        Change::Insert { relation, new } => vec![(relation, new, false)],
        Change::Update { relation, old, new } => {
            let mut rows = vec![(&**relation, new, false)];
            if let Some(old) = old {
                rows.push((relation, old.tuple(), matches!(old, OldTuple::Key(_))));
            }
            rows
        }
        Change::Delete { relation, old } => {
            vec![(relation, old.tuple(), matches!(old, OldTuple::Key(_)))]
        }
        Change::Truncate { .. } => Vec::new(),
    };
    for (relation, row, key_only) in rows {
        assert_eq!(
            row.columns.len(),
            relation.columns().len(),
            "a row of {} does not fit its relation",
            relation.name()
        );
        if key_only {
            for (value, column) in row.columns.iter().zip(relation.columns()) {
                assert!(
                    column.is_key || value.is_null(),
                    "a key-only old row of {} has a value in column {}",
                    relation.name(),
                    column.name
                );
            }
        }
    }
}

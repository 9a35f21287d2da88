//! Loads the golden frames of `tests/golden/`, captured from real PostgreSQL servers by
//! `scripts/capture-golden` (one hex frame per line, `#` comment lines with the server, the
//! pgoutput options and the workload).
//!
//! Shared by the test crates `golden_frames`, `golden_streams` and `pgoutput_malformed`, with
//! the assertion helpers of the golden tests; not every helper is used by each.
#![allow(dead_code)]

use std::path::PathBuf;

use blueshift_decoder::pgoutput::{
    ColumnValue, DecodeContext, PgOutputDecoder, PgOutputMessage, PgTimestamp, ProtocolVersion,
    RelationBody, RelationColumn, ReplicaIdentity, TupleData,
};
use blueshift_decoder::{Oid, Xid};
use bytes::Bytes;

use PgOutputMessage as M;

/// One capture file: its pgoutput options and its frames in order.
#[derive(Debug)]
pub(crate) struct Capture {
    pub(crate) name: String,
    pub(crate) server: String,
    pub(crate) version: ProtocolVersion,
    pub(crate) parallel: bool,
    pub(crate) frames: Vec<Bytes>,
}

/// One decoded frame with the context it was decoded in.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) frame: Bytes,
    pub(crate) ctx: DecodeContext,
    pub(crate) message: PgOutputMessage,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every capture file, sorted by name.
pub(crate) fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no golden captures in {}",
        dir().display()
    );
    names
}

/// Loads `tests/golden/<name>.hex`.
pub(crate) fn load(name: &str) -> Capture {
    let path = dir().join(format!("{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut server = None;
    let mut options = None;
    let mut frames = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(s) = comment.strip_prefix("server:") {
                server = Some(s.trim().to_owned());
            }
            if let Some(o) = comment.strip_prefix("options:") {
                options = Some(o.trim().to_owned());
            }
        } else if !line.trim().is_empty() {
            frames.push(Bytes::from(hex(line.trim())));
        }
    }
    let options = options.expect("an options comment");
    let version = option(&options, "proto_version").parse::<u32>().unwrap();
    Capture {
        name: name.to_owned(),
        server: server.expect("a server comment"),
        version: ProtocolVersion::try_from(version).unwrap(),
        parallel: options.contains("'streaming','parallel'"),
        frames,
    }
}

/// The value of `'name','value'` in the options comment.
fn option<'a>(options: &'a str, name: &str) -> &'a str {
    let key = format!("'{name}','");
    let start = options
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {options}"))
        + key.len();
    let len = options[start..].find('\'').unwrap();
    &options[start..start + len]
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes a capture in order with one [`PgOutputDecoder`], as a replication stream would.
pub(crate) fn decode(capture: &Capture) -> Vec<Decoded> {
    let mut decoder =
        PgOutputDecoder::new(capture.version).with_parallel_streaming(capture.parallel);
    capture
        .frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let ctx = decoder.context();
            let message = decoder
                .decode(frame.clone())
                .unwrap_or_else(|e| panic!("{} frame {i}: {e}: {:?}", capture.name, e.kind()));
            Decoded {
                frame: frame.clone(),
                ctx,
                message,
            }
        })
        .collect()
}

// Assertion helpers of the golden tests.

pub(crate) fn text(s: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes()))
}

pub(crate) fn tuple(columns: Vec<ColumnValue>) -> TupleData {
    TupleData { columns }
}

pub(crate) fn col(is_key: bool, name: &str, type_oid: u32, type_modifier: i32) -> RelationColumn {
    RelationColumn {
        is_key,
        name: name.to_owned(),
        type_oid: Oid(type_oid),
        type_modifier,
    }
}

pub(crate) const INT4: u32 = 23;
pub(crate) const TEXT: u32 = 25;
pub(crate) const VARCHAR: u32 = 1043;
pub(crate) const NUMERIC: u32 = 1700;

/// The one-letter tags of a capture, e.g. `"BRIC"`.
pub(crate) fn tags(decoded: &[Decoded]) -> String {
    decoded
        .iter()
        .map(|d| char::from(d.message.tag()))
        .collect()
}

/// Asserts a Relation message outside a stream and returns its OID.
pub(crate) fn relation(
    message: &PgOutputMessage,
    xid: Option<Xid>,
    name: &str,
    identity: ReplicaIdentity,
    columns: Vec<RelationColumn>,
) -> Oid {
    let M::Relation(r) = message else {
        panic!("expected Relation, got {message:?}")
    };
    assert_eq!(
        r,
        &RelationBody {
            xid,
            oid: r.oid,
            namespace: "public".to_owned(),
            name: name.to_owned(),
            replica_identity: identity,
            columns,
        }
    );
    assert!(r.oid.0 >= 16384, "user OIDs start at 16384: {:?}", r.oid);
    r.oid
}

pub(crate) fn kv_columns() -> Vec<RelationColumn> {
    vec![col(true, "id", INT4, -1), col(false, "v", TEXT, -1)]
}

/// A timestamp taken by the server while capturing: after 2020, before 2100.
pub(crate) fn assert_recent(ts: PgTimestamp) {
    let text = ts.to_string();
    assert!(
        ("2020".."2100").contains(&&text[..4]),
        "implausible timestamp {text}"
    );
    assert_eq!(text.len(), "2026-11-24T02:28:05.123456Z".len());
    assert!(ts.to_system_time().is_some());
}

/// Checks a Begin … Commit pair and returns the Begin's xid.
pub(crate) fn assert_begin_commit(begin: &PgOutputMessage, commit: &PgOutputMessage) -> Xid {
    let (M::Begin(b), M::Commit(c)) = (begin, commit) else {
        panic!("expected Begin … Commit, got {begin:?} … {commit:?}")
    };
    assert_eq!(c.flags, 0);
    assert_eq!(
        b.final_lsn, c.commit_lsn,
        "Begin's final LSN is the commit LSN"
    );
    assert!(c.end_lsn > c.commit_lsn);
    assert_eq!(b.commit_time, c.commit_time);
    assert_ne!(b.xid, Xid(0));
    b.xid
}

//! Malformed `pgoutput` input: every way a frame can be wrong is a typed [`DecodeError`] at the
//! right offset, never a panic.
//!
//! Frames are built by hand after
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>, or cut
//! from the golden frames that `scripts/capture-golden` captured from real servers.

mod golden_support;

use blueshift_decoder::pgoutput::{
    decode_message, encode, DecodeContext, DecodeError, DecodeErrorKind, EncodeError, InsertBody,
    LogicalMessageBody, PgOutputDecoder, PgOutputMessage, ProtocolVersion, TupleData,
};
use blueshift_decoder::{Lsn, Oid, Xid};
use bytes::{BufMut, Bytes, BytesMut};

fn ctx(version: ProtocolVersion) -> DecodeContext {
    DecodeContext::new(version)
}

fn v3() -> DecodeContext {
    ctx(ProtocolVersion::V3)
}

fn in_stream() -> DecodeContext {
    DecodeContext {
        in_stream: true,
        ..v3()
    }
}

/// Decodes `frame`, which must fail, and returns the error.
fn fail(frame: &[u8], ctx: DecodeContext) -> DecodeError {
    match decode_message(Bytes::copy_from_slice(frame), ctx) {
        Ok(m) => panic!("{frame:02x?} decoded as {m:?}"),
        Err(e) => e,
    }
}

/// Asserts the error kind and offset of decoding `frame`.
fn assert_fails(frame: &[u8], ctx: DecodeContext, kind: DecodeErrorKind, offset: usize) {
    let err = fail(frame, ctx);
    assert_eq!((err.kind(), err.offset()), (&kind, offset), "{frame:02x?}");
}

/// `I`, relation OID 16384, `N`, then the given tuple bytes.
fn insert(tuple: &[u8]) -> Vec<u8> {
    let mut f = vec![b'I', 0, 0, 0x40, 0, b'N'];
    f.extend_from_slice(tuple);
    f
}

/// A tuple of one text column with the given length field and value bytes.
fn text_column(len: i32, value: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 1, b't'];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(value);
    f
}

/// A Relation message (outside a stream) with the given name bytes and column block.
fn relation(name: &[u8], identity: u8, columns: &[u8]) -> Vec<u8> {
    let mut f = vec![b'R', 0, 0, 0x40, 0];
    f.extend_from_slice(b"public\0");
    f.extend_from_slice(name);
    f.push(0);
    f.push(identity);
    f.extend_from_slice(columns);
    f
}

#[test]
fn empty_frame() {
    let err = fail(b"", v3());
    assert_eq!(
        (err.kind(), err.offset(), err.tag()),
        (&DecodeErrorKind::Empty, 0, None)
    );
}

#[test]
fn unknown_message_tags() {
    for tag in [b'Z', 0, 0xff, b'n', b'X'] {
        assert_fails(
            &[tag, 1, 2, 3],
            v3(),
            DecodeErrorKind::UnknownTag { tag },
            0,
        );
    }
}

#[test]
fn every_truncation_of_every_golden_frame_is_an_error() {
    let mut checked = std::collections::HashSet::new();
    for name in golden_support::names() {
        let capture = golden_support::load(&name);
        for d in golden_support::decode(&capture) {
            if !checked.insert((d.frame.clone(), d.ctx.in_stream, d.ctx.parallel_streaming)) {
                continue;
            }
            for len in 0..d.frame.len() {
                let err = decode_message(d.frame.slice(..len), d.ctx)
                    .expect_err("a strict prefix of a message does not decode");
                assert!(err.offset() <= len, "{name}: offset past the end");
                match *err.kind() {
                    DecodeErrorKind::Empty => assert_eq!(len, 0),
                    DecodeErrorKind::Truncated {
                        needed, remaining, ..
                    } => {
                        assert_eq!(err.offset() + remaining, len, "{name}");
                        assert!(needed > remaining);
                    }
                    DecodeErrorKind::MissingNul { .. }
                    | DecodeErrorKind::CountExceedsInput { .. } => {}
                    ref other => panic!("{name}: cut at {len}: unexpected {other:?}"),
                }
                if len > 0 {
                    assert_eq!(err.tag(), Some(d.message.tag()));
                }
            }
        }
    }
    assert!(checked.len() > 100);
}

#[test]
fn trailing_bytes_after_a_golden_frame() {
    let capture = golden_support::load("v3_dml");
    for d in golden_support::decode(&capture) {
        let mut frame = d.frame.to_vec();
        frame.extend_from_slice(&[0, 0]);
        assert_fails(
            &frame,
            d.ctx,
            DecodeErrorKind::TrailingBytes { count: 2 },
            d.frame.len(),
        );
    }
    assert_fails(
        b"Ex",
        in_stream(),
        DecodeErrorKind::TrailingBytes { count: 1 },
        1,
    );
}

#[test]
fn negative_lengths() {
    assert_fails(
        &insert(&text_column(-1, b"")),
        v3(),
        DecodeErrorKind::NegativeLength {
            field: "text column value",
            value: -1,
        },
        9,
    );
    assert_fails(
        &insert(&text_column(i32::MIN, b"")),
        v3(),
        DecodeErrorKind::NegativeLength {
            field: "text column value",
            value: i32::MIN,
        },
        9,
    );
    // Message: flags, LSN, prefix "p", then a content length of -1 at offset 1 + 1 + 8 + 2.
    let mut m = vec![b'M', 1];
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(b"p\0");
    m.extend_from_slice(&(-1i32).to_be_bytes());
    assert_fails(
        &m,
        v3(),
        DecodeErrorKind::NegativeLength {
            field: "message content",
            value: -1,
        },
        12,
    );
    // Truncate: a relation count of -1.
    let mut t = vec![b'T'];
    t.extend_from_slice(&(-1i32).to_be_bytes());
    t.push(0);
    assert_fails(
        &t,
        v3(),
        DecodeErrorKind::NegativeLength {
            field: "truncated relation count",
            value: -1,
        },
        1,
    );
}

#[test]
fn lengths_past_the_end() {
    // i32::MAX bytes of text announced, two present: refused before slicing.
    assert_fails(
        &insert(&text_column(i32::MAX, b"ab")),
        v3(),
        DecodeErrorKind::Truncated {
            field: "text column value",
            needed: i32::MAX as usize,
            remaining: 2,
        },
        13,
    );
    assert_fails(
        &insert(&text_column(3, b"ab")),
        v3(),
        DecodeErrorKind::Truncated {
            field: "text column value",
            needed: 3,
            remaining: 2,
        },
        13,
    );
}

#[test]
fn huge_counts_with_few_bytes_are_refused_before_allocating() {
    // A tuple claiming 65535 columns with none present.
    assert_fails(
        &insert(&[0xff, 0xff]),
        v3(),
        DecodeErrorKind::CountExceedsInput {
            field: "tuple column count",
            count: 65535,
            min_bytes: 65535,
            remaining: 0,
        },
        6,
    );
    // A Relation claiming 65535 columns of at least 10 bytes each, with 3 bytes left.
    let r = relation(b"t", b'd', &[0xff, 0xff, 1, 2, 3]);
    assert_fails(
        &r,
        v3(),
        DecodeErrorKind::CountExceedsInput {
            field: "relation column count",
            count: 65535,
            min_bytes: 655_350,
            remaining: 3,
        },
        r.len() - 5,
    );
    // A Truncate claiming i32::MAX relations.
    let mut t = vec![b'T'];
    t.extend_from_slice(&i32::MAX.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 1]);
    assert_fails(
        &t,
        v3(),
        DecodeErrorKind::CountExceedsInput {
            field: "truncated relation count",
            count: i32::MAX as usize,
            min_bytes: 4 * i32::MAX as u64,
            remaining: 4,
        },
        1,
    );
}

#[test]
fn unknown_tuple_column_kind() {
    assert_fails(
        &insert(&[0, 2, b'n', b'x']),
        v3(),
        DecodeErrorKind::UnknownColumnKind { kind: b'x' },
        9,
    );
}

#[test]
fn unknown_replica_identity() {
    let r = relation(b"t", b'z', &[0, 0]);
    assert_fails(
        &r,
        v3(),
        DecodeErrorKind::UnknownReplicaIdentity { identity: b'z' },
        r.len() - 3,
    );
}

#[test]
fn unexpected_submessage_bytes() {
    let expected_new = |found| DecodeErrorKind::UnexpectedSubmessage {
        field: "the new tuple",
        found,
        expected: "'N'",
    };
    // Insert with `K` instead of `N`.
    assert_fails(b"I\0\0\x40\0K\0\0", v3(), expected_new(b'K'), 5);
    // Update with neither `K`, `O` nor `N`.
    assert_fails(
        b"U\0\0\x40\0X\0\0",
        v3(),
        DecodeErrorKind::UnexpectedSubmessage {
            field: "the old or new tuple",
            found: b'X',
            expected: "'K', 'O' or 'N'",
        },
        5,
    );
    // Update with an old key but no `N` after it.
    assert_fails(b"U\0\0\x40\0K\0\0K\0\0", v3(), expected_new(b'K'), 8);
    // Delete with `N`.
    assert_fails(
        b"D\0\0\x40\0N\0\0",
        v3(),
        DecodeErrorKind::UnexpectedSubmessage {
            field: "the old tuple",
            found: b'N',
            expected: "'K' or 'O'",
        },
        5,
    );
}

#[test]
fn invalid_utf8_and_missing_nul_in_strings() {
    let r = relation(b"k\xffv", b'd', &[0, 0]);
    let err = fail(&r, v3());
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::InvalidUtf8 {
            field: "relation name",
            ..
        }
    ));
    assert_eq!(err.offset(), 13, "at the first invalid byte");
    assert!(std::error::Error::source(err.kind()).is_some());

    // A column name that is not UTF-8.
    let r = relation(
        b"t",
        b'd',
        b"\0\x01\x01\xc3\x28\0\0\0\0\x17\xff\xff\xff\xff",
    );
    let err = fail(&r, v3());
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::InvalidUtf8 {
            field: "column name",
            ..
        }
    ));
    // A GID that is not UTF-8.
    let mut p = vec![b'P', 0];
    p.extend_from_slice(&[0; 28]);
    p.extend_from_slice(b"\xfe\0");
    let err = fail(&p, v3());
    assert!(matches!(
        err.kind(),
        DecodeErrorKind::InvalidUtf8 { field: "GID", .. }
    ));
    assert_eq!(err.offset(), 30);

    // An origin name running to the end of the frame.
    let mut o = vec![b'O'];
    o.extend_from_slice(&[0; 8]);
    o.extend_from_slice(b"upstream");
    assert_fails(
        &o,
        v3(),
        DecodeErrorKind::MissingNul {
            field: "origin name",
        },
        9,
    );
}

#[test]
fn undefined_flag_bits() {
    let flags = |field, value| DecodeErrorKind::InvalidFlags { field, value };
    assert_fails(b"M\x02", v3(), flags("message flags", 2), 1);
    assert_fails(b"T\0\0\0\0\x04", v3(), flags("truncate options", 4), 5);
    assert_fails(b"S\0\0\0\x01\x02", v3(), flags("first-segment flag", 2), 5);
    let r = relation(b"t", b'd', b"\0\x01\x02id\0\0\0\0\x17\xff\xff\xff\xff");
    assert_fails(&r, v3(), flags("relation column flags", 2), r.len() - 12);
}

#[test]
fn messages_of_later_protocol_versions_are_refused() {
    let not_in = |tag, required, negotiated| DecodeErrorKind::TagNotInVersion {
        tag,
        required,
        negotiated,
    };
    use ProtocolVersion::{V1, V2, V3};
    assert_fails(b"S\0\0\0\x01\x01", ctx(V1), not_in(b'S', V2, V1), 0);
    assert_fails(b"A\0\0\0\x01\0\0\0\x01", ctx(V1), not_in(b'A', V2, V1), 0);
    assert_fails(b"b", ctx(V2), not_in(b'b', V3, V2), 0);
    assert_fails(b"p", ctx(V2), not_in(b'p', V3, V2), 0);
    let err = fail(b"K", ctx(V1));
    assert_eq!(err.tag(), Some(b'K'));
}

#[test]
fn messages_out_of_place_in_the_stream() {
    assert_fails(
        b"E",
        v3(),
        DecodeErrorKind::NotAllowedOutsideStream { tag: b'E' },
        0,
    );
    for tag in [b'B', b'C', b'S', b'c', b'A', b'b', b'P', b'K', b'r', b'p'] {
        assert_fails(
            &[tag],
            in_stream(),
            DecodeErrorKind::NotAllowedInStream { tag },
            0,
        );
    }
}

#[test]
fn decoder_tracks_streamed_blocks_and_keeps_state_on_error() {
    let mut decoder = PgOutputDecoder::new(ProtocolVersion::V2);
    assert!(!decoder.in_stream());
    decoder
        .decode(Bytes::from_static(b"S\0\0\x01\x00\x01"))
        .unwrap();
    assert!(decoder.in_stream());
    // Inside the block the xid prefix is read.
    let m = decoder
        .decode(Bytes::from_static(b"I\0\0\x01\x00\0\0\x40\0N\0\x01n"))
        .unwrap();
    assert_eq!(m.stream_xid(), Some(Xid(256)));
    // A frame that fails does not change the state.
    assert!(decoder.decode(Bytes::from_static(b"B")).is_err());
    assert!(decoder.in_stream());
    decoder.decode(Bytes::from_static(b"E")).unwrap();
    assert!(!decoder.in_stream());
    let m = decoder
        .decode(Bytes::from_static(b"I\0\0\x40\0N\0\x01n"))
        .unwrap();
    assert_eq!(m.stream_xid(), None);
    decoder
        .decode(Bytes::from_static(b"S\0\0\x01\x00\x00"))
        .unwrap();
    decoder.reset();
    assert!(!decoder.in_stream());
}

#[test]
fn error_text_names_message_and_offset_and_keeps_the_kind_as_source() {
    let err = fail(&insert(&text_column(-1, b"")), v3());
    assert_eq!(
        err.to_string(),
        "malformed pgoutput Insert message at byte 9"
    );
    let source = std::error::Error::source(&err).expect("the kind is the source");
    assert_eq!(source.to_string(), "negative text column value: -1");
    assert_eq!(
        fail(b"", v3()).to_string(),
        "malformed pgoutput message at byte 0"
    );
    assert_eq!(
        DecodeErrorKind::UnknownTag { tag: 7 }.to_string(),
        "unknown message tag 0x07"
    );
}

#[test]
fn encoder_refuses_what_the_wire_cannot_carry_and_appends_nothing() {
    let mut out = BytesMut::new();
    out.put_slice(b"keep");
    let message = PgOutputMessage::Message(LogicalMessageBody {
        xid: None,
        transactional: true,
        lsn: Lsn(1),
        prefix: "a\0b".to_owned(),
        content: Bytes::new(),
    });
    assert_eq!(
        encode(&message, false, &mut out),
        Err(EncodeError::InteriorNul {
            field: "message prefix"
        })
    );
    let insert = PgOutputMessage::Insert(InsertBody {
        xid: None,
        relation: Oid(1),
        new: TupleData::default(),
    });
    assert_eq!(
        encode(&insert, true, &mut out),
        Err(EncodeError::StreamXidMismatch {
            message: "Insert",
            in_stream: true
        })
    );
    let streamed = PgOutputMessage::Insert(InsertBody {
        xid: Some(Xid(5)),
        relation: Oid(1),
        new: TupleData::default(),
    });
    assert!(matches!(
        encode(&streamed, false, &mut out),
        Err(EncodeError::StreamXidMismatch {
            in_stream: false,
            ..
        })
    ));
    assert_eq!(&out[..], b"keep");
    encode(&streamed, true, &mut out).unwrap();
    assert_eq!(&out[..], b"keepI\0\0\0\x05\0\0\0\x01N\0\0");
}

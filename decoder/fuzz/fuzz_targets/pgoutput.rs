//! Fuzz target `pgoutput`: arbitrary bytes into the `pgoutput` decoder and the relation cache.
//!
//! The first input byte chooses the decoding context (protocol version, inside a streamed
//! block or not, `streaming 'parallel'` or not) and the mode: one frame through the stateless
//! `decode_message`, or a sequence of length-prefixed frames through a `PgOutputDecoder` and a
//! `RelationCache`, as a replication stream would feed them. Besides "never panics", every
//! frame the decoder accepts must encode back to exactly its bytes.
//! Format: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

#![no_main]

use blueshift_decoder::pgoutput::{
    decode_message, encode, DecodeContext, PgOutputDecoder, PgOutputMessage, ProtocolVersion,
};
use blueshift_decoder::relation::RelationCache;
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Asserts that an accepted frame is the canonical encoding of what it decoded to.
fn assert_round_trip(message: &PgOutputMessage, in_stream: bool, frame: &[u8]) {
    let mut out = BytesMut::new();
    encode(message, in_stream, &mut out).expect("a decoded message encodes");
    assert_eq!(
        &out[..],
        frame,
        "decode → encode changed the bytes of {message:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = match selector & 0b11 {
        0 => ProtocolVersion::V1,
        1 => ProtocolVersion::V2,
        2 => ProtocolVersion::V3,
        _ => ProtocolVersion::V4,
    };
    let parallel = selector & 0b1000 != 0;
    if selector & 0b1_0000 == 0 {
        let ctx = DecodeContext {
            protocol_version: version,
            in_stream: selector & 0b100 != 0,
            parallel_streaming: parallel,
        };
        if let Ok(message) = decode_message(Bytes::copy_from_slice(rest), ctx) {
            assert_round_trip(&message, ctx.in_stream, rest);
        }
        return;
    }
    // A stream: each frame is a length byte and that many bytes.
    let mut decoder = PgOutputDecoder::new(version).with_parallel_streaming(parallel);
    let mut cache = RelationCache::new();
    let mut rest = rest;
    while let Some((&len, tail)) = rest.split_first() {
        let (frame, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let in_stream = decoder.in_stream();
        let Ok(message) = decoder.decode(Bytes::copy_from_slice(frame)) else {
            continue;
        };
        assert_round_trip(&message, in_stream, frame);
        cache.observe(&message);
        let tuple_relation = match &message {
            PgOutputMessage::Insert(m) => Some((m.relation, m.new.columns.len())),
            PgOutputMessage::Update(m) => Some((m.relation, m.new.columns.len())),
            PgOutputMessage::Delete(m) => Some((m.relation, m.old.tuple().columns.len())),
            _ => None,
        };
        if let Some((oid, _columns)) = tuple_relation {
            if let Ok(info) = cache.require(oid) {
                for &key in info.key_columns() {
                    assert!(info.columns()[key].is_key);
                }
                let _ = info.name().to_string();
            }
        }
    }
});

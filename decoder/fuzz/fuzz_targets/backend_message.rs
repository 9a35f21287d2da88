//! Fuzz target `backend_message`: arbitrary bytes as what the server sends on a replication
//! connection (startup, authentication, command results, errors, the CopyBoth stream), read in
//! chunks into the connection's read buffer and split into messages by its parser
//! (`connection/message.rs`), as `read_message` does.
//!
//! The first byte sets the chunk size (1 to 256 bytes arrive per read). Besides "never panics":
//! a message takes exactly the bytes its header declares; a CopyData payload is those bytes, as
//! a slice of the read buffer (zero-copy); an ErrorResponse or NoticeResponse carries the
//! severity, code and message its fields say (read here independently); a length below 4 or
//! past the limit and an unknown type byte are the errors that name them; every message's
//! "unexpected here" error and every parse error formats. Allocation budget: 8 bytes per input
//! byte plus twice the parser's read reserve (a declared length reserves at most 4 MiB at a
//! time, whatever it declares, and the buffer may double).
//! Format: <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

#![no_main]

use blueshift_decoder::connection::{ProtocolError, ServerError};
use blueshift_decoder::fuzzing::{parse_backend_message, MAX_MESSAGE_LEN, MAX_READ_RESERVE};
use blueshift_decoder_fuzz::alloc::{bounded, Budget};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const BUDGET: Budget = Budget {
    per_input_byte: 8,
    fixed: 2 * MAX_READ_RESERVE + 256 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    bounded(data.len(), BUDGET, || read_all(stream, chunk));
});

/// Feeds `stream` to the parser `chunk` bytes at a time until it ends or fails.
fn read_all(stream: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    // Where `buf`'s first byte is in `stream`.
    let mut at = 0;
    let mut arrived = 0;
    loop {
        let before = buf.len();
        let start = buf.as_ptr();
        let header = buf.get(..5).map(|h| {
            (
                h[0],
                i32::from_be_bytes(h[1..5].try_into().expect("4 bytes")),
            )
        });
        match parse_backend_message(&mut buf) {
            Ok(Some(message)) => {
                let (_, len) = header.expect("a message has a header");
                let total = 1 + usize::try_from(len).expect("accepted length is positive");
                assert_eq!(
                    before - buf.len(),
                    total,
                    "{} took the wrong bytes",
                    message.name
                );
                let body = &stream[at + 5..at + total];
                if let Some(payload) = &message.copy_data {
                    assert_eq!(&payload[..], body);
                    assert_eq!(
                        payload.as_ptr(),
                        start.wrapping_add(5),
                        "CopyData was copied"
                    );
                }
                if let Some(e) = &message.server_error {
                    check_server_error(e, body);
                }
                assert!(!message.unexpected.to_string().is_empty());
                assert!(!message.debug.is_empty());
                at += total;
            }
            Ok(None) => {
                if let Some((_, len)) = header {
                    assert!(
                        before < 1 + len as usize,
                        "a complete message was not taken"
                    );
                }
                if arrived == stream.len() {
                    return;
                }
                let next = (arrived + chunk).min(stream.len());
                buf.extend_from_slice(&stream[arrived..next]);
                arrived = next;
            }
            Err(e) => {
                let (tag, len) = header.expect("only a whole header can be wrong");
                match &e {
                    ProtocolError::InvalidLength { tag: t, len: l } => {
                        assert_eq!((*t, *l), (tag, len));
                        assert!(len < 4);
                    }
                    ProtocolError::TooLong { tag: t, len: l, .. } => {
                        assert_eq!(*t, tag);
                        assert_eq!(*l, len as usize - 4);
                        assert!(*l > MAX_MESSAGE_LEN);
                    }
                    ProtocolError::UnknownMessage { tag: t } => assert_eq!(*t, tag),
                    ProtocolError::Malformed { .. } => {}
                    other => panic!("unexpected error for a backend message: {other:?}"),
                }
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    }
}

/// The error's severity, code and message are its fields' (the last of each, as the server
/// sends one), read here without the parser.
fn check_server_error(e: &ServerError, body: &[u8]) {
    let mut fields: Vec<(u8, String)> = Vec::new();
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail
            .iter()
            .position(|b| *b == 0)
            .expect("a parsed field ends");
        fields.push((kind, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = &tail[end + 1..];
    }
    let last = |k: u8| {
        fields
            .iter()
            .rev()
            .find(|(kind, _)| *kind == k)
            .map(|(_, v)| v)
    };
    let severity = match last(b'V') {
        Some(v) if !v.is_empty() => v,
        _ => last(b'S').expect("a parsed error has a severity"),
    };
    assert_eq!(&e.severity, severity);
    assert_eq!(Some(&e.code), last(b'C'));
    assert_eq!(Some(&e.message), last(b'M'));
    let text = e.to_string();
    assert!(text.contains(&e.message) && text.contains(&e.code));
}

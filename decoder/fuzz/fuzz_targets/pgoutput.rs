//! Fuzz target `pgoutput`: arbitrary bytes into the `pgoutput` decoder, and in multi-frame mode
//! through the decoder into the transaction assembler beside a model of the protocol.
//!
//! The first byte chooses the context and the mode:
//!
//! | bits | meaning |
//! |---|---|
//! | 0–1 | protocol version 1 to 4 |
//! | 2 | single-frame mode: the frame is inside a streamed block |
//! | 3 | `streaming 'parallel'` (Stream Abort carries LSN and time) |
//! | 4 | multi-frame mode: the rest is frames of a 2-byte length and that many bytes |
//! | 5 | multi-frame mode: the assembler spills (almost) every change to disk |
//! | 6 | multi-frame mode: transactions of origin `blueshift…` are dropped |
//!
//! Single-frame mode: a frame the decoder accepts must encode back to exactly its bytes; an
//! error must point inside the frame at what it names. Multi-frame mode adds everything
//! `blueshift_decoder_fuzz::pgoutput` checks of the session. Every run stays within an
//! allocation budget of 128 bytes per input byte (each one-byte NULL column is a 32-byte value
//! in the decoded message, again in the model's copy, with vector growth on top) plus 256 KiB,
//! or 1 MiB when spilling (64 KiB buffers per spill file).
//! Format: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

#![no_main]

use blueshift_decoder::pgoutput::{decode_message, DecodeContext, ProtocolVersion};
use blueshift_decoder_fuzz::alloc::{bounded, Budget};
use blueshift_decoder_fuzz::input::frames;
use blueshift_decoder_fuzz::pgoutput::{
    assert_round_trip, check_decode_error, Session, SessionOptions,
};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const BUDGET: Budget = Budget {
    per_input_byte: 128,
    fixed: 256 * 1024,
};

const SPILL_BUDGET: Budget = Budget {
    per_input_byte: 128,
    fixed: 1024 * 1024,
};

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
        bounded(data.len(), BUDGET, || {
            match decode_message(Bytes::copy_from_slice(rest), ctx) {
                Ok(message) => assert_round_trip(&message, ctx.in_stream, rest),
                Err(e) => check_decode_error(&e, rest),
            }
        });
        return;
    }
    let options = SessionOptions {
        version,
        parallel,
        spill: selector & 0b10_0000 != 0,
        skip_origins: selector & 0b100_0000 != 0,
    };
    let budget = if options.spill { SPILL_BUDGET } else { BUDGET };
    bounded(data.len(), budget, || {
        let mut session = Session::new(options);
        for frame in frames(rest) {
            if !session.frame(frame) {
                break;
            }
        }
    });
});

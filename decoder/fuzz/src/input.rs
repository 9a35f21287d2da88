//! Framing of multi-frame inputs: each frame is a 2-byte big-endian length and that many bytes
//! (fewer at the end of the input). Two bytes let a frame be as long as any input libFuzzer
//! makes, where one byte capped frames at 255 bytes.

/// The frames of `data`, in order.
pub fn frames(data: &[u8]) -> Frames<'_> {
    Frames { rest: data }
}

/// Iterator over the length-prefixed frames of an input.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, tail) = match self.rest {
            [] => return None,
            [_] => (0, &[][..]),
            [hi, lo, tail @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), tail),
        };
        let (frame, rest) = tail.split_at(len.min(tail.len()));
        self.rest = rest;
        Some(frame)
    }
}

/// Appends `frame` to `out` as one length-prefixed frame (for seed generation and tests).
pub fn push_frame(out: &mut Vec<u8>, frame: &[u8]) {
    let len = u16::try_from(frame.len()).expect("a frame of at most 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut data = Vec::new();
        push_frame(&mut data, b"abc");
        push_frame(&mut data, b"");
        push_frame(&mut data, &[7; 300]);
        let got: Vec<&[u8]> = frames(&data).collect();
        assert_eq!(got, [&b"abc"[..], b"", &[7; 300][..]]);
        // A short last frame takes what is left; a lone byte is an empty frame.
        assert_eq!(frames(&[0, 5, 1, 2]).collect::<Vec<_>>(), [&[1, 2][..]]);
        let empty: &[u8] = &[];
        assert_eq!(frames(&[9]).collect::<Vec<_>>(), [empty]);
    }
}

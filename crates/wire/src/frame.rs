//! Length framing: `frame = LEB128(len) || message`, `len <= max`.
//!
//! The length is an unsigned LEB128 varint (7 bits per byte, least significant group first, high
//! bit set on every byte but the last), at most 10 bytes, minimally encoded. A frame whose
//! declared length exceeds the maximum is refused as soon as its length is read, before any
//! buffer for it is allocated.

/// Default maximum frame length in bytes (not counting the length prefix).
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The declared length is above the maximum.
    #[error("frame of {declared} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Declared length.
        declared: u64,
        /// Maximum allowed.
        max: usize,
    },
    /// The length prefix is longer than 10 bytes or overflows 64 bits.
    #[error("frame length prefix is not a valid LEB128 varint")]
    BadVarint,
    /// The length prefix uses more bytes than needed (e.g. `0x80 0x00` for zero).
    #[error("frame length prefix is not minimally encoded")]
    NonMinimalVarint,
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame ({0} bytes of it were received)")]
    Truncated(usize),
}

/// Appends the LEB128 encoding of `value` to `out`.
pub fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a LEB128 varint at the start of `buf`: `Ok(None)` if more bytes are needed, else the
/// value and the number of bytes it took.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, byte) in buf.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return Err(FrameError::BadVarint);
        }
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && bits > 1 {
            return Err(FrameError::BadVarint);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && *byte == 0 {
                return Err(FrameError::NonMinimalVarint);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(FrameError::BadVarint);
    }
    Ok(None)
}

/// Frames `message`: its length as LEB128, then the message. Fails if it is longer than `max`.
pub fn encode_frame(message: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    if message.len() > max {
        return Err(FrameError::TooLarge {
            declared: message.len() as u64,
            max,
        });
    }
    let mut out = Vec::with_capacity(message.len() + MAX_VARINT_LEN);
    write_varint(message.len() as u64, &mut out);
    out.extend_from_slice(message);
    Ok(out)
}

/// An incremental frame decoder for a byte stream. It holds at most one frame (at most `max`
/// bytes) plus a partial length prefix, whatever the peer sends.
///
/// ```
/// use dp2ptcs_wire::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
/// let mut stream = encode_frame(b"hello", MAX_FRAME_LEN)?;
/// stream.extend(encode_frame(b"world", MAX_FRAME_LEN)?);
/// let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
/// let mut frames = Vec::new();
/// let mut input = &stream[..];
/// while !input.is_empty() {
///     let used = decoder.push(input)?;
///     input = &input[used..];
///     if let Some(frame) = decoder.take_frame() {
///         frames.push(frame);
///     }
/// }
/// assert_eq!(frames, [b"hello".to_vec(), b"world".to_vec()]);
/// # Ok::<(), dp2ptcs_wire::FrameError>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    prefix: Vec<u8>,
    body: Option<(usize, Vec<u8>)>,
    ready: Option<Vec<u8>>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            prefix: Vec::with_capacity(MAX_VARINT_LEN),
            body: None,
            ready: None,
        }
    }

    /// Consumes bytes from `input` up to the end of the current frame and returns how many it
    /// used. When a frame is complete it waits in [`take_frame`](Self::take_frame) and `push`
    /// consumes nothing more until it is taken.
    pub fn push(&mut self, input: &[u8]) -> Result<usize, FrameError> {
        if self.ready.is_some() {
            return Ok(0);
        }
        let mut used = 0;
        if self.body.is_none() {
            while used < input.len() {
                self.prefix.push(input[used]);
                used += 1;
                match read_varint(&self.prefix)? {
                    None => continue,
                    Some((len, _)) => {
                        if len > self.max as u64 {
                            return Err(FrameError::TooLarge {
                                declared: len,
                                max: self.max,
                            });
                        }
                        self.prefix.clear();
                        // Bounded by `max`, checked above.
                        let len = len as usize;
                        self.body = Some((len, Vec::with_capacity(len)));
                        break;
                    }
                }
            }
        }
        if let Some((len, buf)) = &mut self.body {
            let take = (*len - buf.len()).min(input.len() - used);
            buf.extend_from_slice(&input[used..used + take]);
            used += take;
            if buf.len() == *len {
                self.ready = self.body.take().map(|(_, b)| b);
            }
        }
        Ok(used)
    }

    /// The completed frame, if there is one.
    pub fn take_frame(&mut self) -> Option<Vec<u8>> {
        self.ready.take()
    }

    /// Call at the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        let partial = self.prefix.len() + self.body.as_ref().map_or(0, |(_, b)| b.len());
        if partial > 0 || self.body.is_some() {
            return Err(FrameError::Truncated(partial));
        }
        Ok(())
    }

    /// Whether the decoder is between frames (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        self.prefix.is_empty() && self.body.is_none() && self.ready.is_none()
    }
}

/// Splits a complete buffer into frames (for tests, files and fuzzing).
pub fn decode_all(mut input: &[u8], max: usize) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut decoder = FrameDecoder::new(max);
    let mut frames = Vec::new();
    while !input.is_empty() {
        let used = decoder.push(input)?;
        input = &input[used..];
        if let Some(frame) = decoder.take_frame() {
            frames.push(frame);
        }
    }
    if let Some(frame) = decoder.take_frame() {
        frames.push(frame);
    }
    decoder.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_known_answers() {
        let cases: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            write_varint(value, &mut out);
            assert_eq!(out, bytes);
            assert_eq!(read_varint(bytes), Ok(Some((value, bytes.len()))));
        }
        let mut max = Vec::new();
        write_varint(u64::MAX, &mut max);
        assert_eq!(max.len(), 10);
        assert_eq!(read_varint(&max), Ok(Some((u64::MAX, 10))));
    }

    #[test]
    fn bad_varints() {
        assert_eq!(read_varint(&[0x80]), Ok(None));
        assert_eq!(
            read_varint(&[0x80, 0x00]),
            Err(FrameError::NonMinimalVarint)
        );
        assert_eq!(read_varint(&[0xff; 11]), Err(FrameError::BadVarint));
        // 10th byte may only carry the top bit of a u64.
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        assert_eq!(read_varint(&overflow), Err(FrameError::BadVarint));
    }

    #[test]
    fn oversize_is_refused_before_allocating() {
        let mut decoder = FrameDecoder::new(100);
        let mut prefix = Vec::new();
        write_varint(u64::MAX / 2, &mut prefix);
        assert!(matches!(
            decoder.push(&prefix),
            Err(FrameError::TooLarge { .. })
        ));
        let mut decoder = FrameDecoder::new(100);
        assert!(matches!(
            decoder.push(&[101]),
            Err(FrameError::TooLarge {
                declared: 101,
                max: 100
            })
        ));
        assert!(encode_frame(&[0; 101], 100).is_err());
    }

    #[test]
    fn truncation_is_reported() {
        let framed = encode_frame(b"abcdef", 100).unwrap();
        assert_eq!(decode_all(&framed[..4], 100), Err(FrameError::Truncated(3)));
        assert_eq!(decode_all(&[0x80], 100), Err(FrameError::Truncated(1)));
        assert_eq!(decode_all(&[], 100), Ok(vec![]));
        assert_eq!(decode_all(&[0], 100), Ok(vec![vec![]]));
    }

    proptest! {
        #[test]
        fn frames_round_trip_whatever_the_chunking(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            chunk in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for m in &messages {
                stream.extend(encode_frame(m, 300).unwrap());
            }
            let mut decoder = FrameDecoder::new(300);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut piece = piece;
                loop {
                    let used = decoder.push(piece).unwrap();
                    piece = &piece[used..];
                    if let Some(f) = decoder.take_frame() {
                        out.push(f);
                    }
                    if piece.is_empty() {
                        break;
                    }
                }
            }
            if let Some(f) = decoder.take_frame() {
                out.push(f);
            }
            prop_assert!(decoder.finish().is_ok());
            prop_assert_eq!(out, messages);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut decoder = FrameDecoder::new(128);
            let mut input = &bytes[..];
            while !input.is_empty() {
                match decoder.push(input) {
                    Ok(used) => {
                        input = &input[used..];
                        if let Some(f) = decoder.take_frame() {
                            prop_assert!(f.len() <= 128);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

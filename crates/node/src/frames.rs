//! Reading and writing frames on QUIC streams: one bounded frame at a time.

use dp2ptcs_wire::{encode_frame, FrameDecoder, MAX_FRAME_LEN};
use quinn::{RecvStream, SendStream};

use crate::NodeError;

/// Size of one read from a stream.
const READ_CHUNK: usize = 4096;

/// Reads frames from one stream. Holds at most one frame plus one read chunk.
#[derive(Debug)]
pub(crate) struct FrameReader {
    decoder: FrameDecoder,
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next frame, or `None` at a clean end of the stream. A length prefix above
    /// [`MAX_FRAME_LEN`] fails as soon as it is read, before anything is allocated for it.
    pub(crate) async fn next(
        &mut self,
        recv: &mut RecvStream,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        loop {
            while self.start < self.buf.len() {
                let used = self.decoder.push(&self.buf[self.start..])?;
                self.start += used;
                if let Some(frame) = self.decoder.take_frame() {
                    return Ok(Some(frame));
                }
            }
            if let Some(frame) = self.decoder.take_frame() {
                return Ok(Some(frame));
            }
            self.buf.resize(READ_CHUNK, 0);
            self.start = 0;
            match recv.read(&mut self.buf).await.map_err(read_error)? {
                Some(n) => self.buf.truncate(n),
                None => {
                    self.buf.clear();
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// The next frame; the end of the stream here is an error.
    pub(crate) async fn expect(&mut self, recv: &mut RecvStream) -> Result<Vec<u8>, NodeError> {
        self.next(recv)
            .await?
            .ok_or(NodeError::Stream("stream ended before a frame".into()))
    }

    /// Requires the stream to end now: anything more is junk.
    pub(crate) async fn expect_end(&mut self, recv: &mut RecvStream) -> Result<(), NodeError> {
        match self.next(recv).await? {
            None => Ok(()),
            Some(_) => Err(NodeError::JunkAfterFrame),
        }
    }
}

/// Writes one frame.
pub(crate) async fn write_frame(send: &mut SendStream, message: &[u8]) -> Result<(), NodeError> {
    let framed = encode_frame(message, MAX_FRAME_LEN)?;
    send.write_all(&framed).await.map_err(|e| match e {
        quinn::WriteError::Stopped(code) => refused(code),
        e => NodeError::Stream(e.to_string()),
    })
}

/// A stream the peer reset: it refused the request with a wire error code (say
/// `LimitExceeded`).
fn read_error(e: quinn::ReadError) -> NodeError {
    match e {
        quinn::ReadError::Reset(code) => refused(code),
        e => NodeError::Stream(e.to_string()),
    }
}

fn refused(code: quinn::VarInt) -> NodeError {
    NodeError::Refused {
        code: u32::try_from(code.into_inner()).unwrap_or(u32::MAX),
        reason: "the peer refused the request stream".into(),
    }
}

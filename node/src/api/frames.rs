//! The API socket's framing: frame kinds, size limits, and reading one frame.

use std::time::Duration;

use mesh_proto::FrameHeader;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Error;

/// Frame kind of a request.
pub const KIND_REQUEST: u8 = 1;
/// Frame kind of a response.
pub const KIND_RESPONSE: u8 = 2;
/// Largest request accepted.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Largest response a client accepts.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads one frame of `kind` with a payload of at most `limit` bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    kind: u8,
    limit: u64,
) -> Result<Vec<u8>, Error> {
    let (got, body) = read_any_frame(r, limit).await?;
    if got != kind {
        return Err(Error::Api(format!(
            "frame kind {got} where {kind} was expected"
        )));
    }
    Ok(body)
}

/// Reads one frame of any kind with a payload of at most `limit` bytes: its kind and payload.
pub async fn read_any_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: u64,
) -> Result<(u8, Vec<u8>), Error> {
    let mut header = Vec::with_capacity(12);
    let parsed = loop {
        if let Some(h) = FrameHeader::parse(&header, limit)? {
            break h;
        }
        let mut b = [0u8; 1];
        let n = r
            .read(&mut b)
            .await
            .map_err(|e| Error::Api(format!("reading frame: {e}")))?;
        if n == 0 {
            return Err(Error::Api("connection closed before a whole frame".into()));
        }
        header.push(b[0]);
    };
    // `parse` bounded the length by `limit`, which is at most MAX_FRAME_BYTES.
    let len = usize::try_from(parsed.len).map_err(|_| Error::Api("frame too large".into()))?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .await
        .map_err(|e| Error::Api(format!("reading frame body: {e}")))?;
    Ok((parsed.kind, body))
}

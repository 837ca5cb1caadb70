//! Framing for byte streams: a version byte, a kind byte, a LEB128 length, then the payload.
//!
//! The header is parsed before any payload byte is read or allocated, and the length is checked
//! against the caller's limit first, so a frame claiming a terabyte costs nothing but an error.

use crate::Error;

/// The framing version this build speaks.
const FRAME_VERSION: u8 = 1;
/// The largest payload any caller may ask for.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;
/// A LEB128 u64 takes at most 10 bytes.
const MAX_LEN_BYTES: usize = 10;

/// A parsed frame header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameHeader {
    /// What the payload is; its meaning belongs to the protocol using the frame.
    pub kind: u8,
    /// Payload length in bytes.
    pub len: u64,
    /// Length of the header itself.
    pub header_len: usize,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` is a valid but incomplete header (read more bytes), and an
    /// error when the version is unknown, the length is malformed, or the length is over `limit`
    /// (itself capped at [`MAX_FRAME_BYTES`]).
    pub fn parse(buf: &[u8], limit: u64) -> Result<Option<FrameHeader>, Error> {
        let limit = limit.min(MAX_FRAME_BYTES);
        let Some((&version, rest)) = buf.split_first() else {
            return Ok(None);
        };
        if version != FRAME_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "frame",
                version,
            });
        }
        let Some((&kind, rest)) = rest.split_first() else {
            return Ok(None);
        };
        let mut len: u64 = 0;
        for (i, &b) in rest.iter().enumerate() {
            if i >= MAX_LEN_BYTES || (i == MAX_LEN_BYTES - 1 && b > 1) {
                return Err(Error::Malformed {
                    what: "frame",
                    reason: "length field overflows 64 bits".into(),
                });
            }
            len |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if len > limit {
                    return Err(Error::TooLarge {
                        what: "frame",
                        len,
                        limit,
                    });
                }
                return Ok(Some(FrameHeader {
                    kind,
                    len,
                    header_len: 2 + i + 1,
                }));
            }
        }
        if rest.len() >= MAX_LEN_BYTES {
            return Err(Error::Malformed {
                what: "frame",
                reason: "length field overflows 64 bits".into(),
            });
        }
        Ok(None)
    }
}

/// Builds a frame around `payload`.
pub fn encode_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2 + MAX_LEN_BYTES);
    out.push(FRAME_VERSION);
    out.push(kind);
    let mut len = payload.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(payload);
    out
}

/// Decodes one complete frame that must fill `buf` exactly.
pub fn decode_frame(buf: &[u8], limit: u64) -> Result<(u8, &[u8]), Error> {
    let header = FrameHeader::parse(buf, limit)?.ok_or(Error::Truncated {
        what: "frame header",
        need: 3,
        have: buf.len() as u64,
    })?;
    let body = &buf[header.header_len..];
    let have = body.len() as u64;
    if have < header.len {
        return Err(Error::Truncated {
            what: "frame",
            need: header.len,
            have,
        });
    }
    if have > header.len {
        return Err(Error::Malformed {
            what: "frame",
            reason: format!("{} bytes after the payload", have - header.len),
        });
    }
    Ok((header.kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_and_large() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let payload = vec![7u8; len];
            let f = encode_frame(3, &payload);
            let (kind, body) = decode_frame(&f, MAX_FRAME_BYTES).unwrap();
            assert_eq!(kind, 3);
            assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn terabyte_claim_is_rejected_from_the_header_alone() {
        // version 1, kind 0, LEB128 of 2^40
        let mut buf = vec![1u8, 0];
        let mut len: u64 = 1 << 40;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                buf.push(b);
                break;
            }
            buf.push(b | 0x80);
        }
        let err = FrameHeader::parse(&buf, MAX_FRAME_BYTES).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { len, .. } if len == 1 << 40),
            "{err}"
        );
    }

    #[test]
    fn overlong_length_field_is_malformed() {
        let buf = [
            1u8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(matches!(
            FrameHeader::parse(&buf, MAX_FRAME_BYTES),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn incomplete_header_asks_for_more() {
        assert_eq!(FrameHeader::parse(&[], 10).unwrap(), None);
        assert_eq!(FrameHeader::parse(&[1], 10).unwrap(), None);
        assert_eq!(FrameHeader::parse(&[1, 0, 0x80], 10).unwrap(), None);
    }

    #[test]
    fn truncated_trailing_and_wrong_version() {
        let f = encode_frame(1, b"hello");
        assert!(matches!(
            decode_frame(&f[..f.len() - 1], 100),
            Err(Error::Truncated { .. })
        ));
        let mut long = f.clone();
        long.push(0);
        assert!(matches!(
            decode_frame(&long, 100),
            Err(Error::Malformed { .. })
        ));
        let mut v2 = f;
        v2[0] = 2;
        assert!(matches!(
            decode_frame(&v2, 100),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        assert!(matches!(
            decode_frame(&encode_frame(1, &[0; 101]), 100),
            Err(Error::TooLarge { .. })
        ));
    }
}

//! Versioned binary encoding of values carried in gossip.
//!
//! An encoded value is one version byte ([`WIRE_VERSION`]) followed by the bincode (2.0, standard
//! configuration) encoding of the value. In gossip the bytes travel as base64 text, because chitchat
//! keys and values are strings. Decoding is always bounded: the input is checked against
//! [`MAX_ENCODED_BYTES`] before anything else, and bincode runs with the same limit so a length field
//! claiming more cannot make it allocate.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// The version byte in front of every encoded value.
pub const WIRE_VERSION: u8 = 1;
/// Largest encoded value, version byte included. Chitchat silently drops values that do not fit
/// one gossip message, so values stay far below its 64 KB budget.
pub const MAX_ENCODED_BYTES: usize = 16 * 1024;
/// Largest base64 text of an encoded value.
pub const MAX_VALUE_CHARS: usize = MAX_ENCODED_BYTES.div_ceil(3) * 4;

type Limited = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_ENCODED_BYTES>,
>;

fn config() -> Limited {
    bincode::config::standard().with_limit::<MAX_ENCODED_BYTES>()
}

/// Encodes a value: version byte, then bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![WIRE_VERSION];
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
        Error::Malformed {
            what: "value",
            reason: e.to_string(),
        }
    })?;
    out.extend_from_slice(&body);
    if out.len() > MAX_ENCODED_BYTES {
        return Err(Error::TooLarge {
            what: "encoded value",
            len: out.len() as u64,
            limit: MAX_ENCODED_BYTES as u64,
        });
    }
    Ok(out)
}

/// Decodes a value produced by [`encode`]; rejects unknown versions, oversize input and trailing
/// bytes, and runs the type's validation.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return Err(Error::TooLarge {
            what: "encoded value",
            len: bytes.len() as u64,
            limit: MAX_ENCODED_BYTES as u64,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(Error::Truncated {
        what: "encoded value",
        need: 1,
        have: 0,
    })?;
    if version != WIRE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "encoded value",
            version,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config()).map_err(|e| {
        Error::Malformed {
            what: "encoded value",
            reason: e.to_string(),
        }
    })?;
    if used != body.len() {
        return Err(Error::Malformed {
            what: "encoded value",
            reason: format!("{} trailing bytes", body.len() - used),
        });
    }
    Ok(value)
}

/// Encodes a value as gossip text (base64 of [`encode`]).
pub fn encode_value<T: Serialize>(value: &T) -> Result<String, Error> {
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(encode(value)?))
}

/// Decodes gossip text produced by [`encode_value`]; the text length is checked before decoding.
pub fn decode_value<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    if text.len() > MAX_VALUE_CHARS {
        return Err(Error::TooLarge {
            what: "gossip value",
            len: text.len() as u64,
            limit: MAX_VALUE_CHARS as u64,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|e| Error::Malformed {
            what: "gossip value",
            reason: e.to_string(),
        })?;
    decode(&bytes)
}

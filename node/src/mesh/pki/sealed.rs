//! Gossip values sealed by their owner: every value a node publishes in its own key space carries
//! the node's signature over the node life, the key, the version chitchat gives the write, whether
//! it is a tombstone, and the payload.
//!
//! A value is `<signature, base64 without padding>.<payload>`. Binding the node life (id,
//! generation, address) means no value can be moved to another node or another life of the same
//! node; binding the version means an old value cannot be presented as a newer write of its key;
//! binding the tombstone flag means a deletion cannot be turned into a value or back. A deletion
//! is a tombstone with an empty payload: readers treat an empty payload as absent.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use chitchat::{ChitchatId, Serializable};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

use super::signing::Signer;
use crate::Error;

/// Domain tag of the signed message.
const TAG: &[u8] = b"dvrmesh gossip value v1\0";

/// Where a value was written: the node life, key and version it was signed for.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// The node life whose key space holds it.
    pub id: &'a ChitchatId,
    /// The key.
    pub key: &'a str,
    /// The version chitchat gives (or gave) the write.
    pub version: u64,
    /// Whether the write is a tombstone.
    pub tombstone: bool,
}

/// The bytes a value's signature covers.
pub fn signed_message(place: Place<'_>, payload: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG.len() + 64 + place.key.len() + payload.len());
    m.extend_from_slice(TAG);
    place.id.serialize(&mut m);
    m.extend_from_slice(&(place.key.len() as u64).to_le_bytes());
    m.extend_from_slice(place.key.as_bytes());
    m.extend_from_slice(&place.version.to_le_bytes());
    m.push(u8::from(place.tombstone));
    m.extend_from_slice(payload.as_bytes());
    m
}

/// Seals `payload` for `place` with this node's key.
pub fn seal(signer: &Signer, place: Place<'_>, payload: &str) -> Result<String, Error> {
    let sig = signer.sign(&signed_message(place, payload))?;
    Ok(format!("{}.{payload}", STANDARD_NO_PAD.encode(sig)))
}

/// The payload of a sealed value, without checking its signature (values in chitchat's state
/// were checked when they arrived, or written by this node). `None` when it is not sealed.
pub fn payload(value: &str) -> Option<&str> {
    value.split_once('.').map(|(_, p)| p)
}

/// The payload of a value that is present: sealed, and not a tombstone.
pub fn live_payload(value: &str) -> Option<&str> {
    payload(value).filter(|p| !p.is_empty())
}

/// Whether `value` is `place`'s value sealed by the holder of `public_key` (an uncompressed P-256
/// point, as in a certificate); its payload if so.
pub fn open<'a>(value: &'a str, place: Place<'_>, public_key: &[u8]) -> Option<&'a str> {
    let (sig, payload) = value.split_once('.')?;
    // An ECDSA P-256 signature in ASN.1 is at most 72 bytes: 96 base64 characters.
    if sig.len() > 96 {
        return None;
    }
    let sig = STANDARD_NO_PAD.decode(sig).ok()?;
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key);
    key.verify(&signed_message(place, payload), &sig)
        .ok()
        .map(|()| payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn id(generation: u64) -> ChitchatId {
        let addr: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        ChitchatId::new("a", generation, addr)
    }

    #[test]
    fn a_sealed_value_opens_only_at_its_own_place() {
        let (signer, public) = Signer::generate_for_test();
        let me = id(5);
        let place = Place {
            id: &me,
            key: "node",
            version: 3,
            tombstone: false,
        };
        let v = seal(&signer, place, "facts").unwrap();
        assert_eq!(open(&v, place, &public), Some("facts"));
        assert_eq!(payload(&v), Some("facts"));
        let other_life = id(6);
        for moved in [
            Place {
                version: 4,
                ..place
            },
            Place {
                key: "cert",
                ..place
            },
            Place {
                tombstone: true,
                ..place
            },
            Place {
                id: &other_life,
                ..place
            },
        ] {
            assert_eq!(open(&v, moved, &public), None, "{moved:?}");
        }
        let tampered = v.replace("facts", "fakes");
        assert_eq!(open(&tampered, place, &public), None);
        let (_, someone_else) = Signer::generate_for_test();
        assert_eq!(open(&v, place, &someone_else), None);
        assert_eq!(open("no seal here", place, &public), None);
        assert_eq!(live_payload(&seal(&signer, place, "").unwrap()), None);
    }
}

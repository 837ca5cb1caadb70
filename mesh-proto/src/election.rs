//! The SNAT election's datagrams: holders' adverts, takeover notices, releases and restart
//! notices.
//!
//! One message per QUIC datagram, encoded like every other value (version byte + bincode) and
//! decoded under [`MAX_ELECTION_DATAGRAM`]. The sender is never read from the message: the receiver
//! takes it from the connection's certificate, and every claim must name that sender.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, SnatClaim};

/// Largest election datagram accepted or produced. QUIC datagrams must fit one UDP packet; this
/// stays under the 1200-byte minimum every QUIC path supports.
pub const MAX_ELECTION_DATAGRAM: usize = 1100;

/// Most claims in one message (a holder with more routers sends several datagrams).
pub const MAX_CLAIMS_PER_DATAGRAM: usize = 16;

/// Longest signature accepted on a claim (an ECDSA P-256 signature in ASN.1 is at most 72 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 128;

/// A SNAT claim as published in gossip: signed by the claimant, whose certificate is published
/// beside it, so no other member can forge it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedClaim {
    /// The claim.
    pub claim: SnatClaim,
    /// The claimant's signature over the claim's signing message (1 to
    /// [`MAX_SIGNATURE_BYTES`] bytes when decoded).
    #[serde(deserialize_with = "signature")]
    pub signature: Vec<u8>,
}

/// A signature of 1 to [`MAX_SIGNATURE_BYTES`] bytes.
fn signature<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = Vec::<u8>::deserialize(d)?;
    if s.is_empty() || s.len() > MAX_SIGNATURE_BYTES {
        return Err(D::Error::custom(Error::Invalid {
            field: "signed claim.signature",
            reason: format!("{} bytes; 1..={MAX_SIGNATURE_BYTES} allowed", s.len()),
        }));
    }
    Ok(s)
}

/// What one election datagram says.
/// Each variant's claims are checked when decoded ([`check_claims`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionMessage {
    /// A holder's periodic advert to the other candidates: it still holds these.
    Advert(#[serde(deserialize_with = "claims")] Vec<SnatClaim>),
    /// A node has just taken these routers; sent once to every live node so compute nodes
    /// re-point their `sg-` entries without waiting for gossip.
    Takeover(#[serde(deserialize_with = "claims")] Vec<SnatClaim>),
    /// A node has just given these routers up (drain, lost health, lost majority): candidates
    /// may claim at once instead of waiting for silence.
    Release(#[serde(deserialize_with = "claims")] Vec<SnatClaim>),
    /// A holder's agent is restarting and its datapath stays in the kernel meanwhile: candidates
    /// may keep it as the holder without adverts for a while (added after the first three: an
    /// older agent refuses it as undecodable and simply waits for silence).
    Restarting(RestartNotice),
}

/// What a restarting holder asks: to be kept as the holder of these routers, without adverts,
/// for `hold_ms` (each receiver caps it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartNotice {
    /// The claims it holds (checked like every message's).
    #[serde(deserialize_with = "claims")]
    pub claims: Vec<SnatClaim>,
    /// How long to wait for its next life, milliseconds.
    pub hold_ms: u32,
}

/// The claims of one message, checked ([`check_claims`]).
fn claims<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SnatClaim>, D::Error> {
    let claims = Vec::<SnatClaim>::deserialize(d)?;
    check_claims(&claims).map_err(D::Error::custom)?;
    Ok(claims)
}

/// One message carries 1 to [`MAX_CLAIMS_PER_DATAGRAM`] claims, all of one node.
fn check_claims(claims: &[SnatClaim]) -> Result<(), Error> {
    if claims.is_empty() || claims.len() > MAX_CLAIMS_PER_DATAGRAM {
        return Err(Error::Invalid {
            field: "election message",
            reason: format!(
                "carries {} claims; 1..={MAX_CLAIMS_PER_DATAGRAM} allowed",
                claims.len()
            ),
        });
    }
    let node = &claims[0].node;
    if claims.iter().any(|c| &c.node != node) {
        return Err(Error::Invalid {
            field: "election message",
            reason: "claims of more than one node".into(),
        });
    }
    Ok(())
}

impl ElectionMessage {
    /// The claims carried.
    pub fn claims(&self) -> &[SnatClaim] {
        match self {
            ElectionMessage::Advert(c)
            | ElectionMessage::Takeover(c)
            | ElectionMessage::Release(c) => c,
            ElectionMessage::Restarting(n) => &n.claims,
        }
    }

    /// Encodes the message for one datagram.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        check_claims(self.claims())?;
        let bytes = crate::encode(self)?;
        if bytes.len() > MAX_ELECTION_DATAGRAM {
            return Err(Error::TooLarge {
                what: "election datagram",
                len: bytes.len() as u64,
                limit: MAX_ELECTION_DATAGRAM as u64,
            });
        }
        Ok(bytes)
    }

    /// Decodes one datagram; the size is checked before anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_ELECTION_DATAGRAM {
            return Err(Error::TooLarge {
                what: "election datagram",
                len: bytes.len() as u64,
                limit: MAX_ELECTION_DATAGRAM as u64,
            });
        }
        crate::decode(bytes)
    }

    /// Splits `claims` into as many messages of kind `make` as needed to fit datagrams.
    pub fn batch(
        claims: Vec<SnatClaim>,
        make: impl Fn(Vec<SnatClaim>) -> ElectionMessage,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut current: Vec<SnatClaim> = Vec::new();
        for c in claims {
            current.push(c);
            let fits =
                current.len() <= MAX_CLAIMS_PER_DATAGRAM && make(current.clone()).encode().is_ok();
            if !fits {
                let last = current.pop();
                if let Ok(b) = make(std::mem::take(&mut current)).encode() {
                    out.push(b);
                }
                current.extend(last);
            }
        }
        if !current.is_empty() {
            if let Ok(b) = make(current).encode() {
                out.push(b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeId, ObjectId, Priority};

    fn claim(r: &str, n: &str) -> SnatClaim {
        SnatClaim {
            router: ObjectId::new(r).unwrap(),
            epoch: 7,
            priority: Priority::new(200).unwrap(),
            node: NodeId::new(n).unwrap(),
        }
    }

    #[test]
    fn round_trips_and_batches_within_the_datagram_limit() {
        let claims: Vec<SnatClaim> = (0..100)
            .map(|i| claim(&format!("rtr-{i:020}"), "node-a"))
            .collect();
        let grams = ElectionMessage::batch(claims.clone(), ElectionMessage::Advert);
        assert!(grams.len() > 1);
        let mut back = Vec::new();
        for g in &grams {
            assert!(g.len() <= MAX_ELECTION_DATAGRAM);
            match ElectionMessage::decode(g).unwrap() {
                ElectionMessage::Advert(c) => back.extend(c),
                other => panic!("wrong kind {other:?}"),
            }
        }
        assert_eq!(back, claims);
    }

    #[test]
    fn restart_notices_round_trip_and_refuse_claims_of_two_nodes() {
        let notice = |claims| {
            ElectionMessage::Restarting(RestartNotice {
                claims,
                hold_ms: 5_000,
            })
        };
        let ok = notice(vec![claim("r1", "a"), claim("r2", "a")]);
        assert_eq!(ElectionMessage::decode(&ok.encode().unwrap()).unwrap(), ok);
        let mixed = notice(vec![claim("r1", "a"), claim("r2", "b")]);
        let bytes = crate::encode(&mixed).unwrap();
        assert!(ElectionMessage::decode(&bytes).is_err());
    }

    #[test]
    fn signed_claims_round_trip_and_refuse_bad_signatures() {
        let c = SignedClaim {
            claim: claim("r1", "a"),
            signature: vec![7; 70],
        };
        let text = crate::encode_value(&c).unwrap();
        assert_eq!(crate::decode_value::<SignedClaim>(&text).unwrap(), c);
        for bad in [vec![], vec![1; MAX_SIGNATURE_BYTES + 1]] {
            let fields = (claim("r1", "a"), bad);
            let text = crate::encode_value(&fields).unwrap();
            assert!(crate::decode_value::<SignedClaim>(&text).is_err());
        }
    }

    #[test]
    fn refuses_empty_mixed_and_oversize_messages() {
        assert!(ElectionMessage::Advert(vec![]).encode().is_err());
        let mixed = ElectionMessage::Takeover(vec![claim("r1", "a"), claim("r2", "b")]);
        assert!(mixed.encode().is_err());
        let bytes = crate::encode(&mixed).unwrap();
        assert!(ElectionMessage::decode(&bytes).is_err());
        assert!(ElectionMessage::decode(&vec![1u8; MAX_ELECTION_DATAGRAM + 1]).is_err());
        for junk in [&[][..], &[1], &[1, 0, 255, 255, 255, 255, 15], &[9, 9, 9]] {
            assert!(ElectionMessage::decode(junk).is_err());
        }
    }
}

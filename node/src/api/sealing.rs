//! The operator's side of a write on the API socket: when a request comes with an operator
//! credential, the agent sends the tenant records it is about to publish in frames of kind
//! [`KIND_SEAL_ASK`] (`{"records": [gossip text, …]}`), and the client answers each with a frame
//! of kind [`KIND_SEAL_REPLY`] (`{"seals": [{"cert", "signature"}, …]}` in base64, or
//! `{"error": "…"}`), before the final response.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use mesh_proto::{OperatorSeal, Record};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frames::read_any_frame;
use crate::mesh::pki::operator::OperatorCredential;
use crate::Error;

/// Frame kind of the agent asking for seals.
pub const KIND_SEAL_ASK: u8 = 3;
/// Frame kind of the client's seals.
pub const KIND_SEAL_REPLY: u8 = 4;
/// Most records sealed in one ask.
pub const MAX_SEALS: usize = 64;
/// The request field naming the operator whose credential the client holds.
pub const OPERATOR_FIELD: &str = "operator";

#[derive(Serialize, Deserialize)]
struct Ask {
    records: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct WireSeal {
    cert: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    #[serde(default)]
    seals: Vec<WireSeal>,
    #[serde(default)]
    error: Option<String>,
}

/// Agent side: asks the client on `stream` to seal `records`, and reads its seals.
pub async fn ask_seals<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    records: &[Record],
) -> Result<Vec<OperatorSeal>, String> {
    let ask = Ask {
        records: records
            .iter()
            .map(mesh_proto::encode_value)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?,
    };
    let body = serde_json::to_vec(&ask).map_err(|e| e.to_string())?;
    stream
        .write_all(&mesh_proto::encode_frame(KIND_SEAL_ASK, &body))
        .await
        .map_err(|e| format!("asking the operator to seal: {e}"))?;
    let (kind, body) = tokio::time::timeout(
        super::REQUEST_TIMEOUT,
        read_any_frame(stream, super::MAX_REQUEST_BYTES),
    )
    .await
    .map_err(|_| "the operator did not seal in time".to_string())?
    .map_err(|e| e.to_string())?;
    if kind != KIND_SEAL_REPLY {
        return Err(format!("frame kind {kind} where seals were expected"));
    }
    parse_seals(&body)
}

/// Reads a client's seals frame body (agent side): the seals, or the client's refusal.
pub fn parse_seals(body: &[u8]) -> Result<Vec<OperatorSeal>, String> {
    let reply: Reply = serde_json::from_slice(body).map_err(|e| format!("bad seals: {e}"))?;
    if let Some(e) = reply.error {
        return Err(format!("the operator refused to seal: {e}"));
    }
    if reply.seals.len() > MAX_SEALS {
        return Err(format!(
            "{} seals in one reply (at most {MAX_SEALS})",
            reply.seals.len()
        ));
    }
    reply
        .seals
        .into_iter()
        .map(|s| {
            Ok(OperatorSeal {
                cert: B64.decode(s.cert).map_err(|e| format!("bad seal: {e}"))?,
                signature: B64
                    .decode(s.signature)
                    .map_err(|e| format!("bad seal: {e}"))?,
            })
        })
        .collect()
}

/// Client side: answers one ask for the request `op` with seals from `credential`, or with an
/// error when the ask does not fit the request (a client seals only what its request can cause:
/// no ports, and deletions only for a delete).
pub async fn answer_ask<S: AsyncWrite + Unpin>(
    stream: &mut S,
    body: &[u8],
    op: &str,
    credential: &OperatorCredential,
) -> Result<(), Error> {
    let reply = match seal_ask(body, op, credential) {
        Ok(seals) => Reply { seals, error: None },
        Err(e) => Reply {
            seals: Vec::new(),
            error: Some(e),
        },
    };
    let body = serde_json::to_vec(&reply).map_err(|e| Error::Api(e.to_string()))?;
    stream
        .write_all(&mesh_proto::encode_frame(KIND_SEAL_REPLY, &body))
        .await
        .map_err(|e| Error::Api(format!("sending seals: {e}")))
}

fn seal_ask(
    body: &[u8],
    op: &str,
    credential: &OperatorCredential,
) -> Result<Vec<WireSeal>, String> {
    let ask: Ask = serde_json::from_slice(body).map_err(|e| format!("bad ask: {e}"))?;
    if ask.records.len() > MAX_SEALS {
        return Err(format!(
            "{} records in one ask (at most {MAX_SEALS})",
            ask.records.len()
        ));
    }
    let mut seals = Vec::with_capacity(ask.records.len());
    for text in &ask.records {
        let rec: Record = mesh_proto::decode_value(text).map_err(|e| format!("bad record: {e}"))?;
        if rec.kind() == mesh_proto::ObjectKind::Port {
            return Err("asked to seal a port, which its host writes".into());
        }
        if rec.body().is_none() && op != "delete" {
            return Err(format!("asked to seal a deletion for a {op} request"));
        }
        let seal = credential.seal(&rec).map_err(|e| e.to_string())?;
        seals.push(WireSeal {
            cert: B64.encode(seal.cert),
            signature: B64.encode(seal.signature),
        });
    }
    Ok(seals)
}

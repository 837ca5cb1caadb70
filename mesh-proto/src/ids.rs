//! Identifiers: node ids, object ids and human names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest node id accepted. Node ids travel in every gossip digest, so they stay short.
const NODE_ID_MAX: usize = 32;
/// Longest object id accepted.
const OBJECT_ID_MAX: usize = 36;
/// Longest name accepted.
const NAME_MAX: usize = 64;

/// A node's stable identity: a DNS label (`[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most 32 characters).
///
/// It is also the DNS subject alternative name of the node's certificate, which is how a peer's
/// identity is bound to what it gossips.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Validates and wraps a node id.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        check_label("node_id", &id, NODE_ID_MAX)?;
        Ok(NodeId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An object's stable id (networks, subnets, routers, ports, floating IPs): a DNS label of at most
/// 36 characters. Device names embed a prefix of it, so it must be plain ASCII.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectId(String);

impl ObjectId {
    /// Validates and wraps an object id.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        check_label("object id", &id, OBJECT_ID_MAX)?;
        Ok(ObjectId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last [`SHORT_ID_CHARS`] characters (the whole id when shorter): what device names
    /// embed, since a Linux interface name holds at most 15 bytes. Ids dvrmesh generates end in
    /// 12 hex digits, so their short forms differ.
    pub fn short(&self) -> &str {
        // Ids are ASCII (checked at construction), so any byte offset is a character boundary.
        &self.0[self.0.len().saturating_sub(SHORT_ID_CHARS)..]
    }
}

/// How many trailing characters of an object id device names embed (`qr-` + 11 = 14 bytes).
pub const SHORT_ID_CHARS: usize = 11;

/// A human-chosen name: 1–64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Validates and wraps a name.
    pub fn new(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(Error::invalid(
                "name",
                format!("{name:?} must be 1 to {NAME_MAX} characters"),
            ));
        }
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok {
            return Err(Error::invalid(
                "name",
                format!("{name:?} may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit"),
            ));
        }
        Ok(Name(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_label(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    if s.is_empty() || s.len() > max {
        return Err(Error::invalid(
            field,
            format!("{s:?} must be 1 to {max} characters"),
        ));
    }
    let bytes = s.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let ends_ok = bytes[0] != b'-' && bytes[bytes.len() - 1] != b'-';
    if !inner_ok || !ends_ok {
        return Err(Error::invalid(
            field,
            format!("{s:?} may hold only lowercase letters, digits and '-', not at either end"),
        ));
    }
    Ok(())
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                $t::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $t::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}
string_newtype_impls!(NodeId);
string_newtype_impls!(ObjectId);
string_newtype_impls!(Name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_accepts_dns_labels() {
        for ok in ["a", "compute-1", "n0", "x".repeat(32).as_str()] {
            assert!(NodeId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn node_id_rejects_what_is_not_a_dns_label() {
        for bad in [
            "",
            "-a",
            "a-",
            "Compute",
            "a_b",
            "a.b",
            "é",
            &"x".repeat(33),
        ] {
            assert!(NodeId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_rules() {
        assert!(Name::new("tenant-a.net_1").is_ok());
        assert!(Name::new("").is_err());
        assert!(Name::new(".hidden").is_err());
        assert!(Name::new("has space").is_err());
        assert!(Name::new("x".repeat(65)).is_err());
    }
}

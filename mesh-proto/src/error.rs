//! The one error type of `mesh-proto`: invalid domain values and wire bytes that do not decode.

use thiserror::Error;

/// Everything that can go wrong when building or decoding a `mesh-proto` value.
///
/// No variant implies any state change: these are pure checks. None is retryable with the same
/// input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A field holds a value the domain does not allow.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or type that was rejected, e.g. `subnet.gateway`.
        field: &'static str,
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// Input is larger than the decoder accepts; nothing was allocated for it.
    #[error("{what} is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// The size that was seen or claimed.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The input ended before a complete value.
    #[error("{what} is truncated: need {need} bytes, have {have}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes the header said would follow.
        need: u64,
        /// How many were there.
        have: u64,
    },
    /// A version byte this build does not speak.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version byte seen.
        version: u8,
    },
    /// The bytes do not decode to the expected type.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

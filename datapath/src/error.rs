//! The datapath's one error type: what planning, reconciling or talking to the kernel can fail with.

use thiserror::Error;

/// Errors of the datapath.
#[derive(Debug, Error)]
pub enum Error {
    /// A netlink request failed. The kernel may have applied earlier ops of the same batch;
    /// retrying the reconcile pass converges.
    #[error("netlink in {ns}: {op}: {message}")]
    Netlink {
        /// Namespace.
        ns: String,
        /// What was being done.
        op: String,
        /// The kernel's or the library's words.
        message: String,
    },
    /// Entering or creating a namespace failed.
    #[error("namespace {ns}: {message}")]
    Namespace {
        /// Namespace.
        ns: String,
        /// What went wrong.
        message: String,
    },
    /// `nft` refused a batch; nothing of that batch was applied (nft batches are atomic).
    #[error("nft in {ns}: {message}")]
    Nft {
        /// Namespace.
        ns: String,
        /// nft's stderr.
        message: String,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {key} in {ns}: {message}")]
    Sysctl {
        /// Namespace.
        ns: String,
        /// Key.
        key: String,
        /// What went wrong.
        message: String,
    },
}

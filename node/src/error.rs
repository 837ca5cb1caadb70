//! The error type of the agent library.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the dvrmesh agent library.
///
/// Unless a variant says otherwise, nothing was changed on disk or in the cluster when it is
/// returned, and retrying with the same input fails the same way.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration file is unreadable or invalid; every problem found is listed.
    #[error("configuration {path}: {problems}")]
    Config {
        /// The file.
        path: PathBuf,
        /// One problem per line, each naming its key.
        problems: String,
    },
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The node id in the configuration differs from the one in the node's own certificate.
    #[error(
        "node_id {configured:?} does not match the certificate, which is issued to {certified:?}"
    )]
    IdentityMismatch {
        /// The id the configuration claims.
        configured: String,
        /// The id the certificate carries.
        certified: String,
    },
    /// A file is larger than dvrmesh ever writes it; it was not read.
    #[error("{what} {path}: larger than {max} bytes")]
    TooLarge {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// A file dvrmesh wrote does not parse; nothing was taken from it.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Refusing to overwrite existing credentials.
    #[error("{0} already exists; remove it first or pick another directory")]
    AlreadyExists(PathBuf),
    /// The gossip transport could not start.
    #[error("transport: {0}")]
    Transport(String),
    /// One of the agent's tasks ended while the agent was running; the agent stopped.
    #[error("the {task} stopped ({reason}); the agent stopped with it")]
    TaskEnded {
        /// Which task.
        task: &'static str,
        /// Why: it returned, panicked (with the message) or was cancelled.
        reason: String,
    },
    /// A value failed domain validation or decoding.
    #[error(transparent)]
    Proto(#[from] mesh_proto::Error),
    /// The local API failed.
    #[error("local API: {0}")]
    Api(String),
    /// The metrics endpoint could not start.
    #[error("metrics: {0}")]
    Metrics(String),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

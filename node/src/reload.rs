//! Taking a new node certificate without stopping the node: `dvrmesh agent reload-cert` (over
//! the API) or SIGHUP (systemd's `ExecReload`) checks the files `[tls]` names, and only when they
//! hold a good certificate for this node with its key does the agent hand over to a fresh copy
//! of itself in the same process (an in-place re-execution: same PID, so systemd sees no
//! restart; the kernel datapath is left as it is, so forwarding never stops).
//!
//! The gossip side is a new node life (a new generation): every value a node life publishes is
//! sealed by the key of the certificate that anchors it, so a new key needs a new life. Peers
//! take the new life as they take a restarted node's: its previous life stands for it until the
//! new one's facts arrive.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::Config;
use crate::mesh::pki::crl::Crl;
use crate::mesh::pki::signing::ClaimAuthority;
use crate::mesh::pki::Credentials;
use crate::Error;

/// Checks that the configuration and the certificate name the same node, that the key belongs
/// to the certificate and the certificate chains to the CA; loads the credentials. With
/// `[tls] crl`, the list is read now (a missing or bad list is an error) and a revoked
/// certificate of this node is refused.
pub fn verify_identity(config: &Config) -> Result<Credentials, Error> {
    let creds = Credentials::load(&config.tls.ca, &config.tls.cert, &config.tls.key)?;
    if creds.node_id != config.node_id {
        return Err(Error::IdentityMismatch {
            configured: config.node_id.to_string(),
            certified: creds.node_id.to_string(),
        });
    }
    if let Some(path) = &config.tls.crl {
        creds.revocation().update(&Crl::load(path)?)?;
        if creds.own_cert_revoked() {
            return Err(Error::Tls(format!(
                "this node's certificate {} is revoked by {}",
                config.tls.cert.display(),
                path.display()
            )));
        }
    }
    let published = creds.published_cert()?;
    creds
        .peer_certs()?
        .admits(&creds.node_id, Some(&published))
        .map_err(|why| Error::Tls(format!("certificate {}: {why}", config.tls.cert.display())))?;
    creds.check_key_matches()?;
    Ok(creds)
}

/// What a successful check found.
#[derive(Debug, Clone, Serialize)]
pub struct NewCertificate {
    /// The node it names.
    pub node_id: String,
    /// Its serial number (hex).
    pub serial: String,
    /// Whether the agent re-executes with it (a check alone says false).
    pub reloading: bool,
}

/// The agent's handle for taking a new certificate: the configuration to re-read it by, and the
/// signal that stops the running copy so the new one can start.
#[derive(Clone)]
pub struct CertReload {
    config: Config,
    trigger: Arc<Notify>,
}

impl CertReload {
    /// A handle for the agent running `config`.
    pub fn new(config: Config) -> Self {
        CertReload {
            config,
            trigger: Arc::new(Notify::new()),
        }
    }

    /// Checks the certificate and key the configuration names now, without using them.
    pub fn check(&self) -> Result<NewCertificate, Error> {
        let creds = verify_identity(&self.config)?;
        Ok(NewCertificate {
            node_id: creds.node_id.to_string(),
            serial: creds.serial_hex(),
            reloading: false,
        })
    }

    /// Checks the new certificate; when good, asks the agent to re-execute with it once the
    /// caller has had `delay` to answer its client.
    pub fn request(&self, delay: std::time::Duration) -> Result<NewCertificate, Error> {
        let mut found = self.check()?;
        let trigger = self.trigger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            trigger.notify_one();
        });
        found.reloading = true;
        Ok(found)
    }

    /// Resolves when a reload was requested and its certificate checked.
    pub async fn requested(&self) {
        self.trigger.notified().await;
    }
}

/// Replaces this process with a fresh run of the same binary and arguments (same PID). Returns
/// only if that failed.
pub fn reexec() -> Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "dvrmesh".into());
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .exec();
    Error::io("re-executing the agent", "/proc/self/exe", err)
}

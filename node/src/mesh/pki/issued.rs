//! `dvrmesh cert list`: the certificates a CA directory recorded as issued (`issued/`), each with
//! its expiry and whether the CA's `crl.pem` revokes it, to pick the one to revoke when rotating.

use std::fs;
use std::path::{Path, PathBuf};

use mesh_proto::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Serialize;

use super::revoke::{hex, read_crl, CRL, ISSUED};
use crate::Error;

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issued {
    /// The node it was issued to.
    pub node: String,
    /// Its serial number (hex), as `cert revoke` prints it.
    pub serial: String,
    /// Its last valid day, `YYYY-MM-DD` (UTC).
    pub not_after: String,
    /// Whether it is past `not_after`.
    pub expired: bool,
    /// Whether the CA's revocation list holds it.
    pub revoked: bool,
    /// Its copy in the CA directory (what `cert revoke --cert` takes).
    pub file: PathBuf,
}

/// Every certificate recorded in `ca_dir/issued/` (only `node`'s when given), by node and then
/// expiry, oldest first.
pub fn list(ca_dir: &Path, node: Option<&NodeId>) -> Result<Vec<Issued>, Error> {
    let dir = ca_dir.join(ISSUED);
    let (revoked, _) = read_crl(&ca_dir.join(CRL))?;
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("reading", &dir, e)),
    };
    let mut sorted = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io("reading", &dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some((owner, _serial)) = name
            .as_deref()
            .and_then(|n| n.strip_suffix(".pem"))
            .and_then(|n| n.rsplit_once('.'))
        else {
            continue;
        };
        if node.is_some_and(|n| n.as_str() != owner) {
            continue;
        }
        let der = CertificateDer::from_pem_file(&path)
            .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        let serial = cert.tbs_certificate.serial.to_bytes_be();
        let end = cert.validity().not_after.to_datetime();
        sorted.push((owner.to_string(), end, serial, path.clone()));
    }
    sorted.sort();
    for (owner, end, serial, file) in sorted {
        out.push(Issued {
            node: owner,
            revoked: revoked.contains_key(&serial),
            serial: hex(&serial),
            not_after: format!(
                "{:04}-{:02}-{:02}",
                end.year(),
                end.month() as u8,
                end.day()
            ),
            expired: end < now,
            file,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::pki::{init_ca, issue_node_cert, revoke};

    #[test]
    fn lists_what_the_ca_issued_with_expiry_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, 30).unwrap();
        assert!(list(&ca, None).unwrap().is_empty());
        let (n1, n2) = (NodeId::new("n1").unwrap(), NodeId::new("n2").unwrap());
        let (old, _) = issue_node_cert(&ca, &n1, &dir.path().join("n1-old"), 10).unwrap();
        issue_node_cert(&ca, &n1, &dir.path().join("n1-new"), 20).unwrap();
        issue_node_cert(&ca, &n2, &dir.path().join("n2"), 20).unwrap();
        revoke::revoke(&ca, None, Some(&old)).unwrap();

        let all = list(&ca, None).unwrap();
        let nodes: Vec<_> = all.iter().map(|i| i.node.as_str()).collect();
        assert_eq!(nodes, ["n1", "n1", "n2"]);
        // n1's oldest first: the 10-day certificate, the one revoked.
        assert!(all[0].revoked && !all[1].revoked && !all[2].revoked);
        assert!(all[0].not_after < all[1].not_after);
        assert!(all
            .iter()
            .all(|i| !i.expired && i.file.starts_with(ca.join(ISSUED))));
        let der = CertificateDer::from_pem_file(&old).unwrap();
        assert_eq!(all[0].serial, hex(&revoke::serial_of(&der).unwrap()));

        let only = list(&ca, Some(&n2)).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].node, "n2");
    }
}

//! The files the agent reads at start: its configuration (every problem [`Config::load`] finds)
//! and its TLS material — the CA certificate, the node certificate (dates, the node id it names,
//! its chain to the CA), the private key (loads, matches, mode 0600) and the revocation list
//! (loads; does it revoke this node?).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use mesh_proto::NodeId;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::RootCertStore;

use super::{Check, Group};
use crate::config::{Config, TlsPaths};
use crate::mesh::pki::crl::{Crl, Revocation};
use crate::mesh::pki::identity::{load_certs, node_id_from_cert};
use crate::mesh::pki::Credentials;
use crate::Error;

/// A certificate expiring sooner than this is a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The warning when no configuration was given.
pub fn no_config() -> Check {
    Check::warn(
        Group::Files,
        "config",
        "no --config given: configuration, certificate, interface, API socket and gossip port checks skipped",
        "dvrmesh doctor --config /etc/dvrmesh/node.toml",
    )
}

/// Loads the configuration: the check, and the configuration when it is valid.
pub fn config_check(path: &Path) -> (Check, Option<Config>) {
    match Config::load(path) {
        Ok(c) => (
            Check::ok(
                Group::Files,
                "config",
                format!(
                    "{} is valid: node {}, mode {}",
                    path.display(),
                    c.node_id,
                    c.mode
                ),
            ),
            Some(c),
        ),
        Err(Error::Config { problems, .. }) => (
            Check::fail(
                Group::Files,
                "config",
                format!("{}: {problems}", path.display()),
                format!("edit {}: fix each key named", path.display()),
            ),
            None,
        ),
        Err(e) => (
            Check::fail(
                Group::Files,
                "config",
                e.to_string(),
                format!("create {} or pass the right --config", path.display()),
            ),
            None,
        ),
    }
}

/// The TLS checks of a configuration, now.
pub fn cert_checks(config: &Config) -> Vec<Check> {
    tls_checks(
        &config.tls,
        &config.node_id,
        time::OffsetDateTime::now_utc(),
    )
}

/// The TLS checks at time `now`: CA, certificate, identity, chain, key, revocation.
pub fn tls_checks(tls: &TlsPaths, node_id: &NodeId, now: time::OffsetDateTime) -> Vec<Check> {
    let issue = format!(
        "dvrmesh cert issue --ca <CA dir> --node {node_id} --out {}",
        dir_of(&tls.cert)
    );
    let ca = load_certs(&tls.ca);
    let mut out = vec![match &ca {
        Ok(c) => dates(
            "tls-ca",
            "CA certificate",
            &tls.ca,
            &c[0],
            now,
            "dvrmesh ca init --dir <new dir>, then re-issue every node's certificate",
        ),
        Err(e) => Check::fail(
            Group::Files,
            "tls-ca",
            e.to_string(),
            format!(
                "copy the cluster CA certificate (ca.pem) to {}",
                tls.ca.display()
            ),
        ),
    }];
    let chain = match load_certs(&tls.cert) {
        Ok(chain) => chain,
        Err(e) => {
            out.push(Check::fail(Group::Files, "tls-cert", e.to_string(), issue));
            return out;
        }
    };
    out.push(dates(
        "tls-cert",
        "node certificate",
        &tls.cert,
        &chain[0],
        now,
        &issue,
    ));
    out.push(identity(&chain[0], node_id, &tls.cert, &issue));
    if let Ok(ca) = &ca {
        out.push(chains_to(ca, &chain, now, &issue));
    }
    out.push(key(tls, &issue));
    out.push(revocation(tls, &chain[0], ca.ok(), &issue));
    out
}

fn dir_of(p: &Path) -> String {
    p.parent().map_or(".".into(), |d| d.display().to_string())
}

/// Not yet valid, expired, or expiring within [`EXPIRY_WARNING_DAYS`].
fn dates(
    id: &str,
    what: &str,
    path: &Path,
    der: &CertificateDer<'_>,
    now: time::OffsetDateTime,
    fix: &str,
) -> Check {
    let validity = match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (
            c.validity().not_before.to_datetime(),
            c.validity().not_after.to_datetime(),
        ),
        Err(e) => {
            return Check::fail(
                Group::Files,
                id,
                format!("{what} {}: unparsable: {e}", path.display()),
                fix,
            )
        }
    };
    let (from, until) = validity;
    let left = until - now;
    if now < from {
        Check::fail(
            Group::Files,
            id,
            format!(
                "{what} {} is not valid before {}",
                path.display(),
                from.date()
            ),
            "check this host's clock (timedatectl), or re-issue",
        )
    } else if left <= time::Duration::ZERO {
        Check::fail(
            Group::Files,
            id,
            format!("{what} {} expired on {}", path.display(), until.date()),
            fix,
        )
    } else if left < time::Duration::days(EXPIRY_WARNING_DAYS) {
        Check::warn(
            Group::Files,
            id,
            format!(
                "{what} {} expires in {} days ({})",
                path.display(),
                left.whole_days(),
                until.date()
            ),
            fix,
        )
    } else {
        Check::ok(
            Group::Files,
            id,
            format!("{what} {} valid until {}", path.display(), until.date()),
        )
    }
}

/// The certificate names the configured node id.
fn identity(der: &CertificateDer<'_>, node_id: &NodeId, path: &Path, issue: &str) -> Check {
    match node_id_from_cert(der) {
        Ok(id) if &id == node_id => Check::ok(
            Group::Files,
            "tls-identity",
            format!("the certificate is issued to {id}, the configured node_id"),
        ),
        Ok(id) => Check::fail(
            Group::Files,
            "tls-identity",
            format!(
                "{} is issued to {id:?} but node_id is {node_id:?}: the agent refuses to start",
                path.display()
            ),
            format!("set node_id = \"{id}\", or {issue}"),
        ),
        Err(e) => Check::fail(
            Group::Files,
            "tls-identity",
            format!("{}: {e}", path.display()),
            issue.to_string(),
        ),
    }
}

/// The certificate chains to the CA (checked at a time inside its validity, so an expired
/// certificate is reported once, by its dates).
fn chains_to(
    ca: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    now: time::OffsetDateTime,
    issue: &str,
) -> Check {
    let mut roots = RootCertStore::empty();
    for c in ca {
        let _ = roots.add(c.clone());
    }
    let at = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, c)| {
            let (a, b) = (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            );
            now.unix_timestamp().clamp(a, b.max(a))
        })
        .unwrap_or(now.unix_timestamp());
    let verified = Revocation::new(Arc::new(roots), None)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            Arc::new(r)
                .client_verifier()
                .verify_client_cert(
                    &chain[0],
                    &chain[1..],
                    UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64)),
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    match verified {
        Ok(()) => Check::ok(Group::Files, "tls-chain", "the node certificate chains to the configured CA"),
        Err(e) => Check::fail(
            Group::Files,
            "tls-chain",
            format!("the node certificate does not chain to the configured CA ({e}): peers will refuse it"),
            format!("{issue} (with the cluster's CA), or point tls.ca at the CA that issued it"),
        ),
    }
}

/// The key loads, matches the certificate, and only its owner may read it.
fn key(tls: &TlsPaths, issue: &str) -> Check {
    let loaded =
        Credentials::load(&tls.ca, &tls.cert, &tls.key).and_then(|c| c.server_config().map(|_| c));
    if let Err(e) = loaded {
        return Check::fail(Group::Files, "tls-key", e.to_string(), issue.to_string());
    }
    match std::fs::metadata(&tls.key).map(|m| m.permissions().mode() & 0o777) {
        Ok(mode) if mode & 0o077 != 0 => Check::warn(
            Group::Files,
            "tls-key",
            format!(
                "private key {} has mode {mode:o}: others can read it",
                tls.key.display()
            ),
            format!("chmod 600 {}", tls.key.display()),
        ),
        _ => Check::ok(
            Group::Files,
            "tls-key",
            format!(
                "private key {} loads, matches the certificate, mode 0600",
                tls.key.display()
            ),
        ),
    }
}

/// The revocation list, if configured: loads, and does not revoke this node.
fn revocation(
    tls: &TlsPaths,
    cert: &CertificateDer<'static>,
    ca: Option<Vec<CertificateDer<'static>>>,
    issue: &str,
) -> Check {
    let Some(path) = &tls.crl else {
        return Check::ok(
            Group::Files,
            "tls-crl",
            "no revocation list configured (tls.crl): revoked peers are not refused",
        );
    };
    let crl = match Crl::load(path) {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                Group::Files,
                "tls-crl",
                e.to_string(),
                format!("copy the CA's crl.pem to {}", path.display()),
            )
        }
    };
    let mut roots = RootCertStore::empty();
    for c in ca.unwrap_or_default() {
        let _ = roots.add(c);
    }
    let revoked = Revocation::new(Arc::new(roots), Some(&crl)).map(|r| r.is_revoked(cert));
    match revoked {
        Ok(true) => Check::fail(
            Group::Files,
            "tls-crl",
            format!(
                "{} revokes this node's certificate: peers refuse it",
                path.display()
            ),
            issue.to_string(),
        ),
        Ok(false) => Check::ok(
            Group::Files,
            "tls-crl",
            format!(
                "{} (number {}, {} revoked) does not revoke this node",
                path.display(),
                crl.number(),
                crl.len()
            ),
        ),
        Err(e) => Check::fail(
            Group::Files,
            "tls-crl",
            e.to_string(),
            format!("copy the CA's crl.pem to {}", path.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;
    use crate::mesh::pki::{init_ca, issue_node_cert};

    struct Pki {
        dir: tempfile::TempDir,
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            init_ca(&dir.path().join("ca"), 30).unwrap();
            init_ca(&dir.path().join("other-ca"), 30).unwrap();
            Pki { dir }
        }

        fn issue(&self, ca: &str, node: &str, days: u32) -> TlsPaths {
            let out = self.dir.path().join(format!("{ca}-{node}-{days}"));
            let (cert, key) = issue_node_cert(
                &self.dir.path().join(ca),
                &NodeId::new(node).unwrap(),
                &out,
                days,
            )
            .unwrap();
            TlsPaths {
                ca: self.dir.path().join("ca/ca.pem"),
                cert,
                key,
                crl: None,
            }
        }
    }

    fn verdict_of(checks: &[Check], id: &str) -> Verdict {
        checks
            .iter()
            .find(|c| c.id == format!("files.{id}"))
            .unwrap_or_else(|| panic!("no {id} in {checks:#?}"))
            .verdict
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn a_good_certificate_passes_every_check() {
        let pki = Pki::new();
        let tls = pki.issue("ca", "n1", 365);
        let checks = tls_checks(&tls, &NodeId::new("n1").unwrap(), now());
        assert_eq!(checks.len(), 6);
        // The test CA lives 30 days: its expiry is near.
        assert_eq!(verdict_of(&checks, "tls-ca"), Verdict::Warn);
        for c in &checks[1..] {
            assert_eq!(c.verdict, Verdict::Ok, "{c:?}");
        }
    }

    #[test]
    fn an_expired_certificate_fails_with_the_issue_command() {
        let pki = Pki::new();
        let tls = pki.issue("ca", "n1", 0);
        let later = now() + time::Duration::minutes(1);
        let checks = tls_checks(&tls, &NodeId::new("n1").unwrap(), later);
        let c = checks.iter().find(|c| c.id == "files.tls-cert").unwrap();
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("expired"), "{}", c.detail);
        assert!(c.fix.as_deref().unwrap().starts_with("dvrmesh cert issue"));
        assert_eq!(
            verdict_of(&checks, "tls-chain"),
            Verdict::Ok,
            "reported once, by its dates"
        );
    }

    #[test]
    fn a_certificate_for_another_node_fails_identity() {
        let pki = Pki::new();
        let tls = pki.issue("ca", "n2", 365);
        let checks = tls_checks(&tls, &NodeId::new("n1").unwrap(), now());
        let c = checks
            .iter()
            .find(|c| c.id == "files.tls-identity")
            .unwrap();
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.as_deref().unwrap().contains("node_id = \"n2\""));
    }

    #[test]
    fn a_certificate_from_another_ca_fails_the_chain() {
        let pki = Pki::new();
        let tls = pki.issue("other-ca", "n1", 365);
        let tls = TlsPaths {
            ca: pki.dir.path().join("ca/ca.pem"),
            ..tls
        };
        let checks = tls_checks(&tls, &NodeId::new("n1").unwrap(), now());
        assert_eq!(verdict_of(&checks, "tls-chain"), Verdict::Fail);
        assert_eq!(verdict_of(&checks, "tls-cert"), Verdict::Ok);
    }

    #[test]
    fn a_missing_ca_fails_and_skips_the_chain() {
        let pki = Pki::new();
        let mut tls = pki.issue("ca", "n1", 365);
        tls.ca = pki.dir.path().join("nowhere/ca.pem");
        let checks = tls_checks(&tls, &NodeId::new("n1").unwrap(), now());
        let c = checks.iter().find(|c| c.id == "files.tls-ca").unwrap();
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.as_deref().unwrap().contains("nowhere/ca.pem"));
        assert!(checks.iter().all(|c| c.id != "files.tls-chain"));
    }

    #[test]
    fn a_key_of_another_certificate_or_readable_by_others_is_reported() {
        let pki = Pki::new();
        let mut tls = pki.issue("ca", "n1", 365);
        let other = pki.issue("ca", "n1", 364);
        tls.key = other.key.clone();
        let checks = tls_checks(&tls, &NodeId::new("n1").unwrap(), now());
        assert_eq!(verdict_of(&checks, "tls-key"), Verdict::Fail);
        std::fs::set_permissions(&other.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let checks = tls_checks(&other, &NodeId::new("n1").unwrap(), now());
        let c = checks.iter().find(|c| c.id == "files.tls-key").unwrap();
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.fix.as_deref().unwrap().starts_with("chmod 600"));
    }

    #[test]
    fn a_revoked_node_fails_the_revocation_check() {
        let pki = Pki::new();
        let mut tls = pki.issue("ca", "n1", 365);
        let ca_dir = pki.dir.path().join("ca");
        tls.crl = Some(ca_dir.join("crl.pem"));
        let id = NodeId::new("n1").unwrap();
        assert_eq!(
            verdict_of(&tls_checks(&tls, &id, now()), "tls-crl"),
            Verdict::Ok
        );
        crate::mesh::pki::revoke::revoke(&ca_dir, Some(&id), None).unwrap();
        assert_eq!(
            verdict_of(&tls_checks(&tls, &id, now()), "tls-crl"),
            Verdict::Fail
        );
    }

    #[test]
    fn config_problems_are_shown_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "mode = \"router\"\n").unwrap();
        let (c, config) = config_check(&path);
        assert!(config.is_none());
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.detail.contains("node_id: missing") && c.detail.contains("mode:"),
            "{}",
            c.detail
        );
        let (c, _) = config_check(&dir.path().join("none.toml"));
        assert_eq!(c.verdict, Verdict::Fail);
    }
}

//! What the agent serves and keeps in step with: the API socket (present, mode 0600, an agent
//! answering), the gossip port (free for the agent, or held by it), and the clock (synchronised
//! by NTP; no peer's records refused as stamped ahead of it).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Check, Ctx, Group};
use crate::api::{self, Request};

/// How long the agent has to answer `status`.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The reason the view gives for a record stamped too far ahead of this node's clock.
const AHEAD: &str = "stamped ahead of this node's clock";

/// The running agent's `status`, if one answers on `socket` within [`ASK_TIMEOUT`].
pub fn ask_status(socket: &Path) -> Option<Value> {
    if !socket.exists() {
        return None;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        tokio::time::timeout(ASK_TIMEOUT, api::call(socket, &Request::Status))
            .await
            .ok()?
            .ok()
    })
}

/// The service checks.
pub fn checks(ctx: &Ctx) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(api) = &ctx.api {
        out.push(api_socket(api, ctx.agent.as_ref()));
    }
    if let Some(config) = &ctx.config {
        out.push(gossip_port(
            config.listen,
            ctx.agent.is_some(),
            bind_udp(config.listen),
        ));
    }
    out.push(ntp(clock_synchronised().as_deref()));
    out.push(skew(ctx.agent.as_ref()));
    out
}

/// The API socket: what is at its path, and whether an agent answered there.
fn api_socket(path: &Path, agent: Option<&Value>) -> Check {
    let meta =
        match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => return Check::warn(
                Group::Services,
                "api-socket",
                format!("{} does not exist: no agent is running", path.display()),
                "start the agent: dvrmesh agent --config FILE (it creates the socket, mode 0600)",
            ),
        };
    if !meta.file_type().is_socket() {
        return Check::fail(
            Group::Services,
            "api-socket",
            format!(
                "{} exists and is not a socket: the agent cannot bind it",
                path.display()
            ),
            format!("remove {} or change api_socket", path.display()),
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    match agent {
        _ if mode != 0o600 => Check::warn(
            Group::Services,
            "api-socket",
            format!(
                "{} has mode {mode:o}: other users can drive the agent",
                path.display()
            ),
            format!(
                "chmod 600 {} (the agent sets it when it starts)",
                path.display()
            ),
        ),
        None => Check::warn(
            Group::Services,
            "api-socket",
            format!("{} is a stale socket: no agent answers", path.display()),
            "start the agent: dvrmesh agent --config FILE (it replaces the stale socket)",
        ),
        Some(status) => Check::ok(
            Group::Services,
            "api-socket",
            format!(
                "{} (mode 0600): agent {} answers, view generation {}",
                path.display(),
                status["node_id"].as_str().unwrap_or("?"),
                status["view_generation"]
            ),
        ),
    }
}

/// Tries to bind the gossip address (UDP, as QUIC does); the socket closes at once.
fn bind_udp(addr: SocketAddr) -> Result<(), std::io::Error> {
    UdpSocket::bind(addr).map(drop)
}

/// The gossip port: free for the agent, or held by the running one (pure over the bind result).
pub fn gossip_port(
    listen: SocketAddr,
    agent_runs: bool,
    bind: Result<(), std::io::Error>,
) -> Check {
    let port = listen.port();
    match (bind, agent_runs) {
        (Ok(()), false) => Check::ok(Group::Services, "gossip-port", format!("UDP {listen} is free for the agent")),
        (Err(e), true) if e.kind() == ErrorKind::AddrInUse => {
            Check::ok(Group::Services, "gossip-port", format!("UDP {listen} is held by the running agent"))
        }
        (Ok(()), true) => Check::warn(
            Group::Services,
            "gossip-port",
            format!("an agent answers but UDP {listen} is free here: it runs with another configuration or in another namespace"),
            "check which configuration the running agent uses",
        ),
        (Err(e), _) => match e.kind() {
            ErrorKind::AddrInUse => Check::fail(
                Group::Services,
                "gossip-port",
                format!("UDP {listen} is in use by another process"),
                format!("find it with `ss -ulpn 'sport = :{port}'` and stop it, or change listen"),
            ),
            ErrorKind::AddrNotAvailable => Check::fail(
                Group::Services,
                "gossip-port",
                format!("listen address {} is on no interface of this host", listen.ip()),
                "correct listen (and advertise), or add the address to an interface",
            ),
            _ => Check::fail(
                Group::Services,
                "gossip-port",
                format!("cannot bind UDP {listen}: {e}"),
                "pick another listen port, or run with the privileges that port needs",
            ),
        },
    }
}

/// Whether the clock is synchronised, as "yes" or "no": `timedatectl`'s `NTPSynchronized`, else
/// systemd-timesyncd's flag file, else chrony's leap status; `None` when none of them answers.
fn clock_synchronised() -> Option<String> {
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if let Some(answer) = run("timedatectl", &["show", "-p", "NTPSynchronized", "--value"]) {
        return Some(answer.trim().to_string());
    }
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        return Some("yes".into());
    }
    let chrony = run("chronyc", &["-n", "tracking"])?;
    let leap = chrony
        .lines()
        .find_map(|l| l.strip_prefix("Leap status"))?
        .trim_start_matches([' ', ':'])
        .trim();
    Some(if leap == "Normal" { "yes" } else { "no" }.into())
}

/// Clock synchronisation (pure over timedatectl's answer). Warnings only: the HLC keeps order
/// with skew, but records stamped more than `max_clock_skew_ms` ahead are refused by peers.
pub fn ntp(answer: Option<&str>) -> Check {
    match answer {
        Some("yes") => Check::ok(Group::Services, "ntp", "the system clock is synchronised (NTP)"),
        Some("no") => Check::warn(
            Group::Services,
            "ntp",
            "the system clock is not synchronised: peers refuse records stamped too far ahead, and certificates depend on the date",
            "timedatectl set-ntp true (or install and start chrony)",
        ),
        _ => Check::warn(
            Group::Services,
            "ntp",
            "cannot tell whether the clock is synchronised (neither timedatectl nor chronyc answered)",
            "run a time synchroniser (chrony or systemd-timesyncd) on every node",
        ),
    }
}

/// Skew against the cluster, as the running agent saw it (pure over its status).
pub fn skew(agent: Option<&Value>) -> Check {
    let Some(status) = agent else {
        return Check::warn(
            Group::Services,
            "clock-skew",
            "cannot compare this clock with the cluster's: no running agent answered",
            "start the agent, then run dvrmesh doctor again",
        );
    };
    let ahead = status["refused_values"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|v| v.as_str().is_some_and(|s| s.contains(AHEAD)))
                .count()
        })
        .unwrap_or(0);
    if ahead == 0 {
        Check::ok(
            Group::Services,
            "clock-skew",
            "no peer record was refused as stamped ahead of this node's clock",
        )
    } else {
        Check::warn(
            Group::Services,
            "clock-skew",
            format!("{ahead} peer records were refused as stamped ahead of this node's clock by more than max_clock_skew_ms"),
            "synchronise every node's clock (chrony or systemd-timesyncd); `dvrmesh status` lists the refused records",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;
    use serde_json::json;

    #[test]
    fn the_gossip_port_is_free_held_or_taken() {
        let l: SocketAddr = "127.0.0.1:7101".parse().unwrap();
        let in_use = || Err(std::io::Error::from(ErrorKind::AddrInUse));
        assert_eq!(gossip_port(l, false, Ok(())).verdict, Verdict::Ok);
        assert_eq!(gossip_port(l, true, in_use()).verdict, Verdict::Ok);
        let c = gossip_port(l, false, in_use());
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.unwrap().contains("sport = :7101"));
        let c = gossip_port(l, false, Err(ErrorKind::AddrNotAvailable.into()));
        assert_eq!(c.verdict, Verdict::Fail);
        assert_eq!(gossip_port(l, true, Ok(())).verdict, Verdict::Warn);
    }

    #[test]
    fn a_port_taken_by_another_socket_fails() {
        let held = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert_eq!(
            gossip_port(addr, false, bind_udp(addr)).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn clock_checks_warn_never_fail() {
        assert_eq!(ntp(Some("yes")).verdict, Verdict::Ok);
        assert_eq!(ntp(Some("no")).verdict, Verdict::Warn);
        assert_eq!(ntp(None).verdict, Verdict::Warn);
        assert_eq!(skew(None).verdict, Verdict::Warn);
        let calm = json!({"refused_values": ["o/x: something else"]});
        assert_eq!(skew(Some(&calm)).verdict, Verdict::Ok);
        let fast = json!({"refused_values": [format!("o/x from n2: {AHEAD} by more than the 10000 ms skew allowed")]});
        let c = skew(Some(&fast));
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.detail.starts_with("1 peer"));
    }

    #[test]
    fn the_api_socket_is_checked_for_kind_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api.sock");
        assert_eq!(
            api_socket(&p, None).verdict,
            Verdict::Warn,
            "absent: no agent"
        );
        std::fs::write(&p, "").unwrap();
        assert_eq!(api_socket(&p, None).verdict, Verdict::Fail, "a plain file");
        std::fs::remove_file(&p).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let status = json!({"node_id": "n1", "view_generation": 3});
        assert_eq!(api_socket(&p, Some(&status)).verdict, Verdict::Ok);
        assert_eq!(api_socket(&p, None).verdict, Verdict::Warn, "stale");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(api_socket(&p, Some(&status)).verdict, Verdict::Warn);
    }
}

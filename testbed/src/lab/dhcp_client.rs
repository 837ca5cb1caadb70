//! A lab VM's DHCP client: busybox `udhcpc` inside the VM's namespace, with a script of the
//! lab's own that configures the interface from what the server gave (address, MTU, routes of
//! option 121, next hop 0.0.0.0 meaning on the link, or else the router) and records it, so
//! tests read what the VM was told. It never
//! touches the host's files (the stock script writes `/etc/resolv.conf`, which a namespace
//! shares with the host).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::exec::output_in;

/// The lab's udhcpc script (the compose lab's VMs run it too). `$DVRMESH_LEASE` names the file
/// it records the lease in.
pub const SCRIPT: &str = r#"#!/bin/sh
# dvrmesh lab: udhcpc event script. Configures $interface and records the lease.
event="$1"
case "$event" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    ip -4 addr replace "$ip/$mask" dev "$interface" ${broadcast:+broadcast $broadcast}
    if [ -n "$staticroutes" ]; then
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = 0.0.0.0 ]; then
                ip -4 route replace "$1" dev "$interface" scope link
            else
                ip -4 route replace "$1" via "$2" dev "$interface"
            fi
            shift 2
        done
    elif [ -n "$router" ]; then
        ip -4 route replace default via "${router%% *}" dev "$interface"
    fi
    {
        echo "event=$event"
        echo "ip=$ip"
        echo "mask=$mask"
        echo "router=$router"
        echo "mtu=$mtu"
        echo "staticroutes=$staticroutes"
        echo "dns=$dns"
        echo "domain=$domain"
        echo "hostname=$hostname"
        echo "lease=$lease"
        echo "serverid=$serverid"
    } > "$DVRMESH_LEASE.tmp" && mv "$DVRMESH_LEASE.tmp" "$DVRMESH_LEASE"
    echo "$event" >> "$DVRMESH_LEASE.events"
    ;;
esac
exit 0
"#;

/// Where one VM's client keeps its files, under the lab's `vm/` directory.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    dir: PathBuf,
    vm: String,
}

impl ClientFiles {
    /// The files of VM `vm` in lab directory `lab_dir`.
    pub fn new(lab_dir: &Path, vm: &str) -> Self {
        ClientFiles {
            dir: lab_dir.join("vm"),
            vm: vm.to_string(),
        }
    }

    fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.vm))
    }

    /// The last lease the VM was given (`key=value` lines).
    pub fn lease(&self) -> PathBuf {
        self.path("lease")
    }

    /// Every `bound`/`renew` event, one a line.
    pub fn events(&self) -> PathBuf {
        self.path("lease.events")
    }

    fn pid(&self) -> PathBuf {
        self.path("pid")
    }

    fn script(&self) -> PathBuf {
        self.dir.join("udhcpc.script")
    }

    /// A value of the last lease (`None` when there is none or it lacks `key`).
    pub fn lease_value(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.lease()).ok()?;
        parse_lease(&text).remove(key)
    }

    /// How many renewals the VM has had.
    pub fn renewals(&self) -> usize {
        std::fs::read_to_string(self.events())
            .map(|t| t.lines().filter(|l| *l == "renew").count())
            .unwrap_or(0)
    }

    /// Runs udhcpc on `eth0` inside `vm_ns` until it has a lease (10 discovers, 1 s apart); it
    /// then stays in the background and renews.
    pub fn start(&self, vm_ns: &Path) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        write_script(&self.script())?;
        let _ = std::fs::remove_file(self.lease());
        let _ = std::fs::remove_file(self.events());
        let log = self.path("log");
        let cmd = format!(
            "DVRMESH_LEASE={lease} exec busybox udhcpc -i eth0 -s {script} -p {pid} -t 10 -T 1 -A 1 -n >>{log} 2>&1",
            lease = self.lease().display(),
            script = self.script().display(),
            pid = self.pid().display(),
            log = log.display(),
        );
        let out = output_in(vm_ns, &["sh", "-c", &cmd])?;
        if !out.status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("udhcpc got no lease for {}:\n{text}", self.vm);
        }
        Ok(())
    }

    /// Asks the VM's client to renew now (SIGUSR1).
    pub fn renew_now(&self) -> Result<()> {
        let pid = std::fs::read_to_string(self.pid())?;
        let status = Command::new("kill").args(["-USR1", pid.trim()]).status()?;
        if !status.success() {
            bail!("signalling udhcpc {} failed", pid.trim());
        }
        Ok(())
    }

    /// Stops the VM's client, if it runs.
    pub fn stop(&self) {
        stop_pid_file(&self.pid());
    }

    /// Stops every VM client of the lab in `lab_dir` (for `down` after a crash).
    pub fn stop_all(lab_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(lab_dir.join("vm")) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                stop_pid_file(&e.path());
            }
        }
    }
}

/// The `key=value` lines of a lease the script recorded.
pub fn parse_lease(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes the script unless it is there already, as a new file renamed into place: VMs start
/// side by side, and a file another VM's client is executing cannot be opened for writing.
fn write_script(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read(path).is_ok_and(|s| s == SCRIPT.as_bytes()) {
        return Ok(());
    }
    let dir = path.parent().context("the script's directory")?;
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("a temporary file in {}", dir.display()))?;
    std::fs::write(tmp.path(), SCRIPT).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Signals the udhcpc whose pid `path` holds, when that pid still is a udhcpc (busybox).
fn stop_pid_file(path: &Path) {
    let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !matches!(comm.trim(), "busybox" | "udhcpc") {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::fs::remove_file(path);
}

/// `count` hostile DHCP frames from `mac`: Ethernet + IPv4 + UDP 68 → 67 around payloads that are
/// random bytes, BOOTREQUESTs with impossible hardware lengths, and truncated or garbled
/// options. Deterministic for a given `seed` (a small xorshift; no checksums, the server's
/// parsers do not need them).
pub fn junk_frames(mac: [u8; 6], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|i| {
            let len = (next() % 600) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && payload.len() > 240 {
                // A BOOTREQUEST header with the magic cookie, then garbage options.
                payload[0] = 1;
                payload[1] = 1;
                payload[2] = [6, 255, 0, 17][i % 4];
                payload[28..34].copy_from_slice(&mac);
                payload[236..240].copy_from_slice(&[99, 130, 83, 99]);
            }
            udp_frame(mac, &payload)
        })
        .collect()
}

fn udp_frame(mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + usize::from(ip_len));
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    f.extend_from_slice(&[0, 68, 0, 67, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend_from_slice(payload);
    f
}

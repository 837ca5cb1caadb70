//! Sysctls under `/proc/sys`, read and written from a thread inside the namespace (the files
//! under `/proc/sys/net` belong to the namespace of the thread that opens them).

use std::fs::File;
use std::io;
use std::path::PathBuf;

use super::netns;
use crate::Error;

/// The `/proc/sys` path of a dotted key, as `sysctl(8)` maps it: dots separate components, and a
/// slash stands for a dot inside one component (`net.ipv4.conf.eth0/100.rp_filter` →
/// `net/ipv4/conf/eth0.100/rp_filter`). Interface names contain no dots in dvrmesh, so
/// `net.ipv4.conf.fg-x.proxy_arp` → `net/ipv4/conf/fg-x/proxy_arp`. Keys that could leave
/// `/proc/sys/net` (empty components, `.`/`..`) are rejected.
pub fn key_path(key: &str) -> Result<PathBuf, String> {
    let mut path = PathBuf::from("/proc/sys");
    for (i, part) in key.split('.').enumerate() {
        let part = part.replace('/', ".");
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(format!("invalid sysctl key {key:?}"));
        }
        if i == 0 && part != "net" {
            return Err(format!("sysctl key {key:?} is not under net."));
        }
        path.push(part);
    }
    Ok(path)
}

/// Reads `keys` inside the namespace; a key whose file does not exist (an interface not created
/// yet) or that is not a valid key reads as `None` (writing it then fails, visibly). Values lose
/// their trailing newline.
pub(crate) fn read_all(
    ns: &File,
    label: &str,
    keys: &[String],
) -> Result<Vec<(String, Option<String>)>, Error> {
    let paths: Vec<(String, PathBuf)> = keys
        .iter()
        .filter_map(|k| key_path(k).ok().map(|p| (k.clone(), p)))
        .collect();
    netns::in_netns(ns, label, || {
        let mut out = Vec::with_capacity(paths.len());
        for (key, path) in paths {
            match std::fs::read_to_string(&path) {
                Ok(v) => out.push((key, Some(v.trim_end_matches('\n').to_string()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => out.push((key, None)),
                Err(e) => {
                    return Err(Error::Sysctl {
                        ns: label.to_string(),
                        key,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(out)
    })?
}

/// Writes one key inside the namespace.
/// Writes several sysctls of one namespace from one thread inside it; one result per key.
pub(crate) fn write_all(
    ns: &File,
    label: &str,
    kvs: &[(&str, &str)],
) -> Result<Vec<Result<(), String>>, Error> {
    netns::in_netns(ns, label, || {
        kvs.iter()
            .map(|(key, value)| {
                let path = key_path(key)?;
                std::fs::write(&path, format!("{value}\n"))
                    .map_err(|e| format!("sysctl {key}: {e}"))
            })
            .collect()
    })
}

/// Disables IPv6 on the device `dev`, from a thread inside the namespace. A device without IPv6
/// state (a kernel without IPv6, or an MTU below IPv6's minimum) has nothing to disable: that is
/// success. The outer error: the namespace could not be entered; the inner one: the write failed.
pub(crate) fn disable_ipv6(ns: &File, label: &str, dev: &str) -> Result<Result<(), String>, Error> {
    let key = format!("net.ipv6.conf.{dev}.disable_ipv6");
    let path = match key_path(&key) {
        Ok(path) => path,
        Err(e) => return Ok(Err(e)),
    };
    netns::in_netns(ns, label, || match std::fs::write(&path, "1\n") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| format!("sysctl {key}: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::key_path;

    #[test]
    fn dotted_keys_map_separators_only() {
        assert_eq!(
            key_path("net.ipv4.conf.fg-x.proxy_arp").unwrap(),
            std::path::Path::new("/proc/sys/net/ipv4/conf/fg-x/proxy_arp")
        );
        assert_eq!(
            key_path("net.ipv4.conf.eth0/100.rp_filter").unwrap(),
            std::path::Path::new("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert!(key_path("net..ip_forward").is_err());
        assert!(key_path("net.ipv4./.x").is_err());
        assert!(key_path("kernel.panic").is_err());
    }
}

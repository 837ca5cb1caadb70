//! Sysctls under `/proc/sys`, read and written from a thread inside the namespace (the files
//! under `/proc/sys/net` belong to the namespace of the thread that opens them).

use std::fs::File;
use std::io;
use std::path::PathBuf;

use nix::fcntl::OFlag;

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
    NetDir::of(ns, label)?.read_all(keys)
}

/// Writes several sysctls of one namespace from one thread inside it; one result per key.
pub(crate) fn write_all(
    ns: &File,
    label: &str,
    kvs: &[(&str, &str)],
) -> Result<Vec<Result<(), String>>, Error> {
    NetDir::of(ns, label)?.write_all(kvs)
}

/// The sysctl directories of one namespace (`/proc/sys/net/ipv4/conf`, `…/ipv4`, …), each opened
/// once from a thread inside it; every key is then opened relative to its directory, from inside the
/// namespace again.
///
/// Why: `/proc/sys/net` is one directory entry shared by every namespace, and under it each
/// namespace has its own `ipv4`, `ipv6`, `core`, … entries, all of one name and one parent, so
/// they sit in one hash chain of the kernel's dentry cache. A lookup through them walks past the
/// entry of every namespace that has one: measured on this machine, a new namespace's first
/// lookup of `ipv4` took 28 µs beside 10 other namespaces and 891 µs beside 1 500. By absolute
/// path every key paid that walk (10 % of a 1 000-router pass in `proc_sys_compare`). Now a
/// namespace pays it once per such entry, when its directory here is opened, which no path to
/// its sysctls can avoid: IPv4's `all` values cannot be set over netlink.
pub(crate) struct NetDir {
    ns: File,
    label: String,
    dirs: Dirs,
}

/// A namespace's `/proc/sys/net` and the directories under it opened so far (apart from the
/// namespace's file, so that a closure run inside the namespace can borrow them mutably).
struct Dirs {
    net: File,
    /// By path relative to `net`.
    opened: std::collections::HashMap<String, File>,
}

impl NetDir {
    /// Opens `/proc/sys/net` of the namespace `ns`.
    pub(crate) fn open(ns: File, label: &str) -> Result<NetDir, Error> {
        let net = netns::in_netns(&ns, label, || File::open("/proc/sys/net"))?.map_err(|e| {
            Error::Sysctl {
                ns: label.to_string(),
                key: "net".into(),
                message: e.to_string(),
            }
        })?;
        Ok(NetDir {
            ns,
            label: label.to_string(),
            dirs: Dirs {
                net,
                opened: Default::default(),
            },
        })
    }

    /// [`NetDir::open`] for one use, on a duplicate of the caller's namespace file.
    fn of(ns: &File, label: &str) -> Result<NetDir, Error> {
        let ns = ns.try_clone().map_err(|e| Error::Namespace {
            ns: label.to_string(),
            message: e.to_string(),
        })?;
        NetDir::open(ns, label)
    }

    /// Reads `keys` from one thread inside the namespace, as [`read_all`] does.
    pub(crate) fn read_all(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<(String, Option<String>)>, Error> {
        let (label, dirs) = (&self.label, &mut self.dirs);
        netns::in_netns(&self.ns, label, || {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                if key_path(key).is_err() {
                    out.push((key.clone(), None));
                    continue;
                }
                match dirs.read(key) {
                    Ok(v) => out.push((key.clone(), Some(v.trim_end_matches('\n').to_string()))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => out.push((key.clone(), None)),
                    Err(e) => {
                        return Err(Error::Sysctl {
                            ns: label.clone(),
                            key: key.clone(),
                            message: e.to_string(),
                        })
                    }
                }
            }
            Ok(out)
        })?
    }

    /// Writes several keys from one thread inside the namespace; one result per key.
    pub(crate) fn write_all(
        &mut self,
        kvs: &[(&str, &str)],
    ) -> Result<Vec<Result<(), String>>, Error> {
        let dirs = &mut self.dirs;
        netns::in_netns(&self.ns, &self.label, || {
            kvs.iter()
                .map(|(key, value)| {
                    dirs.write(key, value)
                        .map_err(|e| format!("sysctl {key}: {e}"))
                })
                .collect()
        })
    }

    /// Disables IPv6 on the device `dev`. A device without IPv6 state (a kernel without IPv6,
    /// or an MTU below IPv6's minimum) has nothing to disable: that is success. The outer error:
    /// the namespace could not be entered; the inner one: the write failed.
    pub(crate) fn disable_ipv6(&mut self, dev: &str) -> Result<Result<(), String>, Error> {
        let key = format!("net.ipv6.conf.{dev}.disable_ipv6");
        let dirs = &mut self.dirs;
        netns::in_netns(&self.ns, &self.label, || match dirs.write(&key, "1") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| format!("sysctl {key}: {e}")),
        })
    }
}

impl Dirs {
    /// Reads `key`: to be called from inside the namespace.
    fn read(&mut self, key: &str) -> io::Result<String> {
        let mut value = String::new();
        io::Read::read_to_string(&mut self.open_key(key, OFlag::O_RDONLY)?, &mut value)?;
        Ok(value)
    }

    /// Writes `value` to `key`: to be called from inside the namespace.
    fn write(&mut self, key: &str, value: &str) -> io::Result<()> {
        use std::io::Write;
        self.open_key(key, OFlag::O_WRONLY)?
            .write_all(format!("{value}\n").as_bytes())
    }

    /// Opens `key`'s file for `access`: to be called from inside the namespace.
    fn open_key(&mut self, key: &str, access: OFlag) -> io::Result<File> {
        use nix::fcntl::openat;
        use nix::sys::stat::Mode;
        let path = key_path(key).map_err(io::Error::other)?;
        let relative = path
            .strip_prefix("/proc/sys/net")
            .map_err(|_| io::Error::other(format!("{key:?} is not under net.")))?;
        // The directory opened once: the key's first two components (`ipv4/conf`), or its
        // first (`ipv4` of `ipv4/ip_forward`). Those are the entries shared between namespaces;
        // below them every entry is the namespace's own.
        let parts: Vec<_> = relative.components().collect();
        if parts.len() < 2 {
            return Err(io::Error::other(format!("{key:?} names a directory")));
        }
        let depth = (parts.len() - 1).min(2);
        let dir_path: PathBuf = parts[..depth].iter().collect();
        let rest: PathBuf = parts[depth..].iter().collect();
        let dir = match self.opened.entry(dir_path.to_string_lossy().into_owned()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
                let fd = openat(&self.net, dir_path.as_path(), flags, Mode::empty())?;
                e.insert(File::from(fd))
            }
        };
        let fd = openat(
            &*dir,
            rest.as_path(),
            access | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }
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

    #[test]
    fn a_net_dir_writes_into_its_own_namespace_only() {
        use crate::linux::netns;
        let dir = tempfile::tempdir().expect("tempdir");
        netns::create(dir.path(), "a").expect("create (needs root)");
        netns::create(dir.path(), "b").expect("create");
        let a = netns::open(&dir.path().join("a"), "a").expect("open a");
        let b = netns::open(&dir.path().join("b"), "b").expect("open b");
        let mut net = super::NetDir::open(a.try_clone().expect("dup"), "a").expect("net dir");
        let keys = [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.lo.rp_filter",
        ];
        let results = net
            .write_all(&[(keys[0], "1"), (keys[1], "2"), (keys[2], "1")])
            .expect("enter");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // A device's key through the cached `ipv6/conf` directory; a missing device is no error.
        assert_eq!(net.disable_ipv6("lo").expect("enter"), Ok(()));
        assert_eq!(net.disable_ipv6("nosuchdev").expect("enter"), Ok(()));
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let read = |ns: &std::fs::File| -> Vec<Option<String>> {
            super::read_all(ns, "t", &keys)
                .expect("read")
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        };
        let written: Vec<Option<String>> = ["1", "2", "1"]
            .iter()
            .map(|v| Some(v.to_string()))
            .collect();
        assert_eq!(read(&a), written);
        assert_ne!(read(&b), written, "the other namespace is untouched");
        let six = vec!["net.ipv6.conf.lo.disable_ipv6".to_string()];
        let lo_v6 = super::read_all(&a, "a", &six).expect("read");
        assert_eq!(lo_v6[0].1.as_deref(), Some("1"));
        // A key that names a directory is refused, not written.
        assert!(net.write_all(&[("net.ipv4", "1")]).expect("enter")[0].is_err());
        netns::delete(dir.path(), "a").expect("delete");
        netns::delete(dir.path(), "b").expect("delete");
    }
}

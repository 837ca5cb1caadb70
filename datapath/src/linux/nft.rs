//! nftables: tables are listed over nfnetlink (no process), and replaced by one `nft -f -` batch
//! per namespace per pass.
//!
//! A table cannot be read back in the form it was written, so every table the backend loads
//! carries `comment "dvrmesh:<digest>"`, the FNV-1a 64 digest of its text (the printer's output,
//! [`crate::nft::Table`]). `observe` compares that digest with the digest of the hint's table.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::netns;
use super::socket::{attrs, Conn, NlError};
use crate::nft::Table;
use crate::{Error, NftFamily, NftKey, NFT_TABLE_PREFIX};

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE`.
const NFT_GETTABLE: u16 = (10 << 8) | 1;
/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE`.
const NFT_NEWTABLE: u16 = 10 << 8;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
/// libnftnl's `NFTNL_UDATA_TABLE_COMMENT`.
const UDATA_TABLE_COMMENT: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_NETDEV: u8 = 5;
/// Where the `nft` binary is looked for before `$PATH`.
const NFT_PATHS: &[&str] = &["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// A table found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NftTable {
    /// Family.
    pub(crate) family: NftFamily,
    /// Name.
    pub(crate) name: String,
    /// Its comment, if any.
    pub(crate) comment: Option<String>,
}

/// FNV-1a 64 of `text`, as 16 lowercase hex digits. Stable across builds and platforms.
pub fn digest(text: &str) -> String {
    format!("{:016x}", mesh_proto::hash::fnv1a64(&[text.as_bytes()]))
}

/// The comment the backend puts on `table`: the digest of its text.
pub fn comment_for(table: &Table) -> String {
    format!("{NFT_TABLE_PREFIX}:{}", digest(&table.to_string()))
}

/// Lists the `ip` and `netdev` tables whose names start with [`NFT_TABLE_PREFIX`].
pub(crate) fn list_tables(conn: &mut Conn) -> Result<Vec<NftTable>, NlError> {
    // nfgenmsg: family NFPROTO_UNSPEC, version NFNETLINK_V0, res_id 0.
    let replies = conn.raw_dump(NFT_GETTABLE, &[0, 0, 0, 0])?;
    let mut tables = Vec::new();
    for (t, body) in replies {
        if t != NFT_NEWTABLE || body.len() < 4 {
            continue;
        }
        let family = match body[0] {
            NFPROTO_IPV4 => NftFamily::Ip,
            NFPROTO_NETDEV => NftFamily::Netdev,
            _ => continue,
        };
        let mut name = None;
        let mut comment = None;
        for (kind, value) in attrs(&body[4..]) {
            match kind {
                NFTA_TABLE_NAME => name = Some(c_string(value)),
                NFTA_TABLE_USERDATA => comment = udata_comment(value),
                _ => {}
            }
        }
        if let Some(name) = name.filter(|n| n.starts_with(NFT_TABLE_PREFIX)) {
            tables.push(NftTable {
                family,
                name,
                comment,
            });
        }
    }
    Ok(tables)
}

/// The batch text for one namespace: each `(key, Some(table))` replaces the table (commented
/// with its digest), each `(key, None)` deletes it. A table that does not exist is not deleted
/// first: nft would refuse, and a delete makes the kernel wait for an RCU grace period at commit
/// (~10 ms here). `present` holds the tables that exist before the batch and is kept current as
/// the batch deletes and creates them. nft applies the batch atomically.
pub(crate) fn batch(
    ops: &[(&NftKey, Option<&Table>)],
    present: &mut BTreeSet<(NftFamily, String)>,
) -> Result<String, String> {
    let mut text = String::new();
    for (key, table) in ops {
        check_owned(key, *table)?;
        let id = (key.family, key.name.clone());
        if present.remove(&id) {
            text.push_str(&format!(
                "delete table {} {}\n",
                key.family.keyword(),
                key.name
            ));
        }
        if let Some(table) = table {
            text.push_str(&table.text_with_comment(&comment_for(table)));
            present.insert(id);
        }
    }
    Ok(text)
}

/// Refuses a key that is not a dvrmesh table, or a table that does not fit its key or that
/// [`Table::check`] refuses.
pub(crate) fn check_owned(key: &NftKey, table: Option<&Table>) -> Result<(), String> {
    if !key.name.starts_with(NFT_TABLE_PREFIX) {
        return Err(format!("table name {:?} is not a dvrmesh table", key.name));
    }
    let Some(table) = table else {
        return Ok(());
    };
    if table.family != key.family || table.name != key.name {
        return Err(format!(
            "table {} {} planned under the key of {} {}",
            table.family.keyword(),
            table.name,
            key.family.keyword(),
            key.name
        ));
    }
    table.check()
}

/// Runs `text` as one nft transaction inside the namespace: in-process through libnftables
/// when it loads, else `nft -f -`; nft's error text on failure.
pub(crate) fn run(ns: &File, label: &str, text: &str) -> Result<(), Error> {
    let fail = |message: String| Error::Nft {
        ns: label.to_string(),
        message,
    };
    if super::libnft::available() {
        match netns::in_netns(ns, label, || super::libnft::run(text))? {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(refused)) => return Err(fail(refused)),
            Err(_unusable) => {} // fall back to the binary
        }
    }
    let program = NFT_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .copied()
        .unwrap_or("nft");
    let output = netns::in_netns(ns, label, || {
        let mut child = Command::new(program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    })?
    .map_err(|e| fail(format!("running {program}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(fail(format!("{} ({})", stderr, output.status)))
    }
}

/// The comment in libnftnl's user-data TLVs (`u8 type, u8 len, value`).
fn udata_comment(mut buf: &[u8]) -> Option<String> {
    while buf.len() >= 2 {
        let (kind, len) = (buf[0], buf[1] as usize);
        let value = buf.get(2..2 + len)?;
        if kind == UDATA_TABLE_COMMENT {
            return Some(c_string(value));
        }
        buf = &buf[2 + len..];
    }
    None
}

fn c_string(b: &[u8]) -> String {
    let b = b.split(|c| *c == 0).next().unwrap_or_default();
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{Chain, ChainKind, Hook, Priority};
    use crate::Netns;

    #[test]
    fn digest_is_fnv1a64() {
        assert_eq!(digest(""), "cbf29ce484222325");
        assert_eq!(digest("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn a_batch_replaces_existing_tables_and_deletes_each_once() {
        let key = NftKey {
            ns: Netns::Host,
            family: NftFamily::Ip,
            name: "dvrmesh-x".into(),
        };
        let table = Table {
            family: NftFamily::Ip,
            name: "dvrmesh-x".into(),
            sets: vec![],
            chains: vec![Chain {
                name: "c".into(),
                kind: ChainKind::Filter,
                hook: Hook::Prerouting,
                priority: Priority::Raw,
                rules: vec![],
            }],
        };
        let present = || BTreeSet::from([(NftFamily::Ip, "dvrmesh-x".to_string())]);
        let text = batch(&[(&key, Some(&table))], &mut present()).unwrap();
        assert!(
            text.starts_with("delete table ip dvrmesh-x\n"),
            "an existing table is replaced"
        );
        assert!(text.contains(&format!(
            "table ip dvrmesh-x {{\n\tcomment \"dvrmesh:{}\"\n",
            digest(&table.to_string())
        )));
        let fresh = batch(&[(&key, Some(&table))], &mut BTreeSet::new()).unwrap();
        assert!(
            fresh.starts_with("table ip dvrmesh-x {"),
            "a missing table is just created: {fresh}"
        );
        assert_eq!(
            batch(&[(&key, None)], &mut BTreeSet::new()).unwrap(),
            "",
            "deleting a missing table is nothing"
        );
        let twice = batch(&[(&key, None), (&key, None)], &mut present()).unwrap();
        assert_eq!(
            twice, "delete table ip dvrmesh-x\n",
            "a table is deleted once"
        );
        let other = NftKey {
            name: "dvrmesh-y".into(),
            ..key.clone()
        };
        assert!(
            batch(&[(&other, Some(&table))], &mut present()).is_err(),
            "a table under another table's key"
        );
        let foreign = NftKey {
            name: "filter".into(),
            ..key
        };
        assert!(batch(&[(&foreign, None)], &mut present()).is_err());
    }
}

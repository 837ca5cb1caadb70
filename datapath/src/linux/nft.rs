//! nftables: tables are listed over nfnetlink (no process), and replaced by one `nft -f -` batch
//! per namespace per pass.
//!
//! The text of a table cannot be read back in the form it was written, so every table the backend
//! loads carries `comment "dvrmesh:<digest>"`, the FNV-1a 64 digest of the desired text. `observe`
//! compares that digest with the digest of the hint's text.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::netns;
use super::socket::{attrs, Conn, NlError};
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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The comment the backend puts on a table whose desired text is `body`.
pub fn comment_for(body: &str) -> String {
    format!("{NFT_TABLE_PREFIX}:{}", digest(body))
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

/// The batch text for one namespace: each `(key, Some(body))` replaces the table with `body`
/// (commented with its digest), each `(key, None)` deletes it. Every table is first declared
/// empty so that deleting works whether or not it exists; nft applies the batch atomically.
/// `present` holds the tables that exist before the batch and is kept current as the batch
/// deletes and creates them.
pub(crate) fn batch(
    ops: &[(&NftKey, Option<&str>)],
    present: &mut BTreeSet<(NftFamily, String)>,
) -> Result<String, String> {
    let mut text = String::new();
    for (key, body) in ops {
        if !key.name.starts_with(NFT_TABLE_PREFIX)
            || !key
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("table name {:?} is not a dvrmesh table", key.name));
        }
        let family = key.family.keyword();
        // A delete makes the kernel wait for an RCU grace period at commit (~10 ms here); a
        // table that does not exist yet is simply created.
        let id = (key.family, key.name.clone());
        let table = match body {
            Some(body) => Some(with_comment(key, body)?),
            None => None,
        };
        if present.remove(&id) {
            text.push_str(&format!("delete table {family} {}\n", key.name));
        }
        if let Some(table) = table {
            text.push_str(&table);
            text.push('\n');
            present.insert(id);
        }
    }
    Ok(text)
}

/// `body` with the digest comment inserted as the first statement of its table block. `body`
/// must define exactly the table `key` (it starts with `table <family> <name> {`).
fn with_comment(key: &NftKey, body: &str) -> Result<String, String> {
    let open = body
        .find('{')
        .ok_or_else(|| format!("nft body for {} has no table block", key.name))?;
    let head: Vec<&str> = body[..open].split_whitespace().collect();
    if head != ["table", key.family.keyword(), key.name.as_str()] {
        return Err(format!(
            "nft body does not start with `table {} {} {{`",
            key.family.keyword(),
            key.name
        ));
    }
    if !is_one_block(&body[open..]) {
        return Err(format!(
            "nft body for {} has text after its table block",
            key.name
        ));
    }
    Ok(format!(
        "{}\n\tcomment \"{}\"\n{}",
        &body[..=open],
        comment_for(body),
        &body[open + 1..]
    ))
}

/// Whether `text` (starting at a `{`) is one balanced block followed only by blanks, so a body
/// cannot go on to change tables dvrmesh does not own. Quoted strings and `#` comments are
/// skipped.
fn is_one_block(text: &str) -> bool {
    let (mut depth, mut in_quote, mut in_comment) = (0usize, false, false);
    for (i, c) in text.char_indices() {
        match c {
            '\n' if in_comment => in_comment = false,
            _ if in_comment => {}
            '"' => in_quote = !in_quote,
            _ if in_quote => {}
            '#' => in_comment = true,
            '{' => depth += 1,
            '}' => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 {
                    return text[i + 1..].trim().is_empty();
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether `body` is in the planner's dialect, so the backend sends it as netlink messages
/// rather than through libnftables; the reason when it is not.
pub fn compiled_natively(body: &str) -> Result<(), String> {
    super::nft_text::compile(body, None).map(|_| ())
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
    use crate::Netns;

    #[test]
    fn digest_is_fnv1a64() {
        assert_eq!(digest(""), "cbf29ce484222325");
        assert_eq!(digest("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn comment_goes_inside_the_table_block() {
        let key = NftKey {
            ns: Netns::Host,
            family: NftFamily::Ip,
            name: "dvrmesh-x".into(),
        };
        let body = "table ip dvrmesh-x {\n\tchain c { }\n}";
        let present = || BTreeSet::from([(NftFamily::Ip, "dvrmesh-x".to_string())]);
        let text = batch(&[(&key, Some(body))], &mut present()).unwrap();
        assert!(
            text.starts_with("delete table ip dvrmesh-x\n"),
            "an existing table is replaced"
        );
        let fresh = batch(&[(&key, Some(body))], &mut BTreeSet::new()).unwrap();
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
        assert!(text.contains(&format!(
            "table ip dvrmesh-x {{\n\tcomment \"dvrmesh:{}\"\n",
            digest(body)
        )));
        assert!(batch(&[(&key, Some("table ip other { }"))], &mut present()).is_err());
        let smuggled = "table ip dvrmesh-x { chain c { } }\ndelete table ip filter";
        assert!(batch(&[(&key, Some(smuggled))], &mut present()).is_err());
        let quoted = "table ip dvrmesh-x { comment \"}\" # }\n chain c { } }\n";
        assert!(batch(&[(&key, Some(quoted))], &mut present()).is_ok());
        assert!(batch(
            &[(&key, Some("table ip dvrmesh-x { chain c {"))],
            &mut present()
        )
        .is_err());
        let foreign = NftKey {
            name: "filter".into(),
            ..key
        };
        assert!(batch(&[(&foreign, None)], &mut present()).is_err());
    }
}

//! What the commands print for people: tables for lists, `key: value` lines for objects, the
//! datapath plan and diff, SNAT status; and the JSON that `--json` prints instead.

use std::path::Path;

use dvrmesh_node::api::MemberInfo;
use mesh_proto::ObjectKind;
use serde_json::Value;

/// `println!` for text that may hold strings from other nodes: control characters (terminal
/// escape sequences among them) are printed escaped, so no peer can write to the terminal.
macro_rules! out {
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::output::printable(&format!($($arg)*)))
    };
}

/// `text` with every control character but newline and tab escaped (`\u{1b}`).
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Prints a result as pretty JSON.
pub(crate) fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(text) => println!("{text}"),
        Err(_) => println!("{v}"),
    }
}

/// Prints a configuration command's result for people: a table for lists, `key: value` lines for
/// one object.
pub(crate) fn print_config(v: &Value, listed: Option<ObjectKind>) {
    match (v, listed) {
        (Value::Array(items), Some(kind)) => print_list(items, kind),
        (Value::Object(map), _) => {
            for (k, val) in map {
                if k == "ha_status" {
                    continue;
                }
                out!("{k:<22} {}", scalar(val));
            }
            if let Some(ha) = map.get("ha_status").filter(|h| !h.is_null()) {
                print_ha(ha);
            }
        }
        (other, _) => out!(
            "{}",
            serde_json::to_string_pretty(other).unwrap_or_default()
        ),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_list(items: &[Value], kind: ObjectKind) {
    let cols: &[&str] = match kind {
        ObjectKind::Network => &["id", "name", "vni", "mtu"],
        ObjectKind::Subnet => &["id", "name", "network", "cidr", "gateway", "pool"],
        ObjectKind::ExternalNetwork => &["id", "name", "cidr", "gateway", "pool"],
        ObjectKind::Router => &["id", "name", "interfaces", "gateway"],
        ObjectKind::Port => &["id", "name", "network", "mac", "fixed_ips", "host"],
        ObjectKind::FloatingIp => &["id", "ip", "external_network", "port", "fixed_ip"],
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            cols.iter()
                .map(|c| scalar(i.get(*c).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let mut width: Vec<usize> = cols.iter().map(|c| c.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
    for r in rows {
        out!("{}", line(r));
    }
}

/// Prints a datapath plan for people: one line per object, grouped by kind.
pub(crate) fn print_plan(v: &Value) {
    let d = &v["desired"];
    let list = |k: &str| d[k].as_array().cloned().unwrap_or_default();
    for ns in list("namespaces") {
        out!("namespace {}", scalar(&ns));
    }
    for e in list("links") {
        out!(
            "link      {:<24} {:<16} {}",
            ns_of(&e[0][0]),
            scalar(&e[0][1]),
            compact(&e[1])
        );
    }
    for a in list("addrs") {
        out!(
            "addr      {:<24} {:<16} {}/{}",
            ns_of(&a["ns"]),
            scalar(&a["dev"]),
            scalar(&a["ip"]),
            a["prefix"]
        );
    }
    for r in list("routes") {
        let via = r["via"]
            .as_str()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        out!(
            "route     {:<24} table {:<10} {}{via} dev {}",
            ns_of(&r["ns"]),
            r["table"],
            scalar(&r["dst"]),
            scalar(&r["dev"])
        );
    }
    for r in list("rules") {
        out!(
            "rule      {:<24} {:<10} {} lookup {}",
            ns_of(&r["ns"]),
            r["priority"],
            compact(&r["selector"]),
            r["table"]
        );
    }
    for n in list("neighs") {
        out!(
            "neigh     {:<24} {:<16} {} lladdr {}",
            ns_of(&n["ns"]),
            scalar(&n["dev"]),
            scalar(&n["ip"]),
            scalar(&n["mac"])
        );
    }
    for f in list("fdb") {
        let mac: Vec<String> = f["mac"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| format!("{:02x}", b.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        out!(
            "fdb       {:<24} {:<16} {} {}",
            ns_of(&f["ns"]),
            scalar(&f["dev"]),
            mac.join(":"),
            compact(&f["target"])
        );
    }
    for t in list("nft") {
        out!(
            "nft       {:<24} {} {}",
            ns_of(&t[0]["ns"]),
            scalar(&t[0]["family"]),
            scalar(&t[0]["name"])
        );
    }
    for p in v["problems"].as_array().cloned().unwrap_or_default() {
        out!("problem   {}", scalar(&p));
    }
}

/// Prints pending datapath ops for people.
pub(crate) fn print_diff(v: &Value) {
    let ops = v["ops"].as_array().cloned().unwrap_or_default();
    if ops.is_empty() {
        out!("in sync: the next pass changes nothing");
    }
    for op in ops {
        out!("{}", compact(&op));
    }
}

fn ns_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.get("named").map(scalar).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The SNAT election part of `router show`.
fn print_ha(ha: &Value) {
    let get = |k: &str| scalar(ha.get(k).unwrap_or(&Value::Null));
    out!("snat epoch             {}", get("epoch"));
    out!(
        "snat preempt           {} (delay {} ms)",
        get("preempt"),
        get("preempt_delay_ms")
    );
    if let Some(t) = ha.get("last_transition").filter(|t| !t.is_null()) {
        let f = |k: &str| scalar(t.get(k).unwrap_or(&Value::Null));
        let ago = t
            .get("at_unix_ms")
            .and_then(Value::as_u64)
            .and_then(|at| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_millis() as u64;
                Some(format!(
                    "{:.1} s ago",
                    now.saturating_sub(at) as f64 / 1000.0
                ))
            })
            .unwrap_or_else(|| "-".into());
        out!(
            "last transition        {} -> {}, {ago}: {}",
            f("from"),
            f("to"),
            f("reason")
        );
    }
    out!("transitions seen here  {}", get("transitions"));
    if let Some(h) = ha.get("holddown_ms").filter(|h| !h.is_null()) {
        out!("preemption held down   {} ms more", scalar(h));
    }
    if let Some(s) = ha.get("suspicion").filter(|s| !s.is_null()) {
        let f = |k: &str| scalar(s.get(k).unwrap_or(&Value::Null));
        let loss = s
            .get("advert_loss_permille")
            .and_then(Value::as_u64)
            .map_or_else(|| "-".into(), |p| format!("{:.1} %", p as f64 / 10.0));
        out!(
            "holder declared dead   after {} ms of silence (its adverts lost here: {loss})",
            f("down_after_ms")
        );
    }
    out!("candidates:");
    for c in ha
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = |k: &str| scalar(c.get(k).unwrap_or(&Value::Null));
        out!(
            "  {:<20} priority {:<4} {}",
            f("node"),
            f("priority"),
            f("state")
        );
    }
}

/// The result of `agent drain` / `agent undrain`.
pub(crate) fn print_drain(v: &Value) {
    let draining = v.get("draining").and_then(Value::as_bool).unwrap_or(false);
    if !draining {
        out!("undrained: this node takes part in SNAT elections again");
        return;
    }
    let routers = v.get("routers").and_then(Value::as_array);
    match routers {
        Some(rs) if !rs.is_empty() => {
            for r in rs {
                out!(
                    "router {} -> {}",
                    scalar(r.get("router").unwrap_or(&Value::Null)),
                    scalar(r.get("holder").unwrap_or(&Value::Null))
                );
            }
        }
        _ => out!("this node held no SNAT router"),
    }
    let complete = v.get("complete").and_then(Value::as_bool).unwrap_or(true);
    out!(
        "drained{} in {} ms",
        if complete {
            ""
        } else {
            " (some routers found no backup)"
        },
        scalar(v.get("waited_ms").unwrap_or(&Value::Null))
    );
}

pub(crate) fn print_revoked(json: bool, r: &dvrmesh_node::mesh::pki::revoke::Revoked) {
    if json {
        print_json(&serde_json::to_value(r).unwrap_or_default());
        return;
    }
    if r.serials.is_empty() {
        out!("already revoked: nothing added");
    }
    for s in &r.serials {
        out!("revoked serial {s}");
    }
    out!(
        "wrote {} (number {}, {} revoked in all); copy it to every node's [tls] crl",
        r.crl.display(),
        r.crl_number,
        r.total
    );
}

pub(crate) fn print_issued(json: bool, issued: &[dvrmesh_node::mesh::pki::issued::Issued]) {
    if json {
        print_json(&serde_json::to_value(issued).unwrap_or_default());
        return;
    }
    let rows: Vec<[String; 5]> = issued
        .iter()
        .map(|i| {
            let state = match (i.revoked, i.expired) {
                (true, _) => "revoked",
                (false, true) => "expired",
                (false, false) => "valid",
            };
            [
                i.node.clone(),
                i.serial.clone(),
                i.not_after.clone(),
                state.to_string(),
                i.file.display().to_string(),
            ]
        })
        .collect();
    print_table(&["NODE", "SERIAL", "NOT AFTER", "STATE", "FILE"], &rows);
}

pub(crate) fn print_paths(json: bool, cert: &Path, key: &Path) {
    if json {
        out!(
            "{}",
            serde_json::json!({"cert": cert.display().to_string(), "key": key.display().to_string()})
        );
    } else {
        out!("wrote {}\nwrote {}", cert.display(), key.display());
    }
}

pub(crate) fn print_members(members: &[MemberInfo]) {
    let rows: Vec<[String; 6]> = members
        .iter()
        .map(|m| {
            [
                m.node_id.clone(),
                m.mode.clone(),
                m.tunnel_ip.clone(),
                m.state.clone(),
                m.snat_priority.to_string(),
                m.gossip_addr.clone(),
            ]
        })
        .collect();
    print_table(
        &["NODE", "MODE", "TUNNEL IP", "STATE", "PRIORITY", "GOSSIP"],
        &rows,
    );
}

pub(crate) fn print_status(v: &Value) {
    let get = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
    out!("node            {}", get("node_id").trim_matches('"'));
    out!("view generation {}", get("view_generation"));
    out!(
        "members         {} ({} alive)",
        get("members"),
        get("alive")
    );
    for section in ["transport", "trust"] {
        if let Some(t) = v.get(section).and_then(|t| t.as_object()) {
            for (k, val) in t {
                out!("{:<30} {val}", format!("{section}.{k}"));
            }
        }
    }
    if let Some(c) = v.pointer("/ha/counters").and_then(|t| t.as_object()) {
        for (k, val) in c {
            out!("{:<30} {val}", format!("ha.{k}"));
        }
    }
    for p in v["refused_values"].as_array().cloned().unwrap_or_default() {
        out!("refused   {}", scalar(&p));
    }
    for r in v["readdressed"].as_array().cloned().unwrap_or_default() {
        out!(
            "readdressed port {}: {} -> {} ({} kept it)",
            scalar(&r["port"]),
            scalar(&r["from"]),
            scalar(&r["to"]),
            scalar(&r["kept_by"])
        );
    }
}

pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut width: [usize; N] = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out!("{}", line(header.to_vec()));
    for r in rows {
        out!("{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// Prints `dvrmesh doctor`'s report: one line per check (verdict, id, what was found), the fix
/// under each check that is not ok, then the counts.
pub(crate) fn print_doctor(report: &dvrmesh_node::doctor::Report) {
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &report.checks {
        out!("[{:<4}] {:<width$}  {}", c.verdict.as_str(), c.id, c.detail);
        if let Some(fix) = &c.fix {
            out!("       {:<width$}  fix: {fix}", "");
        }
    }
    let n = &report.counts;
    out!(
        "{}: {} ok, {} warn, {} fail",
        report.verdict.as_str(),
        n.ok,
        n.warn,
        n.fail
    );
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_from_peers_are_printed_escaped() {
        assert_eq!(printable("n1 alive\n"), "n1 alive\n");
        let hostile = "n1\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}x";
        let shown = printable(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\u{1b}"), "{shown:?}");
    }
}

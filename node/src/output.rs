//! Human-readable output of configuration commands.

use mesh_proto::ObjectKind;
use serde_json::Value;

/// Prints a configuration command's result for people: a table for lists, `key: value` lines for
/// one object.
pub(crate) fn print_config(v: &Value, listed: Option<ObjectKind>) {
    match (v, listed) {
        (Value::Array(items), Some(kind)) => print_list(items, kind),
        (Value::Object(map), _) => {
            for (k, val) in map {
                println!("{k:<22} {}", scalar(val));
            }
        }
        (other, _) => println!(
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
    println!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

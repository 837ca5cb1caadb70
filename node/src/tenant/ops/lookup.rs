//! Finding objects by name or id, and parsing the strings requests carry.

use std::net::Ipv4Addr;

use mesh_proto::{
    ExternalNetwork, FloatingIp, Ipv4Cidr, Name, Network, ObjectId, ObjectKind, Port, Router,
    Subnet, TenantObject,
};

use super::TenantState;

pub(super) fn parse_name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| e.to_string())
}

/// Parses `500ms`, `5s`, `2m`, `1h` or a bare number of milliseconds, up to one hour.
pub(super) fn parse_duration_ms(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with ms, s or m (e.g. 500ms, 5s)".to_string())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => return Err(format!("unknown unit {other:?}; use ms, s, m or h")),
    };
    ms.filter(|ms| *ms <= u64::from(mesh_proto::MAX_PREEMPT_DELAY_MS))
        .map(|ms| ms as u32)
        .ok_or_else(|| "more than one hour".into())
}

pub(super) fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("invalid {what}: {s:?} is not an IPv4 address"))
}

pub(super) fn unique_name(
    state: &TenantState,
    kind: ObjectKind,
    name: &Name,
) -> Result<(), String> {
    if state.objects(kind).any(|o| name_of(o) == name.as_str()) {
        return Err(format!("a {} named {name} already exists", kind.noun()));
    }
    Ok(())
}

fn name_of(o: &TenantObject) -> String {
    match (o.name(), o) {
        (Some(name), _) => name.to_string(),
        (None, TenantObject::FloatingIp(x)) => x.ip.to_string(),
        (None, _) => String::new(),
    }
}

/// Finds an object by id, or by its unique name (a floating IP by its address).
pub fn resolve<'a>(
    state: &'a TenantState,
    kind: ObjectKind,
    reference: &str,
) -> Result<&'a TenantObject, String> {
    if let Ok(id) = ObjectId::new(reference) {
        if let Some(o) = state.get(kind, &id) {
            return Ok(o);
        }
    }
    let matches: Vec<&TenantObject> = state
        .objects(kind)
        .filter(|o| name_of(o) == reference)
        .collect();
    match matches.as_slice() {
        [] => Err(format!("no {} with name or id {reference:?}", kind.noun())),
        [one] => Ok(one),
        many => Err(format!(
            "{} {}s are named {reference:?}; use an id: {}",
            many.len(),
            kind.noun(),
            many.iter()
                .map(|o| o.id().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

macro_rules! typed_ref {
    ($fn:ident, $kind:ident, $variant:ident, $t:ty) => {
        pub(super) fn $fn<'a>(state: &'a TenantState, r: &str) -> Result<&'a $t, String> {
            match resolve(state, ObjectKind::$kind, r)? {
                TenantObject::$variant(x) => Ok(x),
                _ => Err(format!("{r:?} is not a {}", ObjectKind::$kind.noun())),
            }
        }
    };
}
typed_ref!(network_ref, Network, Network, Network);
typed_ref!(subnet_ref, Subnet, Subnet, Subnet);
typed_ref!(
    extnet_ref,
    ExternalNetwork,
    ExternalNetwork,
    ExternalNetwork
);
typed_ref!(router_ref, Router, Router, Router);
typed_ref!(port_ref, Port, Port, Port);
typed_ref!(fip_ref, FloatingIp, FloatingIp, FloatingIp);

/// An IPv4 prefix.
pub(super) fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    s.parse().map_err(|e: mesh_proto::Error| e.to_string())
}

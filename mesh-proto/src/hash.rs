//! The non-cryptographic hashes dvrmesh derives names, MACs and rankings from (FNV-1a).
//!
//! Their outputs are part of the cluster's behaviour — a node's DVR MAC, a subnet's gateway MAC,
//! an object's replicas, a table's digest — so every crate takes them from here and they never
//! change. Several parts are hashed as one byte string with `0xff` between them, a byte that
//! never occurs in the UTF-8 text hashed.

const OFFSET_32: u32 = 0x811c_9dc5;
const PRIME_32: u32 = 0x0100_0193;
const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0000_0100_0000_01b3;
/// Put between parts.
const SEPARATOR: u8 = 0xff;

/// The bytes of `parts` with [`SEPARATOR`] between them.
fn joined<'a>(parts: &'a [&'a [u8]]) -> impl Iterator<Item = u8> + 'a {
    parts.iter().enumerate().flat_map(|(i, p)| {
        let sep = (i > 0).then_some(SEPARATOR);
        sep.into_iter().chain(p.iter().copied())
    })
}

/// 32-bit FNV-1a of `parts`.
pub fn fnv1a32(parts: &[&[u8]]) -> u32 {
    joined(parts).fold(OFFSET_32, |h, b| (h ^ u32::from(b)).wrapping_mul(PRIME_32))
}

/// 64-bit FNV-1a of `parts`.
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    joined(parts).fold(OFFSET_64, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME_64))
}

/// The low 24 bits of [`fnv1a32`], big-endian: the suffix of a MAC derived from an id.
pub fn fnv24(parts: &[&[u8]]) -> [u8; 3] {
    let [_, a, b, c] = fnv1a32(parts).to_be_bytes();
    [a, b, c]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        assert_eq!(fnv1a32(&[b""]), 0x811c_9dc5);
        assert_eq!(fnv1a32(&[b"a"]), 0xe40c_292c);
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn parts_are_separated_so_their_boundary_counts() {
        assert_eq!(fnv1a32(&[b"ab", b"c"]), fnv1a32(&[b"ab\xffc"]));
        assert_ne!(fnv1a32(&[b"ab", b"c"]), fnv1a32(&[b"a", b"bc"]));
        assert_eq!(fnv1a64(&[b"x", b"y"]), fnv1a64(&[b"x\xffy"]));
    }
}

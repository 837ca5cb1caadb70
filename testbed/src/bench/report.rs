//! BENCHMARKS.md holds one section per benchmark binary; each binary rewrites only its own.

use std::path::Path;

use anyhow::{Context, Result};

const HEADER: &str = "# Benchmarks\n";

/// Replaces the section `name` of the report at `path` with `body` (kept between
/// `<!-- begin:name -->` / `<!-- end:name -->` markers), or appends it; other sections stay.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let (begin, end) = (
        format!("<!-- begin:{name} -->\n"),
        format!("<!-- end:{name} -->\n"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &old[..b], &old[e + end.len()..])
        }
        _ if old.trim().is_empty() => format!("{HEADER}\n{block}"),
        _ => format!("{}\n{block}", old.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("B.md");
        write_section(&p, "a", "## A\none").unwrap();
        write_section(&p, "b", "## B\ntwo").unwrap();
        write_section(&p, "a", "## A\nthree").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.starts_with("# Benchmarks\n"));
        assert!(s.contains("three") && s.contains("two") && !s.contains("one"));
        assert!(s.find("## A").unwrap() < s.find("## B").unwrap());
    }
}

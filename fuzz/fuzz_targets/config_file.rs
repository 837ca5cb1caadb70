//! The agent's configuration file: `Config::parse` (TOML, then every key checked into validated
//! types, every problem reported), as `Config::load` runs it on the file's text.
//!
//! Invariants: nothing panics; a refusal names at least one problem.
#![no_main]

use std::path::Path;

use dvrmesh_node::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // `Config::load` refuses a file that is not UTF-8 before parsing
    };
    if let Err(problems) = Config::parse(text, Path::new("/etc/dvrmesh")) {
        assert!(!problems.is_empty(), "a refusal without a reason");
    }
});

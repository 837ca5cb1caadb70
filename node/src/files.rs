//! Files under `data_dir`: replaced atomically, read with a size limit.

use std::io::Write;
use std::path::Path;

use crate::Error;

/// Replaces `path` with `data` so that a reader, and the file after a crash, hold the old or the
/// new content, never a mix: the data goes to a uniquely named temporary file in the same
/// directory (so two writers never share one), is synced, renamed over `path`, and the directory
/// is synced so the rename itself survives a power loss. The file is readable by its owner only.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("writing", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("renaming a temporary file onto", path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing the directory", dir, e))
}

/// The content of `path` if it exists (`None` if it does not), refusing a file larger than `max`
/// bytes before reading it.
pub fn read_limited(what: &'static str, path: &Path, max: u64) -> Result<Option<Vec<u8>>, Error> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(what, path, e)),
    };
    let mut data = Vec::new();
    // One byte more than allowed tells a file at the limit from a larger one.
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(what, path, e))?;
    if data.len() as u64 > max {
        return Err(Error::TooLarge {
            what,
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old content that is longer").expect("first write");
        write_atomic(&path, b"new").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
    }

    #[test]
    fn an_atomic_write_into_a_missing_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing/state.json");
        let err = write_atomic(&path, b"x").expect_err("no directory");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn limited_reads_tell_missing_from_too_large() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(read_limited("f", &path, 4).expect("missing").is_none());
        std::fs::write(&path, b"1234").expect("write");
        assert_eq!(
            read_limited("f", &path, 4).expect("at the limit"),
            Some(b"1234".to_vec())
        );
        std::fs::write(&path, b"12345").expect("write");
        let err = read_limited("f", &path, 4).expect_err("over the limit");
        assert!(matches!(err, Error::TooLarge { max: 4, .. }), "{err}");
    }
}

//! In-process nftables through `libnftables.so.1` (the library behind the `nft` binary, shipped
//! with it by the `nftables` package), loaded at run time.
//!
//! Same atomic batch semantics as `nft -f -`, without a fork and exec per namespace: a context is
//! created on the thread that has entered the namespace, so its netlink socket belongs to that
//! namespace. When the library cannot be loaded the caller falls back to the binary.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use libloading::{Library, Symbol};

type CtxNew = unsafe extern "C" fn(flags: u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(ctx: *mut c_void);
type BufferFn = unsafe extern "C" fn(ctx: *mut c_void) -> c_int;
type GetBuffer = unsafe extern "C" fn(ctx: *mut c_void) -> *const c_char;
type RunBuffer = unsafe extern "C" fn(ctx: *mut c_void, buf: *const c_char) -> c_int;
type SetFlags = unsafe extern "C" fn(ctx: *mut c_void, flags: c_uint);

/// The loaded library, or why it could not be loaded.
static LIB: OnceLock<Result<Library, String>> = OnceLock::new();
/// libnftables keeps some global parser state; one batch at a time is plenty.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn library() -> Result<&'static Library, String> {
    LIB.get_or_init(|| {
        // SAFETY: loading a system library whose initialisers have no preconditions.
        unsafe { Library::new("libnftables.so.1") }.map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Whether in-process nftables is available.
pub(crate) fn available() -> bool {
    library().is_ok()
}

/// Runs one nft script (one atomic transaction) in the calling thread's network namespace.
/// `Ok(Err(message))` is nft refusing the batch; `Err` is the library being unusable.
pub(crate) fn run(text: &str) -> Result<Result<(), String>, String> {
    let lib = library()?;
    let script = CString::new(text).map_err(|_| "nft script contains a NUL byte".to_string())?;
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the symbols are the documented libnftables API (nftables 0.9+) with these exact
    // C signatures; the context is created, used and freed on this thread only, and the error
    // buffer is read before the context is freed.
    unsafe {
        let sym = |name: &[u8]| -> Result<*const c_void, String> {
            let s: Symbol<*const c_void> = lib.get(name).map_err(|e| e.to_string())?;
            Ok(*s)
        };
        let ctx_new: CtxNew = std::mem::transmute(sym(b"nft_ctx_new\0")?);
        let ctx_free: CtxFree = std::mem::transmute(sym(b"nft_ctx_free\0")?);
        let buffer_error: BufferFn = std::mem::transmute(sym(b"nft_ctx_buffer_error\0")?);
        let buffer_output: BufferFn = std::mem::transmute(sym(b"nft_ctx_buffer_output\0")?);
        let get_error: GetBuffer = std::mem::transmute(sym(b"nft_ctx_get_error_buffer\0")?);
        let run_buffer: RunBuffer = std::mem::transmute(sym(b"nft_run_cmd_from_buffer\0")?);
        let set_flags: SetFlags = std::mem::transmute(sym(b"nft_ctx_output_set_flags\0")?);
        let ctx = ctx_new(0);
        if ctx.is_null() {
            return Err("nft_ctx_new failed".into());
        }
        set_flags(ctx, 0);
        buffer_output(ctx);
        buffer_error(ctx);
        let rc = run_buffer(ctx, script.as_ptr());
        let result = if rc == 0 {
            Ok(())
        } else {
            let err = get_error(ctx);
            let msg = if err.is_null() {
                String::new()
            } else {
                CStr::from_ptr(err).to_string_lossy().trim().to_string()
            };
            Err(if msg.is_empty() {
                format!("nft returned {rc}")
            } else {
                msg
            })
        };
        ctx_free(ctx);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::test_support::in_fresh_netns;

    #[test]
    fn loads_runs_and_reports_errors_in_process() {
        assert!(
            available(),
            "libnftables.so.1 must load (it ships with the nftables package)"
        );
        let (ok, bad, took) = in_fresh_netns(|| {
            let start = std::time::Instant::now();
            let ok = run("table ip dvrmesh_t {\n chain c { type filter hook input priority 0; policy accept; }\n}\n");
            let took = start.elapsed();
            let bad = run("table ip dvrmesh_t { chain c { nonsense } }\n");
            (ok, bad, took)
        });
        assert_eq!(ok, Ok(Ok(())));
        assert!(
            matches!(bad, Ok(Err(ref m)) if m.contains("syntax error")),
            "{bad:?}"
        );
        eprintln!("in-process nft batch: {took:?}");
    }
}

//! Where the daemon's socket lives, and who the current user is.
//!
//! The socket is `$TOKENWARD_SOCKET` when set, else
//! `$XDG_RUNTIME_DIR/tokenward/daemon.sock`, else
//! `/tmp/tokenward-$UID/daemon.sock`. Its directory must be private to the
//! user (the daemon checks; see `daemon::socket`).

use std::path::PathBuf;

/// The socket path clients connect to and the daemon listens on.
pub fn socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TOKENWARD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(runtime).join("tokenward").join("daemon.sock");
    }
    std::env::temp_dir()
        .join(format!("tokenward-{}", current_uid()))
        .join("daemon.sock")
}

/// The effective uid of this process (0 on platforms without uids).
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and
    // cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
pub fn current_uid() -> u32 {
    0
}

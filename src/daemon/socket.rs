//! The daemon's listening socket and who may talk to it.
//!
//! The socket's directory is created 0700; the daemon refuses to run when
//! the directory is owned by someone else or open to group or others, since
//! anyone who can reach the socket could ask for tokens. A stale socket (a
//! file nobody listens on) is removed; a live one means another daemon runs.
//! Each accepted connection's peer uid is checked as well, so the check holds
//! even if the permissions are later opened up.

use crate::atomic::create_private_dir;
use anyhow::{bail, Context, Result};
use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use std::path::Path;

/// Makes sure `dir` exists, belongs to us and is private.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    create_private_dir(dir)
        .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
        let me = crate::paths::current_uid();
        if meta.uid() != me {
            bail!(
                "refusing to start: the socket directory {} belongs to uid {}, not to you (uid {me})",
                dir.display(),
                meta.uid()
            );
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "refusing to start: the socket directory {} is accessible by group or others (mode {mode:o}); run 'chmod 700 {}'",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Takes `daemon.lock` in `dir` (the data dir) for the rest of the process's
/// life. Without it, two daemons started at once (two helpers autostarting
/// together) both find no one listening, both reclaim the socket, and both
/// write the index, each without the other's tokens: tests/faults.rs lost
/// acknowledged adds that way. Taken before the index is read, so that a
/// daemon never serves an index another one may still change. The kernel drops the lock when the process
/// dies, however it dies, so a stale lock file never blocks a start.
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn hold_daemon_lock(dir: &Path, socket: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = dir.join("daemon.lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A daemon that was just told to stop has closed its socket but may
    // still be exiting (and holding the lock): give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let locked = loop {
        // SAFETY: flock takes a descriptor that `file` owns and keeps open
        // for the duration of the call, and touches no memory of this process.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if locked || std::time::Instant::now() >= deadline {
            break locked;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if !locked {
        bail!(
            "another tokenward daemon is already listening on {} (or starting: it holds {})",
            socket.display(),
            path.display()
        );
    }
    // Kept open, never closed: closing would release the lock.
    std::mem::forget(file);
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn hold_daemon_lock(_dir: &Path, _socket: &Path) -> Result<()> {
    Ok(())
}

/// Binds the socket at `path`, reclaiming a stale one, or takes the one
/// systemd passed (socket activation, the `bool`).
pub fn bind(path: &Path) -> Result<(Listener, bool)> {
    let dir = path
        .parent()
        .with_context(|| format!("the socket path {} has no directory", path.display()))?;
    check_private_dir(dir)?;
    if let Some(listener) = activated_listener()? {
        return Ok((listener, true));
    }
    if path.exists() {
        if crate::client::Client::connect(path).is_ok() {
            bail!(
                "another tokenward daemon is already listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let name = path
        .to_fs_name::<GenericFilePath>()
        .with_context(|| format!("bad socket path {}", path.display()))?;
    let listener = ListenerOptions::new()
        .name(name)
        .reclaim_name(true)
        .create_tokio()
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    Ok((listener, false))
}

/// systemd's socket activation: when `LISTEN_PID` names this process and
/// `LISTEN_FDS` is at least 1, the listening socket is fd 3. systemd owns
/// the socket file, so it is not removed at exit.
#[cfg(unix)]
#[allow(unsafe_code)]
fn activated_listener() -> Result<Option<Listener>> {
    use interprocess::os::unix::uds_local_socket::tokio::Listener as UdsListener;
    use std::os::fd::{FromRawFd, OwnedFd};
    const SD_LISTEN_FDS_START: i32 = 3;
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !ours || count < 1 {
        return Ok(None);
    }
    // SAFETY: LISTEN_PID says systemd passed these descriptors to this very
    // process, starting at fd 3; nothing else in the process has taken
    // ownership of fd 3, and we take it exactly once (here, at start-up).
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    let listener =
        UdsListener::try_from(fd).context("the socket passed by systemd is not usable")?;
    tracing::info!("using the socket passed by systemd");
    Ok(Some(listener.into()))
}

#[cfg(not(unix))]
fn activated_listener() -> Result<Option<Listener>> {
    Ok(None)
}

/// Whether the connection comes from our own uid. Unknown means no.
pub fn peer_is_owner(stream: &Stream) -> Result<(), String> {
    #[cfg(unix)]
    {
        let me = crate::paths::current_uid();
        match stream.peer_creds().map(|c| c.euid()) {
            Ok(Some(uid)) if uid == me => Ok(()),
            Ok(Some(uid)) => Err(format!("uid {uid}")),
            Ok(None) => Err("a peer whose uid is unknown".to_owned()),
            Err(e) => Err(format!("a peer whose credentials cannot be read ({e})")),
        }
    }
    #[cfg(not(unix))]
    {
        // Named pipes are created with a default DACL for the owner only.
        let _ = stream;
        Ok(())
    }
}

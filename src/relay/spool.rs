//! Spooling a chunked upload to disk after the upstream answered 411
//! Length Required, so that it can be sent again with a Content-Length.
//!
//! The file is created 0600 with `create_new` (no symlink games in a shared
//! temp dir) and, on Unix, unlinked at once: it lives only as long as the
//! open handle, so it disappears even if the relay is killed mid-way.

use super::body::Unsent;
use http_body_util::BodyExt;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Removes the spool file when dropped, where it could not be unlinked
/// while open (Windows).
pub struct SpoolGuard {
    path: Option<PathBuf>,
}

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why spooling failed; the relay answers `status` with `message`.
pub struct SpoolError {
    pub status: hyper::StatusCode,
    pub message: String,
}

fn create() -> std::io::Result<(File, SpoolGuard)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "tokenward-spool-{}-{}-{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(file) => {
                #[cfg(unix)]
                {
                    std::fs::remove_file(&path)?;
                    return Ok((file, SpoolGuard { path: None }));
                }
                #[cfg(not(unix))]
                return Ok((file, SpoolGuard { path: Some(path) }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes the whole body (what was already sent, then the rest from the
/// client) to a new spool file, at most `limit` bytes, and rewinds it.
pub async fn spool(
    unsent: Unsent,
    limit: u64,
) -> Result<(tokio::fs::File, u64, SpoolGuard), SpoolError> {
    let io_error = |e: std::io::Error| SpoolError {
        status: hyper::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("cannot spool the body to resend it with a length: {e}"),
    };
    let too_big = || {
        SpoolError {
        status: hyper::StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "the upstream wants a Content-Length and the chunked body is larger than the spool limit ({limit} bytes)"
        ),
    }
    };
    let (file, guard) = tokio::task::spawn_blocking(create)
        .await
        .map_err(|e| io_error(std::io::Error::other(e)))?
        .map_err(io_error)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut total: u64 = 0;
    for chunk in unsent.prefix {
        total += chunk.len() as u64;
        if total > limit {
            return Err(too_big());
        }
        file.write_all(&chunk).await.map_err(io_error)?;
    }
    if let Some(mut rest) = unsent.rest {
        while let Some(frame) = rest.frame().await {
            let frame = frame.map_err(|e| SpoolError {
                status: hyper::StatusCode::BAD_REQUEST,
                message: format!("the client's body broke off: {e}"),
            })?;
            // Trailers cannot be sent with a Content-Length body; git and hg
            // never send any.
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                if total > limit {
                    return Err(too_big());
                }
                file.write_all(&data).await.map_err(io_error)?;
            }
        }
    }
    file.flush().await.map_err(io_error)?;
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(io_error)?;
    Ok((file, total, guard))
}

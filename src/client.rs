//! A blocking client for the daemon's socket, shared by the CLI and the git
//! helper. It holds no runtime and starts no threads, so the helper stays
//! small and quick to start.

use crate::protocol::{encode_line, Request, RequestEnvelope, Response, MAX_LINE};
use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a client waits for one answer before giving up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the daemon failed. The messages are one line and never
/// contain a secret.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens on the socket.
    NotRunning(PathBuf),
    Io(std::io::Error),
    /// The daemon answered something that is not a response.
    BadAnswer,
    /// The daemon answered with an error.
    Daemon(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(path) => write!(
                f,
                "the tokenward daemon is not running (no socket at {}); start it with 'tokenward start'",
                path.display()
            ),
            ClientError::Io(e) => write!(f, "talking to the tokenward daemon failed: {e}"),
            ClientError::BadAnswer => f.write_str("the tokenward daemon gave an unreadable answer"),
            ClientError::Daemon(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ClientError {}

/// One connection to the daemon; it may carry many calls.
pub struct Client {
    stream: BufReader<Stream>,
}

impl Client {
    /// Connects to the daemon at `path`.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(ClientError::Io)?;
        let stream = Stream::connect(name).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(path.to_owned())
            }
            _ => ClientError::Io(e),
        })?;
        stream
            .set_recv_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| stream.set_send_timeout(Some(ANSWER_TIMEOUT)))
            .map_err(ClientError::Io)?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    /// Connects, starting the daemon first when nothing listens and
    /// `autostart` allows it. `daemon_program` is the `tokenward` binary.
    pub fn connect_or_start(path: &Path, daemon_program: &Path) -> Result<Client, ClientError> {
        match Client::connect(path) {
            Err(ClientError::NotRunning(_)) => {
                start_daemon(daemon_program)?;
                wait_for_socket(path, Duration::from_secs(5))
            }
            other => other,
        }
    }

    /// Sends one request and reads its response. A response with `ok:false`
    /// becomes [`ClientError::Daemon`].
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let line = encode_line(&RequestEnvelope::new(request));
        self.stream
            .get_mut()
            .write_all(&line)
            .map_err(ClientError::Io)?;
        let mut answer = Vec::with_capacity(256);
        let read = (&mut self.stream)
            .take(MAX_LINE as u64 * 64)
            .read_until(b'\n', &mut answer)
            .map_err(ClientError::Io)?;
        if read == 0 || answer.last() != Some(&b'\n') {
            return Err(ClientError::BadAnswer);
        }
        let response: Response =
            serde_json::from_slice(&answer).map_err(|_| ClientError::BadAnswer)?;
        zero(&mut answer);
        if response.ok {
            Ok(response)
        } else {
            Err(ClientError::Daemon(response.error.unwrap_or_else(|| {
                "the daemon refused the request".to_owned()
            })))
        }
    }
}

/// The answer line may hold a secret; wipe it before the buffer is freed.
fn zero(buffer: &mut [u8]) {
    use zeroize::Zeroize;
    buffer.zeroize();
}

/// Starts `program daemon` detached from this process's terminal and
/// process group, its output discarded (the daemon logs to its own file).
pub fn start_daemon(program: &Path) -> Result<(), ClientError> {
    let mut command = Command::new(program);
    command
        .arg("daemon")
        .arg("--detached")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    command.spawn().map(drop).map_err(|e| {
        ClientError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot start {}: {e}", program.display()),
        ))
    })
}

/// Polls until the daemon answers on `path` or `limit` passes.
pub fn wait_for_socket(path: &Path, limit: Duration) -> Result<Client, ClientError> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        match Client::connect(path) {
            Ok(client) => return Ok(client),
            Err(ClientError::NotRunning(_)) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

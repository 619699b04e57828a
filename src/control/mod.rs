//! The control socket (`[server] control = "PATH"`): a Unix stream socket that
//! `zonefwd ctl` talks to, one JSON object per line each way (`commands`).
//!
//! Who may talk: root, the socket's owner, or a member of its group as the peer's
//! credentials say (SO_PEERCRED, read when the connection is accepted); the file is
//! mode 0660. Others get one error line, the connection is closed, and they are
//! counted (`zonefwd_control_refused_total`). The server never waits on a client: a
//! connection that sends nothing for `IDLE`, or a line over `MAX_LINE`, is closed, at
//! most `MAX_CONNECTIONS` are served at once, and serving DNS does not share a task
//! or a lock with any of it.

mod commands;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};

use crate::handler::ServerState;
use crate::listen::Current;
use crate::reloads::ReloadRequest;

/// A client that sends nothing for this long is disconnected.
pub const IDLE: Duration = Duration::from_secs(5);
/// The longest request line taken.
pub const MAX_LINE: usize = 64 * 1024;
/// Control connections served at once; more wait for the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;

/// The configuration in force as the control socket reports it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    pub at: SystemTime,
}

/// What the commands reach: the current handler, what outlives configurations, the
/// run loop's reload channel, and which file is in force since when.
#[derive(Clone)]
pub struct ControlContext {
    pub current: Current,
    pub state: ServerState,
    pub reload: mpsc::UnboundedSender<ReloadRequest>,
    pub loaded: Arc<Mutex<Loaded>>,
}

/// Accepts control connections until the server stops.
pub async fn serve(listener: std::os::unix::net::UnixListener, path: PathBuf, cx: ControlContext) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the control socket");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let life = cx.state.life.clone();
    loop {
        let stream = tokio::select! {
            _ = life.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (cx, path) = (cx.clone(), path.clone());
        life.tasks.spawn(async move {
            connection(stream, &path, &cx).await;
            drop(slot);
        });
    }
    let _ = std::fs::remove_file(&path);
}

/// Root, the socket file's owner, or its group.
fn permitted(stream: &UnixStream, path: &Path) -> bool {
    let (Ok(peer), Ok(meta)) = (stream.peer_cred(), std::fs::metadata(path)) else {
        return false;
    };
    peer.uid() == 0 || peer.uid() == meta.uid() || peer.gid() == meta.gid()
}

/// One control connection: requests answered in order until the client closes, goes
/// quiet for `IDLE`, sends a line over `MAX_LINE`, or the server stops.
async fn connection(stream: UnixStream, path: &Path, cx: &ControlContext) {
    let allowed = permitted(&stream, path);
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let (rd, mut wr) = stream.into_split();
    if !allowed {
        cx.state
            .metrics
            .control_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            ?uid,
            "refusing a control client that is not root, the socket's owner or in its group"
        );
        let _ = write_line(&mut wr, &commands::error("permission denied")).await;
        return;
    }
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut rd).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = cx.state.life.shutdown.cancelled() => return,
            r = tokio::time::timeout(IDLE, limited.read_until(b'\n', &mut line)) => r,
        };
        match read {
            Err(_) => {
                let _ = write_line(&mut wr, &commands::error("idle for 5s: closing")).await;
                return;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if !line.ends_with(b"\n") && line.len() > MAX_LINE => {
                let _ = write_line(
                    &mut wr,
                    &commands::error("request line over 64 KiB: closing"),
                )
                .await;
                return;
            }
            Ok(Ok(_)) => {}
        }
        let answer = commands::respond(&line, cx).await;
        if write_line(&mut wr, &answer).await.is_err() {
            return;
        }
    }
}

async fn write_line(
    wr: &mut tokio::net::unix::OwnedWriteHalf,
    value: &serde_json::Value,
) -> io::Result<()> {
    let mut text = value.to_string();
    text.push('\n');
    tokio::time::timeout(IDLE, wr.write_all(text.as_bytes()))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

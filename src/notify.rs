//! systemd's service notification protocol (sd_notify(3)), spoken over the datagram
//! socket named by `$NOTIFY_SOCKET`: READY=1 once the listeners serve, RELOADING=1 and
//! READY=1 around a reload, STOPPING=1 on the way out, and WATCHDOG=1 pings while
//! every UDP serving loop is alive. Without `$NOTIFY_SOCKET` it does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            let s = v.to_string_lossy().into_owned();
            match s.strip_prefix('@') {
                Some(name) if !name.is_empty() => Some(Target::Abstract(name.as_bytes().to_vec())),
                Some(_) => None,
                None if s.starts_with('/') => Some(Target::Path(s.into())),
                None => None,
            }
        });
        Notifier { target }
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification; failures are logged, never fatal: systemd may be gone.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, state = state.lines().next().unwrap_or(""), "sd_notify failed");
        }
    }

    fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p)?,
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)?
            }
        };
        Ok(())
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` stamp systemd asks for (systemd.service,
    /// Type=notify-reload); harmless with Type=notify.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process when
/// `$WATCHDOG_PID` says so).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// How often an idle serving loop still reports that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The last time each serving loop went round, so the watchdog pings only while all of
/// them do: a stuck loop stops the pings and systemd restarts the service.
#[derive(Debug)]
pub struct Heartbeats {
    start: Instant,
    loops: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats {
            start: Instant::now(),
            loops: Mutex::new(Vec::new()),
        }
    }
}

/// One serving loop's heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Beat {
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Heartbeats {
    pub fn register(&self) -> Beat {
        let last_ms = Arc::new(AtomicU64::new(self.start.elapsed().as_millis() as u64));
        self.loops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&last_ms));
        Beat {
            start: self.start,
            last_ms,
        }
    }

    /// How long ago the loop that went round least recently did.
    pub fn oldest(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        let loops = self.loops.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = loops
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .min()
            .unwrap_or(now);
        Duration::from_millis(now.saturating_sub(oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_report_the_slowest_loop() {
        let h = Heartbeats::default();
        let a = h.register();
        let _b = h.register();
        std::thread::sleep(Duration::from_millis(30));
        a.beat();
        assert!(h.oldest() >= Duration::from_millis(30), "b has not beaten");
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Target::Path(path)),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        n.reloading();
        let len = rx.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..len])
            .unwrap()
            .starts_with("RELOADING=1\nMONOTONIC_USEC="));
        assert!(!Notifier::default().is_enabled());
    }
}

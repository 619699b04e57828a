//! Under systemd, log records reach the journal with their priority: the binary, run
//! with stderr as the journal stream `$JOURNAL_STREAM` names, sends each record to the
//! journal socket (here a socket of the test's, bind-mounted over
//! /run/systemd/journal in a mount namespace of its own), warn as PRIORITY=4 and error
//! as PRIORITY=3. With a `$JOURNAL_STREAM` that is not its stderr, it logs to stderr.
mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::is_root;

const BIN: &str = env!("CARGO_BIN_EXE_zonefwd");

/// One journal entry in the native protocol (systemd's "Native Journal Protocol"):
/// `KEY=value\n`, or `KEY\n`, the value's length as 64-bit little endian, the value
/// and `\n`.
fn fields(mut datagram: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(eol) = datagram.iter().position(|&b| b == b'\n') {
        let line = &datagram[..eol];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            datagram = &datagram[eol + 1..];
            continue;
        }
        let rest = &datagram[eol + 1..];
        let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
        out.push((
            String::from_utf8_lossy(line).into_owned(),
            String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
        ));
        datagram = &rest[8 + len + 1..];
    }
    out
}

/// Waits for an entry whose MESSAGE contains `what`; its PRIORITY.
fn priority_of(journal: &UnixDatagram, what: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let Ok(n) = journal.recv(&mut buf) else {
            continue;
        };
        let entry = fields(&buf[..n]);
        let get = |k: &str| {
            entry
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let message = get("MESSAGE").unwrap_or_default();
        seen.push(message.clone());
        if message.contains(what) {
            assert_eq!(get("SYSLOG_IDENTIFIER").as_deref(), Some("zonefwd"));
            return get("PRIORITY").unwrap_or_default();
        }
    }
    panic!("no journal entry with {what:?}; saw {seen:#?}");
}

/// The server, killed when the test ends, however it ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn under_systemd_each_record_reaches_the_journal_with_its_priority() {
    if !is_root() || Command::new("unshare").arg("--version").output().is_err() {
        println!("SKIPPED journal: needs root and unshare for a mount namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = UnixDatagram::bind(dir.path().join("socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.path().join("z.toml");
    // acl.allow admitting everyone is a warning at start.
    let valid = "[server]\nlisten = [\"127.0.0.1:0\"]\nloop_detection = false\n[acl]\nallow = [\"0.0.0.0/0\"]\n\
                 [[route]]\nname = \"all\"\nzones = [\".\"]\nupstreams = [\"127.0.0.1:9\"]\n";
    std::fs::write(&cfg, valid).unwrap();
    // stderr is a pipe whose device and inode $JOURNAL_STREAM names, as systemd does.
    let (stderr_read, stderr_write) = nix::unistd::pipe().unwrap();
    let stream = std::fs::metadata(format!("/proc/self/fd/{}", stderr_write.as_raw_fd())).unwrap();
    let script = "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal \
                  && mount --bind \"$1\" /run/systemd/journal && exec \"$2\" run -c \"$3\"";
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(dir.path())
        .arg(BIN)
        .arg(&cfg)
        .env(
            "JOURNAL_STREAM",
            format!("{}:{}", stream.dev(), stream.ino()),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr_write))
        .spawn()
        .unwrap();
    let mut child = Stopped(child);
    let mut seen = Vec::new();
    let started = priority_of(&journal, "zonefwd starting", &mut seen);
    let warned = priority_of(&journal, "acl.allow admits every address", &mut seen);
    std::fs::write(
        &cfg,
        valid.replace("[[route]]", "[[route]]\ntimeout = \"5 parsecs\""),
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status();
    let refused = priority_of(&journal, "reload refused", &mut seen);
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = child.0.wait();
    // (record, syslog priority: 6 info, 4 warning, 3 error)
    assert_eq!(
        [started.as_str(), warned.as_str(), refused.as_str()],
        ["6", "4", "3"]
    );
    let mut on_stderr = String::new();
    let _ = std::fs::File::from(stderr_read).read_to_string(&mut on_stderr);
    assert!(
        !on_stderr.contains("zonefwd starting"),
        "not twice: {on_stderr}"
    );
}

#[test]
fn a_journal_stream_that_is_not_stderr_leaves_the_logs_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("z.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nloop_detection = false\n\
         [[route]]\nname = \"all\"\nzones = [\".\"]\nupstreams = [\"127.0.0.1:9\"]\n",
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("JOURNAL_STREAM", "1:1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Stopped(child);
    let stderr = child.0.stderr.take().unwrap();
    let first = std::io::BufRead::lines(std::io::BufReader::new(stderr)).next();
    drop(child);
    let first = first.expect("a log line").unwrap();
    assert!(first.contains("zonefwd starting"), "{first}");
}

//! Binding the listen addresses: UDP and TCP on the same port, one UDP socket per UDP
//! thread (SO_REUSEPORT), and the metrics endpoint, before serving starts, so a
//! caller (main, or a test binding port 0) knows the real addresses and can fail early.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use super::holder;

/// Sockets bound before serving starts, so a caller (main, or a test binding port 0)
/// knows the real addresses and can fail early.
#[derive(Debug)]
pub struct Listeners {
    /// Per listen address, one UDP socket per UDP thread (SO_REUSEPORT when several).
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    pub tcp: Vec<std::net::TcpListener>,
    /// `[server] tls_listen`: DNS over TLS.
    pub tls: Vec<std::net::TcpListener>,
    /// `[server] https_listen`: DNS over HTTPS.
    pub https: Vec<std::net::TcpListener>,
    /// `[server] metrics`, when set.
    pub metrics: Option<std::net::TcpListener>,
    /// `[server] control`, when set.
    pub control: Option<std::os::unix::net::UnixListener>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {place} ({proto}): {source}{hint}")]
pub struct BindError {
    /// The address, or the control socket's path.
    pub place: String,
    pub proto: &'static str,
    pub source: io::Error,
    hint: String,
}

impl Listeners {
    /// Binds UDP and TCP on each address, on the same port (for port 0, the port the
    /// kernel picked for UDP), with `udp_sockets` UDP sockets per address sharing the
    /// port through SO_REUSEPORT, one for each UDP thread.
    pub fn bind(addrs: &[SocketAddr], udp_sockets: usize) -> Result<Listeners, BindError> {
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            https: Vec::new(),
            metrics: None,
            control: None,
        };
        let reuse_port = udp_sockets > 1;
        for &addr in addrs {
            let (udp, tcp) = bind_pair(addr, reuse_port)?;
            let bound = udp.local_addr().map_err(|e| bind_error(addr, "udp", e))?;
            let mut group = vec![udp];
            for _ in 1..udp_sockets {
                let more =
                    new_socket(bound, Type::DGRAM, true).map_err(|e| bind_error(addr, "udp", e))?;
                group.push(more.into());
            }
            l.udp.push(group);
            l.tcp.push(tcp);
        }
        Ok(l)
    }

    /// Everything `[server]` asks for: the DNS listeners and the metrics endpoint.
    pub fn for_server(server: &crate::config::Server) -> Result<Listeners, BindError> {
        let mut l = Listeners::bind(&server.listen, server.udp_threads)?;
        for (addrs, bound, proto) in [
            (&server.encrypted.tls, &mut l.tls, "tls"),
            (&server.encrypted.https, &mut l.https, "https"),
        ] {
            for &addr in addrs {
                let s = new_socket(addr, Type::STREAM, false)
                    .map_err(|e| bind_error(addr, proto, e))?;
                bound.push(s.into());
            }
        }
        if let Some(addr) = server.metrics {
            let s = new_socket(addr, Type::STREAM, false)
                .map_err(|e| bind_error(addr, "metrics", e))?;
            l.metrics = Some(s.into());
        }
        if let Some(path) = &server.control {
            l.control = Some(bind_control(path).map_err(|e| BindError {
                place: path.display().to_string(),
                proto: "control socket",
                source: e,
                hint: String::new(),
            })?);
        }
        Ok(l)
    }

    /// The DoT and DoH listeners' addresses, in configuration order.
    pub fn encrypted_addrs(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let addrs =
            |l: &[std::net::TcpListener]| l.iter().filter_map(|t| t.local_addr().ok()).collect();
        (addrs(&self.tls), addrs(&self.https))
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// (udp, tcp) local addresses, in configuration order.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.udp
            .iter()
            .zip(&self.tcp)
            .filter_map(|(u, t)| Some((u.first()?.local_addr().ok()?, t.local_addr().ok()?)))
            .collect()
    }
}

fn bind_error(addr: SocketAddr, proto: &'static str, source: io::Error) -> BindError {
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "; ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it), or, in a container with no_new_privs (allowPrivilegeEscalation: false), the namespaced sysctl net.ipv4.ip_unprivileged_port_start at or below the port (deploy/kubernetes sets it to 53)".to_string()
        }
        io::ErrorKind::AddrInUse => in_use_hint(addr),
        io::ErrorKind::AddrNotAvailable => "; the address is not on this host".to_string(),
        _ => String::new(),
    };
    BindError {
        place: addr.to_string(),
        proto,
        source,
        hint,
    }
}

/// Who holds `addr`'s port, and what to do about it.
fn in_use_hint(addr: SocketAddr) -> String {
    let holders = holder::holders(addr);
    let held: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
    let by = if held.is_empty() {
        String::new()
    } else {
        format!(" by {}", held.join(", "))
    };
    format!("; held{by}. Fix: {}", holder::fix(addr, &holders))
}

fn bind_pair(
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), BindError> {
    // With port 0 the TCP port may be taken by someone else; pick again a few times.
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp =
            new_socket(addr, Type::DGRAM, reuse_port).map_err(|e| bind_error(addr, "udp", e))?;
        let port = udp
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(addr.port(), |a| a.port());
        match new_socket(SocketAddr::new(addr.ip(), port), Type::STREAM, false) {
            Ok(tcp) => return Ok((udp.into(), tcp.into())),
            Err(e) => last = Some(e),
        }
    }
    Err(bind_error(addr, "tcp", last.expect("at least one attempt")))
}

fn new_socket(addr: SocketAddr, ty: Type, reuse_port: bool) -> io::Result<Socket> {
    let proto = if ty == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // So "0.0.0.0:53" and "[::]:53" can both be listed.
        s.set_only_v6(true)?;
    }
    if ty == Type::STREAM {
        // A restart must not wait for old connections in TIME_WAIT.
        s.set_reuse_address(true)?;
    } else {
        // A burst of queries must queue rather than drop while the receive loop is
        // busy: the default (about 200 KiB, some 250 small datagrams) overflows at a
        // few hundred simultaneous clients. The kernel caps this at net.core.rmem_max;
        // best effort, like Unbound's so-rcvbuf.
        if let Err(e) = s.set_recv_buffer_size(UDP_LISTEN_RCVBUF) {
            tracing::debug!(error = %e, "could not enlarge the udp receive buffer");
        }
    }
    if reuse_port {
        // Several sockets on one port, one per UDP thread; the kernel spreads clients
        // over them by address hash (and only lets the same user join the group).
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if ty == Type::STREAM {
        s.listen(1024)?;
    }
    Ok(s)
}

const UDP_LISTEN_RCVBUF: usize = 4 << 20;

/// Binds the control socket at `path`: a stale socket file left by an earlier run is
/// replaced; a live one (another zonefwd answers on it) or any other kind of file is
/// an error, never removed.
fn bind_control(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        // Stale only when nothing listens: a socket this process may not connect to
        // (another user's) is someone else's and stays.
        match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process answers on this socket",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

//! Who holds a port zonefwd could not bind: the sockets in /proc/net that conflict
//! with the address, and the processes whose descriptors are those sockets (as far as
//! /proc lets this user see), with the fix for the usual case, systemd-resolved's stub
//! listener on 127.0.0.53:53.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A socket bound where zonefwd wanted to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub proto: &'static str,
    pub local: SocketAddr,
    /// The process, when /proc shows it to this user: pid and command name.
    pub process: Option<(u32, String)>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.process {
            Some((pid, command)) => write!(
                f,
                "{command} (pid {pid}) on {} ({})",
                self.local, self.proto
            ),
            None => write!(
                f,
                "a process this user cannot see (run as root to name it) on {} ({})",
                self.local, self.proto
            ),
        }
    }
}

/// The sockets (UDP, and TCP listeners) whose address conflicts with binding `addr`:
/// on its port, and the same address or either one a wildcard.
pub fn holders(addr: SocketAddr) -> Vec<Holder> {
    let tables = [
        ("udp", "/proc/net/udp"),
        ("tcp", "/proc/net/tcp"),
        ("udp", "/proc/net/udp6"),
        ("tcp", "/proc/net/tcp6"),
    ];
    let mut found: Vec<(&'static str, SocketAddr, u64)> = Vec::new();
    for (proto, path) in tables {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        found.extend(
            sockets(&text, proto == "tcp")
                .filter(|(local, _)| conflicts(addr, *local))
                .map(|(local, inode)| (proto, local, inode)),
        );
    }
    found
        .into_iter()
        .map(|(proto, local, inode)| Holder {
            proto,
            local,
            process: process_of(inode),
        })
        .collect()
}

/// What to do when `addr` is held by `holders`.
pub fn fix(addr: SocketAddr, holders: &[Holder]) -> String {
    let resolved = holders.iter().any(|h| {
        h.process
            .as_ref()
            .is_some_and(|(_, c)| c.starts_with("systemd-resolve"))
            || is_resolved_stub_address(h.local)
    });
    if resolved {
        format!(
            "systemd-resolved's stub listener holds 127.0.0.53:{port}, and {addr} includes it: listen on this host's own addresses instead (listen = [\"127.0.0.1:{port}\", \"<this host's address>:{port}\"]), or set DNSStubListener=no in /etc/systemd/resolved.conf and restart systemd-resolved",
            port = addr.port()
        )
    } else if holders.is_empty() {
        format!(
            "another program holds port {}: stop it, or listen on another address",
            addr.port()
        )
    } else {
        format!("stop that program, or listen on addresses it does not hold (listen = [\"<this host's address>:{}\"])", addr.port())
    }
}

/// 127.0.0.53 and 127.0.0.54: resolved's stub and proxy listeners.
fn is_resolved_stub_address(local: SocketAddr) -> bool {
    local.port() == 53
        && matches!(local.ip(), IpAddr::V4(v4) if v4 == Ipv4Addr::new(127, 0, 0, 53) || v4 == Ipv4Addr::new(127, 0, 0, 54))
}

/// Binding `want` fails on `held`'s port when the addresses are the same or either is
/// a wildcard of the same family (or `::` with IPv4-mapped sockets, left aside:
/// zonefwd binds IPv6 sockets v6-only).
fn conflicts(want: SocketAddr, held: SocketAddr) -> bool {
    want.port() == held.port()
        && want.is_ipv4() == held.is_ipv4()
        && (want.ip() == held.ip() || want.ip().is_unspecified() || held.ip().is_unspecified())
}

/// (local address, inode) of each socket of a /proc/net table; for TCP, listeners
/// only (state 0A).
fn sockets(text: &str, tcp: bool) -> impl Iterator<Item = (SocketAddr, u64)> + '_ {
    text.lines().skip(1).filter_map(move |line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 || (tcp && cols[3] != "0A") {
            return None;
        }
        Some((parse_local(cols[1])?, cols[9].parse().ok()?))
    })
}

/// "0100007F:0035" (IPv4 as a 32-bit word in host order) or 32 hex digits (IPv6 as
/// four such words), then the port.
fn parse_local(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process with a descriptor on socket `inode`, and its command name.
fn process_of(inode: u64) -> Option<(u32, String)> {
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            let command = std::fs::read_to_string(entry.path().join("comm"))
                .map_or_else(|_| "?".to_string(), |c| c.trim().to_string());
            return Some((pid, command));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_are_read_in_host_order() {
        // (column as /proc/net shows it on little-endian, address)
        let cases = [
            ("3500007F:0035", "127.0.0.53:53"),
            ("00000000:0035", "0.0.0.0:53"),
            ("00000000000000000000000001000000:0035", "[::1]:53"),
        ];
        for (text, want) in cases {
            if cfg!(target_endian = "little") {
                assert_eq!(parse_local(text), Some(want.parse().unwrap()), "{text}");
            }
        }
    }

    #[test]
    fn a_wildcard_conflicts_with_any_address_on_its_port() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        // (wanted, held, conflict)
        let cases = [
            ("0.0.0.0:53", "127.0.0.53:53", true),
            ("127.0.0.1:53", "127.0.0.53:53", false),
            ("127.0.0.1:53", "0.0.0.0:53", true),
            ("0.0.0.0:53", "127.0.0.53:5353", false),
            ("[::]:53", "127.0.0.53:53", false),
        ];
        for (want, held, conflict) in cases {
            assert_eq!(conflicts(a(want), a(held)), conflict, "{want} {held}");
        }
    }

    #[test]
    fn a_socket_of_this_process_is_found_with_its_pid() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let found = holders(addr);
        assert!(
            found
                .iter()
                .any(|h| h.local == addr
                    && h.process.as_ref().map(|p| p.0) == Some(std::process::id())),
            "{found:?}"
        );
    }
}

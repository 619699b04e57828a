//! Client access list: which source addresses may query at all.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix such as `10.0.0.0/8` or `fc00::/7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }

    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }
}

/// Whether `width`-bit numbers `a` and `b` agree in their top `prefix` bits (every
/// query is checked against the ACL, so this is integer arithmetic, not byte slices).
fn same_prefix(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let host_bits = width - u32::from(prefix);
    (a ^ b).checked_shr(host_bits).unwrap_or(0) == 0
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/LEN`, or a bare address meaning that one host. Host bits must be zero:
    /// `10.1.2.3/8` is more likely a typo than a wish for `10.0.0.0/8`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| format!("{addr_s:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match len_s {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("prefix length {l:?} is not 0 to {max}")),
            },
        };
        let masked = Cidr {
            addr: mask(addr, prefix),
            prefix,
        };
        if masked.addr != addr {
            return Err(format!(
                "host bits are set in {s:?}; the network is {masked}"
            ));
        }
        Ok(masked)
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    fn apply<const N: usize>(mut o: [u8; N], prefix: u8) -> [u8; N] {
        for (i, b) in o.iter_mut().enumerate() {
            let bits = i32::from(prefix) - (i as i32) * 8;
            *b &= match bits {
                b if b >= 8 => 0xff,
                b if b <= 0 => 0,
                b => 0xffu8 << (8 - b),
            };
        }
        o
    }
    match addr {
        IpAddr::V4(a) => IpAddr::V4(apply(a.octets(), prefix).into()),
        IpAddr::V6(a) => IpAddr::V6(apply(a.octets(), prefix).into()),
    }
}

/// The private ranges of RFC 1918, CGNAT (RFC 6598, used by some cloud and
/// Kubernetes networks), loopback and IPv6 ULA: reachable only from inside, so the
/// default never makes an open resolver.
pub const DEFAULT_ALLOW: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "::1/128",
    "fc00::/7",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    allow: Vec<Cidr>,
}

impl Acl {
    pub fn new(allow: Vec<Cidr>) -> Self {
        Acl { allow }
    }

    pub fn default_private() -> Self {
        Acl::new(DEFAULT_ALLOW.iter().map(|s| s.parse().unwrap()).collect())
    }

    pub fn entries(&self) -> &[Cidr] {
        &self.allow
    }

    /// IPv4 clients of a dual-stack socket appear as `::ffff:a.b.c.d`; they are
    /// judged by their IPv4 address, so `10.0.0.0/8` covers them too.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.allow.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let acl = Acl::default_private();
        for ok in [
            "10.1.2.3",
            "172.31.255.255",
            "100.64.0.1",
            "127.0.0.1",
            "::1",
            "fd00::5",
        ] {
            assert!(acl.allows(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "::2",
            "2001:db8::1",
            "192.0.2.1",
        ] {
            assert!(!acl.allows(no.parse().unwrap()), "{no}");
        }
        assert!(acl.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!acl.allows("::ffff:8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert!("10.1.2.3/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("banana/8".parse::<Cidr>().is_err());
        assert_eq!(
            "192.0.2.7".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().is_everything());
        assert!("2001:db8::/33"
            .parse::<Cidr>()
            .unwrap()
            .contains("2001:db8:7fff::1".parse().unwrap()));
        assert!(!"2001:db8::/33"
            .parse::<Cidr>()
            .unwrap()
            .contains("2001:db8:8000::1".parse().unwrap()));
    }

    #[test]
    fn contains_agrees_with_masking_at_every_prefix_length() {
        // A fixed pseudo-random walk of address pairs, some sharing long prefixes.
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let (a, flip) = (next(), next());
            let b = a ^ (flip >> (flip % 128)); // differs from `a` below some bit
            let pairs = [
                (
                    IpAddr::V4((a as u32).into()),
                    IpAddr::V4((b as u32).into()),
                    32,
                ),
                (IpAddr::V6(a.into()), IpAddr::V6(b.into()), 128),
            ];
            for (a, b, max) in pairs {
                for prefix in 0..=max {
                    let net = Cidr {
                        addr: mask(a, prefix),
                        prefix,
                    };
                    assert_eq!(
                        net.contains(b),
                        mask(a, prefix) == mask(b, prefix),
                        "{net} {b}"
                    );
                    assert!(net.contains(a), "{net} {a}");
                }
            }
        }
        // Families never match each other.
        let any4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(!any4.contains("::1".parse().unwrap()));
    }
}

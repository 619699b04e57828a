//! One dnstap message: what is known of one DNS message zonefwd received or sent
//! (`Event`), as the frame a collector reads (a Frame Streams data frame holding a
//! `dnstap.Dnstap`).

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;

use crate::dnstap::frames;
use crate::dnstap::proto::{
    self, MessageType, SocketFamily, SocketProtocol, DNSTAP_MESSAGE, POLICY_MATCH_QNAME,
};

/// One DNS message seen by zonefwd, with the fields dnstap.proto recommends for its
/// type: family and protocol, who asked (`initiator`) and who answered (`responder`),
/// when, the bytes, and, for forwarded ones, the route's zone.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub kind: MessageType,
    pub protocol: SocketProtocol,
    /// The query's sender: a client, or zonefwd's own socket to an upstream (unknown
    /// for a TCP connection still connecting).
    pub initiator: Option<SocketAddr>,
    /// The query's receiver: zonefwd's listener, or the upstream.
    pub responder: SocketAddr,
    pub query_time: SystemTime,
    pub response_time: Option<SystemTime>,
    pub query: Option<&'a [u8]>,
    pub response: Option<&'a [u8]>,
    /// The route's zone that holds the query's name, wire format.
    pub zone: Option<&'a [u8]>,
    /// The route that answered or forwarded it, as the `policy`'s rule.
    pub route: Option<&'a str>,
    /// `key=value` pairs for `Dnstap.extra`.
    pub extra: Option<Vec<u8>>,
}

/// What a frame holds besides the DNS messages and the identity, at most: addresses,
/// ports, times, zone, route, extra, version and the protobuf tags.
const FIELDS_SIZE: usize = 400;

/// The server's name and version, the same on every frame.
#[derive(Debug, Clone)]
pub struct Origin {
    pub identity: Bytes,
    pub version: Bytes,
}

impl Event<'_> {
    /// The Frame Streams data frame carrying this event.
    pub fn frame(self, origin: &Origin) -> Vec<u8> {
        // The messages' bytes, and room for the addresses, times, names and tags.
        let size_hint = FIELDS_SIZE
            + self.query.map_or(0, <[u8]>::len)
            + self.response.map_or(0, <[u8]>::len)
            + origin.identity.len();
        let message = Some(self.message());
        let msg = proto::Dnstap {
            identity: Some(origin.identity.clone()),
            version: Some(origin.version.clone()),
            extra: self.extra,
            r#type: DNSTAP_MESSAGE,
            message,
        };
        frames::data_frame(size_hint, |buf| {
            msg.encode(buf).expect("a Vec grows as needed")
        })
    }

    fn message(&self) -> proto::Message {
        let (query_time_sec, query_time_nsec) = split(self.query_time);
        let response = self.response_time.map(split);
        proto::Message {
            r#type: self.kind as i32,
            socket_family: Some(family(self.responder.ip()) as i32),
            socket_protocol: Some(self.protocol as i32),
            query_address: self.initiator.map(|a| octets(a.ip())),
            query_port: self.initiator.map(|a| u32::from(a.port())),
            response_address: Some(octets(self.responder.ip())),
            response_port: Some(u32::from(self.responder.port())),
            query_time_sec: Some(query_time_sec),
            query_time_nsec: Some(query_time_nsec),
            query_message: self.query.map(<[u8]>::to_vec),
            query_zone: self.zone.map(<[u8]>::to_vec),
            response_time_sec: response.map(|r| r.0),
            response_time_nsec: response.map(|r| r.1),
            response_message: self.response.map(<[u8]>::to_vec),
            policy: self.route.map(|route| proto::Policy {
                r#type: Some("route".to_string()),
                rule: Some(route.as_bytes().to_vec()),
                r#match: Some(POLICY_MATCH_QNAME),
                action: None,
                value: None,
            }),
        }
    }
}

fn family(ip: IpAddr) -> SocketFamily {
    match ip {
        IpAddr::V4(_) => SocketFamily::Inet,
        IpAddr::V6(_) => SocketFamily::Inet6,
    }
}

/// 4 octets for IPv4, 16 for IPv6, as dnstap.proto says.
fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Seconds and nanoseconds since the Unix epoch.
fn split(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn origin() -> Origin {
        Origin {
            identity: Bytes::from_static(b"replica-a"),
            version: Bytes::from_static(b"zonefwd 0.1.0"),
        }
    }

    fn decode(frame: &[u8]) -> proto::Dnstap {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4, "the length prefix covers the payload");
        proto::Dnstap::decode(&frame[4..]).unwrap()
    }

    #[test]
    fn a_forwarder_response_carries_both_ends_times_zone_and_route() {
        let t0 = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let e = Event {
            kind: MessageType::ForwarderResponse,
            protocol: SocketProtocol::Udp,
            initiator: Some("10.0.0.5:40000".parse().unwrap()),
            responder: "168.63.129.16:53".parse().unwrap(),
            query_time: t0,
            response_time: Some(t0 + Duration::from_millis(3)),
            query: None,
            response: Some(b"\x12\x34reply"),
            zone: Some(b"\x05azmk8s\x02io\x00"),
            route: Some("azure"),
            extra: Some(b"retransmission=late".to_vec()),
        };
        let d = decode(&e.frame(&origin()));
        assert_eq!(d.identity.as_deref(), Some(&b"replica-a"[..]));
        assert_eq!(d.extra.as_deref(), Some(&b"retransmission=late"[..]));
        let m = d.message.unwrap();
        assert_eq!(m.r#type, 8);
        assert_eq!(m.socket_family, Some(1));
        assert_eq!(m.query_address.as_deref(), Some(&[10, 0, 0, 5][..]));
        assert_eq!(m.query_port, Some(40000));
        assert_eq!(m.response_address.as_deref(), Some(&[168, 63, 129, 16][..]));
        assert_eq!(
            (m.query_time_sec, m.query_time_nsec),
            (Some(1_700_000_000), Some(5))
        );
        assert_eq!(m.response_time_nsec, Some(3_000_005));
        assert_eq!(m.response_message.as_deref(), Some(&b"\x12\x34reply"[..]));
        assert_eq!(m.query_message, None);
        assert_eq!(m.query_zone.as_deref(), Some(&b"\x05azmk8s\x02io\x00"[..]));
        let policy = m.policy.unwrap();
        assert_eq!(policy.rule.as_deref(), Some(&b"azure"[..]));
    }

    #[test]
    fn an_ipv6_client_is_sixteen_octets() {
        let e = Event {
            kind: MessageType::ClientQuery,
            protocol: SocketProtocol::Tcp,
            initiator: Some("[2001:db8::1]:5353".parse().unwrap()),
            responder: "[::1]:53".parse().unwrap(),
            query_time: SystemTime::now(),
            response_time: None,
            query: Some(b"q"),
            response: None,
            zone: None,
            route: None,
            extra: None,
        };
        let m = decode(&e.frame(&origin())).message.unwrap();
        assert_eq!(m.socket_family, Some(2));
        assert_eq!(m.socket_protocol, Some(2));
        assert_eq!(m.query_address.unwrap().len(), 16);
        assert_eq!(m.policy, None);
    }
}

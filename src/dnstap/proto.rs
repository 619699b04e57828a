//! dnstap's protobuf messages (the `dnstap.proto` schema of github.com/dnstap/dnstap.pb,
//! proto2, package `dnstap`), the part zonefwd emits, written out as prost would
//! generate them. The field numbers and types are the interface: a collector decodes
//! these with its own copy of the schema, and CI decodes what zonefwd sends with
//! dnstap-read and dnstap-ldns (tests/dnstap.rs), which would fail on a wrong number.

/// The top-level frame payload: identity, version, extra, and one `Message`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    /// The server's identity (NSID, RFC 5001), as `[server] identity` or the host name.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub identity: Option<bytes::Bytes>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub version: Option<bytes::Bytes>,
    /// Free-form: zonefwd writes `key=value` pairs here (docs/dnstap.md).
    #[prost(bytes = "vec", optional, tag = "3")]
    pub extra: Option<Vec<u8>>,
    /// Always `MESSAGE` (1): the only payload type defined.
    #[prost(int32, required, tag = "15")]
    pub r#type: i32,
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
}

/// `Dnstap.Type.MESSAGE`.
pub const DNSTAP_MESSAGE: i32 = 1;

/// `SocketFamily`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum SocketFamily {
    Inet = 1,
    Inet6 = 2,
}

/// `SocketProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum SocketProtocol {
    Udp = 1,
    Tcp = 2,
    Dot = 3,
    Doh = 4,
}

/// `Message.Type`, the four a forwarder sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum MessageType {
    ClientQuery = 5,
    ClientResponse = 6,
    ForwarderQuery = 7,
    ForwarderResponse = 8,
}

/// `Policy.Match.QNAME`: a route is chosen by the query's name.
pub const POLICY_MATCH_QNAME: i32 = 1;

/// `Policy`: the operator policy applied to the message. zonefwd's policy is the
/// route: `type` is "route", `rule` the route's name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Policy {
    #[prost(string, optional, tag = "1")]
    pub r#type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub rule: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "3")]
    pub action: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub r#match: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub value: Option<Vec<u8>>,
}

/// `Message`: one DNS message and where and when it went.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// A `MessageType`.
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    /// A `SocketFamily`.
    #[prost(int32, optional, tag = "2")]
    pub socket_family: Option<i32>,
    /// A `SocketProtocol`.
    #[prost(int32, optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    /// The initiator's address: the client's, or zonefwd's own for a forwarded query.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    /// The responder's address: zonefwd's listener, or the upstream.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    /// The route's zone the query's name is in, wire format.
    #[prost(bytes = "vec", optional, tag = "11")]
    pub query_zone: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
    #[prost(message, optional, tag = "15")]
    pub policy: Option<Policy>,
}

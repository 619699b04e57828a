//! The numbers of RFC 1035 and its successors that zonefwd reads and writes: sizes,
//! types, classes, header flags and response codes.

pub const HEADER_LEN: usize = 12;
/// RFC 1035 section 2.3.4, in octets of the uncompressed wire form.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_LABEL_LEN: usize = 63;
/// Largest message over UDP without EDNS (RFC 1035 section 4.2.1).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// The payload size advertised to upstreams and the cap on what is sent to clients
/// over UDP: the DNS Flag Day 2020 value, which avoids IP fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;
pub const MAX_TCP_MESSAGE: usize = 65535;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_DS: u16 = 43;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_HINFO: u16 = 13;
pub const TYPE_ANY: u16 = 255;
pub const TYPE_TXT: u16 = 16;
pub const CLASS_IN: u16 = 1;
/// CHAOS: the class of a server's questions about itself (RFC 4892).
pub const CLASS_CH: u16 = 3;
/// The EDNS option of a server's identity (RFC 5001).
pub const OPTION_NSID: u16 = 3;

pub const FLAG_QR: u16 = 0x8000;
pub const OPCODE_MASK: u16 = 0x7800;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_Z: u16 = 0x0040;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;
pub const RCODE_MASK: u16 = 0x000f;
/// The DO bit in the OPT record's TTL field (RFC 3225).
pub(super) const EDNS_DO: u32 = 0x0000_8000;

/// Response codes, including the extended ones carried partly in OPT (RFC 6891 6.1.3).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const BADVERS: u16 = 16;

    /// The mnemonic used in logs and tool output.
    pub fn name(rcode: u16) -> String {
        match rcode {
            NOERROR => "NOERROR".into(),
            FORMERR => "FORMERR".into(),
            SERVFAIL => "SERVFAIL".into(),
            NXDOMAIN => "NXDOMAIN".into(),
            NOTIMP => "NOTIMP".into(),
            REFUSED => "REFUSED".into(),
            BADVERS => "BADVERS".into(),
            other => format!("RCODE{other}"),
        }
    }
}

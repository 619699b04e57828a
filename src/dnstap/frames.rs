//! Frame Streams (github.com/farsightsec/fstrm, PROTOCOL): how dnstap payloads travel.
//! A data frame is a 32-bit big-endian length and the payload. A control frame is an
//! escape (a zero length), its own length, its type, and fields; the only field is the
//! content type. The bidirectional handshake, as a sender: READY (with the content
//! types offered) -> the receiver's ACCEPT (with the one it takes) -> START (with that
//! one), data frames, STOP -> the receiver's FINISH.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What zonefwd sends: dnstap's protobuf messages.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// fstrm's limit on a control frame's length (`FSTRM_CONTROL_FRAME_LENGTH_MAX`): a
/// longer one is not a Frame Streams peer.
const MAX_CONTROL_LENGTH: usize = 512;

/// The control field that carries a content type.
const FIELD_CONTENT_TYPE: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Accept = 1,
    Start = 2,
    Stop = 3,
    Ready = 4,
    Finish = 5,
}

impl ControlType {
    fn from_u32(n: u32) -> Option<ControlType> {
        Some(match n {
            1 => ControlType::Accept,
            2 => ControlType::Start,
            3 => ControlType::Stop,
            4 => ControlType::Ready,
            5 => ControlType::Finish,
            _ => return None,
        })
    }
}

/// A control frame as read: its type and the content types it names.
#[derive(Debug, PartialEq, Eq)]
pub struct Control {
    pub kind: ControlType,
    pub content_types: Vec<Vec<u8>>,
}

/// A control frame of `kind`, naming dnstap's content type when `typed` (READY, ACCEPT
/// and START do; STOP and FINISH do not).
pub fn control(kind: ControlType, typed: bool) -> Vec<u8> {
    let fields = if typed { 8 + CONTENT_TYPE.len() } else { 0 };
    let mut out = Vec::with_capacity(12 + fields);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(4 + fields as u32).to_be_bytes());
    out.extend_from_slice(&(kind as u32).to_be_bytes());
    if typed {
        out.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        out.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        out.extend_from_slice(CONTENT_TYPE);
    }
    out
}

/// A data frame of what `payload` writes: its length, then it. The length is written
/// last, so the payload is encoded once and its size not computed beforehand.
pub fn data_frame(size_hint: usize, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + size_hint);
    out.extend_from_slice(&[0; 4]);
    payload(&mut out);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads one control frame. A data frame here, or a malformed control frame, is an
/// error: during the handshake and after STOP the receiver sends only control frames.
pub async fn read_control<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Control> {
    let escape = r.read_u32().await?;
    if escape != 0 {
        return Err(bad("a data frame where a control frame was due"));
    }
    let len = r.read_u32().await? as usize;
    if !(4..=MAX_CONTROL_LENGTH).contains(&len) {
        return Err(bad("a control frame of impossible length"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    parse_control(&body)
}

/// A control frame's body: its type, then fields of (type, length, value).
fn parse_control(body: &[u8]) -> io::Result<Control> {
    let word = |at: usize| -> io::Result<u32> {
        body.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("a control frame cut short"))
    };
    let kind =
        ControlType::from_u32(word(0)?).ok_or_else(|| bad("an unknown control frame type"))?;
    let mut content_types = Vec::new();
    let mut at = 4;
    while at < body.len() {
        let (field, len) = (word(at)?, word(at + 4)? as usize);
        let value = body
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| bad("a control field longer than its frame"))?;
        if field == FIELD_CONTENT_TYPE {
            content_types.push(value.to_vec());
        }
        at += 8 + len;
    }
    Ok(Control {
        kind,
        content_types,
    })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("frame streams: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> io::Result<Control> {
        read_control(&mut &bytes[..]).await
    }

    #[tokio::test]
    async fn control_frames_read_back_as_written() {
        for (kind, typed) in [
            (ControlType::Ready, true),
            (ControlType::Accept, true),
            (ControlType::Start, true),
            (ControlType::Stop, false),
            (ControlType::Finish, false),
        ] {
            let c = read(&control(kind, typed)).await.unwrap();
            assert_eq!(c.kind, kind);
            let want: Vec<Vec<u8>> = if typed {
                vec![CONTENT_TYPE.to_vec()]
            } else {
                vec![]
            };
            assert_eq!(c.content_types, want, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn what_is_not_a_control_frame_is_an_error() {
        let cases: [(&str, &[u8]); 5] = [
            ("a data frame", &[0, 0, 0, 3, 1, 2, 3]),
            ("too short", &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0]),
            ("unknown type", &[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 9]),
            (
                "field too long",
                &[0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9],
            ),
            ("cut off", &[0, 0, 0, 0, 0, 0, 0, 8, 0, 0]),
        ];
        for (what, bytes) in cases {
            assert!(read(bytes).await.is_err(), "{what}");
        }
    }

    #[test]
    fn a_data_frame_is_its_length_then_its_payload() {
        let out = data_frame(1, |o| o.extend_from_slice(b"abc"));
        assert_eq!(out, [0, 0, 0, 3, b'a', b'b', b'c']);
    }
}

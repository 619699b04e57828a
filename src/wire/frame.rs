//! DNS over TCP: each message is preceded by its length as two octets (RFC 1035
//! section 4.2.2, RFC 7766 section 8). One place for the listeners, the upstream
//! exchange and the tests.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// `msg` with its length prefix, ready to write in one call. A message longer than
/// 65,535 octets cannot be framed; callers never build one (`MAX_TCP_MESSAGE`).
pub fn framed(msg: &[u8]) -> Vec<u8> {
    debug_assert!(msg.len() <= usize::from(u16::MAX));
    let mut frame = Vec::with_capacity(msg.len() + 2);
    frame.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    frame.extend_from_slice(msg);
    frame
}

/// The next message: its length prefix, then that many octets. An end of stream
/// before the prefix or inside the message is `UnexpectedEof`.
pub async fn read_framed<R: AsyncRead + Unpin>(rd: &mut R) -> io::Result<Vec<u8>> {
    let len = rd.read_u16().await?;
    read_message(rd, len).await
}

/// The rest of a message whose length prefix's first octet was already read (a
/// listener reads that octet alone, to tell an idle connection from a slow one).
pub async fn read_framed_after<R: AsyncRead + Unpin>(rd: &mut R, first: u8) -> io::Result<Vec<u8>> {
    let second = rd.read_u8().await?;
    read_message(rd, u16::from_be_bytes([first, second])).await
}

async fn read_message<R: AsyncRead + Unpin>(rd: &mut R, len: u16) -> io::Result<Vec<u8>> {
    let mut msg = vec![0u8; usize::from(len)];
    rd.read_exact(&mut msg).await?;
    Ok(msg)
}

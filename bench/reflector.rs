//! The floor for answering: a UDP server that answers every query with one fixed A
//! record and does nothing else (no parsing beyond the header, no cache, no checks),
//! with the listeners' own batching (`recvmmsg` in, `sendmmsg` out) on a
//! current-thread tokio runtime, as zonefwd's UDP listener runs. What it answers per
//! CPU-second is the most any server can on this kernel and harness: bench/run.sh
//! compares zonefwd's cache hits with it.
//!
//!     cargo run --release --example reflector -- 127.0.0.1:5310

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use zonefwd::batch::{Batch, BATCH};

/// The answer record after the question: the question name (a pointer to offset 12),
/// type A, class IN, TTL 60, 192.0.2.1.
const ANSWER: [u8; 16] = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];

/// The query turned into its answer: QR, RA and one answer record; any additional
/// records (a client's OPT) dropped, which keeps the answer the size of zonefwd's.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let question_end = 12 + question_len(&query[12..])?;
    let mut out = Vec::with_capacity(question_end + ANSWER.len());
    out.extend_from_slice(&query[..question_end]);
    out[2] |= 0x80; // QR
    out[3] = 0x80; // RA, NOERROR
    out[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(&ANSWER);
    Some(out)
}

/// The length of the question: the name's labels, then type and class.
fn question_len(q: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*q.get(at)?);
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    (at + 4 <= q.len()).then_some(at + 4)
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5310".into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind(addr).await?;
    let fd = sock.as_raw_fd();
    let mut batch = Batch::new(4096);
    let mut received = Vec::with_capacity(BATCH);
    let mut replies = Vec::with_capacity(BATCH);
    loop {
        sock.readable().await?;
        match sock.try_io(Interest::READABLE, || batch.recv(fd, &mut received)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => continue,
        }
        replies.clear();
        for (i, &(len, client)) in received.iter().enumerate() {
            if let Some(a) = answer(batch.datagram(i, len)) {
                replies.push((a, client));
            }
        }
        let mut sent = 0;
        while sent < replies.len() {
            match sock.try_io(Interest::WRITABLE, || batch.send(fd, &replies[sent..])) {
                Ok(n) if n > 0 => sent += n,
                _ => sent += 1, // dropped, as a full socket buffer would
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (uncompressed labels) of type A with ID 0x1234, and an OPT
    /// record when `opt`.
    fn query(labels: &[&str], opt: bool) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(opt)];
        for l in labels {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if opt {
            q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn every_query_gets_its_question_back_with_one_a_record() {
        for (labels, opt) in [(&["host1", "bench", "test"][..], false), (&["x"][..], true)] {
            let q = query(labels, opt);
            let a = answer(&q).unwrap();
            let question_end = q.len() - if opt { 11 } else { 0 };
            assert_eq!(&a[..2], &[0x12, 0x34], "the client's ID");
            assert_eq!(a[2] & 0x80, 0x80, "QR");
            assert_eq!(
                &a[4..12],
                &[0, 1, 0, 1, 0, 0, 0, 0],
                "one question, one answer"
            );
            assert_eq!(
                &a[12..question_end],
                &q[12..question_end],
                "the question as asked"
            );
            assert_eq!(&a[question_end..], &ANSWER);
        }
    }

    #[test]
    fn what_is_not_a_query_gets_nothing() {
        for bad in [
            &[0u8; 5][..],
            &[0u8; 12][..],
            &[0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a'][..],
        ] {
            assert_eq!(answer(bad), None, "{bad:?}");
        }
    }
}

//! The floor for forwarding: receive a batch of queries, send each to the upstream on
//! a pooled connected UDP socket under an ID of the relay's own, and relay the reply
//! back with the client's ID; no checks of any kind (no question match, no cache, no
//! ACL, no limits), one socket per pool slot opened at start. What it forwards per
//! CPU-second is the most a forwarder can on this kernel and harness: bench/run.sh
//! compares zonefwd's cache misses with it.
//!
//! With a third argument, REUSE, it is the floor for the path zonefwd chose instead:
//! each query in flight on a connected socket of its own (RFC 5452's port
//! randomisation), taken from the idle ones or opened, kept for REUSE queries as
//! zonefwd's `upstream_udp_reuse`, under a random ID; still no checks of any kind.
//!
//!     cargo run --release --example relay -- 127.0.0.1:5310 127.0.0.1:5301
//!     cargo run --release --example relay -- 127.0.0.1:5310 127.0.0.1:5301 10

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use zonefwd::batch::{Batch, BATCH};

/// Connected upstream sockets, used in turn: few, so that replies arrive in batches.
const POOL: usize = 4;

/// Who asked under each relay ID: the client and its ID.
type Asked = Arc<Mutex<Vec<Option<(SocketAddr, [u8; 2])>>>>;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let parse = |a: Option<String>, default: &str| -> io::Result<SocketAddr> {
        a.unwrap_or_else(|| default.into())
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let listen = parse(args.next(), "127.0.0.1:5310")?;
    let upstream = parse(args.next(), "127.0.0.1:5301")?;
    let reuse: Option<u32> = args.next().and_then(|r| r.parse().ok());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // A local set: the batches' message headers are not `Send`, and one thread is
    // all a floor gets.
    let local = tokio::task::LocalSet::new();
    match reuse {
        None => local.block_on(&rt, serve(listen, upstream)),
        Some(reuse) => local.block_on(&rt, serve_port_per_query(listen, upstream, reuse)),
    }
}

/// Idle connected sockets to the upstream, each with the queries it carried.
type Idle = std::rc::Rc<std::cell::RefCell<Vec<(UdpSocket, u32)>>>;

async fn serve_port_per_query(
    listen: SocketAddr,
    upstream: SocketAddr,
    reuse: u32,
) -> io::Result<()> {
    let clients = std::rc::Rc::new(UdpSocket::bind(listen).await?);
    let idle: Idle = Default::default();
    let fd = clients.as_raw_fd();
    let mut batch = Batch::new(4096);
    let mut received = Vec::with_capacity(BATCH);
    loop {
        clients.readable().await?;
        if clients
            .try_io(Interest::READABLE, || batch.recv(fd, &mut received))
            .is_err()
        {
            continue;
        }
        for (i, &(len, client)) in received.iter().enumerate() {
            let q = batch.datagram(i, len).to_vec();
            if q.len() < 12 {
                continue;
            }
            let (clients, idle) = (std::rc::Rc::clone(&clients), std::rc::Rc::clone(&idle));
            tokio::task::spawn_local(async move {
                let _ = forward_on_own_port(q, client, &clients, upstream, &idle, reuse).await;
            });
        }
    }
}

/// One query on a socket of its own, its reply back to the client.
async fn forward_on_own_port(
    mut q: Vec<u8>,
    client: SocketAddr,
    clients: &UdpSocket,
    upstream: SocketAddr,
    idle: &Idle,
    reuse: u32,
) -> io::Result<()> {
    let taken = idle.borrow_mut().pop();
    let (sock, uses) = match taken {
        Some(s) => s,
        None => {
            let s = UdpSocket::bind("127.0.0.1:0").await?;
            s.connect(upstream).await?;
            (s, 0)
        }
    };
    let client_id = [q[0], q[1]];
    let id: u16 = rand::random();
    q[..2].copy_from_slice(&id.to_be_bytes());
    sock.send(&q).await?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).await?;
    let mut r = buf[..n].to_vec();
    if r.len() >= 12 {
        r[..2].copy_from_slice(&client_id);
        let _ = clients.try_send_to(&r, client);
    }
    if uses + 1 < reuse {
        idle.borrow_mut().push((sock, uses + 1));
    }
    Ok(())
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let clients = Arc::new(UdpSocket::bind(listen).await?);
    let asked: Asked = Arc::new(Mutex::new(vec![None; 65536]));
    let mut pool = Vec::with_capacity(POOL);
    for _ in 0..POOL {
        let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        s.connect(upstream).await?;
        tokio::task::spawn_local(relay_replies(
            Arc::clone(&s),
            Arc::clone(&clients),
            Arc::clone(&asked),
        ));
        pool.push(s);
    }
    let fd = clients.as_raw_fd();
    let mut batch = Batch::new(4096);
    let mut received = Vec::with_capacity(BATCH);
    let mut next_id: u16 = 0;
    loop {
        clients.readable().await?;
        match clients.try_io(Interest::READABLE, || batch.recv(fd, &mut received)) {
            Ok(()) => {}
            Err(_) => continue,
        }
        for (i, &(len, client)) in received.iter().enumerate() {
            let mut q = batch.datagram(i, len).to_vec();
            if q.len() < 12 {
                continue;
            }
            next_id = next_id.wrapping_add(1);
            asked.lock().unwrap()[usize::from(next_id)] = Some((client, [q[0], q[1]]));
            q[..2].copy_from_slice(&next_id.to_be_bytes());
            let _ = pool[usize::from(next_id) % POOL].try_send(&q);
        }
    }
}

/// Replies from one upstream socket, back to their clients under their own IDs, a
/// batch per system call each way as the listeners do.
async fn relay_replies(upstream: Arc<UdpSocket>, clients: Arc<UdpSocket>, asked: Asked) {
    let (up_fd, client_fd) = (upstream.as_raw_fd(), clients.as_raw_fd());
    let mut batch = Batch::new(4096);
    let mut received = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    while upstream.readable().await.is_ok() {
        if upstream
            .try_io(Interest::READABLE, || batch.recv(up_fd, &mut received))
            .is_err()
        {
            continue;
        }
        replies.clear();
        for (i, &(len, _)) in received.iter().enumerate() {
            let mut r = batch.datagram(i, len).to_vec();
            if r.len() < 12 {
                continue;
            }
            let id = usize::from(u16::from_be_bytes([r[0], r[1]]));
            let Some((client, client_id)) = asked.lock().unwrap()[id].take() else {
                continue;
            };
            r[..2].copy_from_slice(&client_id);
            replies.push((r, client));
        }
        let mut sent = 0;
        while sent < replies.len() {
            match clients.try_io(Interest::WRITABLE, || {
                batch.send(client_fd, &replies[sent..])
            }) {
                Ok(n) if n > 0 => sent += n,
                _ => sent += 1, // dropped, as a full socket buffer would
            }
        }
    }
}

//! Listeners: UDP and TCP on every configured address, and the graceful stop.
//!
//! zonefwd owns its listeners instead of using hickory-server's: that one answers the
//! queries of a TCP connection one after another (no RFC 7766 out-of-order
//! pipelining, so one slow upstream stalls the connection), spawns a task per UDP
//! datagram without a bound, and can only send replies it encodes from records, which
//! rules out relaying the upstream's bytes.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use std::os::fd::AsRawFd;

use arc_swap::ArcSwap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};

use crate::cache::{Cache, Clock, SystemClock};
use crate::config::Config;
use crate::handler::{Action, Handler, Transport};
use crate::metrics::{Health, Metrics};
use crate::notify::{self, Notifier};
use crate::resolver::Resolver;
use crate::throttle::{Throttle, LIMIT_WARN_INTERVAL};
use crate::udp_batch::{self, Batch};
use crate::upstream::Lifecycle;
use crate::wire;

/// Sockets bound before serving starts, so a caller (main, or a test binding port 0)
/// knows the real addresses and can fail early.
#[derive(Debug)]
pub struct Listeners {
    /// Per listen address, one UDP socket per UDP thread (SO_REUSEPORT when several).
    pub udp: Vec<Vec<std::net::UdpSocket>>,
    pub tcp: Vec<std::net::TcpListener>,
    /// `[server] metrics`, when set.
    pub metrics: Option<std::net::TcpListener>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({proto}): {source}{hint}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub proto: &'static str,
    pub source: io::Error,
    hint: &'static str,
}

impl Listeners {
    /// Binds UDP and TCP on each address, on the same port (for port 0, the port the
    /// kernel picked for UDP), with `udp_sockets` UDP sockets per address sharing the
    /// port through SO_REUSEPORT, one for each UDP thread.
    pub fn bind(addrs: &[SocketAddr], udp_sockets: usize) -> Result<Listeners, BindError> {
        let mut l = Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            metrics: None,
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
        if let Some(addr) = server.metrics {
            let s = new_socket(addr, Type::STREAM, false)
                .map_err(|e| bind_error(addr, "metrics", e))?;
            l.metrics = Some(s.into());
        }
        Ok(l)
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
            "; ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)"
        }
        io::ErrorKind::AddrInUse => "; another DNS server (systemd-resolved, dnsmasq) may hold it",
        io::ErrorKind::AddrNotAvailable => "; the address is not on this host",
        _ => "",
    };
    BindError {
        addr,
        proto,
        source,
        hint,
    }
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

/// Largest client datagram read; a query is far smaller, anything cut short fails to
/// parse and is answered FORMERR.
const UDP_QUERY_BUF: usize = 4096;

/// What the server is handed besides its configuration and sockets.
pub struct Control {
    /// The clock the cache and budgets use: tests pass a `ManualClock`.
    pub clock: Arc<dyn Clock>,
    /// New configurations to switch to (SIGHUP in `main`), already validated.
    pub reloads: Option<mpsc::UnboundedReceiver<Config>>,
    /// Where to tell systemd about readiness, reloads and liveness.
    pub notifier: Notifier,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            clock: Arc::new(SystemClock),
            reloads: None,
            notifier: Notifier::default(),
        }
    }
}

/// The handler every listener uses for its next query; a reload swaps it whole, so a
/// query is handled entirely by the old configuration or entirely by the new one.
type Current = Arc<ArcSwap<Handler>>;

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight queries finish
/// (each ends by its route's deadline) and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(config, listeners, shutdown, Control::default()).await
}

/// `run`, with a clock and a source of configuration reloads.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    mut control: Control,
) -> io::Result<()> {
    let life = Lifecycle::with_clock(control.clock);
    // The cache and the in-flight map outlive any one configuration.
    let resolver = Arc::new(Resolver::new(
        Arc::new(Cache::new(config.cache_max_entries)),
        life.clone(),
    ));
    let metrics = Arc::new(Metrics::default());
    let handler: Current = Arc::new(ArcSwap::from_pointee(Handler::new(
        &config,
        life.clone(),
        Arc::clone(&resolver),
        Arc::clone(&metrics),
    )));
    let health = Arc::new(Health::default());
    health
        .requires_upstreams
        .store(config.server.ready_requires_upstreams, Ordering::Relaxed);
    let tcp_limit = Arc::new(Semaphore::new(config.server.tcp_max_connections));
    let tcp_opts = TcpOptions {
        idle: config.server.tcp_idle_timeout,
        pipelined: config.server.tcp_max_pipelined,
        max_queries: config.server.tcp_max_queries_per_connection,
        lifetime: config.server.tcp_max_lifetime,
        per_client: config.server.tcp_max_connections_per_client,
    };

    for group in listeners.udp {
        if let Some(first) = group.first() {
            tracing::info!(addr = %first.local_addr()?, threads = group.len(), "listening on udp");
        }
        for (i, sock) in group.into_iter().enumerate() {
            spawn_udp_thread(i, sock, Arc::clone(&handler), life.clone())?;
        }
    }
    for listener in listeners.tcp {
        let listener = TcpListener::from_std(listener)?;
        tracing::info!(addr = %listener.local_addr()?, "listening on tcp");
        life.tasks.spawn(serve_tcp(
            listener,
            Arc::clone(&handler),
            life.clone(),
            Arc::clone(&tcp_limit),
            tcp_opts,
        ));
    }
    if let Some(listener) = listeners.metrics {
        let listener = TcpListener::from_std(listener)?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
        let registry = Arc::new(crate::metrics::registry(
            Arc::clone(&handler),
            Arc::clone(&metrics),
        ));
        life.tasks.spawn(crate::metrics::serve_http(
            listener,
            registry,
            Arc::clone(&health),
            Arc::clone(&handler),
            life.clone(),
        ));
    }
    log_config(&config);
    health.serving.store(true, Ordering::Relaxed);
    handler.load().start_background();
    let notifier = Arc::new(control.notifier);
    notifier.notify(&format!("READY=1\nSTATUS={}", status(&config)));
    if let Some(interval) = notify::watchdog_interval().filter(|_| notifier.is_enabled()) {
        life.tasks
            .spawn(watchdog(interval, Arc::clone(&notifier), life.clone()));
    }

    tokio::pin!(shutdown);
    let mut running = config;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = sweep.tick() => handler.load().sweep_idle_sockets(),
            Some(new) = next_reload(&mut control.reloads) => {
                notifier.reloading();
                running = reload(&handler, running, new, &life, &resolver, &metrics);
                health
                    .requires_upstreams
                    .store(running.server.ready_requires_upstreams, Ordering::Relaxed);
                notifier.notify(&format!("READY=1\nSTATUS={}", status(&running)));
            }
        }
    }
    health.serving.store(false, Ordering::Relaxed);
    notifier.notify("STOPPING=1");
    tracing::info!("stopping: no new queries; finishing those in flight");
    life.shutdown.cancel();
    life.tasks.close();
    // In-flight queries end by their route deadline; TCP writes are bounded by the idle
    // timeout. This bound only guards against a bug keeping a task alive.
    let longest = running
        .routes
        .iter()
        .map(|r| r.timeout)
        .max()
        .unwrap_or_default();
    let grace = longest + running.server.tcp_idle_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, life.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some work was still running {grace:?} after the stop; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often idle upstream sockets past their age are closed: such a socket stays
/// open at most `POOL_MAX_AGE` plus this.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

fn status(config: &Config) -> String {
    let listen: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
    format!(
        "serving {} routes on {}",
        config.routes.len(),
        listen.join(" ")
    )
}

/// Pings systemd's watchdog at half its interval while every UDP serving loop has gone
/// round recently; a stuck loop stops the pings, and systemd restarts the service.
async fn watchdog(interval: Duration, notifier: Arc<Notifier>, life: Lifecycle) {
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tokio::select! {
            _ = life.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let oldest = life.heartbeats.oldest();
        if oldest <= interval / 2 + notify::HEARTBEAT {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::error!(stalled = ?oldest, "a udp serving loop has stalled; withholding the watchdog ping");
        }
    }
}

async fn next_reload(reloads: &mut Option<mpsc::UnboundedReceiver<Config>>) -> Option<Config> {
    match reloads {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn log_config(config: &Config) {
    for r in &config.routes {
        tracing::info!(
            route = %r.name,
            zones = %r.zones.iter().map(|z| wire::name_to_string(z)).collect::<Vec<_>>().join(" "),
            upstreams = %r.upstreams.iter().map(|u| u.addr.to_string()).collect::<Vec<_>>().join(" "),
            policy = %r.policy.as_str(),
            timeout = %humantime::format_duration(r.timeout),
            "route"
        );
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
}

/// Switches to `new`: routes, ACL, upstreams, cache policies and `max_inflight` take
/// effect for the next query; queries in flight finish on the old ones; the cache is
/// kept. Sockets and the settings bound to them stay as they are until a restart.
fn reload(
    current: &Current,
    old: Config,
    new: Config,
    life: &Lifecycle,
    resolver: &Arc<Resolver>,
    metrics: &Arc<Metrics>,
) -> Config {
    current.store(Arc::new(Handler::new(
        &new,
        life.clone(),
        Arc::clone(resolver),
        Arc::clone(metrics),
    )));
    current.load().start_background();
    tracing::info!(config = %new.source, routes = new.routes.len(), "configuration reloaded");
    log_config(&new);
    let mut needs_restart = Vec::new();
    if old.server.listen != new.server.listen {
        needs_restart.push("server.listen");
    }
    if old.server.udp_threads != new.server.udp_threads {
        needs_restart.push("server.udp_threads");
    }
    let tcp = |s: &crate::config::Server| {
        (
            s.tcp_idle_timeout,
            s.tcp_max_connections,
            s.tcp_max_pipelined,
            s.tcp_max_queries_per_connection,
            s.tcp_max_lifetime,
            s.tcp_max_connections_per_client,
        )
    };
    if tcp(&old.server) != tcp(&new.server) {
        needs_restart.push("server.tcp_*");
    }
    if old.cache_max_entries != new.cache_max_entries {
        needs_restart.push("cache.max_entries");
    }
    if old.server.log_format != new.server.log_format {
        needs_restart.push("server.log_format");
    }
    if old.server.metrics != new.server.metrics {
        needs_restart.push("server.metrics");
    }
    if !needs_restart.is_empty() {
        tracing::warn!(
            settings = %needs_restart.join(", "),
            "these changes take effect only after a restart; everything else is in effect now"
        );
    }
    new
}

/// Serves one UDP socket on a thread of its own with a single-threaded runtime: a
/// query is received, answered (from cache, inline) and sent on one thread, and the
/// forwarding it starts runs there too. A shared multi-threaded runtime spent more
/// CPU waking its workers for each other than on the queries themselves.
fn spawn_udp_thread(
    index: usize,
    sock: std::net::UdpSocket,
    handler: Current,
    life: Lifecycle,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("zonefwd-udp-{index}"))
        .spawn(move || {
            rt.block_on(async move {
                match UdpSocket::from_std(sock) {
                    // Tracked, so the stop waits for the queries it is still answering.
                    Ok(sock) => {
                        life.tasks
                            .track_future(serve_udp(Arc::new(sock), handler, life.clone()))
                            .await
                    }
                    Err(e) => tracing::error!(error = %e, "cannot serve a udp socket"),
                }
                // Queries this thread started finish on this runtime: keep it running
                // until every tracked task, here and elsewhere, is done.
                life.tasks.wait().await;
            })
        })?;
    Ok(())
}

/// A forwarded query being answered: its reply and where it goes, or `None` when the
/// answer panicked (a bug, already reported by the panic hook).
type Answering = Pin<Box<dyn Future<Output = Option<(Vec<u8>, SocketAddr)>>>>;

/// A forwarded query's answer, to be run by the serving loop itself rather than in a
/// task of its own: a task per query cost the runtime's task list, the tracker, a
/// task cell and a hand-off of the reply back to the loop (5% of a forwarded query's
/// instructions in all). A panic ends this query only, as it would end its task
/// (release builds keep `panic = "unwind"` for this). The answer's state, about a
/// KiB, is made inside the box (from `answer`, which only captures the job), since
/// made outside and moved in, or held unboxed in the loop's set, it was copied whole
/// on the way (6-8% more instructions per query).
fn answering<F: Future<Output = Vec<u8>>>(
    answer: impl FnOnce() -> F + 'static,
    client: SocketAddr,
) -> Answering {
    Box::pin(small(
        std::panic::AssertUnwindSafe(async move { (answer().await, client) })
            .catch_unwind()
            .map(Result::ok),
    ))
}

/// mimalloc serves blocks up to 1 KiB from per-size free lists; a larger one takes its
/// generic path, measured at about 400 instructions more per allocation, once per
/// forwarded query for the answer's state.
const SMALL_ALLOCATION: usize = 1024;

/// `f`, checked at compile time to fit a small allocation, so a change that grows a
/// forwarded query's state past it fails the build instead of slowing every miss.
fn small<F>(f: F) -> F {
    const {
        assert!(
            std::mem::size_of::<F>() <= SMALL_ALLOCATION,
            "a forwarded query's state outgrew a small allocation: box a part of it"
        )
    };
    f
}

async fn serve_udp(sock: Arc<UdpSocket>, handler: Current, life: Lifecycle) {
    let fd = sock.as_raw_fd();
    let beat = life.heartbeats.register();
    let mut heartbeat = tokio::time::interval(notify::HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Batch::new(UDP_QUERY_BUF);
    let mut received = Vec::with_capacity(udp_batch::BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(udp_batch::BATCH);
    let mut jobs: FuturesUnordered<Answering> = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = life.shutdown.cancelled() => break,
            _ = heartbeat.tick() => {
                beat.beat();
                continue;
            }
            Some(done) = jobs.next(), if !jobs.is_empty() => {
                replies.extend(done);
                finished(&mut jobs, &mut replies).await;
                flush(&sock, &mut batch, &mut replies).await;
                continue;
            }
            r = sock.readable() => if let Err(e) = r {
                tracing::debug!(error = %e, "udp socket error");
                continue;
            },
        }
        match sock.try_io(Interest::READABLE, || batch.recv(fd, &mut received)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors from earlier replies surface here on some systems;
                // they concern one client, not the socket.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        }
        let handler = handler.load();
        for (i, &(len, client)) in received.iter().enumerate() {
            match handler.prepare(batch.datagram(i, len), client, Transport::Udp) {
                Action::Drop => {}
                Action::Reply(out) => replies.push((out, client)),
                Action::Forward(job) => jobs.push(answering(move || job.run(), client)),
            }
        }
        flush(&sock, &mut batch, &mut replies).await;
    }
    // Stopping: no new queries, but those in flight still get their answers.
    while let Some(done) = jobs.next().await {
        replies.extend(done);
        finished(&mut jobs, &mut replies).await;
        flush(&sock, &mut batch, &mut replies).await;
    }
}

/// Collects the replies of every other answer already finished, so they leave in the
/// same `sendmmsg` as the one that woke the loop.
async fn finished(jobs: &mut FuturesUnordered<Answering>, into: &mut Vec<(Vec<u8>, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        while let Poll::Ready(Some(done)) = jobs.poll_next_unpin(cx) {
            into.extend(done);
        }
        Poll::Ready(())
    })
    .await
}

/// Sends `replies`, as many per system call as the socket takes; whatever it will not
/// take at once goes out one by one, waiting for room.
async fn flush(sock: &UdpSocket, batch: &mut Batch, replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
    let fd = sock.as_raw_fd();
    let mut sent = 0;
    while sent < replies.len() {
        match sock.try_io(Interest::WRITABLE, || batch.send(fd, &replies[sent..])) {
            Ok(n) if n > 0 => sent += n,
            _ => {
                let (out, client) = &replies[sent];
                send_udp(sock, out, *client).await;
                sent += 1;
            }
        }
    }
    replies.clear();
}

async fn send_udp(sock: &UdpSocket, out: &[u8], client: SocketAddr) {
    if let Err(e) = sock.send_to(out, client).await {
        tracing::debug!(%client, error = %e, "udp send failed");
    }
}

#[derive(Clone, Copy)]
struct TcpOptions {
    idle: Duration,
    pipelined: usize,
    max_queries: usize,
    lifetime: Duration,
    per_client: usize,
}

/// TCP connections per client address, so one client cannot take every slot.
#[derive(Default)]
struct PerClient(std::sync::Mutex<HashMap<std::net::IpAddr, usize>>);

/// A client's hold on one of its connection slots, given back on drop.
struct ClientSlot {
    table: Arc<PerClient>,
    ip: std::net::IpAddr,
}

impl PerClient {
    fn take(table: &Arc<PerClient>, ip: std::net::IpAddr, max: usize) -> Option<ClientSlot> {
        let mut t = table.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    handler: Current,
    life: Lifecycle,
    limit: Arc<Semaphore>,
    opts: TcpOptions,
) {
    let full_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let client_warning = Throttle::new(LIMIT_WARN_INTERVAL);
    let per_client = Arc::new(PerClient::default());
    loop {
        let (stream, client) = tokio::select! {
            _ = life.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            if full_warning.ready() {
                tracing::warn!(%client, "server.tcp_max_connections reached: closing new tcp connections (logged at most every 10s)");
            }
            continue;
        };
        let Some(slot) = PerClient::take(&per_client, client.ip(), opts.per_client) else {
            if client_warning.ready() {
                tracing::warn!(%client, "server.tcp_max_connections_per_client reached: closing new tcp connections from this client (logged at most every 10s)");
            }
            continue;
        };
        let handler = Arc::clone(&handler);
        let life2 = life.clone();
        life.tasks.spawn(async move {
            connection(stream, client, handler, life2, opts).await;
            drop((permit, slot));
        });
    }
}

/// One client TCP connection (RFC 7766): queries are read while earlier ones are still
/// being forwarded, answered in whatever order they finish, at most `pipelined` in
/// flight; idle connections close after `idle`.
async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(opts.pipelined);
    let pipeline = Arc::new(Semaphore::new(opts.pipelined));

    let writer = async move {
        while let Some(msg) = rx.recv().await {
            let mut frame = Vec::with_capacity(msg.len() + 2);
            frame.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            frame.extend_from_slice(&msg);
            // A client that stops reading must not hold the task forever.
            match tokio::time::timeout(opts.idle, wr.write_all(&frame)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = wr.shutdown().await;
    };

    let reader = async move {
        // RFC 9210 section 4: a connection's life and its number of queries are
        // bounded; past either, zonefwd stops reading, answers what it has, and closes.
        let end_of_life = tokio::time::Instant::now() + opts.lifetime;
        let mut queries = 0usize;
        loop {
            // Waiting for the first byte of the next message is where a connection is
            // idle; `read` is cancel-safe, so the timeout loses nothing.
            let mut first = [0u8; 1];
            let got = tokio::select! {
                _ = life.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(end_of_life) => {
                    tracing::debug!(%client, "closing a tcp connection at server.tcp_max_lifetime");
                    break;
                }
                r = tokio::time::timeout(opts.idle, rd.read(&mut first)) => r,
            };
            match got {
                Ok(Ok(1)) => {}
                Ok(_) => break, // EOF or error
                Err(_) => {
                    if pipeline.available_permits() < opts.pipelined {
                        continue; // answers still pending: not idle
                    }
                    tracing::debug!(%client, "closing an idle tcp connection");
                    break;
                }
            }
            // The rest of the message must follow promptly (slow-read clients).
            let msg = tokio::time::timeout(opts.idle, async {
                let second = rd.read_u8().await?;
                let len = usize::from(u16::from_be_bytes([first[0], second]));
                let mut msg = vec![0u8; len];
                rd.read_exact(&mut msg).await?;
                Ok::<_, io::Error>(msg)
            })
            .await;
            let Ok(Ok(msg)) = msg else { break };
            if msg.len() < wire::HEADER_LEN {
                tracing::debug!(%client, "closing a tcp connection that sent a runt message");
                break;
            }
            let Ok(permit) = Arc::clone(&pipeline).acquire_owned().await else {
                break;
            };
            queries += 1;
            match handler.load().prepare(&msg, client, Transport::Tcp) {
                Action::Drop => {}
                Action::Reply(out) => {
                    if tx.send(out).await.is_err() {
                        break;
                    }
                }
                Action::Forward(job) => {
                    let tx = tx.clone();
                    // Boxed once here: a forwarded query's future is a few KiB, and
                    // unboxed, spawning and finishing the task copied it whole about
                    // five times (memcpy was 13% of the cache-miss instructions).
                    life.tasks.spawn(Box::pin(async move {
                        let out = job.run().await;
                        let _ = tx.send(out).await;
                        drop(permit);
                    }));
                }
            }
            if queries >= opts.max_queries {
                tracing::debug!(%client, "closing a tcp connection at server.tcp_max_queries_per_connection");
                break;
            }
        }
        // Dropping our sender lets the writer end once the spawned jobs have answered.
    };

    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn a_bug() -> Vec<u8> {
        panic!("a bug hit by one packet")
    }

    #[tokio::test]
    async fn a_panicking_answer_ends_only_its_own_query() {
        let client: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut jobs: FuturesUnordered<Answering> = FuturesUnordered::new();
        jobs.push(answering(a_bug, client));
        jobs.push(answering(|| async { vec![1, 2, 3] }, client));
        let mut replies = Vec::new();
        while let Some(done) = jobs.next().await {
            replies.extend(done);
        }
        assert_eq!(replies, vec![(vec![1, 2, 3], client)]);
    }
}

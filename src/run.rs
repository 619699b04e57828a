//! Running the server: start serving the bound listeners, switch configurations on
//! reload, ping systemd's watchdog, and stop gracefully.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::config::TcpOptions;
use crate::control::{self, ControlContext, Loaded};
use crate::handler::{Handler, ServerState};
use crate::life::{Clock, Lifecycle, SystemClock};
use crate::listen::accept::{accept, StreamLimits};
use crate::listen::{https, tcp, tls};
use crate::listen::{udp, Current, Listeners};
use crate::metrics::{self, Observed, Sources};
use crate::notify::{self, Notifier};
use crate::reloads::{
    restart_only_changes, CertificateWatch, ReadFile, ReloadOutcome, ReloadRequest,
};
use crate::tls::validity::Validity;
use crate::transport::Transport;
use crate::upstream::UpstreamSet;
use crate::wire;

/// What the server is handed besides its configuration and sockets.
pub struct RunOptions {
    /// The clock the cache and budgets use: tests pass a `ManualClock`.
    pub clock: Arc<dyn Clock>,
    /// Files read for a reload (SIGHUP in `main`): validated configurations to switch
    /// to, or the located errors of files that were refused (counted).
    pub reloads: Option<mpsc::UnboundedReceiver<ReadFile>>,
    /// Where to tell systemd about readiness, reloads and liveness.
    pub notifier: Notifier,
    /// How often `tls_cert` and `tls_key` are read again for a renewed pair.
    pub certificate_check: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            clock: Arc::new(SystemClock),
            reloads: None,
            notifier: Notifier::default(),
            certificate_check: CERTIFICATE_CHECK,
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight queries finish
/// (each ends by its route's deadline) and returns.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(config, listeners, shutdown, RunOptions::default()).await
}

/// `run`, with a clock and a source of configuration reloads.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    mut options: RunOptions,
) -> io::Result<()> {
    let state = ServerState::new(&config, Lifecycle::with_clock(options.clock));
    let handler: Current = Arc::new(ArcSwap::from_pointee(Handler::new(&config, &state, None)));
    // `zonefwd ctl reload` validates the file itself and hands the result here.
    let (ctl_reload, mut ctl_reloads) = mpsc::unbounded_channel();
    let loaded = Arc::new(std::sync::Mutex::new(Loaded {
        file: config.source.clone(),
        at: SystemTime::now(),
    }));
    let cx = ControlContext {
        current: Arc::clone(&handler),
        state: state.clone(),
        reload: ctl_reload,
        loaded: Arc::clone(&loaded),
    };
    start_listeners(listeners, &config, cx)?;
    log_config(&config);
    state.readiness.serving.store(true, Ordering::Relaxed);
    handler.load().start_background();
    let notifier = Arc::new(options.notifier);
    notifier.notify(&format!("READY=1\nSTATUS={}", status(&config)));
    let life = &state.life;
    if let Some(interval) = notify::watchdog_interval().filter(|_| notifier.is_enabled()) {
        life.tasks
            .spawn(watchdog(interval, Arc::clone(&notifier), life.clone()));
    }

    tokio::pin!(shutdown);
    // What runs: the sockets and sizes bound at start, which only a restart changes.
    let started = config.clone();
    let mut running = config;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut certificates = tokio::time::interval(options.certificate_check);
    certificates.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = CertificateWatch::default();
    loop {
        let request = tokio::select! {
            _ = &mut shutdown => break,
            _ = sweep.tick() => {
                handler.load().sweep_idle_sockets();
                continue;
            }
            _ = certificates.tick() => match watch.check(&running, SystemTime::now()) {
                Some(request) => request,
                None => continue,
            },
            Some(request) = next_reload(&mut options.reloads, &mut ctl_reloads) => request,
        };
        let outcome = match request.file {
            Ok(new) => {
                notifier.reloading();
                let pending = restart_only_changes(&started, &new);
                running = reload(&handler, &state, new, &pending);
                *loaded.lock().unwrap_or_else(|e| e.into_inner()) = Loaded {
                    file: running.source.clone(),
                    at: SystemTime::now(),
                };
                state.reloads.note_applied(pending.clone());
                notifier.notify(&format!("READY=1\nSTATUS={}", status(&running)));
                Ok(pending)
            }
            Err(why) => refused(&state, why),
        };
        if let Some(answer) = request.answer {
            let _ = answer.send(outcome);
        }
    }
    state.readiness.serving.store(false, Ordering::Relaxed);
    notifier.notify("STOPPING=1");
    stop(life, &running).await;
    Ok(())
}

/// Starts serving every bound socket: a thread per UDP socket, a task per TCP
/// listener, and the metrics endpoint.
fn start_listeners(listeners: Listeners, config: &Config, cx: ControlContext) -> io::Result<()> {
    let (handler, state) = (&cx.current, &cx.state);
    let life = &state.life;
    for group in listeners.udp {
        if let Some(first) = group.first() {
            tracing::info!(addr = %first.local_addr()?, threads = group.len(), "listening on udp");
        }
        for (i, sock) in group.into_iter().enumerate() {
            udp::spawn_thread(i, sock, Arc::clone(handler), life.clone())?;
        }
    }
    let stream_kinds: Vec<Transport> = [
        (Transport::Tcp, !listeners.tcp.is_empty()),
        (Transport::Tls, !listeners.tls.is_empty()),
        (Transport::Https, !listeners.https.is_empty()),
    ]
    .into_iter()
    .filter_map(|(t, bound)| bound.then_some(t))
    .collect();
    let tcp_opts = TcpOptions::of(&config.server);
    let limits = StreamLimits::new(
        config.server.tcp_max_connections,
        config.server.tcp_max_connections_per_client,
    );
    let streams = [
        (Transport::Tcp, listeners.tcp),
        (Transport::Tls, listeners.tls),
        (Transport::Https, listeners.https),
    ];
    for (kind, bound) in streams {
        for listener in bound {
            let listener = TcpListener::from_std(listener)?;
            tracing::info!(addr = %listener.local_addr()?, "listening on {}", kind.as_str());
            let (handler, life2, stats) = (
                Arc::clone(handler),
                life.clone(),
                Arc::clone(&state.streams),
            );
            let serve = move |stream, client| {
                let (handler, life, stats) =
                    (Arc::clone(&handler), life2.clone(), Arc::clone(&stats));
                async move {
                    match kind {
                        Transport::Tls => {
                            tls::connection(stream, client, handler, life, tcp_opts, stats).await
                        }
                        Transport::Https => {
                            https::connection(stream, client, handler, life, tcp_opts, stats).await
                        }
                        _ => tcp::plain(stream, client, handler, life, tcp_opts).await,
                    }
                }
            };
            let accepting = accept(
                listener,
                kind,
                Arc::clone(&limits),
                Arc::clone(&state.streams),
                life.clone(),
                serve,
            );
            life.tasks.spawn(accepting);
        }
    }
    if let Some(listener) = listeners.metrics {
        let listener = TcpListener::from_std(listener)?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
        let configured: Arc<dyn Observed> = Arc::new(Configured(Arc::clone(handler)));
        let registry = Arc::new(metrics::registry(Sources {
            metrics: Arc::clone(&state.metrics),
            cache: Arc::clone(state.resolver.cache()),
            resolutions: Arc::clone(&state.resolver.stats),
            inflight: Arc::clone(&state.inflight),
            reloads: Arc::clone(&state.reloads),
            dnstap: Arc::clone(&state.dnstap.counts),
            configured: Arc::clone(&configured),
            streams: Arc::clone(&state.streams),
            stream_kinds,
        }));
        life.tasks.spawn(metrics::serve_http(
            listener,
            registry,
            Arc::clone(&state.readiness),
            configured,
            life.clone(),
        ));
    }
    if let (Some(listener), Some(path)) = (listeners.control, config.server.control.clone()) {
        tracing::info!(path = %path.display(), "serving the control socket");
        let life = life.clone();
        life.tasks.spawn(control::serve(listener, path, cx));
    }
    Ok(())
}

/// Stops accepting and waits for the work in flight. In-flight queries end by their
/// route deadline; TCP writes are bounded by the idle timeout. The bound here only
/// guards against a bug keeping a task alive.
async fn stop(life: &Lifecycle, running: &Config) {
    tracing::info!("stopping: no new queries; finishing those in flight");
    life.shutdown.cancel();
    life.tasks.close();
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
}

/// The metrics' view of the configuration in force: whatever handler is current.
struct Configured(Current);

impl Observed for Configured {
    fn upstream_sets(&self) -> Vec<Arc<UpstreamSet>> {
        self.0.load().upstream_sets().cloned().collect()
    }

    fn loops_detected(&self) -> u64 {
        self.0.load().loops_detected()
    }

    fn broken_chains(&self) -> u64 {
        self.0.load().broken_chains()
    }

    fn certificate(&self) -> Option<Validity> {
        self.0.load().certificate.as_ref().map(|id| id.validity)
    }
}

/// How often idle upstream sockets past their age are closed: such a socket stays
/// open at most `POOL_MAX_AGE` plus this.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the certificate files are read again: a renewal is done weeks before the
/// old certificate expires, and a Secret reaches a pod's files within about a minute.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(60);

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

/// The next reload: from the caller (SIGHUP in main) or from the control socket's
/// `reload`, which waits for the outcome.
async fn next_reload(
    reloads: &mut Option<mpsc::UnboundedReceiver<ReadFile>>,
    ctl_reloads: &mut mpsc::UnboundedReceiver<ReloadRequest>,
) -> Option<ReloadRequest> {
    let signalled = |file| ReloadRequest { file, answer: None };
    match reloads {
        Some(from_signal) => tokio::select! {
            Some(file) = from_signal.recv() => Some(signalled(file)),
            Some(r) = ctl_reloads.recv() => Some(r),
            else => None,
        },
        None => ctl_reloads.recv().await,
    }
}

/// A file that did not validate: counted, logged, and the running configuration stays.
fn refused(state: &ServerState, why: String) -> ReloadOutcome {
    state.reloads.note_refused();
    tracing::error!("reload refused, the running configuration stays: {why}");
    Err(why)
}

fn log_config(config: &Config) {
    for r in &config.routes {
        tracing::info!(
            route = %r.name,
            zones = %r.zones.iter().map(|z| wire::name_to_string(z)).collect::<Vec<_>>().join(" "),
            upstreams = %r.upstreams.iter().map(|u| u.addr.to_string()).collect::<Vec<_>>().join(" "),
            policy = %r.order.as_str(),
            timeout = %humantime::format_duration(r.timeout),
            "route"
        );
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
}

/// Switches to `new`: routes, ACL, upstreams, cache policies and limits take effect
/// for the next query; queries in flight finish on the old ones; the cache, the
/// client table, the in-flight count and every unchanged upstream are kept. Sockets
/// and the settings bound to them stay as they are until a restart (`pending`).
fn reload(current: &Current, state: &ServerState, new: Config, pending: &[&str]) -> Config {
    let next = Handler::new(&new, state, Some(&current.load()));
    current.store(Arc::new(next));
    current.load().start_background();
    tracing::info!(config = %new.source, routes = new.routes.len(), "configuration reloaded");
    log_config(&new);
    if !pending.is_empty() {
        tracing::warn!(
            settings = %pending.join(", "),
            "these settings differ from what runs and take effect only after a restart; everything else is in effect now"
        );
    }
    new
}

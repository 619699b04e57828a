#![forbid(unsafe_code)]

/// mimalloc instead of glibc malloc: a forwarded query makes many small, short-lived
/// allocations, which mimalloc's per-size free lists serve cheaply, and it keeps less
/// memory than glibc's arenas for the same cache.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use zonefwd::config::{Config, LoadEnv, LogFormat, DEFAULT_PATH};
use zonefwd::{report, Listeners, RunOptions};

/// A lightweight conditional DNS forwarder: private cloud zones to the cloud resolver,
/// everything else to your own DNS servers.
#[derive(Parser)]
#[command(
    name = "zonefwd",
    version,
    about,
    long_about = "zonefwd routes the private DNS zones of cloud services (private AKS and \
        EKS clusters, private endpoints) to the cloud's in-network resolver and every other \
        name to your own DNS servers, relaying the upstream's replies byte for byte, with a \
        cache, query coalescing, RFC 5452 defences, per-route limits, reloads and \
        Prometheus metrics. The configuration is zonefwd.toml(5).",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(short, long, env = "ZONEFWD_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS until SIGTERM or SIGINT.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// The control socket, over [server] control (the systemd unit sets
        /// /run/zonefwd/control.sock this way).
        #[arg(long, env = "ZONEFWD_CONTROL")]
        control: Option<PathBuf>,
    },
    /// Validate the configuration and print the routing table.
    Check(ConfigArg),
    /// Exit 0 if the zonefwd serving this configuration answers on its first listen
    /// address, else 1 (for container HEALTHCHECKs, where 2 is reserved: no curl
    /// needed).
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show which route answers NAME and the upstreams it would try, without sending anything.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// The query name, e.g. myaks-1a2b.privatelink.westeurope.azmk8s.io
        name: String,
        /// The query type (A, AAAA, DS, TYPE65...); A when left out.
        #[arg(name = "TYPE", default_value = "A")]
        qtype: String,
    },
    /// Resolve NAME now through the route that answers it, and print the route, the
    /// upstream, the round trip, the rcode, the answer and any guard warning; on a
    /// failure, what each upstream says. Exit 0 for NOERROR and NXDOMAIN, 1 for
    /// SERVFAIL, REFUSED or no route, 2 for a bad configuration.
    Query {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
        /// The query type; A when left out.
        #[arg(name = "TYPE", default_value = "A")]
        qtype: String,
    },
    /// Check every upstream on UDP and TCP, the listen addresses, and the routes'
    /// settings against the cloud resolvers' behaviour; print each finding with its fix.
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        /// Run as root, the TCP checks run as this user, the way the service does (the
        /// systemd unit's DynamicUser, the image's 65532): a firewall may admit TCP to
        /// the cloud resolver from root only. "root" checks as root.
        #[arg(long, default_value = "nobody")]
        as_user: String,
    },
    /// One TCP probe, printed as JSON: what `doctor` runs as the service's user.
    #[command(hide = true)]
    ProbeTcp {
        addr: std::net::SocketAddr,
        zone: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Talk to a running zonefwd over its control socket ([server] control): status,
    /// flush NAME [TYPE] | --zone ZONE | --negative [--zone ZONE] | --all,
    /// cache NAME [TYPE], reload, upstream ROUTE ADDR down [--force] | up, drain,
    /// undrain. Exit 0 done, 1 the server said no, 2 no connection or bad arguments.
    Ctl {
        #[command(flatten)]
        config: ConfigArg,
        /// The control socket; otherwise $ZONEFWD_CONTROL, the configuration's
        /// [server] control, or the systemd unit's /run/zonefwd/control.sock.
        #[arg(long, env = "ZONEFWD_CONTROL")]
        socket: Option<PathBuf>,
        /// Print the server's answer as it came: one JSON object.
        #[arg(long)]
        json: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// List the zone presets, or print the zones of one.
    Presets {
        /// A preset's name (azure, azure-government, azure-china, aws).
        name: Option<String>,
    },
    /// Print the conditional forwarders on-prem DNS servers need for every zone this
    /// configuration sends to the cloud, pointing at zonefwd. Routes whose upstreams
    /// are on-prem servers are left out (as comments saying why): they would loop.
    OnpremForwarders {
        #[command(flatten)]
        config: ConfigArg,
        /// zonefwd's addresses as the on-prem servers reach it, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<std::net::IpAddr>,
        /// The addresses of the on-prem servers the output is for, comma-separated
        /// (the catch-all route's upstreams count as on-prem too).
        #[arg(long, value_delimiter = ',')]
        onprem: Vec<std::net::IpAddr>,
        /// Cloud resolvers at addresses of their own (the VPC's base address plus
        /// two), comma-separated; 168.63.129.16 and 169.254.169.253 are known.
        #[arg(long, value_delimiter = ',')]
        cloud: Vec<std::net::IpAddr>,
        #[arg(long, value_enum)]
        format: zonefwd::onprem::Format,
    },
    /// Print zonefwd routes (TOML, fit for `include`) for a managed resolver's rules.
    #[command(subcommand)]
    Import(Import),
    /// Print the shell completions for bash, zsh or fish (the .deb installs them).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages into DIR: zonefwd(8), one page per command and
    /// zonefwd.toml(5) (the .deb runs it at package time).
    #[command(hide = true)]
    Manual { dir: PathBuf },
}

#[derive(Subcommand)]
enum Import {
    /// Azure DNS Private Resolver: the JSON of
    /// `az dns-resolver forwarding-rule list --ruleset-name R -g G -o json`.
    AzureRuleset {
        file: PathBuf,
        #[command(flatten)]
        fit: FitArg,
    },
    /// Route 53 Resolver: the JSON of `aws route53resolver list-resolver-rules`.
    Route53Rules {
        file: PathBuf,
        #[command(flatten)]
        fit: FitArg,
        /// The VPC resolver SYSTEM rules send names back to (the VPC's base address
        /// plus two, or 169.254.169.253); required when a SYSTEM rule is present.
        #[arg(long)]
        vpc_resolver: Option<std::net::IpAddr>,
    },
}

#[derive(Args)]
struct FitArg {
    /// Fit the output to this configuration as a fragment of it: leave out the
    /// catch-all and every zone it already routes (each as a comment naming the route).
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// Whom `doctor` runs its TCP checks as: `name` when this process is root (and `name`
/// is not root), else this process itself.
fn service_user(name: &str) -> Result<Option<zonefwd::diagnose::ServiceUser>, String> {
    if !nix::unistd::geteuid().is_root() || name == "root" {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("--as-user {name}: {e}"))?
        .ok_or_else(|| format!("--as-user {name}: no such user"))?;
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    Ok(Some(zonefwd::diagnose::ServiceUser {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        exe,
    }))
}

/// `zonefwd import ...`: the routes, on stdout.
fn import(which: &Import) -> Result<bool, String> {
    let (file, fit) = match which {
        Import::AzureRuleset { file, fit } | Import::Route53Rules { file, fit, .. } => (file, fit),
    };
    let existing = match &fit.config {
        Some(path) => zonefwd::import::Existing::of(&load(path)?),
        None => zonefwd::import::Existing::default(),
    };
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let source = file.display().to_string();
    let routes = match which {
        Import::AzureRuleset { .. } => zonefwd::import::azure_ruleset(&text, &source, &existing),
        Import::Route53Rules { vpc_resolver, .. } => {
            zonefwd::import::route53_rules(&text, &source, *vpc_resolver, &existing)
        }
    };
    let routes = routes.map_err(|e| format!("{}: {e}", file.display()))?;
    print!("{routes}");
    Ok(true)
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path, &LoadEnv::default()).map_err(|e| e.to_string())
}

/// The configuration `run` serves: the file, with `--control` over its socket.
fn load_for_run(path: &Path, control: &Option<PathBuf>) -> Result<Config, String> {
    let mut config = load(path)?;
    if control.is_some() {
        config.server.control.clone_from(control);
    }
    Ok(config)
}

/// Where the systemd unit puts the control socket (RuntimeDirectory=zonefwd).
const UNIT_CONTROL_SOCKET: &str = "/run/zonefwd/control.sock";

/// Logs go to stderr, filtered by `RUST_LOG` (default info), as text or JSON lines;
/// under systemd (stderr is the journal stream `$JOURNAL_STREAM` names), to the
/// journal itself, so that each record keeps its priority and fields.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if let Some(journal) = journal_layer() {
        tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Colour only for a person at a terminal: journald and log files get plain text.
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

/// The journal, when systemd connected stderr to it: `$JOURNAL_STREAM` names stderr's
/// device and inode (systemd.exec(5)), which is checked, so a service whose stderr
/// was redirected elsewhere keeps writing there. Without a journal socket, `None`.
fn journal_layer() -> Option<tracing_journald::Layer> {
    let stream = std::env::var("JOURNAL_STREAM").ok()?;
    let (dev, ino) = stream.split_once(':')?;
    use std::os::unix::fs::MetadataExt;
    // What fd 2 is: stat follows the link to the pipe or socket itself.
    let stderr = std::fs::metadata("/proc/self/fd/2").ok()?;
    if dev.parse::<u64>().ok()? != stderr.dev() || ino.parse::<u64>().ok()? != stderr.ino() {
        return None;
    }
    use tracing_journald::{Priority, PriorityMappings};
    // info is syslog's informational (6), not the crate's default notice (5): a query
    // log line is no notice.
    let priorities = PriorityMappings {
        info: Priority::Informational,
        debug: Priority::Debug,
        ..PriorityMappings::new()
    };
    tracing_journald::layer().ok().map(|l| {
        l.with_syslog_identifier("zonefwd".to_string())
            .with_priority_mappings(priorities)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The configuration is read first: it says how to log.
        Command::Run { config, control } => load_for_run(&config.config, &control).and_then(|c| {
            init_logging(c.server.log_format);
            serve(&config.config, c, control)
        }),
        Command::Check(c) => load(&c.config).map(|config| {
            print!("{}", report::routing_table(&config));
            true
        }),
        // 0 healthy, 1 anything else: Docker reserves exit code 2 of a HEALTHCHECK.
        Command::Healthcheck { config, timeout } => {
            match load(&config.config).and_then(|c| healthcheck(&c, timeout)) {
                Err(e) => {
                    eprintln!("zonefwd: {e}");
                    Ok(false)
                }
                answered => answered,
            }
        }
        Command::Explain {
            config,
            name,
            qtype,
        } => report::parse_qtype(&qtype).and_then(|t| {
            let config = load(&config.config)?;
            let (text, matched) = report::explain(&config, &name, t)?;
            print!("{text}");
            Ok(matched)
        }),
        Command::Query {
            config,
            name,
            qtype,
        } => report::parse_qtype(&qtype).and_then(|t| {
            let config = load(&config.config)?;
            let (text, ok) = runtime()?.block_on(zonefwd::diagnose::query(&config, &name, t))?;
            print!("{text}");
            Ok(ok)
        }),
        Command::Doctor { config, as_user } => load(&config.config).and_then(|config| {
            let user = service_user(&as_user)?;
            let (text, ok) = runtime()?.block_on(zonefwd::diagnose::doctor(&config, user.as_ref()));
            print!("{text}");
            Ok(ok)
        }),
        Command::Ctl {
            config,
            socket,
            json,
            command,
        } => ctl(&config.config, socket, json, &command),
        Command::Presets { name: None } => {
            print!("{}", zonefwd::presets::list_text());
            Ok(true)
        }
        Command::Presets { name: Some(n) } => match zonefwd::presets::find(&n) {
            Some(p) => {
                print!("{}", zonefwd::presets::show_text(p));
                Ok(true)
            }
            None => Err(format!(
                "no preset {n:?}; presets: {}",
                zonefwd::presets::names().join(", ")
            )),
        },
        Command::OnpremForwarders {
            config,
            target,
            onprem,
            cloud,
            format,
        } => load(&config.config).and_then(|c| {
            let selection = zonefwd::onprem::Selection { onprem, cloud };
            print!(
                "{}",
                zonefwd::onprem::render(&c, &target, &selection, format)?
            );
            Ok(true)
        }),
        Command::Import(which) => import(&which),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "zonefwd",
                &mut std::io::stdout(),
            );
            Ok(true)
        }
        Command::Manual { dir } => {
            let reference = include_str!("../config/reference.toml");
            zonefwd::manual::write_pages(&Cli::command(), reference, &dir)
                .map(|pages| {
                    for p in pages {
                        println!("{}", p.display());
                    }
                    true
                })
                .map_err(|e| format!("cannot write the manual pages into {}: {e}", dir.display()))
        }
        Command::ProbeTcp {
            addr,
            zone,
            timeout,
        } => runtime().and_then(|rt| {
            let result = rt.block_on(zonefwd::diagnose::probe(addr, &zone, true, timeout));
            println!(
                "{}",
                serde_json::to_string(&result).map_err(|e| e.to_string())?
            );
            Ok(true)
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("zonefwd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `zonefwd ctl`: Ok(true) on success, Ok(false) when the server said no (exit 1),
/// Err for a bad command line or no connection (exit 2).
fn ctl(
    config: &Path,
    socket: Option<PathBuf>,
    json: bool,
    args: &[String],
) -> Result<bool, String> {
    use zonefwd::ctl::{self, CtlError};
    let request = ctl::request_for(args).map_err(|e| match e {
        CtlError::Usage(m) | CtlError::Server(m) => m,
    })?;
    let unit_socket = Path::new(UNIT_CONTROL_SOCKET);
    // The file is not validated here: an invalid file is what `ctl reload` is asked to
    // explain, and the server answers with the located error.
    let socket = match socket.or_else(|| zonefwd::config::control_socket_named_in(config)) {
        Some(s) => s,
        None if unit_socket.exists() => unit_socket.to_path_buf(),
        None => {
            return Err(format!(
                "{} names no [server] control socket, and {UNIT_CONTROL_SOCKET} does not exist (give --socket PATH)",
                config.display()
            ))
        }
    };
    let answer = ctl::exchange(&socket, &request).map_err(|e| match e {
        CtlError::Usage(m) | CtlError::Server(m) => m,
    })?;
    if json {
        println!("{answer}");
        return Ok(answer["ok"] == serde_json::json!(true));
    }
    match ctl::render(&request, &answer) {
        Ok(text) => {
            print!("{text}");
            Ok(true)
        }
        Err(CtlError::Server(m)) => {
            eprintln!("zonefwd: {m}");
            Ok(false)
        }
        Err(CtlError::Usage(m)) => Err(m),
    }
}

/// A small runtime for the commands that send a few queries.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn serve(path: &Path, config: Config, control_socket: Option<PathBuf>) -> Result<bool, String> {
    let listeners = Listeners::for_server(&config.server).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let stop = stop_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let reloads = reload_on_sighup(path.to_path_buf(), control_socket)
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "zonefwd starting");
        let options = RunOptions {
            reloads: Some(reloads),
            notifier: zonefwd::notify::Notifier::from_env(),
            ..RunOptions::default()
        };
        zonefwd::run_with(config, listeners, stop, options)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(true)
}

/// Sends a STATUS-opcode query to the first listen address (a wildcard address is
/// reached through loopback). zonefwd answers that itself, NOTIMP, without asking any
/// upstream, and a client outside the ACL still gets REFUSED: any reply with our ID
/// proves the UDP serving loop is alive, whatever the upstreams are doing.
fn healthcheck(config: &Config, timeout: std::time::Duration) -> Result<bool, String> {
    let mut target = *config.server.listen.first().ok_or("no listen address")?;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a literal address");
    let sock = std::net::UdpSocket::bind(bind).map_err(|e| format!("healthcheck: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| format!("healthcheck: {e}"))?;
    let id: u16 = rand::random();
    // Header only: ID, opcode 2 (STATUS), no question.
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    sock.send_to(&q, target)
        .map_err(|e| format!("healthcheck: cannot send to {target}: {e}"))?;
    let mut buf = [0u8; 512];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == target && n >= 12 && buf[..2] == id.to_be_bytes() => {
                println!("zonefwd answers on {target}");
                return Ok(true);
            }
            Ok(_) => continue,
            Err(e) => return Err(format!("healthcheck: no answer from {target}: {e}")),
        }
    }
}

/// On SIGHUP, reads and validates the config file again and hands the outcome to the
/// server: a configuration to switch to, or the located error, which the server logs
/// and counts while the running configuration stays.
fn reload_on_sighup(
    path: PathBuf,
    control: Option<PathBuf>,
) -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<zonefwd::ReadFile>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP received: reloading the configuration");
            if tx.send(load_for_run(&path, &control)).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Resolves on SIGTERM (systemd, Kubernetes) or SIGINT (a terminal).
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

//! The control commands, one JSON object per line each way. A request names its
//! `command`; every answer has `ok`, and `error` when it is false.
//!
//! ```text
//! {"command":"status"}
//! {"command":"flush","name":"x.example.","type":"A"}     name, optionally one type
//! {"command":"flush","zone":"blob.core.windows.net."}    every entry at or below
//! {"command":"flush","negative":true[,"zone":"..."]}     NXDOMAIN, NODATA, failures
//! {"command":"flush","all":true}
//! {"command":"cache","name":"x.example."[,"type":"A"]}
//! {"command":"reload"}
//! {"command":"upstream","route":"azure","upstream":"168.63.129.16:53","state":"down"[,"force":true]}
//! {"command":"drain"}                                     /readyz 503, queries answered
//! {"command":"undrain"}
//! ```

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{json, Value};

use super::ControlContext;
use crate::cache::Flush;
use crate::config::{Config, LoadEnv};
use crate::dnstap::DnstapOutput;
use crate::reloads::ReloadRequest;
use crate::tls::server::Identity;
use crate::tls::validity::rfc3339;
use crate::upstream::{Upstream, UpstreamSet};
use crate::wire;

#[derive(Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Status,
    Flush {
        name: Option<String>,
        #[serde(rename = "type")]
        qtype: Option<String>,
        zone: Option<String>,
        #[serde(default)]
        negative: bool,
        #[serde(default)]
        all: bool,
    },
    Cache {
        name: String,
        #[serde(rename = "type")]
        qtype: Option<String>,
    },
    Reload,
    Upstream {
        route: String,
        upstream: String,
        state: UpDown,
        /// Take out the route's last upstream in rotation all the same.
        #[serde(default)]
        force: bool,
    },
    Drain,
    Undrain,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum UpDown {
    Up,
    Down,
}

pub fn error(message: &str) -> Value {
    json!({ "ok": false, "error": message })
}

/// The answer to one request line.
pub async fn respond(line: &[u8], cx: &ControlContext) -> Value {
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return error(&format!("bad request: {e}")),
    };
    let answer = match request {
        Request::Status => Ok(status(cx)),
        Request::Flush {
            name,
            qtype,
            zone,
            negative,
            all,
        } => flush(cx, name, qtype, zone, negative, all),
        Request::Cache { name, qtype } => cache(cx, &name, qtype),
        Request::Reload => reload(cx).await,
        Request::Upstream {
            route,
            upstream,
            state,
            force,
        } => set_upstream(cx, &route, &upstream, state, force),
        Request::Drain => Ok(drain(cx, true)),
        Request::Undrain => Ok(drain(cx, false)),
    };
    answer.unwrap_or_else(|e| error(&e))
}

fn status(cx: &ControlContext) -> Value {
    let handler = cx.current.load();
    let loaded = cx.loaded.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sets: Vec<_> = handler.upstream_sets().cloned().collect();
    let routes: Vec<Value> = sets
        .iter()
        .map(|set| {
            let upstreams: Vec<Value> = set
                .upstreams
                .iter()
                .map(|u| upstream_status(set, u))
                .collect();
            json!({ "name": set.route, "ready": set.ready.as_str(), "upstreams": upstreams })
        })
        .collect();
    let readiness = cx.state.readiness.check(&sets);
    let cache = cx.state.resolver.cache();
    let (hits, misses) = (
        cache.stats.hits.load(Ordering::Relaxed),
        cache.stats.misses.load(Ordering::Relaxed),
    );
    let hit_ratio = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    };
    json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "config": loaded.file,
        "loaded_at": humantime::format_rfc3339_seconds(loaded.at).to_string(),
        "ready": readiness.is_ok(),
        "not_ready_because": readiness.err().map(|why| why.to_string()),
        "draining": cx.state.readiness.draining.load(Ordering::Relaxed),
        "last_reload_successful": cx.state.reloads.last_successful.load(Ordering::Relaxed),
        "restart_pending": cx.state.reloads.restart_pending(),
        "routes": routes,
        "cache": { "entries": cache.len(), "hits": hits, "misses": misses, "hit_ratio": hit_ratio },
        "inflight": cx.state.inflight.current(),
        "dnstap": dnstap_status(&cx.state.dnstap),
        "certificate": handler.certificate.as_ref().map(certificate_status),
    })
}

/// The certificate the DoT and DoH listeners serve: its file, names, validity, and
/// what is wrong with it now (expired, not yet valid, overdue for renewal) or null.
fn certificate_status(id: &Identity) -> Value {
    json!({
        "file": id.cert.display().to_string(),
        "names": id.names,
        "not_before": rfc3339(id.validity.not_before),
        "not_after": rfc3339(id.validity.not_after),
        "problem": id.expiry_problem(SystemTime::now()).map(|(text, _)| text),
    })
}

/// The dnstap collector and what was sent and dropped; null without `[dnstap]`.
fn dnstap_status(out: &DnstapOutput) -> Value {
    let Some(socket) = out.socket() else {
        return Value::Null;
    };
    let c = &out.counts;
    json!({
        "socket": socket.to_string(),
        "connected": c.connected.load(Ordering::Relaxed),
        "sent": c.sent.load(Ordering::Relaxed),
        "dropped": c.dropped.load(Ordering::Relaxed),
    })
}

/// A `tls://` upstream's name, handshakes and last failure (null once one succeeds).
fn tls_status(d: &crate::tls::client::Dialer) -> Value {
    let failure = d
        .last_failure()
        .map(|e| json!({ "reason": e.failure.as_str(), "error": e.to_string() }));
    let handshakes: serde_json::Map<String, Value> = d
        .handshakes
        .by_result()
        .filter(|(_, n)| *n > 0)
        .map(|(result, n)| (result.to_string(), json!(n)))
        .collect();
    json!({ "name": d.name(), "handshakes": handshakes, "last_failure": failure })
}

fn upstream_status(set: &UpstreamSet, u: &Upstream) -> Value {
    let srtt = u.stats.srtt_us.load(Ordering::Relaxed);
    let stats = &u.stats;
    json!({
        "address": u.addr.to_string(),
        "tls": u.tcp.tls().map(tls_status),
        "state": u.state().as_str(),
        "up": u.is_up(),
        "consecutive_failures": u.consecutive_failures(),
        "in_loop": u.looped.load(Ordering::Relaxed),
        "down_by_hand": u.manual_down.load(Ordering::Relaxed),
        "queries": u.stats.sent.load(Ordering::Relaxed),
        "timeouts": u.stats.timeouts.load(Ordering::Relaxed),
        "srtt_ms": if srtt == 0 { Value::Null } else { json!(srtt as f64 / 1000.0) },
        // How long a try waits before a retransmission, and whether the answer-time
        // model set it ("model") or the route's try_timeout holds ("try_timeout").
        "retransmit_after_ms": set.retransmit_wait(u).as_secs_f64() * 1000.0,
        "retransmit_from": if set.retransmit_after(u).is_some() { "model" } else { "try_timeout" },
        "retransmits_late": stats.retransmits_late.load(Ordering::Relaxed),
        "retransmits_timeout": stats.retransmits_timeout.load(Ordering::Relaxed),
        "retransmits_wasted": stats.retransmits_wasted.load(Ordering::Relaxed),
    })
}

/// A name as the cache keys it: lowercase wire form.
fn wire_name(name: &str) -> Result<Vec<u8>, String> {
    let mut w = wire::name_from_str(name).map_err(|e| format!("{name:?}: {e}"))?;
    wire::lowercase(&mut w);
    Ok(w)
}

fn flush(
    cx: &ControlContext,
    name: Option<String>,
    qtype: Option<String>,
    zone: Option<String>,
    negative: bool,
    all: bool,
) -> Result<Value, String> {
    let qtype = qtype
        .as_deref()
        .map(crate::report::parse_qtype)
        .transpose()?;
    let zone = zone.as_deref().map(wire_name).transpose()?;
    let name = name.as_deref().map(wire_name).transpose()?;
    let which = match (name.as_deref(), zone.as_deref(), negative, all) {
        (Some(name), None, false, false) => Flush::Name { name, qtype },
        (None, Some(zone), false, false) if qtype.is_none() => Flush::Zone(zone),
        (None, zone, true, false) if qtype.is_none() => Flush::Negative { zone },
        (None, None, false, true) if qtype.is_none() => Flush::All,
        _ => return Err("flush takes one of: name [type], zone, negative [zone], all".into()),
    };
    let flushed = cx.state.resolver.cache().flush(which);
    tracing::info!(flushed, "cache flushed through the control socket");
    Ok(json!({ "ok": true, "flushed": flushed }))
}

fn cache(cx: &ControlContext, name: &str, qtype: Option<String>) -> Result<Value, String> {
    let qtype = qtype
        .as_deref()
        .map(crate::report::parse_qtype)
        .transpose()?;
    let now = cx.state.life.clock.now();
    let entries: Vec<Value> = cx
        .state
        .resolver
        .cache()
        .inspect(&wire_name(name)?, qtype, now)
        .into_iter()
        .map(|v| {
            json!({
                "type": crate::report::qtype_name(v.qtype),
                "rcode": v.rcode.map(wire::rcode::name),
                "answers": v.answers,
                "ttl_left": v.ttl_left,
                "stale": v.stale,
                "failing": v.failing,
            })
        })
        .collect();
    Ok(json!({ "ok": true, "name": name, "entries": entries }))
}

/// Validates the file in force as SIGHUP does and hands it to the run loop, which
/// applies it or counts it refused; the answer is the outcome: the located error (the
/// running configuration stays), or the restart-only settings still pending.
async fn reload(cx: &ControlContext) -> Result<Value, String> {
    let file = cx
        .loaded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .file
        .clone();
    let read = Config::load(Path::new(&file), &LoadEnv::default()).map_err(|e| e.to_string());
    let routes = read.as_ref().map(|c| c.routes.len()).unwrap_or(0);
    let (answer, outcome) = tokio::sync::oneshot::channel();
    let stopping = || "the server is stopping".to_string();
    cx.reload
        .send(ReloadRequest {
            file: read,
            answer: Some(answer),
        })
        .map_err(|_| stopping())?;
    let pending = outcome.await.map_err(|_| stopping())??;
    Ok(json!({ "ok": true, "config": file, "routes": routes, "restart_pending": pending }))
}

/// Takes one upstream out of rotation by hand, or puts it back. The mark lives on the
/// upstream, so it survives a reload that keeps the upstream. Taking out the route's
/// last upstream in rotation needs `force`: it leaves the route answering from the
/// cache (stale included) or SERVFAIL.
fn set_upstream(
    cx: &ControlContext,
    route: &str,
    addr: &str,
    state: UpDown,
    force: bool,
) -> Result<Value, String> {
    // The same forms `upstreams` takes in the file.
    let want = crate::config::parse_addr(addr).map_err(|e| {
        e.or_expected(format!(
            "{addr:?} is not an address (IP, IP:PORT or [IPv6]:PORT)"
        ))
    })?;
    let handler = cx.current.load();
    let set = handler
        .upstream_sets()
        .find(|s| s.route == route)
        .ok_or_else(|| format!("no route named {route:?}"))?;
    let u = set
        .upstreams
        .iter()
        .find(|u| u.addr == want)
        .ok_or_else(|| format!("route {route:?} has no upstream {want}"))?;
    let others_in_rotation = set
        .upstreams
        .iter()
        .any(|o| o.addr != want && o.in_rotation());
    if state == UpDown::Down && u.in_rotation() && !others_in_rotation && !force {
        return Err(format!(
            "refused: {want} is the last upstream in rotation on route {route:?}; taking it out would answer every name of that route from the cache (stale included) or with SERVFAIL until it is put back. Add --force to do it anyway"
        ));
    }
    u.manual_down
        .store(state == UpDown::Down, Ordering::Relaxed);
    tracing::warn!(route, upstream = %want, down = state == UpDown::Down, "upstream taken out of or put back into rotation by hand");
    Ok(json!({
        "ok": true,
        "route": route,
        "upstream": want.to_string(),
        "up": u.is_up(),
        "state": u.state().as_str(),
    }))
}

/// `drain`: /readyz answers 503 so a load balancer moves clients elsewhere, while every
/// query that still arrives is answered as before; `undrain` takes it back.
fn drain(cx: &ControlContext, on: bool) -> Value {
    let was = cx.state.readiness.draining.swap(on, Ordering::Relaxed);
    if was != on {
        tracing::warn!(
            draining = on,
            "{}",
            if on {
                "draining: /readyz answers 503; queries are still answered"
            } else {
                "no longer draining: /readyz follows the routes again"
            }
        );
    }
    json!({ "ok": true, "draining": on })
}

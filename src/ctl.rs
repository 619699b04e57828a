//! `zonefwd ctl`: the control socket's client. It turns the command line into one
//! request line, sends it, and prints the answer for a person (or as it came, with
//! `--json`). Exit codes: 0 success, 1 the server answered with an error, 2 no
//! connection or a bad command line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// How a `ctl` command ended.
pub enum CtlError {
    /// The command line or the connection: exit 2.
    Usage(String),
    /// The server's answer was an error: exit 1.
    Server(String),
}

const USAGE: &str = "usage: zonefwd ctl status | flush NAME [TYPE] | flush --zone ZONE | \
flush --negative [--zone ZONE] | flush --all | cache NAME [TYPE] | reload | \
upstream ROUTE ADDR down [--force] | upstream ROUTE ADDR up | drain | undrain";

/// The request `args` stand for.
pub fn request_for(args: &[String]) -> Result<Value, CtlError> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let usage = || CtlError::Usage(USAGE.to_string());
    Ok(match words.as_slice() {
        ["status"] => json!({ "command": "status" }),
        ["reload"] => json!({ "command": "reload" }),
        ["flush", "--all"] => json!({ "command": "flush", "all": true }),
        ["flush", "--zone", zone] => json!({ "command": "flush", "zone": zone }),
        ["flush", "--negative"] => json!({ "command": "flush", "negative": true }),
        ["flush", "--negative", "--zone", zone] | ["flush", "--zone", zone, "--negative"] => {
            json!({ "command": "flush", "negative": true, "zone": zone })
        }
        ["flush", name] if !name.starts_with("--") => json!({ "command": "flush", "name": name }),
        ["flush", name, qtype] if !name.starts_with("--") => {
            json!({ "command": "flush", "name": name, "type": qtype })
        }
        ["cache", name] => json!({ "command": "cache", "name": name }),
        ["cache", name, qtype] => json!({ "command": "cache", "name": name, "type": qtype }),
        ["upstream", route, addr, state @ ("down" | "up")] => {
            json!({ "command": "upstream", "route": route, "upstream": addr, "state": state })
        }
        ["upstream", route, addr, "down", "--force"] => {
            json!({ "command": "upstream", "route": route, "upstream": addr, "state": "down", "force": true })
        }
        ["drain"] => json!({ "command": "drain" }),
        ["undrain"] => json!({ "command": "undrain" }),
        _ => return Err(usage()),
    })
}

/// Sends `request` on the socket at `path` and reads the answer line.
pub fn exchange(path: &Path, request: &Value) -> Result<Value, CtlError> {
    let fail = |what: &str, e: std::io::Error| {
        CtlError::Usage(format!("{what} the control socket {}: {e}", path.display()))
    };
    let mut stream = UnixStream::connect(path).map_err(|e| fail("cannot connect to", e))?;
    let timeout = Some(Duration::from_secs(30));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| fail("cannot use", e))?;
    let mut line = request.to_string();
    line.push('\n');
    // A server that refuses the connection answers before reading the request, and
    // may have closed by the time it is written: its answer is still to be read.
    let written = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    match (written, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) => return Err(fail("cannot write to", e)),
        (Ok(()), Err(e)) => return Err(fail("no answer from", e)),
        (Ok(()), Ok(_)) => {
            return Err(CtlError::Usage(format!(
                "the control socket {} closed without an answer",
                path.display()
            )))
        }
    }
    serde_json::from_str(&answer)
        .map_err(|e| CtlError::Usage(format!("the server's answer is not JSON ({e}): {answer}")))
}

/// The answer for a person; an error answer is `CtlError::Server`.
pub fn render(request: &Value, answer: &Value) -> Result<String, CtlError> {
    if answer["ok"] != json!(true) {
        let e = answer["error"]
            .as_str()
            .unwrap_or("the server answered with an error");
        return Err(CtlError::Server(e.to_string()));
    }
    Ok(match request["command"].as_str() {
        Some("status") => status_text(answer),
        Some("flush") => format!("flushed {} entries\n", answer["flushed"]),
        Some("cache") => cache_text(answer),
        Some("reload") => format!(
            "reloaded {}: {} routes\n{}",
            answer["config"].as_str().unwrap_or("?"),
            answer["routes"],
            pending_text(answer)
        ),
        Some("upstream") => format!(
            "route {} upstream {}: {}\n",
            answer["route"].as_str().unwrap_or("?"),
            answer["upstream"].as_str().unwrap_or("?"),
            state_text(answer["state"].as_str().unwrap_or("?")),
        ),
        Some("drain") => "draining: /readyz answers 503; queries are still answered (zonefwd ctl undrain to take it back)\n".to_string(),
        Some("undrain") => "not draining: /readyz follows the required routes again\n".to_string(),
        _ => format!("{answer}\n"),
    })
}

fn status_text(a: &Value) -> String {
    let mut s = format!(
        "zonefwd {}, {} loaded {}\n",
        a["version"].as_str().unwrap_or("?"),
        a["config"].as_str().unwrap_or("?"),
        a["loaded_at"].as_str().unwrap_or("?")
    );
    match a["not_ready_because"].as_str() {
        None => s.push_str("ready\n"),
        Some(why) => s.push_str(&format!("NOT READY: {why}\n")),
    }
    if a["last_reload_successful"] == json!(false) {
        s.push_str("THE LAST RELOAD WAS REFUSED: the file on disk is not what runs (zonefwd ctl reload shows why)\n");
    }
    s.push_str(&pending_text(a));
    for route in a["routes"].as_array().into_iter().flatten() {
        let required = if route["ready"] == json!("required") {
            "  (ready: required)"
        } else {
            ""
        };
        s.push_str(&format!(
            "route {}{required}\n",
            route["name"].as_str().unwrap_or("?")
        ));
        for u in route["upstreams"].as_array().into_iter().flatten() {
            let state = state_text(u["state"].as_str().unwrap_or("?"));
            let srtt = u["srtt_ms"]
                .as_f64()
                .map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
            let retransmit_after = u["retransmit_after_ms"].as_f64().unwrap_or(0.0);
            s.push_str(&format!(
                "  {}  {state}  failures {}  queries {}  timeouts {}  srtt {srtt}  retransmit after {retransmit_after:.1} ms ({})  retransmits late {} timeout {} wasted {}\n",
                u["address"].as_str().unwrap_or("?"),
                u["consecutive_failures"],
                u["queries"],
                u["timeouts"],
                u["retransmit_from"].as_str().unwrap_or("?"),
                u["retransmits_late"],
                u["retransmits_timeout"],
                u["retransmits_wasted"],
            ));
            s.push_str(&tls_text(&u["tls"]));
        }
    }
    s.push_str(&format!(
        "cache {} entries, hit ratio {:.2}; {} queries in flight\n",
        a["cache"]["entries"],
        a["cache"]["hit_ratio"].as_f64().unwrap_or(0.0),
        a["inflight"]
    ));
    s.push_str(&dnstap_text(&a["dnstap"]));
    s.push_str(&certificate_text(&a["certificate"]));
    s
}

/// The listeners' certificate line, when DoT or DoH serves one: loud when it is
/// expired, not yet valid or overdue for renewal.
fn certificate_text(c: &Value) -> String {
    if c.is_null() {
        return String::new();
    }
    match c["problem"].as_str() {
        Some(problem) => format!("CERTIFICATE: {problem}\n"),
        None => format!(
            "certificate {} for {}, valid until {}\n",
            c["file"].as_str().unwrap_or("?"),
            strings(&c["names"]).join(", "),
            c["not_after"].as_str().unwrap_or("?")
        ),
    }
}

/// A `tls://` upstream's line: its name, handshakes, and the last failure, if the
/// last handshake failed.
fn tls_text(t: &Value) -> String {
    if t.is_null() {
        return String::new();
    }
    let handshakes: Vec<String> = t["handshakes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(result, n)| format!("{result} {n}"))
        .collect();
    let failure = match t["last_failure"]["error"].as_str() {
        Some(e) => format!("  LAST HANDSHAKE FAILED: {e}"),
        None => String::new(),
    };
    format!(
        "    tls {}  handshakes: {}{failure}\n",
        t["name"].as_str().unwrap_or("?"),
        if handshakes.is_empty() {
            "none yet".to_string()
        } else {
            handshakes.join(", ")
        },
    )
}

/// The dnstap collector's line, when `[dnstap]` is configured.
fn dnstap_text(d: &Value) -> String {
    if d.is_null() {
        return String::new();
    }
    let state = if d["connected"] == json!(true) {
        "connected"
    } else {
        "NOT CONNECTED (retrying; frames queue, then drop)"
    };
    format!(
        "dnstap {} {state}; frames sent {}, dropped {}\n",
        d["socket"].as_str().unwrap_or("?"),
        d["sent"],
        d["dropped"]
    )
}

/// The strings of a JSON array (none when it is not one).
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The restart-only settings the file in force changes, if any.
fn pending_text(a: &Value) -> String {
    let pending = strings(&a["restart_pending"]);
    if pending.is_empty() {
        String::new()
    } else {
        format!(
            "RESTART PENDING: {} changed in the file but only a restart applies it (everything else is in effect)\n",
            pending.join(", ")
        )
    }
}

/// An upstream's state (`UpstreamState::as_str`) for a person.
fn state_text(state: &str) -> &str {
    match state {
        "down_by_hand" => "down (by hand)",
        "in_loop" => "IN A LOOP",
        "unknown" => "unknown (not asked yet)",
        other => other,
    }
}

fn cache_text(a: &Value) -> String {
    let name = a["name"].as_str().unwrap_or("?");
    let entries = a["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return format!("nothing cached for {name}\n");
    }
    entries
        .iter()
        .map(|e| {
            let mut line = format!(
                "{name} {} {} {} answers, ttl left {}s",
                e["type"].as_str().unwrap_or("?"),
                e["rcode"].as_str().unwrap_or("(no answer)"),
                e["answers"],
                e["ttl_left"]
            );
            if e["stale"] == json!(true) {
                line.push_str(", stale");
            }
            if e["failing"] == json!(true) {
                line.push_str(", failure remembered");
            }
            line.push('\n');
            line
        })
        .collect()
}

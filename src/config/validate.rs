//! From the file as written to the `Config` the server runs on, in steps: `[server]`
//! (`server.rs`), `[acl]`, `[cache]`, each route (name, zones, upstreams with
//! `"system"`, timers, cache), the links between routes (`nxdomain_fallback`), and the
//! warnings about exposure; `[dnstap]` (`dnstap.rs`). Every error is located in the text.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::dnstap::validate_dnstap;
use super::error::{ConfigError, Problems, SourceText};
use super::raw::*;
use super::resolv::{is_self, read_resolv_conf};
use super::server::{positive, validate_server};
use super::types::*;
use crate::acl::{Acl, Cidr};
use crate::wire;

/// What the steps share while a file and its fragments are validated.
struct Validation<'a> {
    /// The file whose routes are being validated now.
    src: &'a SourceText<'a>,
    env: &'a LoadEnv,
    warnings: Vec<Warning>,
    /// Route names seen so far, and the file of each.
    names: HashMap<String, String>,
    /// zone -> (route name, file, line), for the duplicate message.
    zone_owner: HashMap<Vec<u8>, (String, String, usize)>,
    /// resolv.conf's nameservers, read once, when a route first asks for "system".
    resolv: Option<Vec<SocketAddr>>,
}

/// A route's `nxdomain_fallback`, resolved once every route is known.
struct FallbackLink<'a> {
    from: usize,
    target: Spanned<String>,
    key: String,
    /// The file the route is in.
    src: &'a SourceText<'a>,
}

/// The routes of one file: the main one first, then each fragment in order.
type FileRoutes<'a> = (&'a SourceText<'a>, Vec<Spanned<RawRoute>>);

/// The configuration `raw` and its fragments describe, every error recorded in
/// `problems` (a value in error is replaced by its default, so the rest is checked).
pub(super) fn validate<'a>(
    raw: RawFile,
    src: &'a SourceText<'a>,
    fragments: Vec<FileRoutes<'a>>,
    env: &'a LoadEnv,
    problems: &mut Problems,
) -> Config {
    let server = validate_server(raw.server, src, problems);
    let dnstap = raw
        .dnstap
        .and_then(|d| problems.or(validate_dnstap(d, src).map(Some), None));
    let mut v = Validation {
        src,
        env,
        warnings: Vec::new(),
        names: HashMap::new(),
        zone_owner: HashMap::new(),
        resolv: None,
    };
    let acl = problems.or(v.acl(raw.acl), Acl::default_private());
    let (cache_max_entries, global_cache) = problems.or(
        v.cache(raw.cache),
        (DEFAULT_CACHE_MAX_ENTRIES, CachePolicy::default()),
    );
    let files: Vec<FileRoutes<'a>> = std::iter::once((src, raw.route)).chain(fragments).collect();
    if files.iter().all(|(_, routes)| routes.is_empty()) {
        problems.push(src.locate(
            0..0,
            "route",
            "no [[route]] tables: add at least one, e.g. zones = [\".\"] with your DNS servers",
        ));
    }
    let mut routes = Vec::new();
    let mut links = Vec::new();
    for (file, file_routes) in files {
        v.src = file;
        // Keys count within each file (route[0] is a fragment's first route).
        for (i, spanned) in file_routes.into_iter().enumerate() {
            let (route, link) = v.route(i, routes.len(), spanned, &server, global_cache, problems);
            routes.push(route);
            links.extend(link);
        }
    }
    link_fallbacks(&mut routes, links, problems);
    v.exposure_warnings(&server, &acl);
    Config {
        source: src.file.to_string(),
        server,
        acl,
        routes,
        cache_max_entries,
        local: Vec::new(),
        dnstap,
        warnings: v.warnings,
    }
}

impl<'a> Validation<'a> {
    /// `[acl]`, or the private ranges when it is absent.
    fn acl(&mut self, raw: Option<RawAcl>) -> Result<Acl, ConfigError> {
        let Some(a) = raw else {
            return Ok(Acl::default_private());
        };
        if a.allow.get_ref().is_empty() {
            return Err(self.src.error(
                a.allow.span(),
                "acl.allow",
                "an empty list would refuse every client; omit [acl] for the private-range default",
            ));
        }
        for (i, entry) in a.allow.get_ref().iter().enumerate() {
            let text = entry.get_ref();
            if let (false, Ok(ip)) = (text.contains('/'), text.parse::<IpAddr>()) {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                self.warnings.push(Warning::new(
                    format!("acl.allow[{i}] = {text:?} has no prefix length: it admits that one host, {ip}/{len}"),
                    format!("write \"{ip}/{len}\" for the host, or the network's prefix (\"{}\") if the network was meant", if ip.is_ipv4() { "/24" } else { "/64" }),
                ));
            }
        }
        let allow: Vec<Cidr> = parse_list(a.allow.into_inner(), self.src, "acl.allow", parse_cidr)?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        if allow.iter().any(Cidr::is_everything) {
            self.warnings.push(Warning::new(
                "acl.allow admits every address: zonefwd answers anyone who can reach a listen address (an open resolver unless a firewall says otherwise)",
                "list the networks of your clients and on-prem DNS servers in acl.allow",
            ));
        }
        Ok(Acl::new(allow))
    }

    /// `[cache]`: the shared cache's size and the policy routes start from.
    fn cache(
        &mut self,
        raw: Option<Spanned<RawCache>>,
    ) -> Result<(usize, CachePolicy), ConfigError> {
        let Some(c) = raw else {
            return Ok((DEFAULT_CACHE_MAX_ENTRIES, CachePolicy::default()));
        };
        let c = c.into_inner();
        let max = c
            .max_entries
            .as_ref()
            .map_or(DEFAULT_CACHE_MAX_ENTRIES, |m| m.get_ref().get());
        Ok((
            max,
            cache_policy(CachePolicy::default(), c, self.src, "cache")?,
        ))
    }

    /// One `[[route]]` (`route[i]` of its file, the configuration's route `index`),
    /// and its fallback link for later. Each key in error is recorded and replaced by
    /// its default, so the route's other keys are checked too.
    fn route(
        &mut self,
        i: usize,
        index: usize,
        spanned: Spanned<RawRoute>,
        server: &Server,
        global_cache: CachePolicy,
        problems: &mut Problems,
    ) -> (Route, Option<FallbackLink<'a>>) {
        let route_span = spanned.span();
        let r = spanned.into_inner();
        let key = |k: &str| format!("route[{i}].{k}");
        let name = self.route_name(r.name, &key("name"));
        let name = problems.or(name, format!("route[{i}]"));
        let zones = self.route_zones(&name, r.zones, r.presets, route_span, &key);
        let (zones, presets) = problems.or(zones, (Vec::new(), Vec::new()));
        let upstreams_span = r.upstreams.span();
        let upstreams = self.route_upstreams(r.upstreams, server, &key("upstreams"));
        let upstreams = problems.or(upstreams, Vec::new());
        let raw_trust = super::tls::RawTrust {
            tls_ca: r.tls_ca,
            tls_pins: r.tls_pins,
            tls_insecure_no_verify: r.tls_insecure_no_verify,
        };
        let trust = super::tls::trust(
            raw_trust,
            &name,
            &upstreams,
            (self.src, upstreams_span),
            &key,
            &mut self.warnings,
        );
        let tls = problems.or(trust, None);
        let claim_cnames = match r.claim_cnames {
            Some(c) if *c.get_ref() && zones.iter().any(|z| z == &[0]) => {
                problems.push(self.src.locate(
                    c.span(),
                    &key("claim_cnames"),
                    "this route routes \".\", so it would claim every CNAME target: list the zones to claim on a route of their own",
                ));
                false
            }
            Some(c) => c.into_inner(),
            None => false,
        };
        let (timeout, try_timeout) = problems.or(
            self.route_timeouts(r.timeout, r.try_timeout, &key),
            (DEFAULT_TIMEOUT, DEFAULT_TRY_TIMEOUT),
        );
        let health_check = problems
            .or(
                positive(r.health_check, self.src, &key("health_check")),
                None,
            )
            .unwrap_or(DEFAULT_HEALTH_CHECK);
        self.azure_timeout_warning(&name, &upstreams, timeout);
        let cache = problems.or(
            route_cache(r.cache, global_cache, self.src, &key),
            global_cache,
        );
        let link = r.nxdomain_fallback.map(|target| FallbackLink {
            from: index,
            target,
            key: key("nxdomain_fallback"),
            src: self.src,
        });
        let route = Route {
            name,
            source: self.src.file.to_string(),
            zones,
            upstreams,
            order: r.policy.map_or(UpstreamOrder::Sequential, |p| p.0),
            timeout,
            try_timeout,
            max_fails: r.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
            health_check,
            cache,
            max_qps: r.max_qps.map(|q| q.get()),
            retransmit_budget: r
                .retransmit_budget
                .map_or(DEFAULT_RETRANSMIT_BUDGET, |b| b.0),
            presets,
            nxdomain_fallback: None,
            expect_private: r.expect_private.map(|e| e.0),
            claim_cnames,
            transport: r.transport.map_or(UpstreamTransport::Udp, |t| t.0),
            ready: r.ready.map_or(RouteReadiness::default(), |t| t.0),
            tls,
        };
        (route, link)
    }

    /// A name for logs and metrics, unique among the routes.
    fn route_name(&mut self, raw: Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let span = raw.span();
        let name = raw.into_inner();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.src.error(
                span,
                key,
                format!("{name:?}: use letters, digits, '-', '_' and '.' (it appears in logs and metrics)"),
            ));
        }
        if let Some(first) = self.names.get(&name) {
            let place = if first == self.src.file {
                String::new()
            } else {
                format!(" (first in {first})")
            };
            return Err(self.src.error(
                span,
                key,
                format!("route name {name:?} is used twice{place}"),
            ));
        }
        self.names.insert(name.clone(), self.src.file.to_string());
        Ok(name)
    }

    /// The route's zones from `zones` and `presets`, each routed by one route only;
    /// and the names of the presets it took.
    fn route_zones(
        &mut self,
        name: &str,
        zones: Option<Spanned<Vec<Spanned<String>>>>,
        presets: Option<Spanned<Vec<Spanned<String>>>>,
        route_span: Range<usize>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(Vec<Vec<u8>>, Vec<String>), ConfigError> {
        let src = self.src;
        match &zones {
            None if presets.is_none() => {
                return Err(src.error(
                    route_span,
                    &key("zones"),
                    "missing field `zones`: a route needs zones (\".\" for everything) or presets",
                ));
            }
            Some(z) if z.get_ref().is_empty() && presets.is_none() => {
                return Err(src.error(
                    z.span(),
                    &key("zones"),
                    "empty list: a route needs at least one zone (\".\" for everything)",
                ));
            }
            _ => {}
        }
        // (zone, where it came from, which key) from `zones` and `presets`.
        let mut listed: Vec<(Vec<u8>, Range<usize>, String)> = Vec::new();
        if let Some(z) = zones {
            for (zone, span) in parse_list(z.into_inner(), src, &key("zones"), parse_zone)? {
                listed.push((zone, span, key("zones")));
            }
        }
        let preset_names = match presets {
            Some(p) => expand_presets(p, src, &key("presets"), &mut listed)?,
            None => Vec::new(),
        };
        for zone in twice_by_hand(&listed, &key("zones")) {
            self.warnings.push(Warning::new(
                format!(
                    "{}: zone {} is listed twice in route {name:?}",
                    key("zones"),
                    wire::name_to_string(&zone)
                ),
                "list each zone once (was another zone meant?)",
            ));
        }
        let mut out = Vec::new();
        for (zone, span, k) in listed {
            if out.contains(&zone) {
                // Listed by hand and by a preset, or by two presets: once is enough.
                continue;
            }
            let line = src.text[..span.start].matches('\n').count() + 1;
            if let Some((other, file, other_line)) = self.zone_owner.get(&zone) {
                let place = if file == src.file {
                    format!("line {other_line}")
                } else {
                    format!("{file}:{other_line}")
                };
                return Err(src.error(
                    span,
                    &k,
                    format!(
                        "zone {} is already routed by route {other:?} ({place}); a zone belongs to one route",
                        wire::name_to_string(&zone)
                    ),
                ));
            }
            self.zone_owner
                .insert(zone.clone(), (name.to_string(), src.file.to_string(), line));
            out.push(zone);
        }
        Ok((out, preset_names))
    }

    /// `upstreams`: addresses, or "system" for resolv.conf's; none twice, none zonefwd
    /// itself.
    fn route_upstreams(
        &mut self,
        raw: Spanned<Vec<Spanned<String>>>,
        server: &Server,
        key: &str,
    ) -> Result<Vec<UpstreamAddr>, ConfigError> {
        let src = self.src;
        if raw.get_ref().is_empty() {
            return Err(src.error(
                raw.span(),
                key,
                "empty list: a route needs at least one upstream",
            ));
        }
        let mut upstreams: Vec<UpstreamAddr> = Vec::new();
        for (spec, span) in parse_list(raw.into_inner(), src, key, parse_upstream)? {
            let added = match spec {
                Some((addr, tls)) => vec![UpstreamAddr {
                    addr,
                    from_system: false,
                    tls,
                }],
                None => self.system_upstreams(server, span.clone(), key)?,
            };
            for a in added {
                if upstreams.iter().any(|u| u.addr == a.addr) {
                    return Err(src.error(
                        span,
                        key,
                        format!("upstream {} is listed twice", a.addr),
                    ));
                }
                if server.listen.iter().any(|l| is_self(*l, a.addr)) {
                    return Err(src.error(
                        span,
                        key,
                        format!(
                            "upstream {} is zonefwd's own listen address: queries would loop",
                            a.addr
                        ),
                    ));
                }
                upstreams.push(a);
            }
        }
        Ok(upstreams)
    }

    /// `"system"`: resolv.conf's nameservers (read once per file), unless one of them
    /// is zonefwd's own listen address.
    fn system_upstreams(
        &mut self,
        server: &Server,
        span: Range<usize>,
        key: &str,
    ) -> Result<Vec<UpstreamAddr>, ConfigError> {
        let resolv_conf = &self.env.resolv_conf;
        if self.resolv.is_none() {
            let (found, skipped) =
                read_resolv_conf(resolv_conf).map_err(|m| self.src.error(span.clone(), key, m))?;
            for entry in skipped {
                self.warnings.push(Warning::new(
                    format!(
                        "{}: skipping nameserver {entry}, which zonefwd cannot use",
                        resolv_conf.display()
                    ),
                    "name the upstreams in the route instead of \"system\"",
                ));
            }
            self.resolv = Some(found);
        }
        let list = self.resolv.clone().unwrap_or_default();
        let looping = list.iter().find_map(|ns| {
            server
                .listen
                .iter()
                .find(|l| is_self(**l, *ns))
                .map(|l| (ns, l))
        });
        if let Some((ns, l)) = looping {
            return Err(self.src.error(
                span,
                key,
                format!(
                    "\"system\" resolves to {ns} from {}, which is zonefwd's own listen address {l}: queries would loop; name the real DNS servers instead",
                    resolv_conf.display()
                ),
            ));
        }
        Ok(list
            .into_iter()
            .map(|addr| UpstreamAddr {
                addr,
                from_system: true,
                tls: None,
            })
            .collect())
    }

    /// `timeout` and `try_timeout`; a try cannot outlast the query.
    fn route_timeouts(
        &self,
        timeout: Option<Spanned<Humane>>,
        try_timeout: Option<Spanned<Humane>>,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(Duration, Duration), ConfigError> {
        let timeout = positive(timeout, self.src, &key("timeout"))?.unwrap_or(DEFAULT_TIMEOUT);
        let try_span = try_timeout.as_ref().map(|t| t.span());
        let try_timeout = positive(try_timeout, self.src, &key("try_timeout"))?
            .unwrap_or(DEFAULT_TRY_TIMEOUT.min(timeout));
        if try_timeout > timeout {
            return Err(self.src.error(
                try_span.unwrap_or(0..0),
                &key("try_timeout"),
                format!(
                    "{} is longer than the route's timeout of {}: a try cannot outlast the whole query",
                    humantime::format_duration(try_timeout),
                    humantime::format_duration(timeout)
                ),
            ));
        }
        Ok((timeout, try_timeout))
    }

    fn azure_timeout_warning(&mut self, name: &str, upstreams: &[UpstreamAddr], timeout: Duration) {
        if upstreams
            .iter()
            .any(|u| u.addr.ip() == crate::presets::AZURE_DNS)
            && timeout <= Duration::from_secs(4)
        {
            self.warnings.push(Warning::new(
                format!(
                    "route {name:?}: timeout {} to 168.63.129.16 is at most 4s; Azure advises more, or private names may resolve to public addresses",
                    humantime::format_duration(timeout)
                ),
                "timeout = \"5s\" on the route",
            ));
        }
    }

    /// Endpoints reachable from beyond this host with nothing to stop strangers.
    fn exposure_warnings(&mut self, server: &Server, acl: &Acl) {
        if let Some(m) = server.metrics.filter(|m| !m.ip().is_loopback()) {
            self.warnings.push(Warning::new(
                format!(
                    "server.metrics listens on {m}, beyond this host: the metrics and health endpoints have no authentication; firewall them or use a loopback address"
                ),
                "server.metrics = \"127.0.0.1:9153\", or a firewall rule that admits only the scraper",
            ));
        }
        for l in &server.listen {
            if !l.ip().is_loopback() && acl.entries().iter().any(Cidr::is_everything) {
                self.warnings.push(Warning::new(
                    format!("listening on {l} with an acl that admits everyone"),
                    "restrict acl.allow, or listen on an address only clients reach",
                ));
            }
        }
    }
}

/// The zones `zones` (the key `zones_key`) lists more than once: a slip, a paste or a
/// zone meant to be another (by hand and by a preset is fine: once is enough).
fn twice_by_hand(listed: &[(Vec<u8>, Range<usize>, String)], zones_key: &str) -> Vec<Vec<u8>> {
    let by_hand: Vec<&Vec<u8>> = listed
        .iter()
        .filter(|(_, _, k)| k == zones_key)
        .map(|(z, _, _)| z)
        .collect();
    let mut twice: Vec<Vec<u8>> = Vec::new();
    for (i, z) in by_hand.iter().enumerate() {
        if by_hand[..i].contains(z) && !twice.contains(z) {
            twice.push((*z).clone());
        }
    }
    twice
}

/// A route's `presets`: each preset's zones added to `listed`, its name returned.
fn expand_presets(
    presets: Spanned<Vec<Spanned<String>>>,
    src: &SourceText<'_>,
    key: &str,
    listed: &mut Vec<(Vec<u8>, Range<usize>, String)>,
) -> Result<Vec<String>, ConfigError> {
    if presets.get_ref().is_empty() {
        return Err(src.error(presets.span(), key, "empty list"));
    }
    let mut names = Vec::new();
    for (j, name) in presets.into_inner().into_iter().enumerate() {
        let span = name.span();
        let Some(preset) = crate::presets::find(name.get_ref()) else {
            return Err(src.error(
                span,
                &format!("{key}[{j}]"),
                format!(
                    "no preset {:?}; presets: {} (zonefwd presets lists them)",
                    name.get_ref(),
                    crate::presets::names().join(", ")
                ),
            ));
        };
        for zone in preset.wire_zones() {
            listed.push((zone, span.clone(), format!("{key}[{j}]")));
        }
        names.push(preset.name.clone());
    }
    Ok(names)
}

/// A route's `cache`: on (the global policy), off, or overrides of `[cache]`.
fn route_cache(
    raw: Option<Spanned<RawRouteCache>>,
    global: CachePolicy,
    src: &SourceText<'_>,
    key: &dyn Fn(&str) -> String,
) -> Result<CachePolicy, ConfigError> {
    match raw.map(Spanned::into_inner) {
        None | Some(RawRouteCache::Switch(true)) => Ok(global),
        Some(RawRouteCache::Switch(false)) => Ok(CachePolicy {
            enabled: false,
            ..global
        }),
        Some(RawRouteCache::Overrides(o)) => {
            if let Some(m) = &o.max_entries {
                return Err(src.error(
                    m.span(),
                    &key("cache.max_entries"),
                    "the cache is shared by all routes: set max_entries in [cache]",
                ));
            }
            cache_policy(global, o, src, &key("cache"))
        }
    }
}

/// Each `nxdomain_fallback` names another route (in any file), one that has no
/// fallback of its own.
fn link_fallbacks(routes: &mut [Route], links: Vec<FallbackLink<'_>>, problems: &mut Problems) {
    let sources: HashSet<usize> = links.iter().map(|l| l.from).collect();
    for FallbackLink {
        from,
        target,
        key,
        src,
    } in links
    {
        let Some(j) = routes.iter().position(|r| &r.name == target.get_ref()) else {
            problems.push(src.locate(
                target.span(),
                &key,
                format!("no route named {:?}", target.get_ref()),
            ));
            continue;
        };
        if j == from {
            problems.push(src.locate(target.span(), &key, "a route cannot fall back to itself"));
            continue;
        }
        if sources.contains(&j) {
            problems.push(src.locate(
                target.span(),
                &key,
                format!(
                    "route {:?} has a fallback of its own: one step only",
                    routes[j].name
                ),
            ));
            continue;
        }
        routes[from].nxdomain_fallback = Some(j);
    }
}

/// `base` with the settings `raw` gives; `key` is where they are ("cache" or
/// "route[i].cache") for messages.
fn cache_policy(
    base: CachePolicy,
    raw: RawCache,
    src: &SourceText<'_>,
    key: &str,
) -> Result<CachePolicy, ConfigError> {
    let dur =
        |v: Option<Spanned<Humane>>, default: Duration| v.map_or(default, |d| d.into_inner().0);
    let max_span = raw.max_ttl.as_ref().map(|m| m.span());
    let servfail_span = raw.servfail_ttl.as_ref().map(|m| m.span());
    let p = CachePolicy {
        enabled: base.enabled,
        min_ttl: dur(raw.min_ttl, base.min_ttl),
        max_ttl: dur(raw.max_ttl, base.max_ttl),
        negative_max_ttl: dur(raw.negative_max_ttl, base.negative_max_ttl),
        servfail_ttl: dur(raw.servfail_ttl, base.servfail_ttl),
        serve_stale: dur(raw.serve_stale, base.serve_stale),
        prefetch: raw.prefetch.unwrap_or(base.prefetch),
    };
    if p.max_ttl < p.min_ttl {
        return Err(src.error(
            max_span.unwrap_or(0..0),
            &format!("{key}.max_ttl"),
            format!(
                "{} is below min_ttl ({})",
                humantime::format_duration(p.max_ttl),
                humantime::format_duration(p.min_ttl)
            ),
        ));
    }
    if p.servfail_ttl > MAX_SERVFAIL_TTL {
        return Err(src.error(
            servfail_span.unwrap_or(0..0),
            &format!("{key}.servfail_ttl"),
            "at most 5m: a failure must not be remembered longer (RFC 9520 3.2)",
        ));
    }
    Ok(p)
}

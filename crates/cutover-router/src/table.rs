//! The routing table: built from Gateways, HTTPRoutes, Services and EndpointSlices (pure,
//! no I/O), then read by every request. A table is never changed after it is built: a
//! change in the cluster builds a new one and swaps it in whole, and a request in flight
//! keeps the table it started with.
//!
//! Matching follows Gateway API's precedence: the most specific host name first (exact,
//! then the longest wildcard, then routes without host names); within it, an exact path
//! before the longest path prefix before regular expressions, then a method match, then
//! more header matches, then more query matches, then the oldest route, then rule order.
//! Weighted backends are picked by smooth weighted round robin, so every window of
//! `sum(weights)` requests is split exactly by weight; endpoints of a backend in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt as _;
use regex::Regex;
use serde::Serialize;

use crate::model::{
    BackendRef, GROUP, Gateway, HTTPRoute, HeaderModifier, Listener, PathMatch, RouteMatch, Rule,
    ValueMatch,
};

/// The longest weighted-round-robin schedule kept; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 10_000;

/// A backend: one Service port and its ready endpoints.
#[derive(Debug, Serialize)]
pub struct Backend {
    /// `namespace/service:port`, the metrics label.
    pub name: String,
    /// Ready endpoint addresses.
    pub endpoints: Vec<SocketAddr>,
    #[serde(skip)]
    next: AtomicUsize,
}

impl Backend {
    /// The next endpoint in turn that is not among `tried` (the endpoints an earlier
    /// attempt of this request failed on), or the next in turn when every one was tried.
    pub fn endpoint(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.endpoints[(i + k) % n])
            .find(|ep| !tried.contains(ep))
            .or(Some(self.endpoints[i % n]))
    }
}

/// A mirror: where copies go and which share of requests.
#[derive(Debug, Serialize)]
pub struct Mirror {
    /// The backend (None when its reference does not resolve).
    pub backend: Option<Arc<Backend>>,
    /// Copies per million requests.
    pub per_million: u32,
    #[serde(skip)]
    count: AtomicUsize,
}

impl Mirror {
    /// Whether this request is copied: exactly `per_million` of every million, spread evenly.
    pub fn take(&self) -> bool {
        let k = self.count.fetch_add(1, Ordering::Relaxed) as u64;
        let p = u64::from(self.per_million);
        (k + 1) * p / 1_000_000 > k * p / 1_000_000
    }
}

/// One rule, compiled.
#[derive(Debug, Serialize)]
pub struct CompiledRule {
    /// `namespace/name` of the route.
    pub route: String,
    /// Rule index in the route.
    pub rule: usize,
    /// Backends with a weight above zero; `None` where the reference does not resolve.
    pub backends: Vec<(u32, Option<Arc<Backend>>)>,
    /// Mirrors.
    pub mirrors: Vec<Mirror>,
    /// Request header changes.
    pub headers: Option<HeaderModifier>,
    #[serde(skip)]
    schedule: Vec<usize>,
    #[serde(skip)]
    next: AtomicUsize,
}

/// What a request is sent to.
#[derive(Debug)]
pub enum Pick<'a> {
    /// This backend.
    Backend(&'a Arc<Backend>),
    /// The rule has no backend with a weight, or the picked one does not resolve: 500.
    Invalid,
}

impl CompiledRule {
    /// The next backend by weight.
    pub fn pick(&self) -> Pick<'_> {
        if self.schedule.is_empty() {
            return Pick::Invalid;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        match &self.backends[self.schedule[i]].1 {
            Some(b) => Pick::Backend(b),
            None => Pick::Invalid,
        }
    }
}

/// Smooth weighted round robin (as nginx does it) over `weights`, after dividing by their
/// greatest common divisor: the indices of one full cycle.
pub fn schedule(weights: &[u32]) -> Vec<usize> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    let g = w.iter().copied().fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        // Scale down, keeping every non-zero weight at least 1.
        w.iter_mut().for_each(|x| {
            if *x > 0 {
                *x = (*x * MAX_SCHEDULE / total).max(1);
            }
        });
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &x) in w.iter().enumerate() {
            current[i] += x as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

#[derive(Debug, Clone)]
enum PathKind {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ValueKind {
    Exact(String),
    Regex(Regex),
}

impl ValueKind {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueKind::Exact(e) => e == v,
            ValueKind::Regex(r) => r.is_match(v),
        }
    }
}

/// One match of a rule, compiled.
#[derive(Debug, Clone)]
struct CompiledMatch {
    path: PathKind,
    method: Option<String>,
    headers: Vec<(http::HeaderName, ValueKind)>,
    query: Vec<(String, ValueKind)>,
}

/// Gateway API's precedence among matches; the smallest sorts first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    /// Exact path 0, prefix 1, regular expression 2.
    path_kind: u8,
    longer_path: std::cmp::Reverse<usize>,
    without_method: bool,
    more_headers: std::cmp::Reverse<usize>,
    more_query: std::cmp::Reverse<usize>,
    /// Creation time of the route (older first), then its `namespace/name`.
    created: i64,
    route: String,
    rule: usize,
    match_index: usize,
}

/// One match of one rule with its precedence and rule.
#[derive(Debug)]
struct Entry {
    m: CompiledMatch,
    rule: Arc<CompiledRule>,
    order: Precedence,
}

fn full_regex(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

fn value_kind(m: &ValueMatch) -> Result<ValueKind, String> {
    match m.type_.as_deref() {
        None | Some("Exact") => Ok(ValueKind::Exact(m.value.clone())),
        Some("RegularExpression") => full_regex(&m.value).map(ValueKind::Regex),
        Some(other) => Err(format!("unsupported match type {other:?}")),
    }
}

impl CompiledMatch {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        let path_ok = match &self.path {
            PathKind::Exact(p) => req.path == p,
            PathKind::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || req.path == p
                    || (req.path.starts_with(p) && req.path.as_bytes().get(p.len()) == Some(&b'/'))
            }
            PathKind::Regex(r) => r.is_match(req.path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|(name, v)| {
                let mut values = req
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|h| h.to_str().ok());
                // Several values of one header are matched as one comma-joined value.
                let joined: Vec<&str> = values.by_ref().collect();
                !joined.is_empty() && v.matches(&joined.join(","))
            })
            && self
                .query
                .iter()
                .all(|(name, v)| query_value(req.query, name).is_some_and(|q| v.matches(&q)))
    }
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

/// A host-name pattern and the entries under it, in precedence order.
#[derive(Debug)]
struct HostGroup {
    /// Exact name, `*.suffix` wildcard, or None for any host.
    pattern: Option<String>,
    entries: Vec<Entry>,
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The routes served on one port.
#[derive(Debug, Default)]
pub struct PortRoutes {
    groups: Vec<HostGroup>,
}

/// The parts of a request matching looks at.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// Host without port.
    pub host: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Query string.
    pub query: &'a str,
    /// Method.
    pub method: &'a str,
    /// Headers.
    pub headers: &'a http::HeaderMap,
}

impl PortRoutes {
    /// The rule a request goes to, or None (404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Arc<CompiledRule>> {
        self.groups
            .iter()
            .filter(|g| {
                g.pattern
                    .as_deref()
                    .is_none_or(|p| host_matches(p, req.host))
            })
            .find_map(|g| g.entries.iter().find(|e| e.m.matches(req)).map(|e| &e.rule))
    }
}

/// The whole table: the routes of every listening port.
#[derive(Debug, Default)]
pub struct Table {
    /// Port → routes.
    pub ports: BTreeMap<u16, PortRoutes>,
}

/// The status of one route for one of its parent references.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentStatus {
    /// The parent reference as written in the route.
    pub parent: crate::model::ParentRef,
    /// `Accepted`: (status, reason, message).
    pub accepted: (bool, &'static str, String),
    /// `ResolvedRefs`: (status, reason, message).
    pub resolved: (bool, &'static str, String),
}

/// What a build found, to write back as statuses.
#[derive(Debug, Default)]
pub struct Report {
    /// Per route (`namespace/name`): its parents served by this router.
    pub routes: BTreeMap<String, Vec<ParentStatus>>,
    /// Per Gateway (`namespace/name`) and listener name: routes attached.
    pub attached: BTreeMap<String, BTreeMap<String, usize>>,
}

/// What the table is built from.
#[derive(Debug, Default)]
pub struct Inputs<'a> {
    /// Gateways of this router's class.
    pub gateways: Vec<&'a Gateway>,
    /// Every HTTPRoute.
    pub routes: Vec<&'a HTTPRoute>,
    /// Services.
    pub services: Vec<&'a Service>,
    /// EndpointSlices.
    pub slices: Vec<&'a EndpointSlice>,
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// Resolve a backend reference of a route in `ns`: Ok(backend) or Err((reason, message)).
fn resolve(
    inputs: &Inputs<'_>,
    ns: &str,
    r: &BackendRef,
) -> Result<Backend, (&'static str, String)> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!("backend {group}/{kind} {} is not a Service", r.name),
        ));
    }
    let target_ns = r.namespace.as_deref().unwrap_or(ns);
    if target_ns != ns {
        return Err((
            "RefNotPermitted",
            format!(
                "backend {target_ns}/{} is in another namespace (ReferenceGrant is not supported)",
                r.name
            ),
        ));
    }
    let Some(port) = r.port else {
        return Err((
            "BackendNotFound",
            format!("backend Service {} has no port", r.name),
        ));
    };
    let svc = inputs
        .services
        .iter()
        .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == r.name)
        .ok_or_else(|| {
            (
                "BackendNotFound",
                format!("Service {ns}/{} not found", r.name),
            )
        })?;
    let sp = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ps| ps.iter().find(|p| p.port == i32::from(port)))
        .ok_or_else(|| {
            (
                "BackendNotFound",
                format!("Service {ns}/{} has no port {port}", r.name),
            )
        })?;
    let port_name = sp.name.clone().unwrap_or_default();
    let mut endpoints = BTreeSet::new();
    for slice in inputs.slices.iter().filter(|s| {
        s.namespace().as_deref() == Some(ns)
            && s.labels().get("kubernetes.io/service-name") == Some(&r.name)
            && s.address_type != "FQDN"
    }) {
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in slice.endpoints.iter().flatten() {
            // Ready unset means ready (EndpointSlice API); terminating endpoints are not.
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &e.addresses {
                if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                    endpoints.insert(SocketAddr::new(ip, target));
                }
            }
        }
    }
    Ok(Backend {
        name: format!("{ns}/{}:{port}", r.name),
        endpoints: endpoints.into_iter().collect(),
        next: AtomicUsize::new(0),
    })
}

fn compile_match(m: &RouteMatch) -> Result<CompiledMatch, String> {
    let default = PathMatch::default();
    let p = m.path.as_ref().unwrap_or(&default);
    let value = p.value.clone().unwrap_or_else(|| "/".into());
    let path = match p.type_.as_deref() {
        None | Some("PathPrefix") => PathKind::Prefix(value),
        Some("Exact") => PathKind::Exact(value),
        Some("RegularExpression") => PathKind::Regex(full_regex(&value)?),
        Some(other) => return Err(format!("unsupported path match type {other:?}")),
    };
    let headers = m
        .headers
        .iter()
        .map(|h| {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| format!("invalid header name {:?}: {e}", h.name))?;
            Ok((name, value_kind(h)?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let query = m
        .query_params
        .iter()
        .map(|q| Ok((q.name.clone(), value_kind(q)?)))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CompiledMatch {
        path,
        method: m.method.clone(),
        headers,
        query,
    })
}

/// Whether route `r` (in `route_ns`) may attach to listener `l` of gateway `gw`.
fn allowed(gw: &Gateway, l: &Listener, route_ns: &str) -> bool {
    let from = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
        .unwrap_or("Same");
    match from {
        "All" => true,
        "Same" => gw.namespace().as_deref() == Some(route_ns),
        _ => false,
    }
}

/// Host names the route serves on listener `l`: None when they do not intersect.
fn effective_hosts(l: &Listener, route_hosts: &[String]) -> Option<Vec<Option<String>>> {
    match (&l.hostname, route_hosts.is_empty()) {
        (None, true) => Some(vec![None]),
        (None, false) => Some(route_hosts.iter().cloned().map(Some).collect()),
        (Some(lh), true) => Some(vec![Some(lh.clone())]),
        (Some(lh), false) => {
            let hosts: Vec<Option<String>> = route_hosts
                .iter()
                .filter_map(|rh| {
                    if host_matches(lh, rh) || lh == rh {
                        Some(Some(rh.clone()))
                    } else if host_matches(rh, lh) {
                        Some(Some(lh.clone()))
                    } else {
                        None
                    }
                })
                .collect();
            (!hosts.is_empty()).then_some(hosts)
        }
    }
}

fn compile_rule(
    inputs: &Inputs<'_>,
    ns: &str,
    route: &str,
    index: usize,
    rule: &Rule,
    unresolved: &mut Vec<(&'static str, String)>,
) -> CompiledRule {
    let mut resolve_ref = |r: &BackendRef| match resolve(inputs, ns, r) {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            unresolved.push(e);
            None
        }
    };
    let backends: Vec<(u32, Option<Arc<Backend>>)> = rule
        .backend_refs
        .iter()
        .map(|r| (r.weight.unwrap_or(1), resolve_ref(r)))
        .filter(|(w, _)| *w > 0)
        .collect();
    let weights: Vec<u32> = backends.iter().map(|(w, _)| *w).collect();
    let mut mirrors = Vec::new();
    let mut headers = None;
    for f in &rule.filters {
        match f.type_.as_str() {
            "RequestMirror" => {
                if let Some(m) = &f.request_mirror {
                    let per_million = match (&m.fraction, m.percent) {
                        (Some(fr), _) => {
                            let d = u64::from(fr.denominator.unwrap_or(100).max(1));
                            u32::try_from(u64::from(fr.numerator) * 1_000_000 / d)
                                .unwrap_or(1_000_000)
                        }
                        (None, Some(p)) => p.min(100) * 10_000,
                        (None, None) => 1_000_000,
                    };
                    mirrors.push(Mirror {
                        backend: resolve_ref(&m.backend_ref),
                        per_million: per_million.min(1_000_000),
                        count: AtomicUsize::new(0),
                    });
                }
            }
            "RequestHeaderModifier" => headers = f.request_header_modifier.clone(),
            _ => {}
        }
    }
    CompiledRule {
        route: route.to_string(),
        rule: index,
        schedule: schedule(&weights),
        backends,
        mirrors,
        headers,
        next: AtomicUsize::new(0),
    }
}

/// Build the table and the statuses to report.
pub fn build(inputs: &Inputs<'_>) -> (Table, Report) {
    let mut report = Report::default();
    // Port → host pattern → entries.
    let mut ports: BTreeMap<u16, BTreeMap<Option<String>, Vec<Entry>>> = BTreeMap::new();
    for gw in &inputs.gateways {
        let gk = key(&gw.namespace().unwrap_or_default(), &gw.name_any());
        let listeners = report.attached.entry(gk).or_default();
        for l in &gw.spec.listeners {
            listeners.insert(l.name.clone(), 0);
            if l.protocol == "HTTP" {
                ports.entry(l.port).or_default();
            }
        }
    }
    for route in &inputs.routes {
        let ns = route.namespace().unwrap_or_default();
        let rk = key(&ns, &route.name_any());
        let created = route
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second());
        for parent in &route.spec.parent_refs {
            if parent.group.as_deref().unwrap_or(GROUP) != GROUP
                || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
            {
                continue;
            }
            let pns = parent.namespace.clone().unwrap_or_else(|| ns.clone());
            let Some(gw) = inputs
                .gateways
                .iter()
                .find(|g| g.namespace().as_deref() == Some(&pns) && g.name_any() == parent.name)
            else {
                continue; // Another implementation's Gateway, or none: not ours to report.
            };
            let gk = key(&pns, &parent.name);
            let mut unresolved = Vec::new();
            let mut compile_error = None;
            let mut attached_any = false;
            let mut host_mismatch = false;
            let rules: Vec<Arc<CompiledRule>> = route
                .spec
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| Arc::new(compile_rule(inputs, &ns, &rk, i, r, &mut unresolved)))
                .collect();
            for l in gw.spec.listeners.iter().filter(|l| {
                l.protocol == "HTTP"
                    && parent.section_name.as_ref().is_none_or(|s| *s == l.name)
                    && parent.port.is_none_or(|p| p == l.port)
            }) {
                if !allowed(gw, l, &ns) {
                    continue;
                }
                let Some(hosts) = effective_hosts(l, &route.spec.hostnames) else {
                    host_mismatch = true;
                    continue;
                };
                attached_any = true;
                *report
                    .attached
                    .entry(gk.clone())
                    .or_default()
                    .entry(l.name.clone())
                    .or_default() += 1;
                let groups = ports.entry(l.port).or_default();
                for (ri, (rule, compiled)) in route.spec.rules.iter().zip(&rules).enumerate() {
                    let matches = if rule.matches.is_empty() {
                        vec![RouteMatch::default()]
                    } else {
                        rule.matches.clone()
                    };
                    for (mi, m) in matches.iter().enumerate() {
                        let compiled_match = match compile_match(m) {
                            Ok(c) => c,
                            Err(e) => {
                                compile_error = Some(e);
                                continue;
                            }
                        };
                        let (path_kind, len) = match &compiled_match.path {
                            PathKind::Exact(p) => (0, p.len()),
                            PathKind::Prefix(p) => (1, p.len()),
                            PathKind::Regex(_) => (2, 0),
                        };
                        let order = Precedence {
                            path_kind,
                            longer_path: std::cmp::Reverse(len),
                            without_method: compiled_match.method.is_none(),
                            more_headers: std::cmp::Reverse(compiled_match.headers.len()),
                            more_query: std::cmp::Reverse(compiled_match.query.len()),
                            created,
                            route: rk.clone(),
                            rule: ri,
                            match_index: mi,
                        };
                        for h in &hosts {
                            groups.entry(h.clone()).or_default().push(Entry {
                                m: compiled_match.clone(),
                                rule: compiled.clone(),
                                order: order.clone(),
                            });
                        }
                    }
                }
            }
            let accepted = if let Some(e) = &compile_error {
                (false, "UnsupportedValue", e.clone())
            } else if attached_any {
                (true, "Accepted", "served by cutover-router".to_string())
            } else if host_mismatch {
                (
                    false,
                    "NoMatchingListenerHostname",
                    "no listener host name matches the route's".to_string(),
                )
            } else {
                (
                    false,
                    "NotAllowedByListeners",
                    "no HTTP listener of the Gateway admits this route".to_string(),
                )
            };
            let resolved = match unresolved.first() {
                None => (true, "ResolvedRefs", "every backend resolved".to_string()),
                Some((reason, msg)) => (false, *reason, msg.clone()),
            };
            report
                .routes
                .entry(rk.clone())
                .or_default()
                .push(ParentStatus {
                    parent: parent.clone(),
                    accepted,
                    resolved,
                });
        }
    }
    let table = Table {
        ports: ports
            .into_iter()
            .map(|(port, hosts)| {
                let mut groups: Vec<HostGroup> = hosts
                    .into_iter()
                    .map(|(pattern, mut entries)| {
                        entries.sort_by(|a, b| a.order.cmp(&b.order));
                        HostGroup { pattern, entries }
                    })
                    .collect();
                // Exact names, then wildcards by length, then the catch-all.
                groups.sort_by_key(|g| match &g.pattern {
                    Some(p) if !p.starts_with('*') => (0, std::cmp::Reverse(p.len())),
                    Some(p) => (1, std::cmp::Reverse(p.len())),
                    None => (2, std::cmp::Reverse(0)),
                });
                (port, PortRoutes { groups })
            })
            .collect(),
    };
    (table, report)
}

/// A JSON view of the table for `/debug/routes`: per port and host, the rules in order
/// with their backends, weights and ready endpoints.
pub fn describe(table: &Table) -> serde_json::Value {
    let ports: serde_json::Map<String, serde_json::Value> = table
        .ports
        .iter()
        .map(|(port, routes)| {
            let groups: Vec<serde_json::Value> = routes
                .groups
                .iter()
                .map(|g| {
                    let rules: Vec<serde_json::Value> = g
                        .entries
                        .iter()
                        .map(|e| serde_json::to_value(&*e.rule).unwrap_or_default())
                        .collect();
                    serde_json::json!({ "host": g.pattern, "rules": rules })
                })
                .collect();
            (port.to_string(), serde_json::Value::Array(groups))
        })
        .collect();
    serde_json::json!({ "ports": ports })
}

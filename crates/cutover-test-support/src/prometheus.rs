//! A real Prometheus and an HTTP endpoint whose answers the test controls, for tests of
//! analysis providers.
//!
//! - [`MetricsEndpoint`] serves `/metrics` (Prometheus text format) from counters and
//!   gauges the test sets, and any other path from canned answers (JSON, a status, or no
//!   answer at all).
//! - [`Prometheus`] runs `/usr/bin/prometheus` (`apt-get install prometheus`; another binary
//!   with `$CUTOVER_PROMETHEUS_BIN`) scraping given targets every second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use cutover_local_cluster::process;
use tokio::sync::oneshot;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoint serves.
#[derive(Debug, Default)]
struct EndpointState {
    families: BTreeMap<String, Family>,
    routes: BTreeMap<String, Route>,
    requests: Vec<RecordedRequest>,
}

/// The series of one metric name.
#[derive(Debug)]
struct Family {
    kind: &'static str,
    series: BTreeMap<Vec<(String, String)>, f64>,
}

/// A canned answer for a path other than `/metrics`.
#[derive(Debug, Clone)]
enum Route {
    Respond {
        status: u16,
        content_type: String,
        body: String,
    },
    Hang,
}

/// A request the endpoint received on a path other than `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The path and query, e.g. `/health?verbose=1`.
    pub path: String,
    /// The headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

/// A tiny HTTP server on 127.0.0.1 serving `/metrics` from values the test sets, and
/// canned answers on other paths. Stops when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    state: Arc<Mutex<EndpointState>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Start serving on a free port of 127.0.0.1, on a thread of its own, so it answers
    /// whatever the test's runtime is doing.
    pub fn start() -> Self {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let state = Arc::new(Mutex::new(EndpointState::default()));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("metrics-endpoint-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a Tokio runtime for the metrics endpoint");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a Tokio listener for the metrics endpoint");
                    let app = Router::new().fallback(handle).with_state(served);
                    // Dropping the runtime after this returns also ends open connections,
                    // including requests held by a hanging route.
                    tokio::select! {
                        _ = axum::serve(listener, app).into_future() => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("a thread for the metrics endpoint");
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// The address it listens on (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Set counter `name{labels}` to `value`.
    pub fn set_counter(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.set(name, "counter", labels, |v| *v = value);
    }

    /// Add `delta` to counter `name{labels}` (created at 0 if absent).
    pub fn add(&self, name: &str, labels: &[(&str, &str)], delta: f64) {
        self.set(name, "counter", labels, |v| *v += delta);
    }

    /// Set gauge `name{labels}` to `value`.
    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.set(name, "gauge", labels, |v| *v = value);
    }

    /// Stop exposing series `name{labels}`.
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let mut state = self.lock();
        if let Some(family) = state.families.get_mut(name) {
            family.series.remove(&label_set(labels));
            if family.series.is_empty() {
                state.families.remove(name);
            }
        }
    }

    /// Answer `GET`/`POST` on `path` (e.g. `/status`) with 200 and `body` as JSON.
    pub fn set_json(&self, path: &str, body: &serde_json::Value) {
        self.set_response(path, 200, "application/json", &body.to_string());
    }

    /// Answer requests on `path` with `status`, `content_type` and `body`.
    pub fn set_response(&self, path: &str, status: u16, content_type: &str, body: &str) {
        self.lock().routes.insert(
            path.to_string(),
            Route::Respond {
                status,
                content_type: content_type.to_string(),
                body: body.to_string(),
            },
        );
    }

    /// Never answer requests on `path` (the connection stays open): for timeouts.
    pub fn set_hanging(&self, path: &str) {
        self.lock().routes.insert(path.to_string(), Route::Hang);
    }

    /// Every request received so far on paths other than `/metrics`, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// The `/metrics` page as it is served now.
    pub fn render(&self) -> String {
        render(&self.lock())
    }

    fn set(
        &self,
        name: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        let mut state = self.lock();
        let family = state
            .families
            .entry(name.to_string())
            .or_insert_with(|| Family {
                kind,
                series: BTreeMap::new(),
            });
        family.kind = kind;
        f(family.series.entry(label_set(labels)).or_insert(0.0));
    }

    fn lock(&self) -> MutexGuard<'_, EndpointState> {
        // A test that panicked while holding the lock left consistent data behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Labels as a sorted key, so `[("a","1"),("b","2")]` and `[("b","2"),("a","1")]` are one series.
fn label_set(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut set: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    set.sort();
    set
}

/// The Prometheus text exposition (format 0.0.4) of every series.
fn render(state: &EndpointState) -> String {
    let mut out = String::new();
    for (name, family) in &state.families {
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        for (labels, value) in &family.series {
            out.push_str(name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = writeln!(out, " {}", format_value(*value));
        }
    }
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        value.to_string()
    }
}

async fn handle(State(state): State<Arc<Mutex<EndpointState>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if path == "/metrics" {
        let page = render(&state.lock().unwrap_or_else(PoisonError::into_inner));
        return ([(CONTENT_TYPE, TEXT_FORMAT)], page).into_response();
    }
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let route = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or(path.clone(), |p| p.to_string()),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        state.routes.get(&path).cloned()
    };
    match route {
        Some(Route::Respond {
            status,
            content_type,
            body,
        }) => Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Some(Route::Hang) => std::future::pending().await,
        None => (StatusCode::NOT_FOUND, format!("no answer set for {path}\n")).into_response(),
    }
}

/// The Prometheus binary: `$CUTOVER_PROMETHEUS_BIN`, or Debian's.
fn prometheus_bin() -> PathBuf {
    let bin = std::env::var_os("CUTOVER_PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        bin.is_file(),
        "Prometheus is not installed at {}: run `apt-get install prometheus` (CI does), or set \
         CUTOVER_PROMETHEUS_BIN to a prometheus binary",
        bin.display()
    );
    bin
}

/// A fresh folder for one Prometheus under the workspace's `target/`.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = cutover_local_cluster::workspace_root()
        .join("target")
        .join("prometheus")
        .join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
    // A leftover of an earlier run with the same pid.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// The last lines of a log, for panic messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A real Prometheus on 127.0.0.1 scraping given targets every second, with its data and
/// log (`prometheus.log`) in a folder under `target/prometheus/` (kept if the test panics).
/// Killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    host: std::net::IpAddr,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    client: reqwest::Client,
}

impl Prometheus {
    /// Its process id (for a caller that leaves it running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Start Prometheus scraping `targets` (job `cutover-test`, every second) and wait
    /// until it is ready and has scraped each target once (`up == 1`).
    pub async fn start(targets: &[SocketAddr]) -> Prometheus {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), targets).await
    }

    /// The same, listening on `host` (an address of this machine: loopback, or a bridge
    /// the caller made, so that pods can query it).
    pub async fn start_on(host: std::net::IpAddr, targets: &[SocketAddr]) -> Prometheus {
        let bin = prometheus_bin();
        let dir = fresh_dir();
        let config = dir.join("prometheus.yml");
        let targets_yaml: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n\
                 - job_name: cutover-test\n  \
                   static_configs:\n  \
                   - targets: [{}]\n",
                targets_yaml.join(", ")
            ),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = dir.join("prometheus.log");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");

        // The free port may be taken between finding and binding it: try another.
        let mut attempt = 0;
        let (child, port) = loop {
            attempt += 1;
            let port = free_port();
            let out = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
            let err = out.try_clone().expect("a second handle on the log file");
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!(
                    "--web.listen-address={}",
                    SocketAddr::new(host, port)
                ))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let ready_url = format!("http://{}/-/ready", SocketAddr::new(host, port));
            match wait_ready(&client, &ready_url, &mut child, Duration::from_secs(60)).await {
                Ok(()) => break (child, port),
                Err(why) => {
                    let _ = process::stop(&mut child, Duration::ZERO);
                    let tail = log_tail(&log);
                    if attempt < 3 && tail.contains("address already in use") {
                        eprintln!(
                            "Prometheus could not listen on port {port} ({why}); trying another"
                        );
                        continue;
                    }
                    panic!(
                        "Prometheus ({}) did not become ready: {why}; last lines of {}:\n{tail}",
                        bin.display(),
                        log.display(),
                    );
                }
            }
        };
        let prometheus = Prometheus {
            child: Some(child),
            host,
            port,
            dir,
            log,
            client,
        };
        for target in targets {
            prometheus
                .wait_for_value(
                    &format!("up{{instance=\"{target}\"}}"),
                    |up| up == 1.0,
                    Duration::from_secs(60),
                )
                .await;
        }
        prometheus
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.host, self.port))
    }

    /// Where Prometheus writes its log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Kill Prometheus (for tests of "Prometheus is down"); its port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = process::stop(&mut child, Duration::ZERO);
        }
    }

    /// Poll the instant query `query` until its first sample satisfies `pred`; returns that
    /// value. Panics after `timeout` with the last answer.
    pub async fn wait_for_value(
        &self,
        query: &str,
        pred: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/api/v1/query", self.url());
        loop {
            let last = match self
                .client
                .get(&url)
                .query(&[("query", query)])
                .send()
                .await
            {
                Ok(response) => match response.text().await {
                    Ok(body) => match first_sample(&body) {
                        Some(value) if pred(value) => return value,
                        _ => body,
                    },
                    Err(e) => e.to_string(),
                },
                Err(e) => format!("{e:?}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for Prometheus query {query:?} to \
                     satisfy the condition; last answer: {last}; log: {}",
                    self.log.display()
                );
            }
            // Polling a condition: Prometheus has no way to notify us.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Wait until `url` (`/-/ready`) answers 200; `Err` says why not (Prometheus exited, timeout).
async fn wait_ready(
    client: &reqwest::Client,
    url: &str,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited with {status}"));
        }
        let last = match client.get(url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!("{url} answered {}", response.status()),
            Err(e) => format!("{e:?}"),
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready after {timeout:?}: {last}"));
        }
        // Polling a condition: Prometheus has no way to notify us.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        // Keep the log and data of a failed test for a look.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The value of the first sample of an instant query's answer (vector or scalar).
fn first_sample(body: &str) -> Option<f64> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    let data = answer.get("data")?;
    let value = match data.get("resultType")?.as_str()? {
        "vector" => data.get("result")?.get(0)?.get("value")?.get(1)?,
        "scalar" => data.get("result")?.get(1)?,
        _ => return None,
    };
    value.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let endpoint = MetricsEndpoint::start();
        endpoint.add("requests_total", &[("code", "200"), ("app", "shop")], 2.0);
        endpoint.add("requests_total", &[("app", "shop"), ("code", "200")], 1.0);
        endpoint.set_counter("requests_total", &[("code", "500"), ("app", "a\"b")], 1.5);
        endpoint.set_gauge("ratio", &[], f64::NAN);
        endpoint.set_gauge("gone", &[], 1.0);
        endpoint.remove("gone", &[]);
        assert_eq!(
            endpoint.render(),
            "# TYPE ratio gauge\nratio NaN\n\
             # TYPE requests_total counter\n\
             requests_total{app=\"a\\\"b\",code=\"500\"} 1.5\n\
             requests_total{app=\"shop\",code=\"200\"} 3\n"
        );
    }

    #[test]
    fn reads_the_first_sample() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2.5"]}]}}"#;
        assert_eq!(first_sample(vector), Some(2.5));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(first_sample(scalar), Some(3.0));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(first_sample(empty), None);
    }
}

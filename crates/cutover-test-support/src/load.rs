//! A load generator for end-to-end tests and benchmarks: a fixed number of workers send
//! requests back to back to one URL and count every outcome — 2xx by the `version` the
//! demo app reports, every other status, and every connection error — until stopped.
//! Bounded by design: it stops itself after `max_duration`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// What a load run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Requests sent.
    pub total: u64,
    /// 2xx responses by the `version` field of their JSON body ("" if none).
    pub ok_by_version: BTreeMap<String, u64>,
    /// Responses with another status, by status code.
    pub failed_by_status: BTreeMap<u16, u64>,
    /// Requests that got no response (refused, reset, timed out).
    pub connection_errors: u64,
}

impl Report {
    /// Requests that did not get a 2xx.
    pub fn failed(&self) -> u64 {
        self.failed_by_status.values().sum::<u64>() + self.connection_errors
    }

    /// 2xx responses.
    pub fn ok(&self) -> u64 {
        self.ok_by_version.values().sum()
    }

    /// The share of 2xx responses that came from `version`, in percent.
    pub fn percent_of(&self, version: &str) -> f64 {
        let ok = self.ok();
        if ok == 0 {
            return 0.0;
        }
        self.ok_by_version.get(version).copied().unwrap_or(0) as f64 * 100.0 / ok as f64
    }

    /// The difference from `earlier` (for a window of a longer run).
    pub fn since(&self, earlier: &Report) -> Report {
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Report {
            total: self.total - earlier.total,
            ok_by_version: diff(&self.ok_by_version, &earlier.ok_by_version),
            failed_by_status: self
                .failed_by_status
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        v - earlier.failed_by_status.get(k).copied().unwrap_or(0),
                    )
                })
                .filter(|(_, v)| *v > 0)
                .collect(),
            connection_errors: self.connection_errors - earlier.connection_errors,
        }
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// Start `workers` workers on `url` (a 127.0.0.1 / ::1 address), each sending a request
    /// as soon as the previous one finished, with `timeout` per request; all stop after
    /// `max_duration` at the latest.
    pub fn start(url: &str, workers: usize, timeout: Duration, max_duration: Duration) -> Load {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .expect("an HTTP client");
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let deadline = tokio::time::Instant::now() + max_duration;
        let workers = (0..workers)
            .map(|_| {
                let (client, url, stop, report) = (
                    client.clone(),
                    url.to_string(),
                    stop.clone(),
                    report.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                        let outcome = match client.get(&url).send().await {
                            Ok(resp) => {
                                let status = resp.status();
                                let body = resp.text().await.unwrap_or_default();
                                Ok((status, body))
                            }
                            Err(_) => Err(()),
                        };
                        let mut r = report.lock().await;
                        r.total += 1;
                        match outcome {
                            Ok((status, body)) if status.is_success() => {
                                let version = serde_json::from_str::<serde_json::Value>(&body)
                                    .ok()
                                    .and_then(|v| v["version"].as_str().map(str::to_string))
                                    .unwrap_or_default();
                                *r.ok_by_version.entry(version).or_default() += 1;
                            }
                            Ok((status, _)) => {
                                *r.failed_by_status.entry(status.as_u16()).or_default() += 1
                            }
                            Err(()) => r.connection_errors += 1,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            workers,
        }
    }

    /// What it saw so far.
    pub async fn snapshot(&self) -> Report {
        self.report.lock().await.clone()
    }

    /// Stop every worker (requests in flight finish) and return the report.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        self.report.lock().await.clone()
    }
}

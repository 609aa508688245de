//! HTTP GET probes, as a kubelet runs them: success is a status in 200..400.

use std::time::Duration;

/// Probe settings with the kubelet's defaults.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `http://ip:port/path`.
    pub url: String,
    /// Seconds before the first probe.
    pub initial_delay: Duration,
    /// Seconds between probes.
    pub period: Duration,
    /// Request timeout.
    pub timeout: Duration,
    /// Failures in a row that flip it to failing.
    pub failure_threshold: u32,
    /// Successes in a row that flip it to passing.
    pub success_threshold: u32,
}

impl Probe {
    /// The HTTP GET probe of `p` against `ip`; `None` for probes other than httpGet.
    pub fn from_spec(
        p: &k8s_openapi::api::core::v1::Probe,
        ip: &str,
        ports: &[(String, i32)],
    ) -> Option<Probe> {
        let get = p.http_get.as_ref()?;
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p)?
            }
        };
        let secs = |v: Option<i32>, d: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(d))
        };
        Some(Probe {
            url: format!(
                "http://{ip}:{port}{}",
                get.path.clone().unwrap_or_else(|| "/".into())
            ),
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            failure_threshold: p
                .failure_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(3),
            success_threshold: p
                .success_threshold
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(1),
        })
    }
}

/// Run one probe.
pub async fn check(client: &reqwest::Client, probe: &Probe) -> bool {
    match client.get(&probe.url).timeout(probe.timeout).send().await {
        Ok(r) => (200..400).contains(&r.status().as_u16()),
        Err(_) => false,
    }
}

//! The demo app as a process: responses, error rate, health and metrics over real HTTP on
//! 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{request, start};
use cutover_test_support::local_cluster::process;

async fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path).await
}

#[tokio::test]
async fn serves_its_version_fails_at_its_error_rate_and_counts_it() {
    let app = start(&["--version", "v2", "--color", "green", "--error-rate", "0.2"]).await;
    let mut failed = 0;
    for _ in 0..100 {
        let (code, body) = get(app.1, "/").await;
        assert!(
            body.contains("\"version\":\"v2\"") && body.contains("\"color\":\"green\""),
            "{body}"
        );
        if code == 500 {
            failed += 1;
        } else {
            assert_eq!(code, 200);
        }
    }
    assert_eq!(failed, 20, "exactly 20 % of 100");
    let (code, metrics) = get(app.1, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"demo_http_requests_total{code="500",version="v2"} 20"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"demo_http_requests_total{code="200",version="v2"} 80"#),
        "{metrics}"
    );
    assert_eq!(get(app.1, "/healthz").await.0, 200);
}

#[tokio::test]
async fn an_unhealthy_app_fails_its_probe() {
    let app = start(&["--unhealthy"]).await;
    assert_eq!(get(app.1, "/healthz").await.0, 503);
}

#[tokio::test]
async fn the_load_generator_counts_every_failure_and_every_lost_connection() {
    use cutover_test_support::load::Load;
    let mut app = start(&["--version", "v7", "--error-rate", "0.1"]).await;
    let url = format!("http://127.0.0.1:{}/", app.1);
    let load = Load::start(&url, 4, Duration::from_secs(2), Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.snapshot().await.total < 500 {
        assert!(
            Instant::now() < deadline,
            "the load never reached 500 requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The app goes away under load: what follows are connection errors.
    let _ = process::stop(&mut app.0, Duration::ZERO);
    let before_kill = load.snapshot().await;
    while load.snapshot().await.connection_errors == 0 {
        assert!(
            Instant::now() < deadline,
            "no connection error after the app died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = load.stop().await;
    let answered = report.ok() + report.failed_by_status.values().sum::<u64>();
    assert_eq!(
        report.total,
        answered + report.connection_errors,
        "every request is counted once"
    );
    let served = before_kill.ok() + before_kill.failed_by_status.values().sum::<u64>();
    assert!(report.ok_by_version.keys().all(|v| v == "v7"), "{report:?}");
    // The app fails exactly every 10th request it served.
    let failed = report.failed_by_status.get(&500).copied().unwrap_or(0);
    assert!(
        failed >= served / 10 && failed <= answered / 10 + 1,
        "{failed} of {answered}: {report:?}"
    );
    assert!(report.connection_errors > 0);
}

//! The demo app as a process: responses, error rate, health and metrics over real HTTP on
//! 127.0.0.1.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct App(Child, u16);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(args: &[&str]) -> App {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    let child = Command::new(env!("CARGO_BIN_EXE_cutover-demo-app"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .spawn()
        .expect("start the demo app");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the demo app never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    App(child, port)
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
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
    let _ = app.0.kill();
    let _ = app.0.wait();
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

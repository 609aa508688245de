//! Helpers shared by the demo app's tests: the app as a process, and raw HTTP to it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cutover_test_support::local_cluster::process;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The running app and its port on 127.0.0.1; killed when dropped.
pub struct App(pub Child, pub u16);

impl Drop for App {
    fn drop(&mut self) {
        let _ = process::stop(&mut self.0, Duration::ZERO);
    }
}

/// Start the app on a free port of 127.0.0.1 with `args`; returns once it listens.
pub async fn start(args: &[&str]) -> App {
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

/// One HTTP/1.1 request without a body; the status code and the body.
pub async fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
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

//! Helpers shared by the xtask end-to-end tests: run `cargo xtask` as a user does, wait on
//! a condition with a timeout, GET over plain HTTP.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

use cutover_test_support::local_cluster as local;

/// How long any one wait may take.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// Run `cargo xtask ARGS` as a user would; its stdout.
pub fn xtask(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).current_dir(local::workspace_root());
    cutover_test_support::e2e::without_test_cargo_env(&mut cmd);
    let out = cmd.output().expect("run cargo xtask");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cargo xtask {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Poll `check` until it returns Some, for at most [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET http://addr/path; the body of a 200.
pub async fn get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = addr.to_string();
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(addr.as_str()),
    )
    .await
    .ok()?
    .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    text.starts_with("HTTP/1.1 200")
        .then(|| text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

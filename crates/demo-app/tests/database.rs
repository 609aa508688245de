//! The demo app's database mode against a real PostgreSQL primary and hot standby (the
//! `cutover_test_support::postgres` fixture), reached through the servers' unix socket
//! folders as in a network namespace: writes are committed before the answer, refused
//! with 503 on a read-only standby until it is promoted, and survive a database restart
//! by reconnecting.
//!
//! The fixture runs PostgreSQL as the `postgres` user through `runuser`: these tests need
//! root.

mod common;

use std::path::PathBuf;

use common::{App, request, start};
use cutover_test_support::postgres::{Pair, Server, WAIT_TIMEOUT, start_pair};

/// An app in database mode on `server`, version `version`.
async fn start_on(pair: &Pair, server: &Server, version: &str) -> App {
    let conninfo = conninfo(pair, server);
    start(&[
        "--version",
        version,
        "--color",
        "blue",
        "--database-url",
        &conninfo,
    ])
    .await
}

/// `host=<socket folder> port=... user=postgres dbname=postgres`: the fixture puts each
/// server's socket in `<pair folder>/<role>.sock` (its module docs: "a unix socket
/// directory inside the pair's folder"); it has no accessor for that folder, so the path
/// is rebuilt here. Falls back to the TCP URL when there is no socket (the fixture skips
/// it when the path is too long for a socket address).
fn conninfo(pair: &Pair, server: &Server) -> String {
    let dir: PathBuf = pair.dir().join(format!("{}.sock", server.role()));
    if dir.join(format!(".s.PGSQL.{}", server.port())).exists() {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            dir.display(),
            server.port()
        )
    } else {
        eprintln!(
            "no unix socket in {}: using the TCP URL {}",
            dir.display(),
            server.url()
        );
        server.url().to_string()
    }
}

async fn post_write(app: &App, id: &str) -> (u16, serde_json::Value) {
    let (code, body) = request(app.1, "POST", &format!("/write/{id}")).await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("POST /write/{id} answered {code} with no JSON ({e}): {body}"));
    (code, json)
}

async fn get_write(app: &App, id: &str) -> (u16, String) {
    request(app.1, "GET", &format!("/write/{id}")).await
}

async fn metric(app: &App, line_start: &str) -> Option<u64> {
    let (code, metrics) = request(app.1, "GET", "/metrics").await;
    assert_eq!(code, 200);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

async fn count(server: &Server, like: &str) -> u64 {
    server
        .query_one(&format!(
            "SELECT count(*) FROM cutover_demo_writes WHERE id LIKE '{like}'"
        ))
        .await
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn writes_through_the_primary_are_on_the_synchronous_standby_when_acknowledged() {
    let pair = start_pair("demo-app-sync", true).await;
    let app = start_on(&pair, pair.primary(), "v3").await;
    assert_eq!(request(app.1, "GET", "/healthz").await.0, 200);

    // Concurrent writes (the first ones race to create the table), each checked on the
    // standby right after its answer: `remote_apply` makes an acknowledged commit visible
    // there, with no waiting.
    let mut tasks = Vec::new();
    for n in 0..20 {
        let port = app.1;
        tasks.push(tokio::spawn(async move {
            request(port, "POST", &format!("/write/sync-{n}")).await
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let (code, body) = task.await.expect("the request task");
        assert_eq!(code, 200, "write {n}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({ "id": format!("sync-{n}"), "version": "v3", "color": "blue" })
        );
    }
    assert_eq!(count(pair.standby(), "sync-%").await, 20);
    for n in 20..25 {
        let id = format!("sync-{n}");
        assert_eq!(post_write(&app, &id).await.0, 200);
        assert_eq!(
            pair.standby()
                .query_one(&format!(
                    "SELECT version FROM cutover_demo_writes WHERE id = '{id}'"
                ))
                .await,
            "v3",
            "{id} on the standby as soon as acknowledged"
        );
    }
    // Writing an id again is accepted and changes nothing.
    assert_eq!(post_write(&app, "sync-0").await.0, 200);
    assert_eq!(count(pair.standby(), "sync-%").await, 25);
    assert_eq!(count(pair.primary(), "sync-%").await, 25);
    assert_eq!(
        metric(&app, r#"demo_writes_total{result="ok"} "#).await,
        Some(26)
    );
    assert_eq!(
        metric(&app, r#"demo_writes_total{result="error"} "#).await,
        None
    );
}

#[tokio::test]
async fn an_app_on_the_standby_is_refused_writes_until_the_standby_is_promoted() {
    let pair = start_pair("demo-app-promote", true).await;
    let primary_app = start_on(&pair, pair.primary(), "v1").await;
    assert_eq!(post_write(&primary_app, "before").await.0, 200);

    let app = start_on(&pair, pair.standby(), "v2").await;
    let (code, json) = post_write(&app, "refused").await;
    assert_eq!(code, 503, "{json}");
    let error = json["error"].as_str().expect("an error message");
    assert!(
        error.contains("cannot execute INSERT in a read-only transaction"),
        "{json}"
    );
    assert_eq!(json["code"], "25006", "read_only_sql_transaction: {json}");
    // Reads work on the standby, and its app stays healthy.
    assert_eq!(get_write(&app, "before").await.0, 200);
    assert_eq!(get_write(&app, "refused").await.0, 404);
    assert_eq!(request(app.1, "GET", "/healthz").await.0, 200);
    assert_eq!(
        metric(&app, r#"demo_writes_total{result="error"} "#).await,
        Some(1)
    );

    pair.standby().promote().await;
    let (code, json) = post_write(&app, "after-promotion").await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["version"], "v2");
    assert_eq!(
        pair.standby()
            .query_one("SELECT version FROM cutover_demo_writes WHERE id = 'after-promotion'")
            .await,
        "v2"
    );
    assert_eq!(count(pair.standby(), "refused").await, 0);
    assert_eq!(
        metric(&app, r#"demo_writes_total{result="ok"} "#).await,
        Some(1)
    );
}

#[tokio::test]
async fn reads_answer_present_or_not_and_a_read_only_database_refuses_writes() {
    let pair = start_pair("demo-app-read", true).await;
    let app = start_on(&pair, pair.primary(), "v1").await;
    // No table yet: nothing is present.
    assert_eq!(get_write(&app, "a").await.0, 404);
    assert_eq!(post_write(&app, "a").await.0, 200);
    let (code, body) = get_write(&app, "a").await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON"),
        serde_json::json!({ "id": "a", "present": true })
    );
    let (code, body) = get_write(&app, "b").await;
    assert_eq!(code, 404, "{body}");

    // `default_transaction_read_only` set on the server reaches the app's open session at
    // its next command after the reload: writes (new ids each time) until one is refused.
    pair.primary()
        .session(&[
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ])
        .await;
    let mut n = 0;
    let mut refused = serde_json::Value::Null;
    pair.primary()
        .wait_for(
            "the app's writes to be refused (default_transaction_read_only)",
            WAIT_TIMEOUT,
            async || {
                n += 1;
                let (code, json) = post_write(&app, &format!("ro-{n}")).await;
                refused = json;
                code == 503
            },
        )
        .await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("read-only transaction")),
        "{refused}"
    );
    assert_eq!(get_write(&app, "a").await.0, 200, "reads still work");
    pair.primary()
        .session(&[
            "SET default_transaction_read_only = off",
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ])
        .await;
    pair.primary()
        .wait_for(
            "the app's writes to be accepted again",
            WAIT_TIMEOUT,
            async || {
                n += 1;
                post_write(&app, &format!("ro-{n}")).await.0 == 200
            },
        )
        .await;
}

#[tokio::test]
async fn an_app_whose_database_went_down_answers_503_and_reconnects_when_it_is_back() {
    // Asynchronous: the restarted primary must not wait for its standby to reconnect.
    let pair = start_pair("demo-app-restart", false).await;
    let db = pair.primary();
    // The app starts while its database is down, and is healthy.
    db.kill().await;
    let app = start_on(&pair, db, "v1").await;
    assert_eq!(request(app.1, "GET", "/healthz").await.0, 200);
    let (code, json) = post_write(&app, "down-0").await;
    assert_eq!(code, 503, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("error connecting to server")),
        "{json}"
    );
    assert_eq!(get_write(&app, "down-0").await.0, 503);

    db.start().await;
    assert_eq!(post_write(&app, "up-1").await.0, 200);

    // The database dies under an open connection: the next write fails, one attempt, and
    // the first write after the restart reconnects.
    db.kill().await;
    let (code, json) = post_write(&app, "down-1").await;
    assert_eq!(code, 503, "{json}");
    assert_eq!(post_write(&app, "down-2").await.0, 503);
    assert_eq!(request(app.1, "GET", "/healthz").await.0, 200);
    db.start().await;
    let (code, json) = post_write(&app, "up-2").await;
    assert_eq!(code, 200, "{json}");
    assert_eq!(get_write(&app, "up-1").await.0, 200);

    // The server ends the app's session while a write runs on it (blocked behind an
    // uncommitted insert of the same id): that write fails, one attempt, and the client
    // is dropped, so the next write connects again.
    let hold = db.try_session(&[
        "BEGIN",
        "INSERT INTO cutover_demo_writes (id, version) VALUES ('held', 'fixture')",
        "SELECT pg_sleep(120)",
    ]);
    let holding = async || {
        db.try_query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
            .await
            .is_ok_and(|n| n == "1")
    };
    let write = async {
        db.wait_for("the fixture to hold the row", WAIT_TIMEOUT, holding)
            .await;
        post_write(&app, "held").await
    };
    let killer = async {
        db.wait_for(
            "the app's insert to wait for the held row",
            WAIT_TIMEOUT,
            async || {
                db.try_query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE application_name = 'cutover-demo-app' AND wait_event_type = 'Lock'",
                )
                .await
                .is_ok_and(|n| n == "1")
            },
        )
        .await;
        let terminated = db
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) \
                 FROM pg_stat_activity WHERE application_name = 'cutover-demo-app'",
            )
            .await;
        assert_eq!(terminated, "1", "the app's one session");
        // Then the holder, which rolls back.
        db.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
             WHERE wait_event = 'PgSleep'",
        )
        .await;
    };
    let (held, (code, json), ()) = tokio::join!(hold, write, killer);
    assert_eq!(code, 503, "{json}");
    assert_eq!(json["code"], "57P01", "admin_shutdown: {json}");
    assert!(held.is_err(), "the holder was terminated: {held:?}");
    let (code, json) = post_write(&app, "up-3").await;
    assert_eq!(code, 200, "{json}");

    assert_eq!(count(db, "up-%").await, 3);
    assert_eq!(count(db, "down-%").await, 0);
    assert_eq!(count(db, "held").await, 0);
    assert_eq!(
        metric(&app, r#"demo_writes_total{result="ok"} "#).await,
        Some(3)
    );
    assert_eq!(
        metric(&app, r#"demo_writes_total{result="error"} "#).await,
        Some(4)
    );
}

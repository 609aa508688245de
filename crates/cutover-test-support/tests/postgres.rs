//! The PostgreSQL primary/standby fixture: synchronous replication, lag, promotion and
//! fencing on real servers. Each test has a pair of its own (own ports, own folder).

use std::time::Instant;

use cutover_test_support::postgres::{self, SqlError, WAIT_TIMEOUT};

fn assert_error(result: Result<String, SqlError>, expected: &str, what: &str) {
    match result {
        Ok(out) => {
            panic!("{what}: succeeded (output {out:?}), expected an error with {expected:?}")
        }
        Err(e) => assert!(
            e.message.contains(expected),
            "{what}: expected an error with {expected:?}, got: {e}"
        ),
    }
}

/// With `synchronous_commit = remote_apply`, a commit returns only once the standby has
/// replayed it: every write is readable on the standby right after the commit returns,
/// with no waiting.
#[tokio::test]
async fn synchronous_commit_is_readable_on_the_standby_at_once() {
    let pair = postgres::start_pair("sync-read", true).await;
    eprintln!("synchronous pair started in {:?}", pair.startup_time());
    let (primary, standby) = (pair.primary(), pair.standby());

    let replication = primary.replication().await;
    assert_eq!(replication.len(), 1, "{replication:#?}");
    assert_eq!(replication[0].application_name, postgres::STANDBY_NAME);
    assert_eq!(replication[0].state, "streaming");
    assert_eq!(replication[0].sync_state, "sync");
    assert!(!primary.is_in_recovery().await);
    assert!(standby.is_in_recovery().await);

    primary
        .execute("CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL)")
        .await;
    for i in 0..20 {
        primary
            .execute(&format!("INSERT INTO orders VALUES ({i}, 'item-{i}')"))
            .await;
        assert_eq!(
            standby
                .query_one(&format!("SELECT item FROM orders WHERE id = {i}"))
                .await,
            format!("item-{i}"),
            "row {i} is not on the standby right after its commit returned"
        );
    }
    assert_eq!(standby.query_one("SELECT count(*) FROM orders").await, "20");
    let lsn = primary.current_lsn().await;
    assert!(
        lsn.contains('/'),
        "an LSN looks like 0/3000060, got {lsn:?}"
    );

    // The standby is read-only.
    assert_error(
        standby
            .try_execute("INSERT INTO orders VALUES (100, 'x')")
            .await,
        "read-only transaction",
        "a write on the standby",
    );
}

/// Pausing replay makes the primary see the standby fall behind (lag in bytes > 0); on
/// resume it catches up (0). Asynchronous pair: with `remote_apply`, the writes would wait
/// for the paused standby.
#[tokio::test]
async fn paused_replay_shows_as_lag_and_catches_up_on_resume() {
    let pair = postgres::start_pair("pause-replay", false).await;
    eprintln!("asynchronous pair started in {:?}", pair.startup_time());
    let (primary, standby) = (pair.primary(), pair.standby());
    assert_eq!(primary.replication().await[0].sync_state, "async");

    primary.execute("CREATE TABLE events (id int)").await;
    pair.wait_caught_up(WAIT_TIMEOUT).await;
    assert_eq!(primary.lag_bytes().await, Some(0));

    standby.pause_replay().await;
    primary
        .execute("INSERT INTO events SELECT generate_series(1, 1000)")
        .await;
    primary
        .wait_for(
            "lag_bytes > 0 while replay is paused",
            WAIT_TIMEOUT,
            async || primary.lag_bytes().await.is_some_and(|lag| lag > 0),
        )
        .await;
    // The standby receives the WAL but does not apply it.
    standby
        .wait_for("WAL received but not replayed", WAIT_TIMEOUT, async || {
            standby
                .standby_status()
                .await
                .replay_backlog_bytes
                .is_some_and(|b| b > 0)
        })
        .await;
    let status = standby.standby_status().await;
    assert!(status.in_recovery);
    assert_eq!(status.pause_state, "paused", "{status:#?}");
    assert!(standby.is_replay_paused().await);
    assert_eq!(standby.query_one("SELECT count(*) FROM events").await, "0");
    let lag = primary.lag_bytes().await;
    eprintln!("lag while paused: {lag:?} bytes; standby: {status:?}");

    standby.resume_replay().await;
    pair.wait_caught_up(WAIT_TIMEOUT).await;
    assert_eq!(
        standby.query_one("SELECT count(*) FROM events").await,
        "1000"
    );
    assert_eq!(standby.standby_status().await.replay_backlog_bytes, Some(0));
    // The last replayed commit is recent: its age is a few seconds at most here.
    let age = standby
        .lag_seconds()
        .await
        .expect("a transaction was replayed");
    assert!((0.0..30.0).contains(&age), "lag_seconds = {age}");
}

/// The primary crashes (immediate stop); the standby is promoted, has every committed
/// write and accepts new ones. The crashed primary, fenced, comes back read-only.
#[tokio::test]
async fn promoted_standby_has_committed_data_and_accepts_writes() {
    let pair = postgres::start_pair("promote", true).await;
    eprintln!("synchronous pair started in {:?}", pair.startup_time());
    let (primary, standby) = (pair.primary(), pair.standby());

    primary
        .execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        .await;
    primary
        .execute("INSERT INTO accounts SELECT i, 100 FROM generate_series(1, 100) i")
        .await;
    primary
        .execute("UPDATE accounts SET balance = 50 WHERE id = 1")
        .await;

    primary.kill().await;
    assert!(!primary.is_running().await);
    assert!(primary.try_execute("SELECT 1").await.is_err());

    let promoting = Instant::now();
    standby.promote().await;
    eprintln!("promoted in {:?}", promoting.elapsed());
    assert!(!standby.is_in_recovery().await);

    assert_eq!(
        standby
            .query_one("SELECT count(*), sum(balance) FROM accounts")
            .await,
        "100|9950"
    );
    standby
        .execute("INSERT INTO accounts VALUES (101, 7)")
        .await;
    assert_eq!(
        standby
            .query_one("SELECT balance FROM accounts WHERE id = 101")
            .await,
        "7"
    );
    // Promoted, it does not wait for a synchronous standby of its own, and has none.
    assert_eq!(standby.lag_bytes().await, None);

    // The crashed old primary must not come back writable.
    primary.fence().await;
    assert!(primary.is_in_recovery().await);
    assert_eq!(
        primary.query_one("SELECT count(*) FROM accounts").await,
        "100"
    );
    assert_error(
        primary
            .try_execute("INSERT INTO accounts VALUES (102, 1)")
            .await,
        "read-only transaction",
        "a write on the fenced old primary",
    );
}

/// After `fence()`, no write is accepted on the old primary, whatever a session tries.
#[tokio::test]
async fn fenced_primary_refuses_every_write() {
    let pair = postgres::start_pair("fence", true).await;
    eprintln!("synchronous pair started in {:?}", pair.startup_time());
    let (primary, standby) = (pair.primary(), pair.standby());

    primary.execute("CREATE TABLE t (id int)").await;
    primary.execute("INSERT INTO t VALUES (1)").await;

    let fencing = Instant::now();
    primary.fence().await;
    eprintln!("fenced in {:?}", fencing.elapsed());
    assert!(primary.is_in_recovery().await);
    // Still readable.
    assert_eq!(primary.query_one("SELECT count(*) FROM t").await, "1");

    assert_error(
        primary.try_execute("INSERT INTO t VALUES (2)").await,
        "cannot execute INSERT in a read-only transaction",
        "INSERT",
    );
    assert_error(
        primary
            .try_session(&[
                "SET default_transaction_read_only = off",
                "INSERT INTO t VALUES (3)",
            ])
            .await,
        "cannot execute INSERT in a read-only transaction",
        "INSERT after SET default_transaction_read_only = off",
    );
    assert_error(
        primary
            .try_session(&[
                "SET default_transaction_read_only = off",
                "BEGIN READ WRITE",
            ])
            .await,
        "cannot set transaction read-write mode during recovery",
        "BEGIN READ WRITE",
    );
    assert_error(
        primary
            .try_execute("BEGIN; SET TRANSACTION READ WRITE; INSERT INTO t VALUES (4); COMMIT")
            .await,
        "cannot set transaction read-write mode during recovery",
        "SET TRANSACTION READ WRITE",
    );
    assert_error(
        primary.try_execute("CREATE TABLE u (id int)").await,
        "read-only transaction",
        "CREATE TABLE",
    );
    // Not even through the server-wide setting a fence by configuration would rely on.
    primary
        .session(&[
            "ALTER SYSTEM SET default_transaction_read_only = off",
            "SELECT pg_reload_conf()",
        ])
        .await;
    assert_error(
        primary.try_execute("UPDATE t SET id = 5").await,
        "cannot execute UPDATE in a read-only transaction",
        "UPDATE after ALTER SYSTEM",
    );
    assert_eq!(primary.query_one("SELECT count(*) FROM t").await, "1");

    // Completing the failover: the standby, promoted, takes the writes.
    standby.promote().await;
    standby.execute("INSERT INTO t VALUES (6)").await;
    assert_eq!(
        standby
            .query_one("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .await,
        "1,6"
    );
    assert_error(
        primary.try_execute("INSERT INTO t VALUES (7)").await,
        "read-only transaction",
        "INSERT on the fenced primary after the failover",
    );
}

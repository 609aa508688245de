//! A member's PostgreSQL server, through SQL only: its role and replication position,
//! fencing and promotion.
//!
//! - **Role**: `pg_is_in_recovery()` (a standby) and `default_transaction_read_only`
//!   (set by our fence). Writable = not in recovery and not read-only.
//! - **Lag** of a standby: the primary's `pg_current_wal_lsn()` minus the standby's
//!   `pg_last_wal_replay_lsn()`, in bytes; in seconds, the age of the last transaction the
//!   standby replayed when it is behind, 0 when it has replayed everything. This counts WAL
//!   received but not yet replayed as at risk, which is conservative (a promotion replays
//!   it) but is what a read on the standby would miss.
//! - **Fence**: `ALTER SYSTEM SET default_transaction_read_only = on`, reload, wait until a
//!   new session sees it, then terminate every other client session so that none keeps a
//!   read-write transaction. `ALTER SYSTEM` is local to the server (not replicated), so the
//!   standby does not inherit the fence. A client that explicitly asks for a read-write
//!   transaction could still write; stopping the server is the hard fence, which needs an
//!   agent next to it.
//! - **Promote**: reset the fence if any, then `pg_promote(wait => true)`.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// A server as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbState {
    /// It answered.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// In recovery: a standby.
    pub in_recovery: bool,
    /// New transactions are read-only (our fence).
    pub read_only: bool,
    /// On a primary: its current WAL position.
    pub current_lsn: Option<i64>,
    /// On a standby: the WAL position it replayed.
    pub replay_lsn: Option<i64>,
    /// On a standby: the age in seconds of the last transaction it replayed.
    pub replay_age_seconds: Option<f64>,
}

impl DbState {
    /// Accepts writes.
    pub fn writable(&self) -> bool {
        self.reachable && !self.in_recovery && !self.read_only
    }

    /// `primary`, `standby`, `fenced` or `unreachable`.
    pub fn role(&self) -> &'static str {
        if !self.reachable {
            "unreachable"
        } else if self.in_recovery {
            "standby"
        } else if self.read_only {
            "fenced"
        } else {
            "primary"
        }
    }
}

/// The lag of `standby` behind `primary`: (seconds, bytes), each `None` when unknown.
pub fn lag(primary: Option<&DbState>, standby: &DbState) -> (Option<f64>, Option<u64>) {
    let (Some(p), Some(replay)) = (
        primary.filter(|p| p.reachable).and_then(|p| p.current_lsn),
        standby.replay_lsn,
    ) else {
        return (None, None);
    };
    let bytes = u64::try_from(p.saturating_sub(replay)).unwrap_or(0);
    let seconds = if bytes == 0 {
        Some(0.0)
    } else {
        standby.replay_age_seconds
    };
    (seconds, Some(bytes))
}

async fn connect(conn: &str, timeout: Duration) -> Result<Client, String> {
    let mut config: tokio_postgres::Config = conn
        .parse()
        .map_err(|e| format!("invalid connection string: {e}"))?;
    config.connect_timeout(timeout);
    config.application_name("cutover-controller");
    let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| format!("no answer within {}ms", timeout.as_millis()))?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

const OBSERVE: &str = "SELECT pg_is_in_recovery(), \
     current_setting('default_transaction_read_only') = 'on', \
     CASE WHEN pg_is_in_recovery() THEN NULL \
          ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END, \
     pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint, \
     extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8";

/// Observe a server (one new session, within `timeout`).
pub async fn observe(conn: &str, timeout: Duration) -> DbState {
    let result = async {
        let client = connect(conn, timeout).await?;
        let row = tokio::time::timeout(timeout, client.query_one(OBSERVE, &[]))
            .await
            .map_err(|_| format!("no answer within {}ms", timeout.as_millis()))?
            .map_err(|e| db_error(&e))?;
        Ok::<_, String>(DbState {
            reachable: true,
            error: None,
            in_recovery: row.get(0),
            read_only: row.get(1),
            current_lsn: row.get(2),
            replay_lsn: row.get(3),
            // NULL when the standby has replayed no transaction since it started: the age
            // is unknown then, not 0 (GREATEST would have made it 0 and hidden the lag).
            replay_age_seconds: row.get::<_, Option<f64>>(4).map(|s| s.max(0.0)),
        })
    }
    .await;
    result.unwrap_or_else(|e| DbState {
        error: Some(e),
        ..DbState::default()
    })
}

/// `ALTER SYSTEM <change>`, then reload the configuration. Two statements: ALTER SYSTEM
/// cannot run in the implicit transaction of a multi-statement query.
async fn alter_system(client: &Client, change: &str) -> Result<(), String> {
    client
        .batch_execute(&format!("ALTER SYSTEM {change}"))
        .await
        .map_err(|e| db_error(&e))?;
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(|e| db_error(&e))
}

/// How long fencing and promotion may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Fence the server: read-only for every new transaction, every other session cut.
pub async fn fence(conn: &str) -> Result<(), String> {
    let client = connect(conn, ACTION_TIMEOUT).await?;
    tokio::time::timeout(ACTION_TIMEOUT, async {
        alter_system(&client, "SET default_transaction_read_only = on").await?;
        // The reload is asynchronous: wait until a new session starts read-only, so that
        // a client reconnecting after the cut cannot write.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let probe = connect(conn, ACTION_TIMEOUT).await?;
            let on: bool = probe
                .query_one(
                    "SELECT current_setting('default_transaction_read_only') = 'on'",
                    &[],
                )
                .await
                .map_err(|e| db_error(&e))?
                .get(0);
            drop(probe);
            if on {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err("the server did not apply default_transaction_read_only".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            )
            .await
            .map_err(|e| db_error(&e))
    })
    .await
    .map_err(|_| "fencing took longer than 30s".to_string())?
}

/// Promote the server to primary (and lift a fence it may carry).
pub async fn promote(conn: &str) -> Result<(), String> {
    let client = connect(conn, ACTION_TIMEOUT).await?;
    tokio::time::timeout(ACTION_TIMEOUT, async {
        alter_system(&client, "RESET default_transaction_read_only").await?;
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| db_error(&e))?
            .get(0);
        if in_recovery {
            let done: bool = client
                .query_one("SELECT pg_promote(true, 25)", &[])
                .await
                .map_err(|e| db_error(&e))?
                .get(0);
            if !done {
                return Err("pg_promote did not finish within 25s".to_string());
            }
        }
        Ok(())
    })
    .await
    .map_err(|_| "promotion took longer than 30s".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standby(replay: i64, age: f64) -> DbState {
        DbState {
            reachable: true,
            in_recovery: true,
            replay_lsn: Some(replay),
            replay_age_seconds: Some(age),
            ..DbState::default()
        }
    }

    fn primary(lsn: i64) -> DbState {
        DbState {
            reachable: true,
            current_lsn: Some(lsn),
            ..DbState::default()
        }
    }

    #[test]
    fn a_standby_that_replayed_everything_has_no_lag_however_old_its_last_transaction() {
        assert_eq!(
            lag(Some(&primary(100)), &standby(100, 3600.0)),
            (Some(0.0), Some(0))
        );
    }

    #[test]
    fn a_standby_behind_lags_by_the_bytes_and_the_age_of_its_last_replay() {
        assert_eq!(
            lag(Some(&primary(1000)), &standby(400, 12.5)),
            (Some(12.5), Some(600))
        );
    }

    #[test]
    fn a_standby_behind_that_never_replayed_a_transaction_lags_an_unknown_time() {
        let mut s = standby(400, 0.0);
        s.replay_age_seconds = None;
        assert_eq!(lag(Some(&primary(1000)), &s), (None, Some(600)));
    }

    #[test]
    fn without_a_reachable_primary_the_lag_is_unknown() {
        let mut p = primary(1000);
        p.reachable = false;
        assert_eq!(lag(Some(&p), &standby(400, 1.0)), (None, None));
        assert_eq!(lag(None, &standby(400, 1.0)), (None, None));
    }

    #[test]
    fn roles() {
        assert_eq!(primary(1).role(), "primary");
        assert!(primary(1).writable());
        assert_eq!(standby(1, 0.0).role(), "standby");
        let fenced = DbState {
            read_only: true,
            ..primary(1)
        };
        assert_eq!(fenced.role(), "fenced");
        assert!(!fenced.writable());
        assert_eq!(DbState::default().role(), "unreachable");
    }
}

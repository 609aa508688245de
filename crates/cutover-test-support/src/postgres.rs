//! A real PostgreSQL primary with a hot standby (streaming replication) on loopback, for
//! failover tests.
//!
//! [`start_pair`] gives a [`Pair`]: two [`Server`]s, the standby made with
//! `pg_basebackup -R` from the primary (through a physical replication slot named
//! [`STANDBY_NAME`]) and streaming from it. There is one `Server` type rather than
//! `Primary`/`Standby` types because roles change during the tests this serves: after a
//! [`Server::promote`] the standby *is* the primary, and after a [`Server::fence`] the old
//! primary is a read-only server in recovery. Every method reads the state from the
//! server, the way the controller will, rather than from what the fixture thinks the role
//! is.
//!
//! - Servers listen on `127.0.0.1` only (a free port each) and on a unix socket directory
//!   inside the pair's folder; they trust every local connection (a test fixture), so
//!   [`Server::url`] is `postgresql://postgres@127.0.0.1:PORT/postgres`. With
//!   [`start_pair_in`] each server runs in a region's network namespace instead and
//!   listens on the region's address (the standby streams from the primary's), so a cut
//!   between the regions cuts the replication too.
//! - Everything lives in `<workspace>/target/test-pg/<name>-<pid>-<n>/` (`primary/`,
//!   `standby/`, their logs and sockets). Dropping the [`Pair`] stops both servers
//!   (immediate mode) and removes the folder, also when the test panics; set
//!   `CUTOVER_TEST_KEEP_PG=1` to keep the folder for a post-mortem. Folders left by a test
//!   process that died without dropping (killed with `SIGKILL`, say) are cleaned up, their
//!   servers stopped, by the next pair started.
//! - SQL runs through `psql -X -q -A -t` (no client library): values come back as text,
//!   columns separated by `|`, rows by newlines, `NULL` as an empty string.
//! - Waits poll the database every 50 ms until a condition holds, and panic after a
//!   timeout naming what did not happen, with the tail of the server logs.
//! - As root (PostgreSQL refuses to run as root), servers run as the `postgres` system user
//!   through `runuser`. The binaries are the newest `/usr/lib/postgresql/*/bin` (or
//!   `$CUTOVER_PG_BIN`); if they are missing and we are root with `apt-get`, the Debian
//!   `postgresql` package is installed once.
//!
//! Settings chosen for speed on a shared test machine: `fsync = off` (the tests crash
//! *processes*, never the machine, so the page cache keeps every write), 16 MB of shared
//! buffers, and `wal_receiver_status_interval = 1s` so the primary learns the standby's
//! replay position within a second rather than ten.

use std::fmt;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use cutover_local_cluster::process;
use tokio::process::Command;

use crate::netns::{self, Region};

/// The standby's `application_name` (in `pg_stat_replication` and
/// `synchronous_standby_names`) and the name of its replication slot on the primary.
pub const STANDBY_NAME: &str = "standby";

/// How long the fixture waits for a server to start, stop or be promoted, and for the
/// standby to stream.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A default for [`Server::wait_for`] in tests.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one `psql` call may take before it is abandoned (a commit waiting for a
/// synchronous standby whose replay is paused waits forever otherwise).
pub const SQL_TIMEOUT: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(50);
const LOG_TAIL_LINES: usize = 40;
/// `sun_path` is 108 bytes; the socket file name `.s.PGSQL.65535` takes 15 of them.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// What a commit on the primary waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Asynchronous replication: a commit waits for the primary's own WAL flush only. The
    /// standby may lag behind by any amount, which [`Server::pause_replay`] makes visible.
    Async,
    /// `synchronous_commit = on`: a commit returns once the standby has *flushed* its WAL.
    /// Nothing acknowledged can be lost by a failover, but the standby may not have
    /// *replayed* it yet: a read on the standby right after the commit can miss it.
    Flush,
    /// `synchronous_commit = remote_apply`: a commit returns once the standby has
    /// *replayed* it, so it is visible to every query started on the standby after the
    /// commit returned (read-your-writes across servers), and a promotion has no replay
    /// backlog. This is what [`start_pair`]`(_, true)` uses: failover tests compare what
    /// each server shows, and only this mode makes "acknowledged" mean "visible on the
    /// standby". The price: while replay is paused on the standby, commits on the
    /// primary block.
    RemoteApply,
}

/// A primary and its streaming hot standby. See the [module docs](self).
///
/// Dropping it stops both servers (immediate mode) and removes their data.
#[derive(Debug)]
pub struct Pair {
    primary: Server,
    standby: Server,
    mode: SyncMode,
    startup: Duration,
    /// Stops the servers and removes the folder when the pair drops.
    dir: PairDir,
}

/// Start a primary and a streaming standby: synchronous (`synchronous_standby_names` =
/// the standby, [`SyncMode::RemoteApply`]) or asynchronous ([`SyncMode::Async`]). `name`
/// names the folder; each call gets a folder and ports of its own, so tests may run in
/// parallel.
pub async fn start_pair(name: &str, synchronous: bool) -> Pair {
    let mode = if synchronous {
        SyncMode::RemoteApply
    } else {
        SyncMode::Async
    };
    start_pair_with(name, mode).await
}

/// [`start_pair`] with a choice of [`SyncMode`].
///
/// The primary is initialised and started, the standby is copied from it with
/// `pg_basebackup -R -C -S standby` and started, and once it streams the synchronous
/// settings (if any) are set on the primary with `ALTER SYSTEM` + reload. Setting them
/// only then means nothing ever waits for a standby that does not exist yet, and the
/// standby (copied before) does not inherit them: promoted, it does not wait for a
/// standby of its own.
pub async fn start_pair_with(name: &str, mode: SyncMode) -> Pair {
    start_pair_on(name, mode, [None, None]).await
}

/// [`start_pair`] with the primary in `regions[0]` and the standby in `regions[1]`: each
/// runs in its region's network namespace and listens on its address.
pub async fn start_pair_in(name: &str, synchronous: bool, regions: [&Region; 2]) -> Pair {
    let mode = if synchronous {
        SyncMode::RemoteApply
    } else {
        SyncMode::Async
    };
    start_pair_on(name, mode, regions.map(Some)).await
}

async fn start_pair_on(name: &str, mode: SyncMode, regions: [Option<&Region>; 2]) -> Pair {
    let began = Instant::now();
    let env = env();
    reap_stale(env);
    let root = pair_root(name);
    let dir = PairDir {
        root: root.clone(),
        env,
    };

    let mut primary = Server::new(env, &root, "primary", regions[0]);
    primary.init().await;
    primary.start_on_free_port().await;

    let mut standby = Server::new(env, &root, "standby", regions[1]);
    standby.base_backup_from(&primary).await;
    standby.start_on_free_port().await;

    let pair = Pair {
        primary,
        standby,
        mode,
        startup: Duration::ZERO,
        dir,
    };
    pair.wait_for(
        "the standby to stream from the primary",
        START_TIMEOUT,
        async || {
            pair.primary
                .try_query_one(&format!(
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming'"
                ))
                .await
                .is_ok_and(|n| n == "1")
        },
    )
    .await;

    let commit = match mode {
        SyncMode::Async => None,
        SyncMode::Flush => Some("on"),
        SyncMode::RemoteApply => Some("remote_apply"),
    };
    if let Some(commit) = commit {
        pair.primary
            .session(&[
                &format!("ALTER SYSTEM SET synchronous_standby_names = '\"{STANDBY_NAME}\"'"),
                &format!("ALTER SYSTEM SET synchronous_commit = '{commit}'"),
                "SELECT pg_reload_conf()",
            ])
            .await;
        pair.wait_for(
            "the standby to be synchronous (sync_state = 'sync')",
            START_TIMEOUT,
            async || {
                let state = pair
                    .primary
                    .try_query_one(&format!(
                        "SELECT sync_state || '/' || current_setting('synchronous_commit') \
                         FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
                    ))
                    .await;
                state.is_ok_and(|s| s == format!("sync/{commit}"))
            },
        )
        .await;
    }
    Pair {
        startup: began.elapsed(),
        ..pair
    }
}

impl Pair {
    /// The server that was the primary when the pair started.
    pub fn primary(&self) -> &Server {
        &self.primary
    }

    /// The server that was the standby when the pair started.
    pub fn standby(&self) -> &Server {
        &self.standby
    }

    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// How long [`start_pair`] took (both servers up, the standby streaming and, if
    /// synchronous, acknowledged as the synchronous standby).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The pair's folder (`<workspace>/target/test-pg/<name>-<pid>-<n>`).
    pub fn dir(&self) -> &Path {
        &self.dir.root
    }

    /// Wait until the primary reports the standby has replayed all its WAL
    /// ([`Server::lag_bytes`] = 0).
    pub async fn wait_caught_up(&self, timeout: Duration) {
        self.wait_for(
            "the standby to replay all WAL (lag_bytes = 0)",
            timeout,
            async || matches!(self.primary.try_lag_bytes().await, Ok(Some(0))),
        )
        .await;
    }

    /// Poll `condition` until it holds; panic after `timeout` naming `what`, with the tail
    /// of both servers' logs.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl AsyncFnMut() -> bool,
    ) {
        wait_until(what, timeout, &[&self.primary, &self.standby], condition).await;
    }
}

/// One PostgreSQL server of a [`Pair`].
#[derive(Debug)]
pub struct Server {
    role: &'static str,
    env: &'static Env,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    url: String,
    /// Where it listens: `127.0.0.1`, or its region's address.
    host: String,
    /// The region whose network namespace it runs in, if any.
    region: Option<Region>,
}

/// The error of a SQL statement: what `psql` printed on stderr (`ERROR:  ...`).
#[derive(Debug, Clone)]
pub struct SqlError {
    pub server: String,
    pub sql: String,
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed on {}: {}",
            self.sql, self.server, self.message
        )
    }
}

impl std::error::Error for SqlError {}

/// One row of `pg_stat_replication` on a primary, with the byte distances to the primary's
/// current WAL position computed by the server (`pg_wal_lsn_diff`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationStatus {
    pub application_name: String,
    /// `startup`, `catchup`, `streaming`, ...
    pub state: String,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: String,
    /// `pg_current_wal_lsn()` on the primary (`pg_last_wal_replay_lsn()` on a cascading
    /// standby).
    pub current_lsn: String,
    pub sent_lsn: Option<String>,
    pub write_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// WAL not yet written / flushed / replayed by the standby, in bytes.
    pub write_lag_bytes: Option<u64>,
    pub flush_lag_bytes: Option<u64>,
    pub replay_lag_bytes: Option<u64>,
    /// `pg_stat_replication.replay_lag` in seconds: the time between a recent commit on
    /// the primary and the standby reporting it replayed. NULL (None) once the standby has
    /// caught up and the primary is idle.
    pub replay_lag_seconds: Option<f64>,
}

/// What a standby reports about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StandbyStatus {
    pub in_recovery: bool,
    /// `pg_last_wal_receive_lsn()`: WAL received and flushed from the primary.
    pub receive_lsn: Option<String>,
    /// `pg_last_wal_replay_lsn()`: WAL replayed, visible to queries.
    pub replay_lsn: Option<String>,
    /// Received but not replayed yet, in bytes.
    pub replay_backlog_bytes: Option<u64>,
    /// `pg_get_wal_replay_pause_state()`: `not paused`, `pause requested` or `paused`.
    pub pause_state: String,
    /// [`Server::lag_seconds`].
    pub last_replay_age_seconds: Option<f64>,
}

impl Server {
    fn new(env: &'static Env, root: &Path, role: &'static str, region: Option<&Region>) -> Self {
        let socket_dir = root.join(format!("{role}.sock"));
        Self {
            role,
            env,
            data: root.join(role),
            socket_dir,
            log: root.join(format!("{role}.log")),
            port: 0,
            url: String::new(),
            host: region.map_or_else(|| "127.0.0.1".to_string(), |r| r.addr.to_string()),
            region: region.cloned(),
        }
    }

    /// `primary` or `standby`: the role the server had when the pair started.
    pub fn role(&self) -> &'static str {
        self.role
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://postgres@HOST:PORT/postgres` (trust authentication; HOST is
    /// `127.0.0.1` or the region's address).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A libpq key=value connection string through the server's unix socket folder, for
    /// clients in another network namespace (a process node's pods): unix sockets are
    /// reached by path, across network namespaces.
    pub fn socket_conn(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // ---- SQL --------------------------------------------------------------------------

    /// Run `sql` (one or more statements, one implicit transaction) and return its output.
    pub async fn try_execute(&self, sql: &str) -> Result<String, SqlError> {
        self.psql(&[sql]).await
    }

    /// [`Self::try_execute`], panicking on error.
    pub async fn execute(&self, sql: &str) -> String {
        self.try_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_context()))
    }

    /// The output of a query: rows separated by newlines, columns by `|`, NULL as "".
    pub async fn try_query_one(&self, sql: &str) -> Result<String, SqlError> {
        self.psql(&[sql]).await
    }

    /// [`Self::try_query_one`], panicking on error.
    pub async fn query_one(&self, sql: &str) -> String {
        self.execute(sql).await
    }

    /// Run statements one after the other in one session (each its own transaction,
    /// like separate `psql -c` options), stopping at the first error. Session settings
    /// (`SET ...`) made by one statement apply to the following ones.
    pub async fn try_session(&self, statements: &[&str]) -> Result<String, SqlError> {
        self.psql(statements).await
    }

    /// [`Self::try_session`], panicking on error.
    pub async fn session(&self, statements: &[&str]) -> String {
        self.try_session(statements)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_context()))
    }

    async fn psql(&self, statements: &[&str]) -> Result<String, SqlError> {
        let sql = statements.join("; ");
        let fail = |message: String| SqlError {
            server: format!("{} ({})", self.role, self.url),
            sql: sql.clone(),
            message,
        };
        let mut cmd = Command::new(self.env.bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &self.url,
        ]);
        for statement in statements {
            cmd.arg("-c").arg(statement);
        }
        for var in [
            "PGOPTIONS",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGTZ",
            "PGDATESTYLE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGCONNECT_TIMEOUT", "5")
            .env("PGSSLMODE", "disable")
            .env("PGAPPNAME", "cutover-test")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(SQL_TIMEOUT, cmd.output()).await {
            Err(_) => Err(fail(format!("no answer within {SQL_TIMEOUT:?}"))),
            Ok(Err(e)) => Err(fail(format!("running psql: {e}"))),
            Ok(Ok(out)) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
            }
            Ok(Ok(out)) => Err(fail(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
        }
    }

    // ---- Replication state, read as the controller will --------------------------------

    /// `pg_is_in_recovery()`: true on a standby (and on a fenced server).
    pub async fn is_in_recovery(&self) -> bool {
        match self.query_one("SELECT pg_is_in_recovery()").await.as_str() {
            "t" => true,
            "f" => false,
            other => panic!("pg_is_in_recovery() on {} returned {other:?}", self.role),
        }
    }

    /// The rows of `pg_stat_replication`: the standbys streaming from this server.
    pub async fn replication(&self) -> Vec<ReplicationStatus> {
        self.try_replication()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_context()))
    }

    async fn try_replication(&self) -> Result<Vec<ReplicationStatus>, SqlError> {
        let out = self
            .try_query_one(
                "WITH cur AS (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_lsn() END AS lsn) \
                 SELECT application_name, state, sync_state, cur.lsn, \
                 sent_lsn, write_lsn, flush_lsn, replay_lsn, \
                 greatest(0, pg_wal_lsn_diff(cur.lsn, write_lsn))::bigint, \
                 greatest(0, pg_wal_lsn_diff(cur.lsn, flush_lsn))::bigint, \
                 greatest(0, pg_wal_lsn_diff(cur.lsn, replay_lsn))::bigint, \
                 extract(epoch FROM replay_lag) \
                 FROM pg_stat_replication, cur ORDER BY application_name",
            )
            .await?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split('|').collect();
                let field = |i: usize| f.get(i).copied().unwrap_or_default();
                let opt = |i: usize| Some(field(i).to_string()).filter(|s| !s.is_empty());
                ReplicationStatus {
                    application_name: field(0).to_string(),
                    state: field(1).to_string(),
                    sync_state: field(2).to_string(),
                    current_lsn: field(3).to_string(),
                    sent_lsn: opt(4),
                    write_lsn: opt(5),
                    flush_lsn: opt(6),
                    replay_lsn: opt(7),
                    write_lag_bytes: field(8).parse().ok(),
                    flush_lag_bytes: field(9).parse().ok(),
                    replay_lag_bytes: field(10).parse().ok(),
                    replay_lag_seconds: field(11).parse().ok(),
                }
            })
            .collect())
    }

    /// On a primary: how many bytes of WAL the standby has not replayed yet,
    /// `pg_current_wal_lsn() - replay_lsn` from `pg_stat_replication` (the largest, should
    /// several standbys stream). `None` when no standby is connected or it has not
    /// reported a replay position yet — "unknown", not "no lag". The standby reports its
    /// position every second and after receiving WAL, so a value of 0 may take up to a
    /// second to show after it catches up. Panics if the server cannot be queried.
    pub async fn lag_bytes(&self) -> Option<u64> {
        self.try_lag_bytes()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_context()))
    }

    async fn try_lag_bytes(&self) -> Result<Option<u64>, SqlError> {
        Ok(self
            .try_replication()
            .await?
            .iter()
            .filter_map(|r| r.replay_lag_bytes)
            .max())
    }

    /// On a standby: the age in seconds of the last transaction replayed (its commit time
    /// on the primary), `clock_timestamp() - pg_last_xact_replay_timestamp()` floored at 0.
    /// `None` if no transaction has been replayed since the server started. Not
    /// `now() - ...`: `now()` is the start of the query's transaction, and a commit
    /// replayed between that and the read (an autovacuum's, say) made the age negative.
    ///
    /// How to read it: it is a lag only while the primary is committing. When the primary
    /// is idle it grows by a second every second although the standby has everything, so
    /// a large value alone does not mean "behind". A caller should treat the standby as
    /// caught up when it has replayed everything it received
    /// ([`StandbyStatus::replay_backlog_bytes`] = 0) *and* the primary agrees
    /// ([`Server::lag_bytes`] = 0 there), and use this value as the lag only when it is
    /// behind; if the primary is unreachable, it is an upper bound on how much of the
    /// primary's recent history the standby misses (nothing, if the primary was idle).
    pub async fn lag_seconds(&self) -> Option<f64> {
        let sql = "SELECT greatest(0, \
                   extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()))";
        self.query_one(sql).await.parse().ok()
    }

    /// On a standby: its recovery state (see [`StandbyStatus`]).
    pub async fn standby_status(&self) -> StandbyStatus {
        let out = self
            .query_one(
                "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), \
                 greatest(0, pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()))::bigint, \
                 CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() \
                 ELSE 'not paused' END, \
                 greatest(0, extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()))",
            )
            .await;
        let f: Vec<&str> = out.split('|').collect();
        let field = |i: usize| f.get(i).copied().unwrap_or_default();
        let opt = |i: usize| Some(field(i).to_string()).filter(|s| !s.is_empty());
        StandbyStatus {
            in_recovery: field(0) == "t",
            receive_lsn: opt(1),
            replay_lsn: opt(2),
            replay_backlog_bytes: field(3).parse().ok(),
            pause_state: field(4).to_string(),
            last_replay_age_seconds: field(5).parse().ok(),
        }
    }

    /// `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a standby.
    pub async fn current_lsn(&self) -> String {
        self.query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_lsn() END",
        )
        .await
    }

    // ---- Actions -----------------------------------------------------------------------

    /// Promote a standby (`SELECT pg_promote()`), then wait until `pg_is_in_recovery()` is
    /// false. It keeps its port and URL.
    pub async fn promote(&self) {
        let promoted = self
            .query_one(&format!(
                "SELECT pg_promote(true, {})",
                SQL_TIMEOUT.as_secs().saturating_sub(10)
            ))
            .await;
        if promoted != "t" {
            panic!(
                "pg_promote() on {} returned {promoted:?}\n{}",
                self.role,
                self.log_context()
            );
        }
        self.wait_for(
            "promotion (pg_is_in_recovery() = false)",
            START_TIMEOUT,
            async || {
                self.try_query_one("SELECT pg_is_in_recovery()")
                    .await
                    .is_ok_and(|r| r == "f")
            },
        )
        .await;
    }

    /// Pause WAL replay on a standby (`pg_wal_replay_pause()`): it keeps receiving WAL but
    /// stops applying it, as a lagging standby would. Waits until the pause is requested;
    /// no record is applied after that. In a synchronous `remote_apply` pair, commits on
    /// the primary block until [`Self::resume_replay`].
    pub async fn pause_replay(&self) {
        self.execute("SELECT pg_wal_replay_pause()").await;
        self.wait_for("WAL replay to pause", START_TIMEOUT, async || {
            self.try_query_one("SELECT pg_get_wal_replay_pause_state()")
                .await
                .is_ok_and(|s| s != "not paused")
        })
        .await;
    }

    /// Resume WAL replay (`pg_wal_replay_resume()`) and wait until it is not paused.
    pub async fn resume_replay(&self) {
        self.execute("SELECT pg_wal_replay_resume()").await;
        self.wait_for("WAL replay to resume", START_TIMEOUT, async || {
            self.try_query_one("SELECT pg_get_wal_replay_pause_state()")
                .await
                .is_ok_and(|s| s == "not paused")
        })
        .await;
    }

    /// `pg_get_wal_replay_pause_state() = 'paused'`: replay has actually stopped.
    pub async fn is_replay_paused(&self) -> bool {
        self.query_one("SELECT pg_get_wal_replay_pause_state()")
            .await
            == "paused"
    }

    /// Whether the server is running (`pg_ctl status`).
    pub async fn is_running(&self) -> bool {
        self.pg_ctl(&["status", "-D", &self.data.to_string_lossy()])
            .await
            .status
            .success()
    }

    /// Stop the server in fast mode (sessions are disconnected, a shutdown checkpoint is
    /// written and streamed to the standby) and wait until it has exited.
    pub async fn stop(&self) {
        self.stop_mode("fast").await;
    }

    /// Stop the server in immediate mode (like a crash: no checkpoint, crash recovery on
    /// the next start) and wait until it has exited.
    pub async fn kill(&self) {
        self.stop_mode("immediate").await;
    }

    /// Start a stopped server again, on the same port, and wait until it accepts
    /// connections.
    pub async fn start(&self) {
        if let Err(e) = self.pg_ctl_start().await {
            panic!("starting {}: {e}\n{}", self.role, self.log_context());
        }
    }

    /// Fence the server so that it can never accept a write again: stop it (fast mode, if
    /// it runs), put a `standby.signal` in its data folder, drop any `primary_conninfo`
    /// and `primary_slot_name` from `postgresql.auto.conf`, and start it again; it comes
    /// up *in recovery*, replays its own WAL and waits for more that never comes. Works
    /// on a running server and on a stopped or crashed one (a crashed old primary must
    /// not come back writable).
    ///
    /// Why this and not `default_transaction_read_only = on`: that is only a default,
    /// which any session may override with `SET default_transaction_read_only = off` or
    /// `BEGIN READ WRITE`. A server in recovery makes every transaction read-only at the
    /// source, whatever the session asks: writes fail with "cannot execute ... in a
    /// read-only transaction", `SET transaction_read_only = off` and `BEGIN READ WRITE`
    /// fail with "cannot set transaction read-write mode during recovery", and no
    /// setting, `ALTER SYSTEM` or reload changes that. Unlike simply stopping it
    /// ([`Self::stop`], also a valid fence), the server stays readable, so its last LSN and
    /// data can be compared with the new primary's. The only way out is a promotion
    /// (`pg_promote()`, `pg_ctl promote`), which needs a superuser or an explicit grant —
    /// the fixture's connections are superuser, so a test must not call it, and the
    /// controller never does on a fenced server.
    pub async fn fence(&self) {
        if self.is_running().await {
            self.stop().await;
        }
        let signal = self.data.join("standby.signal");
        std::fs::write(&signal, "").expect("writing standby.signal");
        self.env.give_away(&signal);
        let auto = self.data.join("postgresql.auto.conf");
        if let Ok(text) = std::fs::read_to_string(&auto) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    let key = l.trim_start();
                    !key.starts_with("primary_conninfo") && !key.starts_with("primary_slot_name")
                })
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&auto, kept).expect("rewriting postgresql.auto.conf");
        }
        self.start().await;
        self.wait_for(
            "the fenced server to be in recovery",
            START_TIMEOUT,
            async || {
                self.try_query_one("SELECT pg_is_in_recovery()")
                    .await
                    .is_ok_and(|r| r == "t")
            },
        )
        .await;
    }

    /// Poll `condition` until it holds; panic after `timeout` naming `what`, with the tail
    /// of the server log.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl AsyncFnMut() -> bool,
    ) {
        wait_until(what, timeout, &[self], condition).await;
    }

    // ---- Lifecycle ---------------------------------------------------------------------

    async fn init(&self) {
        let out = self
            .env
            .run_as_postgres(
                "initdb",
                &[
                    "-D",
                    &self.data.to_string_lossy(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )
            .await;
        if !out.status.success() {
            panic!(
                "initdb failed for {} (the postgres user needs to reach {}):\n{}{}",
                self.role,
                self.data.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let socket_dir = self.socket_dir_setting();
        let host = &self.host;
        self.append_config(&format!(
            "\n# cutover test fixture\n\
             listen_addresses = '{host}'\n\
             unix_socket_directories = '{socket_dir}'\n\
             wal_level = replica\n\
             max_wal_senders = 5\n\
             max_replication_slots = 5\n\
             hot_standby = on\n\
             wal_receiver_status_interval = 1s\n\
             wal_retrieve_retry_interval = 200ms\n\
             fsync = off\n\
             shared_buffers = 16MB\n\
             max_connections = 40\n\
             log_line_prefix = '%m [%p] %q%a '\n"
        ));
        if self.region.is_some() {
            // In a region: the other regions and the host are on the region's subnet
            // (`samenet`); the standby copies this file with the data.
            let hba = self.data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba)
                .unwrap_or_else(|e| panic!("reading {}: {e}", hba.display()));
            text.push_str(
                "\n# cutover test fixture: regions\nhost all all samenet trust\nhost replication all samenet trust\n",
            );
            std::fs::write(&hba, text).unwrap_or_else(|e| panic!("writing {}: {e}", hba.display()));
        }
    }

    async fn base_backup_from(&self, primary: &Server) {
        let conninfo = format!(
            "host={} port={} user=postgres application_name={STANDBY_NAME}",
            primary.host, primary.port
        );
        let out = self
            .env
            .run_as_postgres(
                "pg_basebackup",
                &[
                    "-D",
                    &self.data.to_string_lossy(),
                    "-d",
                    &conninfo,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-C",
                    "-S",
                    STANDBY_NAME,
                    "--no-sync",
                ],
            )
            .await;
        if !out.status.success() {
            panic!(
                "pg_basebackup from the primary failed:\n{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                primary.log_context()
            );
        }
        // The copied postgresql.conf names the primary's socket folder and address.
        let socket_dir = self.socket_dir_setting();
        let host = &self.host;
        self.append_config(&format!(
            "\n# cutover test fixture: standby\nunix_socket_directories = '{socket_dir}'\nlisten_addresses = '{host}'\n"
        ));
    }

    /// Start on a free port; retried on another one should the port be taken between
    /// choosing it and the server binding it.
    async fn start_on_free_port(&mut self) {
        for attempt in 1..=3 {
            let port = free_port();
            self.port = port;
            self.url = format!("postgresql://postgres@{}:{port}/postgres", self.host);
            self.append_config(&format!("port = {port}\n"));
            match self.pg_ctl_start().await {
                Ok(()) => return,
                Err(_) if attempt < 3 && self.log_tail(20).contains("Address already in use") => {}
                Err(e) => panic!("starting {}: {e}\n{}", self.role, self.log_context()),
            }
        }
    }

    async fn pg_ctl_start(&self) -> Result<(), String> {
        let timeout = START_TIMEOUT.as_secs().to_string();
        // The server (forked by pg_ctl) runs in the region's network namespace, if any.
        let out = run_output(
            self.env.command_as_postgres("pg_ctl"),
            self.region.as_ref(),
            &[
                "start",
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &self.log.to_string_lossy(),
                "-w",
                "-t",
                &timeout,
            ],
            "pg_ctl",
            &self.env.bin,
        )
        .await;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    async fn stop_mode(&self, mode: &str) {
        let timeout = START_TIMEOUT.as_secs().to_string();
        let out = self
            .pg_ctl(&[
                "stop",
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                mode,
                "-w",
                "-t",
                &timeout,
            ])
            .await;
        if !out.status.success() {
            panic!(
                "pg_ctl stop -m {mode} of {} failed: {}{}\n{}",
                self.role,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_context()
            );
        }
    }

    async fn pg_ctl(&self, args: &[&str]) -> Output {
        self.env.run_as_postgres("pg_ctl", args).await
    }

    fn append_config(&self, text: &str) {
        use std::io::Write as _;
        let path = self.data.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        file.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The unix socket folder, created for the server; empty (no unix socket, TCP only) if
    /// its path is too long for a socket address.
    fn socket_dir_setting(&self) -> String {
        let dir = self.socket_dir.to_string_lossy().to_string();
        if dir.len() > MAX_SOCKET_DIR_LEN || dir.contains('\'') {
            return String::new();
        }
        std::fs::create_dir_all(&self.socket_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.socket_dir.display()));
        self.env.give_away(&self.socket_dir);
        dir
    }

    fn log_context(&self) -> String {
        format!(
            "--- last lines of the {} log ({}):\n{}",
            self.role,
            self.log.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    servers: &[&Server],
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = servers.iter().map(|s| s.log_context()).collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `cmd` with `args` to its end (in `region`'s network namespace, if any); its
/// output.
async fn run_output(
    cmd: std::process::Command,
    region: Option<&Region>,
    args: &[&str],
    tool: &str,
    bin: &Path,
) -> Output {
    let mut cmd = Command::from(cmd);
    cmd.args(args)
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let runtime = tokio::runtime::Handle::current();
    let child = netns::within(region, || {
        let _entered = runtime.enter();
        cmd.spawn()
    });
    let fail = |e: std::io::Error| format!("running {tool} from {}: {e}", bin.display());
    child
        .unwrap_or_else(|e| panic!("{}", fail(e)))
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{}", fail(e)))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

fn test_pg_dir() -> PathBuf {
    crate::local_cluster::workspace_root()
        .join("target")
        .join("test-pg")
}

/// A fresh `<workspace>/target/test-pg/<name>-<pid>-<n>`, owned by the server user.
fn pair_root(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = test_pg_dir();
    std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    // The server user must be able to reach its folders.
    let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755));
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let root = base.join(format!("{clean}-{}-{n}", std::process::id()));
    if root.exists() {
        let _ = std::fs::remove_dir_all(&root);
    }
    std::fs::create_dir(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
    let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755));
    env().give_away(&root);
    root
}

/// The pair's folder: stops whatever server still runs in it, then removes it.
#[derive(Debug)]
struct PairDir {
    root: PathBuf,
    env: &'static Env,
}

impl Drop for PairDir {
    fn drop(&mut self) {
        stop_servers_in(self.env, &self.root);
        if std::env::var_os("CUTOVER_TEST_KEEP_PG").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Stop (immediate mode) every server whose data folder is directly under `root`.
fn stop_servers_in(env: &Env, root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let data = entry.path();
        let pid_file = data.join("postmaster.pid");
        if !pid_file.exists() {
            continue;
        }
        let stopped = env
            .command_as_postgres("pg_ctl")
            .args(["stop", "-D"])
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped
            && let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        {
            // Immediate mode failed: SIGKILL, as a crash would.
            let _ = process::stop_pid(pid, Duration::ZERO, || process_alive(pid));
        }
    }
}

/// Once per test process: stop the servers and remove the folders of pairs whose test
/// process (the `<pid>` in `<name>-<pid>-<n>`) no longer exists.
fn reap_stale(env: &'static Env) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(test_pg_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let mut parts = name.rsplitn(3, '-');
            let (Some(_n), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() || process_alive(pid) {
                continue;
            }
            stop_servers_in(env, &entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    });
}

/// Whether process `pid` exists and is not a zombie (a killed test process may linger as
/// one until its parent waits for it).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // `pid (comm) state ...`; comm may contain spaces and parentheses.
        stat.rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Where the PostgreSQL binaries are and which user runs them.
#[derive(Debug)]
struct Env {
    bin: PathBuf,
    /// `(uid, gid)` of `postgres` when we are root; `None` runs the binaries as ourselves.
    run_as: Option<(u32, u32)>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if let Some(env) = detect(root) {
            return env;
        }
        const HOW: &str = "install PostgreSQL (Debian/Ubuntu: `apt-get install -y postgresql`) \
                           or point $CUTOVER_PG_BIN at a folder with initdb, pg_ctl, \
                           pg_basebackup and psql";
        let apt = Path::new("/usr/bin/apt-get").exists();
        if !root || !apt {
            panic!("PostgreSQL server binaries (or, as root, the postgres user) not found: {HOW}");
        }
        eprintln!("PostgreSQL not found: running `apt-get install -y postgresql` (once)");
        let install = || {
            std::process::Command::new("apt-get")
                .args(["install", "-y", "postgresql"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = std::process::Command::new("apt-get").arg("update").status();
            if !install() {
                panic!("`apt-get install -y postgresql` failed: {HOW}");
            }
        }
        detect(root).unwrap_or_else(|| panic!("PostgreSQL still not found after installing: {HOW}"))
    })
}

fn detect(root: bool) -> Option<Env> {
    let bin = pg_bin_dir()?;
    let run_as = if root {
        let id = |flag: &str| -> Option<u32> {
            let out = std::process::Command::new("id")
                .args([flag, "postgres"])
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        Some((id("-u")?, id("-g")?))
    } else {
        None
    };
    Some(Env { bin, run_as })
}

/// `$CUTOVER_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn pg_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| {
        ["initdb", "pg_ctl", "pg_basebackup", "psql"]
            .iter()
            .all(|tool| dir.join(tool).exists())
    };
    if let Some(dir) = std::env::var_os("CUTOVER_PG_BIN") {
        let dir = PathBuf::from(dir);
        return has_tools(&dir).then_some(dir);
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}

impl Env {
    fn command_as_postgres(&self, tool: &str) -> std::process::Command {
        let program = self.bin.join(tool);
        let mut cmd = if self.run_as.is_some() {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            std::process::Command::new(program)
        };
        // The server user may not be able to read the test's working folder.
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    async fn run_as_postgres(&self, tool: &str, args: &[&str]) -> Output {
        run_output(self.command_as_postgres(tool), None, args, tool, &self.bin).await
    }

    /// Make `path` the server user's (when we run as root).
    fn give_away(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
        }
    }
}

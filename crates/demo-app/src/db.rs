//! The database mode: writes and reads of `cutover_demo_writes` through one shared
//! PostgreSQL connection.
//!
//! - One [`Client`] serves every request: tokio-postgres pipelines concurrent queries on
//!   it, so no lock is held while a query runs (the [`RwLock`] is held only to clone or
//!   replace the `Arc`).
//! - Nothing connects at startup. The first request connects; a request finding the client
//!   closed (the connection task ended) connects again. Concurrent requests that find no
//!   client share one connection attempt (they wait on [`Db::connecting`] and take the
//!   result of the attempt that finished while they waited), so a database that is down
//!   costs each request at most one connect timeout, not one per request queued before it.
//! - A query that fails with anything but a plain `ERROR` (a closed connection, an I/O
//!   error, a `FATAL` such as "terminating connection due to administrator command")
//!   drops the client, so the next request reconnects. There is no retry inside a request:
//!   one attempt, and the caller answers 503 with the error.
//! - The table is created lazily with `CREATE TABLE IF NOT EXISTS` by the first write (and
//!   again after an error saying it does not exist), never at startup: a read-only
//!   standby or a database that is down must not keep the app from starting. On a
//!   read-only server every write tries the `CREATE` (refused) and then the `INSERT`,
//!   whose error is the answer, until the server accepts writes (after a promotion).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, RwLock};
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls};

/// The connect timeout when the connection string sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Added to the connect timeout for the whole connection attempt (socket connect, startup
/// and authentication): a server that accepts but never answers must not hang requests.
const STARTUP_GRACE: Duration = Duration::from_secs(3);

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS cutover_demo_writes (\
     id text PRIMARY KEY, \
     version text NOT NULL, \
     written_at timestamptz NOT NULL DEFAULT now())";
const INSERT: &str =
    "INSERT INTO cutover_demo_writes (id, version) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
const SELECT: &str = "SELECT 1 FROM cutover_demo_writes WHERE id = $1";

/// Why a database operation failed: the server's message (or the client's, when there was
/// no answer) and its SQLSTATE, if the server sent one.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    pub code: Option<String>,
}

impl Failure {
    fn from_error(e: &tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return Self {
                message: db.message().to_string(),
                code: Some(db.code().code().to_string()),
            };
        }
        // `Display` of a client-side error is only its kind ("error connecting to
        // server"): add the causes.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self {
            message,
            code: None,
        }
    }
}

/// The database of the app. See the [module docs](self).
#[derive(Debug)]
pub struct Db {
    config: Config,
    client: RwLock<Option<Arc<Client>>>,
    /// Held while connecting, so that requests finding no client make one attempt between
    /// them; holds the error of the last attempt if it failed.
    connecting: Mutex<Option<Failure>>,
    /// Connection attempts finished so far.
    attempts: AtomicU64,
    /// Whether `cutover_demo_writes` is known to exist.
    table_ready: AtomicBool,
}

impl Db {
    /// Parse a libpq connection string (URL or `key=value` form, unix socket folders as
    /// `host=/path`). Does not connect.
    pub fn new(conninfo: &str) -> anyhow::Result<Self> {
        let mut config: Config = conninfo
            .parse()
            .map_err(|e| anyhow::anyhow!("--database-url is not a valid connection string: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("cutover-demo-app");
        }
        Ok(Self {
            config,
            client: RwLock::new(None),
            connecting: Mutex::new(None),
            attempts: AtomicU64::new(0),
            table_ready: AtomicBool::new(false),
        })
    }

    /// Insert `id` (committed when this returns `Ok`); `Ok(false)` if it was already there.
    pub async fn write(&self, id: &str, version: &str) -> Result<bool, Failure> {
        let client = self.client().await?;
        let result = async {
            if !self.table_ready.load(Ordering::Acquire) {
                match client.batch_execute(CREATE_TABLE).await {
                    Ok(()) => self.table_ready.store(true, Ordering::Release),
                    // Concurrent `CREATE TABLE IF NOT EXISTS` race in the catalog: the
                    // loser fails with a unique violation on `pg_type`, the table exists.
                    Err(e)
                        if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                            || e.code() == Some(&SqlState::DUPLICATE_TABLE) =>
                    {
                        self.table_ready.store(true, Ordering::Release);
                    }
                    // A read-only server refuses even `CREATE TABLE IF NOT EXISTS` of a
                    // table it has: go on, so that the answer is the INSERT's own error
                    // ("cannot execute INSERT in a read-only transaction"), or its
                    // "does not exist".
                    Err(e) if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {}
                    Err(e) => return Err(e),
                }
            }
            client
                .execute_typed(INSERT, &[(&id, Type::TEXT), (&version, Type::TEXT)])
                .await
        }
        .await;
        match result {
            Ok(rows) => Ok(rows == 1),
            Err(e) => Err(self.failed(&client, &e).await),
        }
    }

    /// Whether a row `id` exists (`false` too when the table does not exist yet).
    pub async fn exists(&self, id: &str) -> Result<bool, Failure> {
        let client = self.client().await?;
        match client.query_typed_opt(SELECT, &[(&id, Type::TEXT)]).await {
            Ok(row) => Ok(row.is_some()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                self.table_ready.store(false, Ordering::Release);
                Ok(false)
            }
            Err(e) => Err(self.failed(&client, &e).await),
        }
    }

    /// The current client if it is open, else a new connection.
    async fn client(&self) -> Result<Arc<Client>, Failure> {
        if let Some(client) = self.open_client().await {
            return Ok(client);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last_failure = self.connecting.lock().await;
        if let Some(client) = self.open_client().await {
            return Ok(client);
        }
        // An attempt finished while we waited for the lock, and failed: that is our
        // answer too (no second attempt on behalf of the same burst of requests).
        if self.attempts.load(Ordering::Acquire) != seen
            && let Some(failure) = last_failure.as_ref()
        {
            return Err(failure.clone());
        }
        let budget = *self
            .config
            .get_connect_timeout()
            .unwrap_or(&CONNECT_TIMEOUT)
            + STARTUP_GRACE;
        let connected = match tokio::time::timeout(budget, self.config.connect(NoTls)).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(Failure::from_error(&e)),
            Err(_) => Err(Failure {
                message: format!("no connection to the database within {budget:?}"),
                code: None,
            }),
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match connected {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!(
                            "cutover-demo-app: database connection ended: {}",
                            Failure::from_error(&e).message
                        );
                    }
                });
                let client = Arc::new(client);
                *self.client.write().await = Some(client.clone());
                *last_failure = None;
                Ok(client)
            }
            Err(failure) => {
                *last_failure = Some(failure.clone());
                Err(failure)
            }
        }
    }

    async fn open_client(&self) -> Option<Arc<Client>> {
        self.client
            .read()
            .await
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// Note what a failed query says: forget the table if it is gone, and drop the client
    /// unless the error was an ordinary `ERROR` that leaves the session usable.
    async fn failed(&self, client: &Arc<Client>, e: &tokio_postgres::Error) -> Failure {
        if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
            self.table_ready.store(false, Ordering::Release);
        }
        let session_usable = e
            .as_db_error()
            .is_some_and(|db| db.parsed_severity() == Some(Severity::Error));
        if client.is_closed() || e.is_closed() || !session_usable {
            let mut current = self.client.write().await;
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
                *current = None;
            }
        }
        Failure::from_error(e)
    }
}

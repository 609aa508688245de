//! An etcd-backed lease with fencing tokens: one holder at a time across regions, and a
//! holder that knows it must stop acting before anyone else can start.
//!
//! Every region's controller runs a [`Coordinator`] against the same etcd cluster (one member
//! per region, or two plus a witness). [`Coordinator::campaign`] grants an etcd lease and
//! creates the policy's key bound to it, only if the key does not exist (a transaction on
//! its `create_revision`): of several candidates exactly one succeeds. The winner's
//! [`Tenure`] carries the key's `create_revision` as its **fencing token**; every write made
//! through [`Tenure::put_fenced`] is a transaction that succeeds only while the key still has
//! that `create_revision`, so a stale holder's writes are refused by etcd itself.
//!
//! **Self-fencing.** etcd expires the lease no earlier than its TTL after the last keep-alive
//! it received, and a keep-alive is received after it was sent; so a holder that measures
//! from the moment it *sent* the last acknowledged keep-alive has a deadline that no other
//! candidate can beat ([`Standing`]). The holder gives up [`Settings::fence_margin`] before
//! that bound, which leaves it time to fence its own region (database read-only, entry out
//! of DNS) while its lease still exists. The only clock assumption is that the rates of the
//! holder's and the etcd leader's clocks agree to within the margin over one TTL (NTP keeps
//! rates within a few hundred parts per million); their offsets do not matter.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Everything that can go wrong while coordinating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot work; the message names the field.
    #[error("invalid coordination settings: {0}")]
    InvalidConfig(String),
    /// etcd could not be reached or refused the request.
    #[error("etcd ({endpoints}): {source}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// What the client said.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd ({endpoints}) did not answer within {timeout:?}")]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
        /// How long the request was given.
        timeout: Duration,
    },
    /// The write was refused: the key is no longer held with this fencing token.
    #[error("fenced: {key} is no longer held with token {token}")]
    Fenced {
        /// The lease key.
        key: String,
        /// The token the write carried.
        token: i64,
    },
}

/// How a [`Coordinator`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// etcd client URLs (`http://host:port`), the local region's member first.
    pub endpoints: Vec<String>,
    /// The key whose holder acts, e.g. `/cutover/failover/<namespace>/<name>`.
    pub key: String,
    /// Who this candidate is (the region's name); stored as the key's value.
    pub holder: String,
    /// The lease's time to live. etcd refuses less than its minimum (about 2 s with the
    /// default election timeout).
    pub ttl: Duration,
    /// How long before the earliest possible expiry the holder gives up; it must cover the
    /// time to fence the region and the clocks' rate difference over one TTL.
    pub fence_margin: Duration,
    /// How long each request to etcd may take.
    pub request_timeout: Duration,
}

impl Settings {
    /// Settings with a TTL, a fence margin of a quarter of it and requests of a sixth.
    pub fn new(endpoints: Vec<String>, key: &str, holder: &str, ttl: Duration) -> Self {
        Self {
            endpoints,
            key: key.to_string(),
            holder: holder.to_string(),
            ttl,
            fence_margin: ttl / 4,
            request_timeout: ttl / 6,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::InvalidConfig(why.to_string()));
        if self.endpoints.is_empty() {
            return bad("endpoints: at least one etcd endpoint is needed");
        }
        if self.key.is_empty() {
            return bad("key: must not be empty");
        }
        if self.holder.is_empty() {
            return bad("holder: must not be empty");
        }
        if self.ttl < Duration::from_secs(2) || self.ttl.subsec_nanos() != 0 {
            return bad("ttl: a whole number of seconds, at least 2 (etcd's minimum)");
        }
        // Renewals every sixth of the TTL, retried within it; the margin and one request
        // must fit well inside the standing.
        if self.fence_margin + self.request_timeout >= self.ttl * 2 / 3 {
            return bad("fenceMargin: with one request it must take less than two thirds of ttl");
        }
        Ok(())
    }

    fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }
}

/// Who holds the key, as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The holder's name (the key's value).
    pub holder: String,
    /// Its fencing token (the key's `create_revision`).
    pub token: i64,
}

impl Holding {
    fn of(kv: &KeyValue) -> Self {
        Self {
            holder: String::from_utf8_lossy(kv.value()).into_owned(),
            token: kv.create_revision(),
        }
    }
}

/// The holder's own view of its tenure: until when it may act. Pure logic, no I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// When this holder stops acting unless a renewal moves it on.
    pub act_until: Instant,
}

impl Standing {
    /// The standing after etcd acknowledged a grant or keep-alive that was *sent* at `sent`
    /// and granted `ttl`: etcd expires the lease no earlier than `sent + ttl`.
    pub fn after_renewal(sent: Instant, ttl: Duration, fence_margin: Duration) -> Self {
        Self {
            act_until: sent + ttl.saturating_sub(fence_margin),
        }
    }

    /// Whether the holder may still act at `now`.
    pub fn may_act(&self, now: Instant) -> bool {
        now < self.act_until
    }

    /// A later acknowledgement never shortens the standing (a late answer to an old
    /// keep-alive must not move the deadline back).
    pub fn renewed(self, sent: Instant, ttl: Duration, fence_margin: Duration) -> Self {
        let next = Self::after_renewal(sent, ttl, fence_margin);
        if next.act_until > self.act_until {
            next
        } else {
            self
        }
    }
}

/// A candidate for the key, connected to etcd.
pub struct Coordinator {
    client: Client,
    settings: Settings,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Connects to etcd (lazily: an unreachable etcd shows on the first request).
    pub async fn connect(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(settings.request_timeout)
            .with_timeout(settings.request_timeout)
            .with_keep_alive(settings.request_timeout, settings.request_timeout);
        let client = Client::connect(&settings.endpoints, Some(options))
            .await
            .map_err(|source| Error::Etcd {
                endpoints: settings.endpoints(),
                source,
            })?;
        Ok(Self { client, settings })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Who holds the key now, if anyone (a linearizable read: it needs a quorum).
    pub async fn holding(&self) -> Result<Option<Holding>, Error> {
        let mut kv = self.client.kv_client();
        let resp = call(&self.settings, kv.get(self.settings.key.as_str(), None)).await?;
        Ok(resp.kvs().first().map(Holding::of))
    }

    /// Writes `value` at `key` only while the lease key is held with `token`, whoever
    /// asks: etcd itself refuses a stale token ([`Error::Fenced`]).
    pub async fn put_with_token(&self, token: i64, key: &str, value: &str) -> Result<i64, Error> {
        fenced_txn(
            &self.client,
            &self.settings,
            token,
            vec![TxnOp::put(key, value, None)],
        )
        .await
    }

    /// The value at `key`, if any (a linearizable read).
    pub async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let mut kv = self.client.kv_client();
        let resp = call(&self.settings, kv.get(key, None)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Every key and value under `prefix`.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, Error> {
        let mut kv = self.client.kv_client();
        let resp = call(
            &self.settings,
            kv.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    }

    /// Writes `value` at `key` unfenced: for what any region may write of itself (its
    /// member's health report), never for what only the holder may write.
    pub async fn put(&self, key: &str, value: &str) -> Result<i64, Error> {
        let mut kv = self.client.kv_client();
        let resp = call(&self.settings, kv.put(key, value, None)).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// One try at the key: `Ok(Ok(tenure))` if this candidate now holds it, `Ok(Err(holding))`
    /// naming the holder if someone else does.
    pub async fn campaign(&self) -> Result<Result<Tenure, Holding>, Error> {
        let s = &self.settings;
        let mut lease = self.client.lease_client();
        let sent = Instant::now();
        let ttl = i64::try_from(s.ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = call(s, lease.grant(ttl, None)).await?;
        let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
        let id = grant.id();
        let txn = Txn::new()
            .when([Compare::create_revision(
                s.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                s.key.as_str(),
                s.holder.as_str(),
                Some(PutOptions::new().with_lease(id)),
            )])
            .or_else([TxnOp::get(s.key.as_str(), None)]);
        let mut kv = self.client.kv_client();
        // On an error, not knowing whether the key was made, the lease is left to expire:
        // if it was, nobody holds it for longer than one TTL.
        let resp = call(s, kv.txn(txn)).await?;
        if !resp.succeeded() {
            let held = resp.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(Holding::of),
                _ => None,
            });
            if let Err(e) = call(s, lease.revoke(id)).await {
                debug!(error = %e, "revoking the unused lease failed; it expires on its own");
            }
            return Ok(Err(held.unwrap_or(Holding {
                holder: String::new(),
                token: 0,
            })));
        }
        let token = resp.header().map_or(0, |h| h.revision());
        let standing = Standing::after_renewal(sent, granted, s.fence_margin);
        info!(key = %s.key, holder = %s.holder, token, "took the coordination lease");
        Ok(Ok(Tenure::start(
            self.client.clone(),
            s.clone(),
            id,
            token,
            standing,
        )))
    }
}

/// Holding the key: renews in the background and tells when this holder must stop acting.
pub struct Tenure {
    client: Client,
    settings: Settings,
    lease_id: i64,
    token: i64,
    standing: watch::Receiver<Standing>,
    renewer: JoinHandle<()>,
}

impl std::fmt::Debug for Tenure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenure")
            .field("key", &self.settings.key)
            .field("token", &self.token)
            .field("standing", &self.standing())
            .finish_non_exhaustive()
    }
}

impl Tenure {
    fn start(
        client: Client,
        settings: Settings,
        lease_id: i64,
        token: i64,
        standing: Standing,
    ) -> Self {
        let (tx, rx) = watch::channel(standing);
        let renewer = tokio::spawn(renew(client.clone(), settings.clone(), lease_id, tx));
        Self {
            client,
            settings,
            lease_id,
            token,
            standing: rx,
            renewer,
        }
    }

    /// The fencing token every act carries (the key's `create_revision`).
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Until when this holder may act, as of the last acknowledged renewal.
    pub fn standing(&self) -> Standing {
        *self.standing.borrow()
    }

    /// Whether this holder may still act now.
    pub fn may_act(&self) -> bool {
        self.standing().may_act(Instant::now())
    }

    /// Resolves once this holder may no longer act (its renewals stopped being acknowledged
    /// and the fence deadline passed). It never comes back: a new [`Coordinator::campaign`]
    /// is needed.
    pub async fn lost(&mut self) {
        self.lost_signal().wait().await;
    }

    /// The same as a value another task can wait on (to fence the moment the standing
    /// runs out, whatever the holder's task is doing). Dropping the tenure ends it too.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal {
            standing: self.standing.clone(),
        }
    }

    /// Deletes every key under `prefix` and writes `puts`, in one transaction, only while
    /// the lease key is still held with this token (the entry's records, replaced at once).
    pub async fn replace_fenced(
        &self,
        prefix: &str,
        puts: &[(String, String)],
    ) -> Result<i64, Error> {
        // etcd refuses a transaction whose delete range covers a key it also puts: the
        // keys under the prefix that are not written again are deleted one by one. Only
        // the holder writes there, so what was read is what the transaction replaces.
        self.refuse_unless_standing()?;
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix().with_keys_only();
        let old = call(&self.settings, kv.get(prefix, Some(options))).await?;
        let mut ops: Vec<TxnOp> = old
            .kvs()
            .iter()
            .filter(|o| !puts.iter().any(|(k, _)| k.as_bytes() == o.key()))
            .map(|o| TxnOp::delete(o.key(), None))
            .collect();
        ops.extend(
            puts.iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)),
        );
        self.fenced_ops(ops).await
    }

    /// Writes every `(key, value)` of `puts` in one transaction, only while the lease key
    /// is still held with this token ([`Error::Fenced`] otherwise).
    pub async fn put_all_fenced(&self, puts: &[(String, String)]) -> Result<i64, Error> {
        self.refuse_unless_standing()?;
        let ops = puts
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        self.fenced_ops(ops).await
    }

    /// Writes `value` at `key` only while the lease key is still held with this token;
    /// [`Error::Fenced`] otherwise. Refused locally too once [`Tenure::may_act`] is false.
    pub async fn put_fenced(&self, key: &str, value: &str) -> Result<i64, Error> {
        self.fenced(TxnOp::put(key, value, None)).await
    }

    /// Deletes `key` only while the lease key is still held with this token.
    pub async fn delete_fenced(&self, key: &str) -> Result<i64, Error> {
        self.fenced(TxnOp::delete(key, None)).await
    }

    async fn fenced(&self, op: TxnOp) -> Result<i64, Error> {
        self.fenced_ops(vec![op]).await
    }

    /// [`Error::Fenced`] once this holder may no longer act, before asking etcd anything.
    fn refuse_unless_standing(&self) -> Result<(), Error> {
        if self.may_act() {
            Ok(())
        } else {
            Err(Error::Fenced {
                key: self.settings.key.clone(),
                token: self.token,
            })
        }
    }

    async fn fenced_ops(&self, ops: Vec<TxnOp>) -> Result<i64, Error> {
        self.refuse_unless_standing()?;
        fenced_txn(&self.client, &self.settings, self.token, ops).await
    }

    /// Gives the key up at once (a graceful hand-over): revokes the lease, which deletes the
    /// key. If etcd cannot be reached the lease simply expires.
    pub async fn resign(self) {
        self.renewer.abort();
        let mut lease = self.client.lease_client();
        match call(&self.settings, lease.revoke(self.lease_id)).await {
            Ok(_) => info!(key = %self.settings.key, "gave up the coordination lease"),
            Err(e) => warn!(error = %e, "revoking the coordination lease failed"),
        }
    }
}

/// Resolves once a [`Tenure`] may no longer act: see [`Tenure::lost_signal`].
#[derive(Debug)]
pub struct LostSignal {
    standing: watch::Receiver<Standing>,
}

impl LostSignal {
    /// Wait for it.
    pub async fn wait(mut self) {
        loop {
            let until = self.standing.borrow().act_until;
            tokio::select! {
                () = tokio::time::sleep_until(until) => {
                    if !self.standing.borrow().may_act(Instant::now()) {
                        return;
                    }
                }
                changed = self.standing.changed() => {
                    if changed.is_err() {
                        // The renewer ended: wait out the standing it left.
                        let until = self.standing.borrow().act_until;
                        tokio::time::sleep_until(until).await;
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Tenure {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// Keeps the lease alive every sixth of the TTL and publishes each acknowledged renewal;
/// a renewal that is not acknowledged within half the request timeout is retried at once
/// (after [`RETRY_PAUSE`]) on a new stream, not a sixth of the TTL later. The standing
/// (three quarters of the TTL after an acknowledged renewal was sent) thus spans some six
/// tries: a link that drops for a moment again and again (each outage stretched by TCP's
/// retransmission backoff on the way from the own member to the etcd leader) still lets
/// one through. Ends when etcd says the lease is gone (TTL 0) or the standing has run out.
async fn renew(client: Client, s: Settings, lease_id: i64, tx: watch::Sender<Standing>) {
    let every = s.ttl / 6;
    let timeout = s.request_timeout / 2;
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + every;
    loop {
        tokio::time::sleep_until(next).await;
        if !tx.borrow().may_act(Instant::now()) {
            debug!(key = %s.key, "standing ran out; renewals stop");
            return;
        }
        let sent = Instant::now();
        let answer = tokio::time::timeout(timeout, async {
            if stream.is_none() {
                let mut lease = client.lease_client();
                stream = Some(lease.keep_alive(lease_id).await?);
            }
            let (keeper, answers) = stream.as_mut().expect("opened above");
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                let granted = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
                tx.send_modify(|st| *st = st.renewed(sent, granted, s.fence_margin));
                next = sent + every;
            }
            Ok(Ok(Some(_))) => {
                warn!(key = %s.key, "etcd says the coordination lease has expired");
                tx.send_replace(Standing {
                    act_until: Instant::now(),
                });
                return;
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                // The stream broke or the member is unreachable: a new one, at once.
                debug!(key = %s.key, "keep-alive not acknowledged; retrying");
                stream = None;
                next = (sent + RETRY_PAUSE).max(Instant::now());
                continue;
            }
        }
    }
}

/// The pause between a renewal that failed and the next attempt (a member that refuses
/// at once is not asked in a tight loop).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// `ops`, only while the lease key's `create_revision` is `token`.
async fn fenced_txn(
    client: &Client,
    s: &Settings,
    token: i64,
    ops: Vec<TxnOp>,
) -> Result<i64, Error> {
    let txn = Txn::new()
        .when([Compare::create_revision(
            s.key.as_str(),
            CompareOp::Equal,
            token,
        )])
        .and_then(ops);
    let mut kv = client.kv_client();
    let resp = call(s, kv.txn(txn)).await?;
    if !resp.succeeded() {
        return Err(Error::Fenced {
            key: s.key.clone(),
            token,
        });
    }
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// One request to etcd, given `request_timeout`.
async fn call<T>(
    s: &Settings,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(s.request_timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Etcd {
            endpoints: s.endpoints(),
            source,
        }),
        Err(_) => Err(Error::Timeout {
            endpoints: s.endpoints(),
            timeout: s.request_timeout,
        }),
    }
}

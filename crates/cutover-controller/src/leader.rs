//! Leader election with a `coordination.k8s.io/v1` Lease, so that only one replica writes.
//!
//! A candidate ([`LeaderElector::acquire`]) waits until the Lease is vacant or expired, then
//! takes it with a write conditioned on the `resourceVersion` it read: of two candidates that
//! saw the same expired Lease only one write succeeds, the other gets `409 Conflict` and keeps
//! waiting. The winner gets a [`LeaderGuard`] that renews the Lease in the background and
//! reports the loss of leadership; the process is expected to exit then (crash-only: a
//! restarted process is a candidate again). [`LeaderGuard::release`] hands over at once on a
//! graceful shutdown.
//!
//! Expiry is judged from the Lease's `renewTime` against this machine's clock, so candidates'
//! clocks must agree to well within the lease duration (NTP does this); the holder gives up a
//! third of the duration early ([`LeaseConfig::renew_deadline`]) to leave room for skew and
//! latency.

use crate::FIELD_MANAGER;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

/// Everything that can go wrong while electing a leader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot work; the message names the field.
    #[error("invalid leader-election settings: {0}")]
    InvalidConfig(String),
    /// Reading the Lease failed.
    #[error(
        "reading Lease {namespace}/{name} failed (the controller needs get, create and update on leases.coordination.k8s.io in {namespace}): {source}"
    )]
    Read {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
    /// Creating the Lease failed.
    #[error(
        "creating Lease {namespace}/{name} failed (check that namespace {namespace} exists and the controller may create leases.coordination.k8s.io there): {source}"
    )]
    Create {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
    /// Taking over or renewing the Lease failed.
    #[error(
        "updating Lease {namespace}/{name} failed (the controller needs update on leases.coordination.k8s.io in {namespace}): {source}"
    )]
    Update {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
    /// Handing the Lease back on shutdown failed; a standby takes over once it expires.
    #[error(
        "releasing Lease {namespace}/{name} failed; a standby takes over when it expires: {source}"
    )]
    Release {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Whether retrying may help: connection trouble, throttling and server-side errors, as
    /// opposed to missing permissions or an invalid object.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::InvalidConfig(_) => false,
            Self::Read { source, .. }
            | Self::Create { source, .. }
            | Self::Update { source, .. }
            | Self::Release { source, .. } => is_transient(source),
        }
    }
}

/// The holder's version, written on the Lease when it takes it (`kubectl cutover version`).
fn version_annotation() -> std::collections::BTreeMap<String, String> {
    [(
        cutover_api::CONTROLLER_VERSION_ANNOTATION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )]
    .into()
}

fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Which Lease to contend for, as whom, and how often.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (usually the controller's own).
    pub namespace: String,
    /// Name of the Lease; every replica of one controller uses the same.
    pub name: String,
    /// This replica's identity, unique among the candidates (usually the pod name).
    pub identity: String,
    /// How long a holder's claim lasts after its last renewal; default 15 s.
    pub lease_duration: Duration,
    /// How often the holder renews and a candidate retries; default 2 s.
    pub renew_interval: Duration,
}

impl LeaseConfig {
    /// Settings with the default lease duration (15 s) and renew interval (2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
        }
    }

    /// How long the holder keeps leading without a successful renewal: two thirds of the
    /// lease duration, so it stops before any candidate may consider the Lease expired.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// The lease duration as written to `leaseDurationSeconds`, rounded up.
    fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |msg: &str| Err(Error::InvalidConfig(msg.to_string()));
        if self.namespace.is_empty() {
            return invalid("the Lease namespace is empty");
        }
        if self.name.is_empty() {
            return invalid("the Lease name is empty");
        }
        if self.identity.is_empty() {
            return invalid("the identity is empty; use the pod name");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return invalid("lease_duration must be at least 1s");
        }
        if i32::try_from(self.lease_duration.as_secs()).is_err() {
            return invalid("lease_duration is too long for leaseDurationSeconds");
        }
        if self.renew_interval.is_zero() || self.renew_interval >= self.renew_deadline() {
            return invalid(
                "renew_interval must be positive and shorter than two thirds of lease_duration",
            );
        }
        Ok(())
    }
}

/// Who may hold a Lease, as seen by one candidate at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This identity holds it already (a restarted process with the same identity).
    Ours,
    /// Nobody holds it: the holder is empty, or the Lease has no spec.
    Vacant,
    /// `holder` held it, but its claim ran out; it may be taken over.
    Expired {
        /// The previous holder.
        holder: String,
    },
    /// `holder` holds it until `expires_at` unless it renews: wait.
    Held {
        /// The current holder.
        holder: String,
        /// When the claim runs out without a renewal.
        expires_at: Timestamp,
    },
}

impl Claim {
    /// Whether a candidate may write itself in as the holder.
    pub fn can_acquire(&self) -> bool {
        !matches!(self, Self::Held { .. })
    }
}

/// Judge a Lease's spec for `identity` at `now`.
///
/// A claim lasts `leaseDurationSeconds` after `renewTime` (or `acquireTime` if it was never
/// renewed); a claim without either time has no evidence of life and counts as expired, and
/// a missing duration counts as zero.
pub fn assess(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Claim {
    let Some(spec) = spec else {
        return Claim::Vacant;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Claim::Vacant,
        Some(holder) if holder == identity => return Claim::Ours,
        Some(holder) => holder.to_string(),
    };
    let Some(MicroTime(last_seen)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Claim::Expired { holder };
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match last_seen.checked_add(duration) {
        Ok(expires_at) if expires_at < now => Claim::Expired { holder },
        Ok(expires_at) => Claim::Held { holder, expires_at },
        // Past the end of time: certainly not expired.
        Err(_) => Claim::Held {
            holder,
            expires_at: Timestamp::MAX,
        },
    }
}

/// Whether `identity` may take `lease` at `now`; see [`assess`].
pub fn can_acquire(lease: &Lease, identity: &str, now: Timestamp) -> bool {
    assess(lease.spec.as_ref(), identity, now).can_acquire()
}

/// The outcome of one attempt to take the Lease.
enum Attempt {
    /// Taken by a write sent at this instant.
    Acquired(Instant),
    /// Someone else holds it; `None` when another candidate won a race just now.
    Waiting { holder: Option<String> },
}

/// Contends for one Lease as one identity.
#[derive(Clone, Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// An elector for `config`, checking that its settings can work.
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        })
    }

    /// The settings this elector uses.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Wait until this identity holds the Lease, trying every `renew_interval`.
    ///
    /// Transient API errors are logged and retried; permanent ones (e.g. missing RBAC) are
    /// returned. Dropping the future stops contending.
    pub async fn acquire(&self) -> Result<LeaderGuard, Error> {
        let mut ticker = tokio::time::interval(self.config.renew_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_holder: Option<String> = None;
        loop {
            ticker.tick().await;
            match self.attempt().await {
                Ok(Attempt::Acquired(at)) => return Ok(self.guard(at)),
                Ok(Attempt::Waiting { holder }) => {
                    if holder.is_some() && holder != last_holder {
                        info!(
                            lease = %self.config.name,
                            namespace = %self.config.namespace,
                            identity = %self.config.identity,
                            holder = holder.as_deref().unwrap_or_default(),
                            "standing by: another replica leads"
                        );
                        last_holder = holder;
                    }
                }
                Err(error) if error.is_transient() => {
                    warn!(
                        lease = %self.config.name,
                        namespace = %self.config.namespace,
                        %error,
                        "leader election attempt failed; retrying"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One attempt: take the Lease if it is absent, vacant, expired or already ours.
    /// `Ok(None)` means another replica holds it or won the race.
    pub async fn try_acquire(&self) -> Result<Option<LeaderGuard>, Error> {
        Ok(match self.attempt().await? {
            Attempt::Acquired(at) => Some(self.guard(at)),
            Attempt::Waiting { .. } => None,
        })
    }

    async fn attempt(&self) -> Result<Attempt, Error> {
        let LeaseConfig {
            namespace, name, ..
        } = &self.config;
        let observed = self.api.get_opt(name).await.map_err(|source| Error::Read {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
        let now = Timestamp::now();
        let started = Instant::now();
        let Some(mut lease) = observed else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    annotations: Some(version_annotation()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.claimed_spec(None, now)),
            };
            return match self.api.create(&post_params(), &lease).await {
                Ok(_) => {
                    info!(lease = %name, %namespace, identity = %self.config.identity, "created the Lease; now leading");
                    Ok(Attempt::Acquired(started))
                }
                // AlreadyExists: another candidate created it first.
                Err(e) if is_conflict(&e) => {
                    debug!(lease = %name, %namespace, "another candidate created the Lease first");
                    Ok(Attempt::Waiting { holder: None })
                }
                Err(source) => Err(Error::Create {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                }),
            };
        };
        let claim = assess(lease.spec.as_ref(), &self.config.identity, now);
        if let Claim::Held { holder, expires_at } = claim {
            debug!(lease = %name, %namespace, %holder, %expires_at, "the Lease is held");
            return Ok(Attempt::Waiting {
                holder: Some(holder),
            });
        }
        lease.spec = Some(self.claimed_spec(lease.spec.take(), now));
        lease
            .metadata
            .annotations
            .get_or_insert_default()
            .extend(version_annotation());
        // `lease` still carries the resourceVersion we read: the write fails with 409 if any
        // other write came in between, so two candidates never both take it.
        match self.api.replace(name, &post_params(), &lease).await {
            Ok(_) => {
                let previous = match &claim {
                    Claim::Expired { holder } => holder.as_str(),
                    _ => "",
                };
                info!(lease = %name, %namespace, identity = %self.config.identity, previous, "took the Lease; now leading");
                Ok(Attempt::Acquired(started))
            }
            Err(e) if is_conflict(&e) => {
                debug!(lease = %name, %namespace, "lost the race for the Lease");
                Ok(Attempt::Waiting { holder: None })
            }
            Err(source) => Err(Error::Update {
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            }),
        }
    }

    /// The spec that makes this identity the holder, starting from `previous`.
    /// `None` means the Lease is being created: no transition yet.
    fn claimed_spec(&self, previous: Option<LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let creating = previous.is_none();
        let previous = previous.unwrap_or_default();
        let ours = previous.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let transitions = previous.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration_seconds()),
            // Re-taking our own Lease (after a restart) is not a transition.
            acquire_time: if ours {
                previous.acquire_time.clone().or(Some(MicroTime(now)))
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if creating || ours {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..previous
        }
    }

    fn guard(&self, acquired_at: Instant) -> LeaderGuard {
        let (leading, _) = watch::channel(true);
        let renewer = tokio::spawn(renew_until_lost(
            self.api.clone(),
            self.config.clone(),
            leading.clone(),
            acquired_at,
        ));
        LeaderGuard {
            api: self.api.clone(),
            config: self.config.clone(),
            leading,
            renewer: Some(renewer),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Proof that this replica holds the Lease, renewed in the background while it lives.
///
/// Dropping it stops renewing without handing over (as a crash would): a standby takes over
/// once the Lease expires. Use [`LeaderGuard::release`] on a graceful shutdown.
#[derive(Debug)]
pub struct LeaderGuard {
    api: Api<Lease>,
    config: LeaseConfig,
    /// Shared with the renewer; whoever learns first that leadership ended publishes `false`.
    leading: watch::Sender<bool>,
    renewer: Option<JoinHandle<()>>,
}

impl LeaderGuard {
    /// The identity that holds the Lease.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Whether this replica still leads.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// A receiver that reads `true` while this replica leads and turns `false` once, for
    /// good, when leadership is lost or released.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Resolves when leadership is lost: the Lease shows another holder, or renewing failed
    /// for longer than [`LeaseConfig::renew_deadline`]. Stop writing and exit then.
    pub async fn lost(&self) {
        let mut leading = self.leading.subscribe();
        // The guard holds a sender, so the channel cannot close while this borrows it.
        let _ = leading.wait_for(|leading| !*leading).await;
    }

    /// Hand the Lease over on a graceful shutdown: stop renewing and clear the holder, so a
    /// standby takes over at its next try instead of waiting for expiry.
    pub async fn release(mut self) -> Result<(), Error> {
        // Writers stop before a standby can start.
        self.leading.send_replace(false);
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            let _ = renewer.await;
        }
        let LeaseConfig {
            namespace,
            name,
            identity,
            ..
        } = &self.config;
        let release_error = |source| Error::Release {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        };
        // Two tries: a conflict with our own last renewal in flight is possible once.
        for _ in 0..2 {
            let Some(mut lease) = self.api.get_opt(name).await.map_err(release_error)? else {
                return Ok(());
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                debug!(lease = %name, %namespace, "the Lease has another holder already; nothing to release");
                return Ok(());
            }
            spec.holder_identity = None;
            match self.api.replace(name, &post_params(), &lease).await {
                Ok(_) => {
                    info!(lease = %name, %namespace, %identity, "released the Lease");
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => continue,
                Err(source) => return Err(release_error(source)),
            }
        }
        warn!(lease = %name, %namespace, "the Lease kept changing; leaving it to expire");
        Ok(())
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        // Renewals stop, so this replica must stop writing too.
        self.leading.send_replace(false);
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// What one renewal found.
enum Renewal {
    Renewed,
    Lost { holder: Option<String> },
}

async fn renew_once(api: &Api<Lease>, config: &LeaseConfig) -> Result<Renewal, kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(Renewal::Lost { holder: None });
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(Renewal::Lost {
            holder: spec.holder_identity.clone(),
        });
    }
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(config.lease_duration_seconds());
    // Conditioned on the resourceVersion just read: a takeover in between makes this fail.
    api.replace(&config.name, &post_params(), &lease).await?;
    Ok(Renewal::Renewed)
}

/// Renew every `renew_interval` until the Lease shows another holder or no renewal has
/// succeeded for `renew_deadline`; then publish `false` on `leading` and stop.
async fn renew_until_lost(
    api: Api<Lease>,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    acquired_at: Instant,
) {
    let deadline_after = config.renew_deadline();
    // When the last successful write was sent: the claim is valid from then, not from when
    // the answer came back.
    let mut renewed_at = acquired_at;
    loop {
        let deadline = renewed_at + deadline_after;
        let started = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(config.renew_interval) => Instant::now(),
        };
        let outcome = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            outcome = renew_once(&api, &config) => outcome,
        };
        match outcome {
            Ok(Renewal::Renewed) => {
                debug!(lease = %config.name, namespace = %config.namespace, "renewed the Lease");
                renewed_at = started;
            }
            Ok(Renewal::Lost { holder }) => {
                warn!(
                    lease = %config.name,
                    namespace = %config.namespace,
                    identity = %config.identity,
                    holder = holder.as_deref().unwrap_or_default(),
                    "the Lease shows another holder; leadership lost"
                );
                leading.send_replace(false);
                return;
            }
            Err(error) => {
                warn!(lease = %config.name, namespace = %config.namespace, %error, "renewing the Lease failed; retrying");
            }
        }
    }
    warn!(
        lease = %config.name,
        namespace = %config.namespace,
        identity = %config.identity,
        deadline_secs = deadline_after.as_secs_f64(),
        "could not renew the Lease before the deadline; leadership lost"
    );
    leading.send_replace(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("a valid timestamp")
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            acquire_time: Some(MicroTime(ts(renewed - 100))),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_claim_of_another_holder_must_be_waited_out() {
        let spec = held_by("a", 1_000, 15);
        for now in [1_000, 1_010, 1_015] {
            assert_eq!(
                assess(Some(&spec), "b", ts(now)),
                Claim::Held {
                    holder: "a".into(),
                    expires_at: ts(1_015)
                },
                "at {now}"
            );
        }
    }

    #[test]
    fn an_expired_claim_may_be_taken_over() {
        let spec = held_by("a", 1_000, 15);
        let now = ts(1_015) + SignedDuration::from_millis(1);
        assert_eq!(
            assess(Some(&spec), "b", now),
            Claim::Expired { holder: "a".into() }
        );
        let lease = Lease {
            spec: Some(spec),
            ..Lease::default()
        };
        assert!(can_acquire(&lease, "b", now));
        assert!(!can_acquire(&lease, "b", ts(1_001)));
    }

    #[test]
    fn a_vacant_or_own_lease_may_be_taken_at_once() {
        let mut spec = held_by("a", 1_000, 15);
        assert_eq!(assess(Some(&spec), "a", ts(1_001)), Claim::Ours);
        spec.holder_identity = Some(String::new());
        assert_eq!(assess(Some(&spec), "b", ts(1_001)), Claim::Vacant);
        spec.holder_identity = None;
        assert_eq!(assess(Some(&spec), "b", ts(1_001)), Claim::Vacant);
        assert_eq!(assess(None, "b", ts(1_001)), Claim::Vacant);
    }

    #[test]
    fn a_claim_without_times_has_no_evidence_of_life() {
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert_eq!(
            assess(Some(&spec), "b", ts(1_000)),
            Claim::Expired { holder: "a".into() }
        );
    }

    #[test]
    fn a_never_renewed_claim_counts_from_its_acquire_time() {
        let mut spec = held_by("a", 1_000, 15);
        spec.renew_time = None;
        assert!(!assess(Some(&spec), "b", ts(900)).can_acquire());
        assert!(assess(Some(&spec), "b", ts(916)).can_acquire());
    }

    #[test]
    fn a_far_future_renewal_never_expires() {
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::MAX)),
            ..held_by("a", 0, i32::MAX)
        };
        assert!(!assess(Some(&spec), "b", Timestamp::MAX).can_acquire());
    }

    fn elector(identity: &str) -> LeaderElector {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a valid URI"));
        let client = Client::try_from(config).expect("a client");
        LeaderElector::new(client, LeaseConfig::new("ns", "lease", identity))
            .expect("valid settings")
    }

    #[tokio::test]
    async fn takeover_counts_a_transition_and_keeps_other_fields() {
        let b = elector("b");
        let now = ts(2_000);
        let taken = b.claimed_spec(Some(held_by("a", 1_000, 15)), now);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        assert_eq!(taken.renew_time, Some(MicroTime(now)));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        assert_eq!(taken.lease_transitions, Some(1));

        let fresh = b.claimed_spec(None, now);
        assert_eq!(fresh.lease_transitions, Some(0));

        let mut released = held_by("a", 1_000, 15);
        released.lease_transitions = Some(3);
        released.holder_identity = None;
        assert_eq!(
            b.claimed_spec(Some(released), now).lease_transitions,
            Some(4)
        );

        let own = held_by("b", 1_000, 15);
        let retaken = b.claimed_spec(Some(own.clone()), now);
        assert_eq!(retaken.acquire_time, own.acquire_time);
        assert_eq!(retaken.lease_transitions, Some(0));
    }

    #[test]
    fn settings_that_cannot_work_are_rejected() {
        let base = LeaseConfig::new("ns", "lease", "a");
        assert!(base.validate().is_ok());
        assert_eq!(base.renew_deadline(), Duration::from_secs(10));
        assert_eq!(base.lease_duration_seconds(), 15);
        let short = LeaseConfig {
            lease_duration: Duration::from_millis(1_500),
            renew_interval: Duration::from_millis(100),
            ..base.clone()
        };
        assert_eq!(short.lease_duration_seconds(), 2);
        for bad in [
            LeaseConfig {
                identity: String::new(),
                ..base.clone()
            },
            LeaseConfig {
                renew_interval: Duration::from_secs(10),
                ..base.clone()
            },
            LeaseConfig {
                lease_duration: Duration::from_millis(500),
                ..base.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn leadership_is_lost_when_renewals_fail_past_the_deadline() {
        // Nothing listens on port 1: every renewal fails at once.
        let mut elector = elector("a");
        elector.config.lease_duration = Duration::from_secs(1);
        elector.config.renew_interval = Duration::from_millis(100);
        let started = Instant::now();
        let guard = elector.guard(started);
        assert!(guard.is_leading());
        tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .expect("leadership is lost within the deadline");
        let after = started.elapsed();
        assert!(
            after >= elector.config.renew_deadline(),
            "lost after {after:?}, before the deadline"
        );
        assert!(!guard.is_leading());
    }
}

//! `FailoverPolicy`: the places a service can run (members), how their health is judged,
//! the traffic entry failover moves, the data gate on database replication, and drills.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A service that can run in several places (members), with traffic on one of them. The
/// controller checks every member's health, moves the traffic entry to a healthy standby
/// when the active member fails (automatically or on request), refuses a move that would
/// lose more data than the data gate allows, fences the old primary's database before it
/// promotes the new one, and proves on a schedule that all this works (drills).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "FailoverPolicy",
    plural = "failoverpolicies",
    shortname = "fp",
    category = "cutover",
    namespaced,
    status = "FailoverPolicyStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeMember"}"#,
    printcolumn = r#"{"name":"Holder","type":"string","jsonPath":".status.coordination.holder"}"#,
    printcolumn = r#"{"name":"Lease","type":"string","jsonPath":".status.coordination.state"}"#,
    printcolumn = r#"{"name":"Last drill","type":"string","jsonPath":".status.lastDrill.verdict"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.spec.members.all(m, self.spec.members.exists_one(o, o.name == m.name))")
        .message("spec.members: member names must be unique")
        .field_path(".spec.members")
        .reason(Reason::FieldValueDuplicate),
    validation = Rule::new("has(self.spec.coordination) == has(self.spec.entry.dns)")
        .message("spec.coordination: set together with spec.entry.dns (the regional mode: one policy in every region, a DNS entry served from each)")
        .field_path(".spec.coordination"),
    validation = Rule::new("!has(self.spec.coordination) || self.spec.members.all(m, has(m.region) && self.spec.members.exists_one(o, has(o.region) && o.region == m.region))")
        .message("spec.members[].region: with spec.coordination every member names its region, each a different one")
        .field_path(".spec.members"),
    validation = Rule::new("!has(self.spec.entry.dns) || self.spec.members.all(m, has(m.entryAddresses) && m.entryAddresses.size() > 0)")
        .message("spec.members[].entryAddresses: with spec.entry.dns every member lists the addresses its entry is reached at")
        .field_path(".spec.members"),
    validation = Rule::new("!has(self.spec.coordination) || !has(self.spec.failback) || !has(self.spec.failback.mode) || self.spec.failback.mode == 'Manual'")
        .message("spec.failback.mode: with spec.coordination only Manual (the region failed from must be rebuilt as a standby first)")
        .field_path(".spec.failback.mode"),
    validation = Rule::new("!has(self.spec.pilotLight) || has(self.spec.coordination)")
        .message("spec.pilotLight: only in the regional mode (spec.coordination) for now, where each region sizes its own member")
        .field_path(".spec.pilotLight"),
    validation = Rule::new("self.metadata.name.size() <= 40")
        .message("metadata.name: at most 40 characters, so that the per-member Services `<policy>-<member>` stay valid names"),
)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicySpec {
    /// Where the service runs, in order of preference: traffic starts on the first.
    #[schemars(length(min = 2, max = 8))]
    pub members: Vec<Member>,
    /// The traffic entry that failover moves.
    pub entry: Entry,
    /// How member health is checked.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Fail over without a person when the active member is down (default true). When
    /// false, `kubectl cutover failover` moves the traffic.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// The least time between two automatic moves, so a flapping signal moves traffic at
    /// most once per this many seconds.
    #[serde(default = "default_min_hold")]
    #[schemars(range(min = 0))]
    pub min_hold_seconds: i64,
    /// When traffic goes back to the member it failed over from.
    #[serde(default)]
    pub failback: Failback,
    /// Limits on the data a move may lose (replication lag of the target's database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_gate: Option<DataGate>,
    /// Scheduled disaster-recovery drills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<Drills>,
    /// The regional mode: the same policy is applied in every region's cluster, each
    /// region's controller (started with `--region`) acts on its own member only, and an
    /// etcd lease (one etcd member per region, or two regions and a witness) decides which
    /// one region is active. Requires `spec.entry.dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<Coordination>,
    /// Pilot-light standbys: a member that is not active is kept at a reduced size, and
    /// scaled back to its full size (its BlueGreenDeployment's `spec.replicas`) when it
    /// takes over; the entry moves to it once enough of it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pilot_light: Option<PilotLight>,
}

/// How small a standby member is kept, and how much of it must be ready before it serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "string(self.replicas).matches('^([0-9]+|(100|[0-9]{1,2})%)$')",
    "message": "spec.pilotLight.replicas: a count (0 or more) or a percentage from 0% to 100%",
    "fieldPath": ".replicas",
}, {
    "rule": "!has(self.readyToServe) || string(self.readyToServe).matches('^([0-9]+|(100|[0-9]{1,2})%)$')",
    "message": "spec.pilotLight.readyToServe: a count (0 or more) or a percentage from 0% to 100%",
    "fieldPath": ".readyToServe",
}]))]
pub struct PilotLight {
    /// A standby's size: a count (`1`) or a percentage of its full size (`"25%"`, rounded
    /// up). Never less than 1, never more than the full size.
    pub replicas: IntOrString,
    /// How many ready pods a member that takes over needs before the entry points at it:
    /// a count or a percentage of its full size (rounded up; default `"100%"`: it serves
    /// at full size only). Lower trades capacity right after a failover for a shorter RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_serve: Option<IntOrString>,
}

/// The etcd-backed lease that lets one policy run in every region with exactly one acting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coordination {
    /// The etcd cluster.
    pub etcd: EtcdRef,
    /// The lease's time to live. The active region stops taking writes (database read-only,
    /// entry records left to expire) a quarter of it before the lease can expire; a standby
    /// may take over once it has. Detection of a lost region is this long.
    #[serde(default = "default_lease_seconds")]
    #[schemars(range(min = 2, max = 60))]
    pub lease_seconds: i64,
    /// The etcd key of the lease (default `/cutover/failover/<namespace>/<name>`); the
    /// same in every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/.+"))]
    pub key: Option<String>,
}

fn default_lease_seconds() -> i64 {
    3
}

/// An etcd cluster reached over plain HTTP (addresses inside the regions' private network).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRef {
    /// Client URLs of every member, e.g. `http://10.90.1.2:2379`.
    #[schemars(length(min = 1, max = 9))]
    pub endpoints: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_min_hold() -> i64 {
    300
}

/// One place the service runs: a BlueGreenDeployment in a namespace of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's name (in status, events and `kubectl cutover failover --to`).
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 20))]
    pub name: String,
    /// The cluster: absent for the cluster the policy is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// The namespace of the BlueGreenDeployment (default: the policy's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The BlueGreenDeployment whose live Service serves this member's traffic.
    pub blue_green_deployment: String,
    /// A URL to probe instead of the member's live endpoints (an ingress of the member's
    /// own, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_url: Option<String>,
    /// The member's database, for the data gate, promotion and fencing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// With `spec.coordination`: the region this member runs in, as the region's
    /// controller is told with `--region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 40))]
    pub region: Option<String>,
    /// With `spec.entry.dns`: the IP addresses clients reach this member's entry at (its
    /// load balancer or gateway), published while it is active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub entry_addresses: Vec<String>,
}

/// A cluster reached through a kubeconfig in a Secret (in the policy's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// The Secret's name.
    pub secret_name: String,
    /// The key holding the kubeconfig (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A member's database: exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.postgres) != has(self.prometheus)",
    "message": "spec.members[].database: set exactly one of postgres or prometheus"
}]))]
pub struct Database {
    /// A PostgreSQL server in streaming replication (primary or hot standby): its lag is
    /// read, and a failover fences the old primary and promotes the standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRef>,
    /// Any database whose replication lag a Prometheus query gives (MySQL, a managed
    /// database, PostgreSQL under an operator...): the data gate applies, but its role is
    /// managed outside Cutover — it is never fenced or promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusLag>,
}

/// A member's replication lag, as Prometheus knows it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.lagSecondsQuery) || has(self.lagBytesQuery)",
    "message": "spec.members[].database.prometheus: set lagSecondsQuery, lagBytesQuery or both"
}]))]
pub struct PrometheusLag {
    /// Prometheus' address, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1))]
    pub address: String,
    /// PromQL giving this member's replication lag in seconds (one sample). No sample,
    /// several, or NaN: the lag is unknown, which the data gate refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds_query: Option<String>,
    /// PromQL giving this member's replication lag in bytes (one sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes_query: Option<String>,
}

/// A PostgreSQL server reached with a connection string kept in a Secret (in the policy's
/// namespace). The role needs to read `pg_stat_replication`, run `pg_promote()`,
/// `ALTER SYSTEM` and `pg_terminate_backend()` (a superuser, or a role granted these).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRef {
    /// The Secret's name.
    pub secret_name: String,
    /// The key holding a libpq connection string, URL or key=value (default `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The traffic entry: exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.httpRoute) != has(self.dns)",
    "message": "spec.entry: set exactly one of httpRoute or dns"
}]))]
pub struct Entry {
    /// A Gateway API HTTPRoute in the policy's namespace (served by `cutover-router` or any
    /// Gateway API implementation). The controller sets every rule's backendRefs to the
    /// active member's Service `<policy>-<member>`, whose endpoints it mirrors from the
    /// member's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteEntry>,
    /// A DNS name served from every region (with `spec.coordination`): the active region's
    /// controller writes the active member's `entryAddresses` as A/AAAA records into etcd,
    /// where each region's CoreDNS (etcd plugin) reads them, and as an ExternalDNS
    /// `DNSEndpoint` in its own cluster for a cloud DNS provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsEntry>,
    /// A URL that reaches the service through the entry, probed to measure drills (RTO and
    /// failed requests) and reported in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A DNS entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.hostname == self.zone || self.hostname.endsWith('.' + self.zone)",
    "message": "spec.entry.dns.hostname: must be inside spec.entry.dns.zone"
}]))]
pub struct DnsEntry {
    /// The zone every region's DNS server answers for, e.g. `shop.example.com`.
    #[schemars(
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub zone: String,
    /// The name clients resolve, in the zone, e.g. `www.shop.example.com`.
    #[schemars(
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub hostname: String,
    /// The records' time to live, seconds: how long a client may keep an answer after a
    /// failover.
    #[serde(default = "default_dns_ttl")]
    #[schemars(range(min = 0, max = 3600))]
    pub ttl: i64,
    /// The etcd prefix CoreDNS' etcd plugin reads (its `path`).
    #[serde(default = "default_dns_path")]
    #[schemars(regex(pattern = r"^/.+"))]
    pub path: String,
}

fn default_dns_ttl() -> i64 {
    1
}

fn default_dns_path() -> String {
    "/skydns".into()
}

/// An HTTPRoute entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteEntry {
    /// The HTTPRoute's name.
    pub name: String,
}

/// Health checks of every member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Path probed on the member's live endpoints (HTTP GET; 2xx and 3xx pass).
    #[serde(default = "default_path")]
    pub path: String,
    /// Time between checks.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    pub interval: String,
    /// How long one probe may take.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"))]
    pub timeout: String,
    /// Failed checks in a row before a member is down.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Good checks in a row before a member is up again.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
}

fn default_path() -> String {
    "/healthz".into()
}
fn default_interval() -> String {
    "1s".into()
}
fn default_timeout() -> String {
    "1s".into()
}
fn default_failure_threshold() -> i32 {
    3
}
fn default_success_threshold() -> i32 {
    2
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: default_path(),
            interval: default_interval(),
            timeout: default_timeout(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
        }
    }
}

/// When to fail back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.mode != 'AfterStable' || has(self.stableSeconds)",
    "message": "spec.failback.stableSeconds: required with mode AfterStable"
}]))]
pub struct Failback {
    /// `Manual` (only `kubectl cutover failover --to`) or `AfterStable`.
    #[serde(default)]
    pub mode: FailbackMode,
    /// With `AfterStable`: how long the member failed over from must be healthy first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub stable_seconds: Option<i64>,
}

impl Default for Failback {
    fn default() -> Self {
        Self {
            mode: FailbackMode::Manual,
            stable_seconds: None,
        }
    }
}

/// Failback modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FailbackMode {
    /// Only when a person asks.
    #[default]
    Manual,
    /// Once the member failed over from has been healthy for `stableSeconds`.
    AfterStable,
}

/// Data a move may lose: the target database's replication lag behind the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataGate {
    /// Most lag in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_data_loss_seconds: Option<i64>,
    /// Most lag in bytes of WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_data_loss_bytes: Option<i64>,
}

/// Disaster-recovery drills: move traffic to the standby under live traffic, verify, move
/// it back, and write a report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drills {
    /// A cron schedule (5 fields, UTC), e.g. `0 3 * * 1`. Absent: only on request
    /// (`kubectl cutover drill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The recovery time a drill must beat: from its start to the first good answer from
    /// the standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rto_target_seconds: Option<f64>,
    /// The data loss a drill may measure (the standby's replication lag at the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rpo_target_seconds: Option<f64>,
    /// How long the standby must answer well before the drill moves back.
    #[serde(default = "default_verify_seconds")]
    #[schemars(range(min = 0))]
    pub verify_seconds: i64,
    /// A drill not finished after this long fails (and traffic goes back).
    #[serde(default = "default_drill_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: i64,
}

fn default_verify_seconds() -> i64 {
    5
}
fn default_drill_timeout() -> i64 {
    300
}

/// What the controller observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicyStatus {
    /// `Healthy`, `FailingOver`, `FailedOver`, `Degraded` or `Drilling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The member traffic goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_member: Option<String>,
    /// What is happening and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Per member, in the spec's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The move under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MoveStatus>,
    /// When the last move finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_move_time: Option<Time>,
    /// The member the last failover left (cleared by a failback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_from: Option<String>,
    /// Worst case from a member's failure to its detection: interval × failureThreshold +
    /// timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection_budget_seconds: Option<f64>,
    /// Failovers and failbacks done.
    #[serde(default)]
    pub failovers: i64,
    /// The drill under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillStatus>,
    /// The last finished drill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<DrillReport>,
    /// Requests (annotations) already acted on: annotation → token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handled_requests: BTreeMap<String, String>,
    /// With `spec.coordination`: the lease as this region sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationStatus>,
    /// `Ready` (traffic on a healthy member), `DataGateOpen` and `EntryReachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The coordination lease as one region's controller sees it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinationStatus {
    /// The region of the controller writing this status.
    pub region: String,
    /// `Active` (this region holds the lease and acts), `Standby` (another region holds
    /// it), `Vacant` (nobody does: a standby may take over), `Fenced` (this region held it
    /// and could not renew: its database is read-only) or `Unreachable` (etcd has no
    /// quorum this region can reach: nothing moves).
    pub state: String,
    /// The region holding the lease, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The holder's fencing token (the lease key's etcd revision); every act carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<i64>,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `state` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// One member as last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The member.
    pub name: String,
    /// The last check passed.
    pub healthy: bool,
    /// Past the failure threshold.
    pub down: bool,
    /// Failed checks in a row (up to the threshold).
    #[serde(default)]
    pub failures: i32,
    /// Good checks in a row (up to the threshold).
    #[serde(default)]
    pub successes: i32,
    /// Up since, while up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_since: Option<Time>,
    /// Seen healthy at least once (an automatic failover only leaves such a member).
    #[serde(default)]
    pub seen_up: bool,
    /// Why the last check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Ready endpoints mirrored into the entry's Service for it.
    #[serde(default)]
    pub endpoints: i32,
    /// Its database: `primary`, `standby`, `fenced` or `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_role: Option<String>,
    /// Its database's replication lag, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Its database's replication lag, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
}

/// A move under way.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveStatus {
    /// From this member.
    pub from: String,
    /// To this one.
    pub to: String,
    /// Forced past the data gate and fencing.
    #[serde(default)]
    pub forced: bool,
    /// A failback.
    #[serde(default)]
    pub failback: bool,
    /// Traffic only: the databases keep their roles (drills).
    #[serde(default)]
    pub traffic_only: bool,
    /// When it started.
    pub started: Time,
}

/// A drill under way.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    /// `Switching`, `Verifying` or `Returning`.
    pub stage: String,
    /// The drill's report so far.
    pub report: DrillReport,
}

/// A drill's report (also in the ConfigMap `<policy>-drill-<time>` and an Event).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillReport {
    /// When it started.
    pub started: Time,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// Why: `schedule` or `request`.
    pub trigger: String,
    /// Traffic moved from this member...
    pub from: String,
    /// ... to this one, and back.
    pub to: String,
    /// Steps with timestamps.
    #[serde(default)]
    pub steps: Vec<DrillStep>,
    /// Measured recovery time: start to the first good answer from the standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Measured data at risk: the standby's replication lag at the switch, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// The same in bytes of WAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_bytes: Option<i64>,
    /// The targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_target_seconds: Option<f64>,
    /// The targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_target_seconds: Option<f64>,
    /// Probes through the entry during the drill.
    #[serde(default)]
    pub requests: i64,
    /// Of which failed.
    #[serde(default)]
    pub requests_failed: i64,
    /// `Passed` or `Failed` (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The ConfigMap holding the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
}

/// One step of a drill.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrillStep {
    /// When.
    pub time: Time,
    /// What.
    pub step: String,
}

/// Requests to the failover controller, as annotations on the FailoverPolicy (the value
/// starts with a token; the controller acts once per new token, see `status.handledRequests`).
pub mod requests {
    /// Fail over now. Value: `<token>` with optional ` to=<member>` and ` force`.
    pub const FAILOVER: &str = "cutover.dev/failover";
    /// Run a drill now. Value: `<token>`.
    pub const DRILL: &str = "cutover.dev/drill";
}

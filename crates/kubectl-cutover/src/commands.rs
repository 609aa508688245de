//! The commands: each reads or writes the BlueGreenDeployment (requests are annotations the
//! controller acts on once, see `cutover_api::requests`), and says clearly what went wrong:
//! no cluster, CRDs not installed, no such object.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cutover_api::analysis::AnalysisRun;
use cutover_api::{BlueGreenDeployment, INSTANCE_LABEL, Phase};
use futures::StreamExt as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::tree::{self, EventLine, View};
use crate::{Global, Output};

/// A command that failed, with the exit code to use.
#[derive(Debug)]
pub struct Failure {
    /// What to print.
    pub message: String,
    /// The exit code.
    pub code: u8,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// A connected client and where it points.
pub struct Ctx {
    pub(crate) client: Client,
    pub(crate) namespace: String,
    pub(crate) server: String,
    pub(crate) output: Option<Output>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// What `version` reports.
#[derive(Debug, Serialize)]
struct VersionReport {
    plugin: String,
    controllers: Vec<ControllerVersion>,
}

/// A controller that leads, as its Lease says.
#[derive(Debug, Serialize)]
struct ControllerVersion {
    version: String,
    lease: String,
    leader: String,
}

pub(crate) fn print_as<T: Serialize>(value: &T, output: Output) -> Result<()> {
    let text = match output {
        Output::Json => {
            serde_json::to_string_pretty(value).map_err(|e| Failure::new(e.to_string()))? + "\n"
        }
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Failure::new(e.to_string()))?,
    };
    print!("{text}");
    Ok(())
}

pub(crate) fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&w: &usize| w >= 40)
        .unwrap_or(80)
}

pub(crate) fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub(crate) fn token() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Ctx {
    /// Load the kubeconfig (flags as kubectl has them) and make a client.
    pub async fn connect(g: &Global) -> Result<Ctx> {
        let options = KubeConfigOptions {
            context: g.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &g.kubeconfig {
            Some(path) => match Kubeconfig::read_from(path) {
                Ok(kc) => Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!(
                    "cannot read the kubeconfig {}: {e}",
                    path.display()
                )),
            },
            None if g.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string()),
            None => Config::infer().await.map_err(|e| e.to_string()),
        };
        let mut config = config.map_err(|e| {
            Failure::new(format!(
                "no usable cluster configuration ({e}); set KUBECONFIG, pass --kubeconfig, or check --context"
            ))
        })?;
        config.connect_timeout = Some(Duration::from_secs(5));
        let server = config.cluster_url.to_string();
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| Failure::new(format!("cannot make a client for {server}: {e}")))?;
        Ok(Ctx {
            client,
            namespace,
            server,
            output: g.output,
        })
    }

    fn api(&self) -> Api<BlueGreenDeployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Turn a client error about `name` into what the user needs to hear.
    async fn explain(&self, e: kube::Error, name: Option<&str>) -> Failure {
        self.explain_for::<BlueGreenDeployment>(e, name, "kubectl cutover list shows what there is")
            .await
    }

    /// [`Ctx::explain`] for an object of kind `K`; `hint` says where to look when it is
    /// not found.
    pub(crate) async fn explain_for<K>(
        &self,
        e: kube::Error,
        name: Option<&str>,
        hint: &str,
    ) -> Failure
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        match e {
            kube::Error::Api(ae) if ae.code == 404 => {
                // Missing object, or missing resource type?
                let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
                let installed = api.list(&ListParams::default().limit(1)).await.is_ok();
                if !installed {
                    Failure::new(format!(
                        "the Cutover CRDs are not installed in the cluster at {} (install them: kubectl apply --server-side -f deploy/crds/)",
                        self.server
                    ))
                } else {
                    Failure::new(format!(
                        "{} {:?} not found in namespace {:?} ({hint})",
                        K::kind(&Default::default()),
                        name.unwrap_or_default(),
                        self.namespace
                    ))
                }
            }
            kube::Error::Api(ae) => Failure::new(format!(
                "the API server refused: {} ({})",
                ae.message, ae.reason
            )),
            other => Failure::new(format!(
                "cannot reach the cluster at {}: {other} (is it running? check --kubeconfig/--context)",
                self.server
            )),
        }
    }

    async fn fetch(&self, name: &str) -> Result<BlueGreenDeployment> {
        match self.api().get(name).await {
            Ok(b) => Ok(b),
            Err(e) => Err(self.explain(e, Some(name)).await),
        }
    }

    async fn view_parts(&self, name: &str) -> (Vec<AnalysisRun>, Vec<EventLine>) {
        let runs_api: Api<AnalysisRun> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut runs = runs_api
            .list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        runs.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.clone()));
        let events_api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut events: Vec<(i64, EventLine)> = events_api
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=BlueGreenDeployment,involvedObject.name={name}"
            )))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let when = e
                    .last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0))
                    .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .unwrap_or(now);
                let age = now.duration_since(when).as_secs();
                (
                    age,
                    EventLine {
                        age_seconds: age,
                        reason: e.reason.unwrap_or_default(),
                        message: e.message.unwrap_or_default(),
                        warning: e.type_.as_deref() == Some("Warning"),
                    },
                )
            })
            .collect();
        events.sort_by_key(|(age, _)| *age);
        (runs, events.into_iter().map(|(_, e)| e).collect())
    }

    async fn frame(&self, name: &str) -> Result<String> {
        let bgd = self.fetch(name).await?;
        let (runs, events) = self.view_parts(name).await;
        Ok(tree::render(&View {
            bgd: &bgd,
            runs: &runs,
            events: &events,
            width: width(),
            colour: colour(),
        }))
    }

    /// `get NAME [-w]`.
    pub async fn get(&self, name: &str, watch: bool) -> Result<ExitCode> {
        if let Some(o) = self.output {
            print_as(&self.fetch(name).await?, o)?;
            return Ok(ExitCode::SUCCESS);
        }
        if !watch {
            print!("{}", self.frame(name).await?);
            return Ok(ExitCode::SUCCESS);
        }
        let tty = std::io::stdout().is_terminal();
        let stream = watcher(
            self.api(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        let mut stream = std::pin::pin!(stream);
        let mut last = String::new();
        loop {
            let frame = self.frame(name).await?;
            if frame != last {
                let mut out = std::io::stdout().lock();
                if tty {
                    // Home, clear the screen, redraw.
                    let _ = write!(out, "\x1b[H\x1b[2J");
                } else if !last.is_empty() {
                    let _ = writeln!(out);
                }
                let _ = write!(out, "{frame}");
                let _ = out.flush();
                last = frame;
            }
            tokio::select! {
                _ = stream.next() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
    }

    /// `list [-A]`.
    /// `version`: the plugin's, and the leading controller's from its Lease.
    pub async fn version(&self) -> Result<ExitCode> {
        use k8s_openapi::api::coordination::v1::Lease;
        let leases = match Api::<Lease>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            // Not allowed to list Leases everywhere: the current namespace's.
            Err(_) => Api::<Lease>::namespaced(self.client.clone(), &self.namespace)
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default(),
        };
        let controllers: Vec<ControllerVersion> = leases
            .iter()
            .filter_map(|l| {
                let version = l
                    .annotations()
                    .get(cutover_api::CONTROLLER_VERSION_ANNOTATION)?;
                Some(ControllerVersion {
                    version: version.clone(),
                    lease: format!("{}/{}", l.namespace().unwrap_or_default(), l.name_any()),
                    leader: l
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default(),
                })
            })
            .collect();
        let report = VersionReport {
            plugin: env!("CARGO_PKG_VERSION").to_string(),
            controllers,
        };
        if let Some(o) = self.output {
            print_as(&report, o)?;
            return Ok(ExitCode::SUCCESS);
        }
        println!("kubectl-cutover     {}", report.plugin);
        if report.controllers.is_empty() {
            println!(
                "cutover-controller  not found (no Lease carries {})",
                cutover_api::CONTROLLER_VERSION_ANNOTATION
            );
        }
        for c in &report.controllers {
            println!(
                "cutover-controller  {} (lease {}, leader {})",
                c.version, c.lease, c.leader
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    pub async fn list(&self, all: bool) -> Result<ExitCode> {
        let api: Api<BlueGreenDeployment> = if all {
            Api::all(self.client.clone())
        } else {
            self.api()
        };
        let items = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => return Err(self.explain(e, None).await),
        };
        if let Some(o) = self.output {
            print_as(&items, o)?;
            return Ok(ExitCode::SUCCESS);
        }
        if items.is_empty() {
            eprintln!(
                "no BlueGreenDeployments in {}",
                if all {
                    "any namespace".to_string()
                } else {
                    format!("namespace {:?}", self.namespace)
                }
            );
            return Ok(ExitCode::SUCCESS);
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut rows = vec![vec![
            "NAMESPACE".to_string(),
            "NAME".into(),
            "PHASE".into(),
            "LIVE".into(),
            "REV".into(),
            "WEIGHT".into(),
            "STEP".into(),
            "AGE".into(),
        ]];
        for b in &items {
            let st = b.status.clone().unwrap_or_default();
            let live = st
                .active_color
                .map(|c| format!("{c:?}").to_lowercase())
                .unwrap_or("-".into());
            let rev = st.revision_of(st.active_color);
            let weight = if st.release.is_some() {
                format!("{}%", st.weight)
            } else {
                "-".into()
            };
            let step = match (st.current_step_index, b.spec.strategy.steps.len()) {
                (Some(i), n) if n > 0 && st.release.is_some() => {
                    format!("{}/{n}", (i + 1).min(i32::try_from(n).unwrap_or(i32::MAX)))
                }
                _ => "-".into(),
            };
            let age = b
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| tree::age(now.duration_since(t.0).as_secs()))
                .unwrap_or_default();
            rows.push(vec![
                b.namespace().unwrap_or_default(),
                b.name_any(),
                st.phase.map(|p| format!("{p:?}")).unwrap_or("-".into()),
                live,
                rev.map(|r| r.to_string()).unwrap_or("-".into()),
                weight,
                step,
                age,
            ]);
        }
        let skip = usize::from(!all);
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .skip(skip)
                .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `promote [--full]`, `abort`, `retry`: write the request and wait briefly for the
    /// controller to acknowledge it.
    pub async fn request(&self, name: &str, key: &str) -> Result<ExitCode> {
        self.fetch(name).await?;
        let token = token();
        let patch = serde_json::json!({ "metadata": { "annotations": { key: token } } });
        if let Err(e) = self
            .api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return Err(self.explain(e, Some(name)).await);
        }
        let verb = key.trim_start_matches("cutover.dev/");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(b) = self.api().get(name).await
                && b.status.as_ref().and_then(|s| s.handled_requests.get(key)) == Some(&token)
            {
                let msg = b.status.and_then(|s| s.message).unwrap_or_default();
                println!("{name}: {verb} acknowledged by the controller; {msg}");
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("{name}: {verb} requested");
        eprintln!(
            "warning: the controller has not acknowledged it within 10 s; is cutover-controller running?"
        );
        Ok(ExitCode::SUCCESS)
    }

    /// `pause` / `resume`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<ExitCode> {
        self.fetch(name).await?;
        let patch = serde_json::json!({ "spec": { "paused": paused } });
        if let Err(e) = self
            .api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return Err(self.explain(e, Some(name)).await);
        }
        println!(
            "{name}: {}",
            if paused {
                "paused (spec.paused=true)"
            } else {
                "resumed (spec.paused=false)"
            }
        );
        Ok(ExitCode::SUCCESS)
    }

    /// `set image NAME CONTAINER=IMAGE`.
    pub async fn set_image(&self, name: &str, assignment: &str) -> Result<ExitCode> {
        let Some((container, image)) = assignment
            .split_once('=')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty())
        else {
            return Err(Failure::new(format!(
                "expected CONTAINER=IMAGE, got {assignment:?}"
            )));
        };
        let bgd = self.fetch(name).await?;
        if let Some(wref) = &bgd.spec.workload_ref {
            return self
                .set_workload_image(name, &wref.name, container, image)
                .await;
        }
        let containers = bgd
            .spec
            .template
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let Some(index) = containers.iter().position(|c| c.name == container) else {
            let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
            return Err(Failure::new(format!(
                "{name} has no container {container:?} (containers: {})",
                names.join(", ")
            )));
        };
        let mut changed = bgd;
        if let Some(spec) = changed.spec.template.spec.as_mut() {
            spec.containers[index].image = Some(image.to_string());
        }
        self.replace(name, &changed).await?;
        println!("{name}: container {container} image set to {image}; a release starts");
        Ok(ExitCode::SUCCESS)
    }

    /// `set image` on a BlueGreenDeployment with a `workloadRef`: the template is the
    /// Deployment's, so the image is set there (as `kubectl set image deployment` would);
    /// the controller releases the change.
    async fn set_workload_image(
        &self,
        name: &str,
        deployment: &str,
        container: &str,
        image: &str,
    ) -> Result<ExitCode> {
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let d = match api.get(deployment).await {
            Ok(d) => d,
            Err(e) => {
                return Err(self
                    .explain_for::<k8s_openapi::api::apps::v1::Deployment>(
                        e,
                        Some(deployment),
                        "kubectl get deployments shows what there is",
                    )
                    .await);
            }
        };
        let names: Vec<String> = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        if !names.iter().any(|n| n == container) {
            return Err(Failure::new(format!(
                "Deployment {deployment} (the workloadRef of {name}) has no container {container:?} (containers: {})",
                names.join(", ")
            )));
        }
        let patch = serde_json::json!({
            "spec": { "template": { "spec": { "containers": [{ "name": container, "image": image }] } } }
        });
        if let Err(e) = api
            .patch(
                deployment,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            return Err(self
                .explain_for::<k8s_openapi::api::apps::v1::Deployment>(
                    e,
                    Some(deployment),
                    "kubectl get deployments shows what there is",
                )
                .await);
        }
        println!(
            "{name}: container {container} image set to {image} on Deployment {deployment}; a release starts"
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Write `changed` back; the resourceVersion it was read with makes this fail rather
    /// than overwrite a change made in between.
    async fn replace(&self, name: &str, changed: &BlueGreenDeployment) -> Result<()> {
        match self
            .api()
            .replace(name, &PostParams::default(), changed)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(ae)) if ae.code == 409 => Err(Failure::new(format!(
                "{name} changed while this command ran; run it again"
            ))),
            Err(e) => Err(self.explain(e, Some(name)).await),
        }
    }

    /// `undo NAME [--to-revision N]`.
    pub async fn undo(&self, name: &str, to: Option<i64>) -> Result<ExitCode> {
        let bgd = self.fetch(name).await?;
        if let Some(wref) = &bgd.spec.workload_ref {
            return Err(Failure::new(format!(
                "{name} takes its template from Deployment {}: roll that back where it is kept (helm rollback, a git revert, kubectl rollout undo deployment/{}); the controller releases it",
                wref.name, wref.name
            )));
        }
        let st = bgd.status.clone().unwrap_or_default();
        let live_rev = st.revision_of(st.active_color);
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &self.namespace);
        let revisions = match api
            .list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}={name}")))
            .await
        {
            Ok(l) => l.items,
            Err(e) => return Err(self.explain(e, Some(name)).await),
        };
        let mut known: Vec<i64> = revisions.iter().map(|r| r.revision).collect();
        known.sort_unstable();
        known.dedup();
        let target = match to {
            Some(n) => n,
            None => {
                let current = live_rev
                    .ok_or_else(|| Failure::new(format!("{name} has no live revision yet")))?;
                *known.iter().rev().find(|&&r| r < current).ok_or_else(|| {
                    Failure::new(format!(
                        "{name} has no revision before {current} to go back to"
                    ))
                })?
            }
        };
        let Some(rev) = revisions.iter().find(|r| r.revision == target) else {
            return Err(Failure::new(format!(
                "{name} has no revision {target} (known: {})",
                known
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let template = rev
            .data
            .as_ref()
            .and_then(|d| d.0.get("template"))
            .cloned()
            .ok_or_else(|| Failure::new(format!("revision {target} records no template")))?;
        let mut changed = bgd;
        changed.spec.template = serde_json::from_value(template).map_err(|e| {
            Failure::new(format!(
                "revision {target} records an unreadable template: {e}"
            ))
        })?;
        self.replace(name, &changed).await?;
        let standby_rev = st.revision_of(st.standby.as_ref().and_then(|s| s.color));
        if standby_rev == Some(target) {
            println!(
                "{name}: back to revision {target}, which the warm standby runs: traffic switches without new pods"
            );
        } else {
            println!("{name}: back to revision {target}: a release of it starts");
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `status NAME [--wait] [--timeout]`.
    pub async fn status(&self, name: &str, wait: bool, timeout: Duration) -> Result<ExitCode> {
        let settled = |b: &BlueGreenDeployment| -> Option<Phase> {
            let st = b.status.as_ref()?;
            let current = st.observed_generation >= b.metadata.generation;
            match st.phase? {
                Phase::Healthy if current && st.release.is_none() => Some(Phase::Healthy),
                Phase::Degraded if current => Some(Phase::Degraded),
                _ => None,
            }
        };
        let summary = |b: &BlueGreenDeployment| -> String {
            let st = b.status.clone().unwrap_or_default();
            format!(
                "{}: {} (live {}, weight {}%): {}",
                b.name_any(),
                st.phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or("Unknown".into()),
                st.active_color
                    .map(|c| format!("{c:?}").to_lowercase())
                    .unwrap_or("-".into()),
                if st.release.is_some() { st.weight } else { 100 },
                st.message.unwrap_or_default()
            )
        };
        let code = |p: Phase| {
            if p == Phase::Healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        };
        let bgd = self.fetch(name).await?;
        if !wait {
            match self.output {
                Some(o) => print_as(&bgd.status, o)?,
                None => println!("{}", summary(&bgd)),
            }
            return Ok(ExitCode::SUCCESS);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = watcher(
            self.api(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        let mut stream = std::pin::pin!(stream);
        let mut last = String::new();
        let mut current = bgd;
        loop {
            let line = summary(&current);
            if line != last && self.output.is_none() {
                println!("{line}");
                last = line;
            }
            if let Some(p) = settled(&current) {
                if let Some(o) = self.output {
                    print_as(&current.status, o)?;
                }
                return Ok(code(p));
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    eprintln!("{name}: still not settled after {}s", timeout.as_secs());
                    return Ok(ExitCode::from(2));
                }
                Ok(None) => return Err(Failure::new("the watch ended")),
                Ok(Some(Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)))) => {
                    current = b
                }
                Ok(Some(Ok(watcher::Event::Delete(_)))) => {
                    return Err(Failure::new(format!("{name} was deleted")));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    return Err(self
                        .explain(kube::Error::Service(Box::new(e)), Some(name))
                        .await);
                }
            }
        }
    }
}

/// `lint FILE...`: exit 0 when every file is valid, 1 otherwise.
pub fn lint(files: &[PathBuf], output: Option<Output>) -> ExitCode {
    let mut findings = Vec::new();
    for f in files {
        let (label, text) = if f.as_os_str() == "-" {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
            ("<stdin>".to_string(), s)
        } else {
            match std::fs::read_to_string(f) {
                Ok(t) => (f.display().to_string(), t),
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", f.display());
                    return ExitCode::FAILURE;
                }
            }
        };
        findings.extend(crate::lint::lint_text(&label, &text));
    }
    match output {
        Some(o) => {
            if let Err(e) = print_as(&findings, o) {
                eprintln!("error: {e}");
            }
        }
        None => {
            for f in &findings {
                println!("{f}");
            }
            if findings.is_empty() {
                println!("{} file(s) valid", files.len());
            }
        }
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

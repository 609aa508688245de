//! `kubectl cutover`: flags and wiring only. The commands are in `commands.rs` (failover
//! and drills in `failover.rs`), the tree view in `tree.rs`, offline validation in `lint.rs`,
//! the conversion of Argo Rollouts and Flagger manifests in `import/`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod commands;
mod failover;
mod import;
mod lint;
mod policy_view;
mod tree;

/// `get`'s names for FailoverPolicies.
fn policy_kind(word: &str) -> bool {
    matches!(
        word,
        "fp" | "failoverpolicy" | "failoverpolicies" | "failoverpolicy.cutover.dev"
    )
}

/// `get`'s names for BlueGreenDeployments.
fn bgd_kind(word: &str) -> bool {
    matches!(
        word,
        "bgd" | "bluegreendeployment" | "bluegreendeployments" | "bluegreendeployment.cutover.dev"
    )
}

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-cutover",
    bin_name = "kubectl cutover",
    version,
    about = "Drive Cutover blue-green releases (watch, promote, abort, undo, wait in CI, lint) and disaster recovery (failover, drill)"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Flags as kubectl has them.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Output>,
}

/// `-o`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this plugin's version and the version of the controller that leads (read
    /// from its leader-election Lease).
    Version,
    /// Show a BlueGreenDeployment as a tree: colors, revisions, images, ready pods, weight,
    /// step, analysis, recent events. `get fp NAME`: a FailoverPolicy (active member, the
    /// coordination lease's holder, token and state, each member's region and health);
    /// `get fp` lists them.
    Get {
        /// The BlueGreenDeployment, or a kind (`fp`, `failoverpolicy`, `bgd`).
        name: String,
        /// The object's name, after a kind.
        object: Option<String>,
        /// Redraw whenever it changes, until Ctrl-C.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// List BlueGreenDeployments.
    #[command(alias = "ls")]
    List {
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Promote the release now (ends a pause, accepts a held analysis).
    Promote {
        name: String,
        /// Skip every remaining step and take all traffic now.
        #[arg(long)]
        full: bool,
    },
    /// Abort the release: all traffic back on the live color.
    Abort { name: String },
    /// Retry an aborted release.
    Retry { name: String },
    /// Go back to an earlier revision (the previous one by default); instant when that
    /// revision is the warm standby.
    Undo {
        name: String,
        /// The revision to go back to.
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Hold the release at its current step (`spec.paused`).
    Pause { name: String },
    /// Let a paused release go on.
    Resume { name: String },
    /// Print the phase; with --wait, wait for the release to end: exit 0 Healthy,
    /// 1 Degraded, 2 timeout.
    Status {
        name: String,
        /// Wait until Healthy or Degraded.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 10m).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Change an image: `set image NAME CONTAINER=IMAGE`.
    Set {
        #[command(subcommand)]
        what: SetCommand,
    },
    /// Validate manifests offline with the rules the API server applies (schema and CEL).
    Lint {
        /// Files (YAML, several documents each allowed); `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Convert Argo Rollouts (Rollout, AnalysisTemplate, ClusterAnalysisTemplate) and
    /// Flagger (Canary, MetricTemplate) manifests into Cutover objects, printed on stdout.
    ///
    /// Every field that has no Cutover counterpart is listed on stderr (the document, the
    /// field, why); then the exit code is 1 unless --allow-partial. Other documents (Services,
    /// Deployments, ConfigMaps, ...) are passed through; those Cutover replaces (the Services
    /// and TrafficSplit it owns) are left out, and a route or autoscaler that pointed at the
    /// Rollout or its Services is pointed at Cutover's, each with a note on stderr.
    Import {
        /// Files, or folders (their *.yaml and *.yml); `-` reads stdin. Repeatable.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Exit 0 even when some fields could not be translated (they are still listed).
        #[arg(long)]
        allow_partial: bool,
        /// The Prometheus that Flagger's built-in metrics (request-success-rate,
        /// request-duration) query: the -metrics-server flag given to Flagger.
        #[arg(long, value_name = "URL")]
        metrics_server: Option<String>,
    },
    /// Move a FailoverPolicy's traffic to another member now and wait for the move:
    /// exit 0 moved, 1 refused (the reason is printed), 2 timeout.
    ///
    /// The controller refuses a move that would lose more data than the policy's data gate
    /// allows (the target database's replication lag) and, before it promotes the target's
    /// database, waits until the old primary's database is fenced. --force moves anyway,
    /// accepting the data loss.
    Failover {
        /// The FailoverPolicy.
        policy: String,
        /// The member to move to (default: the best healthy standby).
        #[arg(long, value_name = "MEMBER")]
        to: Option<String>,
        /// Move past the data gate and without confirmed fencing of the old primary's
        /// database: accepts the data loss.
        #[arg(long)]
        force: bool,
        /// How long to wait for the move (e.g. 90s, 10m).
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Run a disaster-recovery drill now (traffic to a standby under live traffic, and back)
    /// and print its report: exit 0 Passed, 1 Failed, 2 timeout.
    ///
    /// The controller moves the traffic (only the traffic: the databases keep their roles) to
    /// a healthy standby, checks that it answers, moves it back, and compares the measured RTO
    /// and RPO with the policy's targets. The report (steps, RTO, RPO, requests that failed
    /// through the entry) is also kept in a ConfigMap and in status.lastDrill.
    Drill {
        /// The FailoverPolicy.
        policy: String,
        /// How long to wait for the report (e.g. 90s, 10m).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum SetCommand {
    /// Set a container's image: NAME CONTAINER=IMAGE.
    Image { name: String, assignment: String },
}

/// `30s`, `10m`, `1h`, `1h30m`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?} (e.g. 90s, 10m, 1h)"))?;
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("invalid duration {text:?} (e.g. 90s, 10m, 1h)")),
        };
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: a unit is missing (s, m, h)"
        ));
    }
    Ok(Duration::from_secs(total))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Command::Lint { files } = &cli.command {
        return commands::lint(files, cli.global.output);
    }
    if let Command::Import {
        files,
        allow_partial,
        metrics_server,
    } = &cli.command
    {
        let options = import::Options {
            metrics_server: metrics_server.clone(),
        };
        return import::run(files, *allow_partial, cli.global.output, &options);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let ctx = commands::Ctx::connect(&cli.global).await?;
        match cli.command {
            Command::Get {
                name,
                object,
                watch,
            } => match (policy_kind(&name), object) {
                (true, Some(object)) => ctx.get_policy(&object, watch).await,
                (true, None) => ctx.list_policies().await,
                (false, Some(object)) if bgd_kind(&name) => ctx.get(&object, watch).await,
                (false, Some(_)) => Err(commands::Failure::new(format!(
                    "get: unknown kind {name:?} (fp or bgd)"
                ))),
                (false, None) => ctx.get(&name, watch).await,
            },
            Command::List { all_namespaces } => ctx.list(all_namespaces).await,
            Command::Version => ctx.version().await,
            Command::Promote { name, full } => {
                let key = if full {
                    cutover_api::requests::PROMOTE_FULL
                } else {
                    cutover_api::requests::PROMOTE
                };
                ctx.request(&name, key).await
            }
            Command::Abort { name } => ctx.request(&name, cutover_api::requests::ABORT).await,
            Command::Retry { name } => ctx.request(&name, cutover_api::requests::RETRY).await,
            Command::Undo { name, to_revision } => ctx.undo(&name, to_revision).await,
            Command::Pause { name } => ctx.set_paused(&name, true).await,
            Command::Resume { name } => ctx.set_paused(&name, false).await,
            Command::Status {
                name,
                wait,
                timeout,
            } => ctx.status(&name, wait, timeout).await,
            Command::Set {
                what: SetCommand::Image { name, assignment },
            } => ctx.set_image(&name, &assignment).await,
            Command::Failover {
                policy,
                to,
                force,
                timeout,
            } => ctx.failover(&policy, to.as_deref(), force, timeout).await,
            Command::Drill { policy, timeout } => ctx.drill(&policy, timeout).await,
            Command::Lint { .. } | Command::Import { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kubectl() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("10m5").is_err());
    }
}

//! One container as a local process: the binary its image names, its command and args with
//! `$(VAR)` expanded as Kubernetes does, its env (values and the common field references),
//! its own process group and the pod's network namespace, output to a log file.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::network::{self, PodNet};

/// The binary an image names: `registry/path/cutover-demo-app:v1` → `cutover-demo-app`.
pub fn binary_of(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let no_digest = last.split('@').next().unwrap_or(last);
    no_digest.split(':').next().unwrap_or(no_digest)
}

/// Expand `$(NAME)` from `vars`; `$$` escapes; unknown names stay as written.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field(pod: &Pod, ip: &str, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "status.podIP" | "status.hostIP" => Some(ip.to_string()),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        _ => {
            let key = path.strip_prefix("metadata.labels['")?.strip_suffix("']")?;
            meta.labels.as_ref()?.get(key).cloned()
        }
    }
}

/// The container's environment, in order, each value expanded against the ones before.
pub fn env_of(pod: &Pod, c: &Container, ip: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(expand(v, &vars)),
            (None, Some(from)) => from
                .field_ref
                .as_ref()
                .and_then(|f| field(pod, ip, &f.field_path)),
            _ => None,
        };
        if let Some(v) = value {
            vars.insert(e.name.clone(), v);
        }
    }
    vars
}

/// Start `c` of `pod` in the pod's network namespace.
pub fn spawn(
    pod: &Pod,
    c: &Container,
    net: &PodNet,
    bin_dir: &Path,
    log: &Path,
) -> std::io::Result<Child> {
    let env = env_of(pod, c, &net.ip);
    let resolve = |name: &str| -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            bin_dir.join(binary_of(name))
        }
    };
    let mut argv: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, &env))
        .collect();
    let program = if c.command.as_ref().is_some_and(|c| !c.is_empty()) {
        resolve(&argv.remove(0))
    } else {
        resolve(c.image.as_deref().unwrap_or_default())
    };
    let out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    network::exec_in(&net.netns, &program)
        .args(argv)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
}

/// Signal the container's process group.
pub fn signal(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_name_binaries() {
        assert_eq!(binary_of("cutover-demo-app:v1"), "cutover-demo-app");
        assert_eq!(
            binary_of("ghcr.io/x/cutover-demo-app@sha256:ab"),
            "cutover-demo-app"
        );
        assert_eq!(binary_of("plain"), "plain");
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = BTreeMap::from([("POD_IP".to_string(), "127.77.0.2".to_string())]);
        assert_eq!(expand("$(POD_IP):8080", &vars), "127.77.0.2:8080");
        assert_eq!(
            expand("$$(POD_IP) $(NOPE) $x", &vars),
            "$(POD_IP) $(NOPE) $x"
        );
    }
}

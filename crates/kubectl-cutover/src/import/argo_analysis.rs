//! Argo Rollouts `AnalysisTemplate` and `ClusterAnalysisTemplate` → Cutover's
//! `AnalysisTemplate` and `ClusterAnalysisTemplate` (same names, same argument syntax
//! `{{args.NAME}}`). Metrics keep their schedule and limits; providers `prometheus`, `web`
//! and `job` carry over; conditions are rewritten by [`super::conditions`].

use cutover_api::analysis::{
    AnalysisTemplate, AnalysisTemplateSpec, ArgSpec, ClusterAnalysisTemplate,
    ClusterAnalysisTemplateSpec, JobProvider, Metric, PrometheusProvider, Provider, WebHeader,
    WebProvider,
};
use serde_json::Value;

use super::conditions::{self, ResultShape};
use super::{
    Source, Translation, at, boolean, entries, field, int, is_duration, items, kind_of, metadata,
    required_name, scalar_text, text,
};

/// The arguments Cutover gives every analysis; a template's default cannot replace them.
pub(crate) const BUILTIN_ARGS: &[&str] = &[
    "namespace",
    "name",
    "revision",
    "color",
    "liveColor",
    "liveService",
    "previewService",
    "newService",
    "liveColorService",
];

/// The most seconds Cutover waits for a provider.
const MAX_TIMEOUT_SECONDS: i64 = 300;

/// `{{ args.x }}` written as Cutover documents it, `{{args.x}}` (both work).
pub(crate) fn placeholders(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = after[..end].trim();
        if inner.starts_with("args.") {
            out.push_str("{{");
            out.push_str(inner);
            out.push_str("}}");
        } else {
            out.push_str(&rest[start..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// An AnalysisTemplate or ClusterAnalysisTemplate of Argo Rollouts.
pub(crate) fn template(doc: &Value, src: &mut Source<'_>) -> Translation {
    let cluster = kind_of(doc) == Some("ClusterAnalysisTemplate");
    let Some(name) = required_name(doc, "a template", src) else {
        return Translation::default();
    };
    let mut meta = metadata(doc, name, src);
    let mut args = Vec::new();
    let mut metrics = Vec::new();
    let mut jobs = Vec::new();
    for (key, value) in entries(doc.get("spec")) {
        let path = field("spec", key);
        match key {
            "args" => {
                for (i, a) in items(Some(value)).iter().enumerate() {
                    if let Some(arg) = template_arg(a, &at(&path, i), src) {
                        args.push(arg);
                    }
                }
            }
            "metrics" => {
                for (i, m) in items(Some(value)).iter().enumerate() {
                    if let Some((metric, job)) = metric(m, &at(&path, i), src) {
                        if let Some(job) = job {
                            jobs.push((metrics.len(), job));
                        }
                        metrics.push(metric);
                    }
                }
            }
            "dryRun" => src.skip(
                &path,
                "Cutover has no dry-run metrics: every metric of a template gates the release",
            ),
            "measurementRetention" => src.skip(
                &path,
                "Cutover keeps the 10 newest measurements of each metric (and counts them all)",
            ),
            _ => src.unknown(&path),
        }
    }
    if metrics.is_empty() {
        src.skip(
            "spec.metrics",
            "no metric could be translated, so the template was not written",
        );
        return Translation::default();
    }
    let mut object = if cluster {
        // Cluster-scoped: no namespace.
        meta.namespace = None;
        let mut t =
            ClusterAnalysisTemplate::new(name, ClusterAnalysisTemplateSpec { args, metrics });
        t.metadata = meta;
        serde_json::to_value(&t)
    } else {
        let mut t = AnalysisTemplate::new(name, AnalysisTemplateSpec { args, metrics });
        t.metadata = meta;
        serde_json::to_value(&t)
    }
    .unwrap_or_default();
    for (i, spec) in jobs {
        if let Some(slot) = object.pointer_mut(&format!("/spec/metrics/{i}/provider/job/spec")) {
            *slot = spec;
        }
    }
    Translation {
        objects: vec![object],
        claims: Vec::new(),
    }
}

/// A declared argument of a template.
fn template_arg(a: &Value, path: &str, src: &mut Source<'_>) -> Option<ArgSpec> {
    let mut arg = ArgSpec::default();
    for (key, value) in entries(Some(a)) {
        let p = field(path, key);
        match key {
            "name" => arg.name = text(value, &p, src)?.to_owned(),
            "value" => arg.value = scalar_text(value).map(|v| placeholders(&v)),
            "valueFrom" => {
                for (from, _) in entries(Some(value)) {
                    let why = match from {
                        "secretKeyRef" => {
                            "Cutover's arguments are plain values: it cannot read one from a \
                             Secret. The argument stays declared without a value, so a release \
                             that does not give it fails to start the analysis (rather than run \
                             it without the secret)"
                        }
                        _ => "Cutover's template arguments are plain values",
                    };
                    src.skip(&field(&p, from), why);
                }
            }
            _ => src.unknown(&p),
        }
    }
    if arg.name.is_empty() {
        src.skip(&field(path, "name"), "an argument needs a name");
        return None;
    }
    if arg.value.is_some() && BUILTIN_ARGS.contains(&arg.name.as_str()) {
        src.skip(
            &field(path, "value"),
            format!(
                "`{}` is one of Cutover's built-in arguments, which a template default does not \
                 replace (a release's own args do): pass the value from the \
                 BlueGreenDeployment, or rename the argument",
                arg.name
            ),
        );
        arg.value = None;
    }
    Some(arg)
}

/// A duration field (`interval`, `initialDelay`).
fn duration(value: &Value, path: &str, src: &mut Source<'_>) -> Option<String> {
    let s = match value {
        Value::Number(n) if n.as_i64().is_some() => format!("{n}s"),
        Value::String(s) if s.parse::<i64>().is_ok() => format!("{s}s"),
        Value::String(s) => s.clone(),
        other => {
            src.skip(
                path,
                format!("expected a duration such as 30s, found {other}"),
            );
            return None;
        }
    };
    if is_duration(&s) {
        return Some(s);
    }
    src.skip(
        path,
        format!(
            "{s:?} is not a duration Cutover's schema accepts (e.g. 30s, 5m): an argument cannot \
             stand for it; the default applies"
        ),
    );
    None
}

/// A limit or count: a whole number, at least `min`.
fn count(value: &Value, path: &str, min: i64, src: &mut Source<'_>) -> Option<i32> {
    if let Some(s) = value.as_str()
        && s.contains("{{")
    {
        src.skip(
            path,
            format!(
                "{s:?}: Cutover's counts and limits are numbers, an argument cannot stand for \
                 them; the default applies"
            ),
        );
        return None;
    }
    let n = int(value, path, src)?;
    if n < min {
        src.skip(
            path,
            format!("{n}: Cutover's counts and limits start at {min}; the default applies"),
        );
        return None;
    }
    i32::try_from(n).ok()
}

/// One metric; its Job spec as written (kept as is) for the job provider.
pub(crate) fn metric(
    m: &Value,
    path: &str,
    src: &mut Source<'_>,
) -> Option<(Metric, Option<Value>)> {
    let mut metric = Metric::default();
    let mut job = None;
    let mut shape = ResultShape::Json;
    let mut provider_ok = false;
    // The provider first: it decides how conditions read the result.
    if let Some(p) = m.get("provider") {
        let provider_path = field(path, "provider");
        if let Some((provider, s, j)) = provider(p, &provider_path, src) {
            metric.provider = provider;
            shape = s;
            job = j;
            provider_ok = true;
        }
    } else {
        src.skip(&field(path, "provider"), "missing; the metric was left out");
    }
    let mut conditions_ok = true;
    for (key, value) in entries(Some(m)) {
        let p = field(path, key);
        match key {
            "name" => metric.name = text(value, &p, src).unwrap_or_default().to_owned(),
            "provider" => {}
            "interval" => metric.interval = duration(value, &p, src),
            "initialDelay" => metric.initial_delay = duration(value, &p, src),
            "count" => metric.count = count(value, &p, 1, src),
            "failureLimit" => metric.failure_limit = count(value, &p, 0, src),
            "inconclusiveLimit" => metric.inconclusive_limit = count(value, &p, 0, src),
            "consecutiveErrorLimit" => metric.consecutive_error_limit = count(value, &p, 0, src),
            "consecutiveSuccessLimit" => {
                if value.as_i64() != Some(0) {
                    src.skip(
                        &p,
                        "Cutover has no consecutive-success limit: a metric passes when its \
                         count is reached within the failure limit",
                    );
                }
            }
            "successCondition" | "failureCondition" => {
                let Some(source) = text(value, &p, src) else {
                    conditions_ok = false;
                    continue;
                };
                match condition(source, shape, &p, src) {
                    Some(cel) if key == "successCondition" => metric.success_condition = Some(cel),
                    Some(cel) => metric.failure_condition = Some(cel),
                    None => conditions_ok = false,
                }
            }
            _ => src.unknown(&p),
        }
    }
    if metric.name.is_empty() {
        src.skip(
            &field(path, "name"),
            "a metric needs a name; it was left out",
        );
        return None;
    }
    if !provider_ok || !conditions_ok {
        return None;
    }
    // A web answer read without a JSON path is text in Cutover (a number when it parses as
    // one); Argo decoded JSON bodies. Conditions that read fields, items or booleans need
    // the JSON.
    if let Some(web) = metric.provider.web.as_mut()
        && web.json_path.is_none()
        && [&m.get("successCondition"), &m.get("failureCondition")]
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .any(conditions::reads_structure)
    {
        web.json_path = Some("$".to_owned());
    }
    Some((metric, job))
}

/// A condition rewritten into Cutover's language, or `None` (reported) when it cannot be.
pub(crate) fn condition(
    source: &str,
    shape: ResultShape,
    path: &str,
    src: &mut Source<'_>,
) -> Option<String> {
    match conditions::rewrite(&placeholders(source), shape) {
        Ok(r) => {
            if let Some(tests) = r.missing_data {
                src.skip(
                    path,
                    format!(
                        "`{}` decides about missing data ({tests}); Cutover judges an empty or \
                         NaN result Inconclusive before any condition runs, so it was written \
                         as `{}`, which judges every other value the same way",
                        source.trim(),
                        r.cel
                    ),
                );
            }
            Some(r.cel)
        }
        Err(why) => {
            src.skip(
                path,
                format!(
                    "`{}` cannot be rewritten into Cutover's conditions (CEL): {why}; the \
                     metric was left out",
                    source.trim()
                ),
            );
            None
        }
    }
}

/// A timeout in seconds, within what Cutover allows.
fn timeout(value: &Value, path: &str, src: &mut Source<'_>) -> Option<i32> {
    let n = int(value, path, src)?;
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&n) {
        src.skip(
            path,
            format!("{n}s: Cutover's provider timeouts are 1 to {MAX_TIMEOUT_SECONDS} seconds"),
        );
        return None;
    }
    i32::try_from(n).ok()
}

fn headers(value: &Value, path: &str, src: &mut Source<'_>) -> Vec<WebHeader> {
    let mut out = Vec::new();
    for (i, h) in items(Some(value)).iter().enumerate() {
        let p = at(path, i);
        let key = h.get("key").and_then(Value::as_str);
        let val = h.get("value").and_then(scalar_text);
        match (key, val) {
            (Some(k), Some(v)) => out.push(WebHeader {
                key: k.to_owned(),
                value: placeholders(&v),
            }),
            _ => src.skip(&p, "a header needs a key and a value"),
        }
    }
    out
}

/// Argo's JSONPath (Kubernetes style, `{$.data.ok}`) as RFC 9535 (`$.data.ok`).
fn json_path(argo: &str) -> Result<String, String> {
    let trimmed = argo.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(trimmed)
        .trim();
    if inner.contains('{') || inner.contains("range") {
        return Err(format!(
            "{argo:?}: Kubernetes JSONPath templates (several expressions, range) have no \
             counterpart; Cutover reads one RFC 9535 path"
        ));
    }
    if inner.starts_with('$') {
        Ok(inner.to_owned())
    } else if inner.starts_with('.') || inner.starts_with('[') {
        Ok(format!("${inner}"))
    } else {
        Err(format!("{argo:?} is not a JSONPath"))
    }
}

/// The provider of a metric, the shape of its result and, for a Job, its spec.
fn provider(
    p: &Value,
    path: &str,
    src: &mut Source<'_>,
) -> Option<(Provider, ResultShape, Option<Value>)> {
    let mut found = None;
    for (kind, value) in entries(Some(p)) {
        let ppath = field(path, kind);
        if found.is_some() {
            src.skip(&ppath, "a metric has one provider; the first one was used");
            continue;
        }
        found = match kind {
            "prometheus" => prometheus(value, &ppath, src).map(|pr| {
                (
                    Provider {
                        prometheus: Some(pr),
                        ..Provider::default()
                    },
                    ResultShape::Prometheus,
                    None,
                )
            }),
            "web" => web(value, &ppath, src).map(|w| {
                (
                    Provider {
                        web: Some(w),
                        ..Provider::default()
                    },
                    ResultShape::Json,
                    None,
                )
            }),
            "job" => job(value, &ppath, src).map(|spec| {
                (
                    Provider {
                        job: Some(JobProvider::default()),
                        ..Provider::default()
                    },
                    ResultShape::Json,
                    Some(spec),
                )
            }),
            other => {
                src.skip(
                    &ppath,
                    format!(
                        "Cutover measures with prometheus, web, job and compare; {other} has no \
                         counterpart, so the metric was left out"
                    ),
                );
                return None;
            }
        };
        found.as_ref()?;
    }
    if found.is_none() && entries(Some(p)).is_empty() {
        src.skip(path, "no provider; the metric was left out");
    }
    found
}

fn prometheus(v: &Value, path: &str, src: &mut Source<'_>) -> Option<PrometheusProvider> {
    let mut out = PrometheusProvider::default();
    let mut ok = true;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "address" => out.address = placeholders(text(value, &p, src).unwrap_or_default()),
            "query" => out.query = placeholders(text(value, &p, src).unwrap_or_default()),
            "timeout" => out.timeout_seconds = timeout(value, &p, src),
            "headers" => {
                if !items(Some(value)).is_empty() {
                    src.skip(
                        &p,
                        "Cutover's Prometheus provider sends no extra headers (a tenant header \
                         such as X-Scope-OrgID belongs in a proxy in front of Prometheus)",
                    );
                }
            }
            "insecure" => {
                if boolean(value, &p, src) == Some(true) {
                    src.skip(&p, "Cutover always verifies the Prometheus TLS certificate");
                }
            }
            "authentication" => src.skip(
                &p,
                "Cutover's Prometheus provider has no authentication (sigv4, oauth2): the \
                 metric was left out",
            ),
            "rangeQuery" => {
                src.skip(
                    &p,
                    "Cutover runs instant queries; a range query has no counterpart (the \
                     compare provider reads a window per color): the metric was left out",
                );
                ok = false;
            }
            _ => src.unknown(&p),
        }
        if key == "authentication" {
            ok = false;
        }
    }
    if out.address.is_empty() || out.query.is_empty() {
        src.skip(
            path,
            "needs an address and a query; the metric was left out",
        );
        return None;
    }
    ok.then_some(out)
}

fn web(v: &Value, path: &str, src: &mut Source<'_>) -> Option<WebProvider> {
    let mut out = WebProvider::default();
    let mut ok = true;
    let mut json_body = None;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "url" => out.url = placeholders(text(value, &p, src).unwrap_or_default()),
            "method" => match value.as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("GET") => {}
                Some("POST") => out.method = Some("POST".to_owned()),
                _ => {
                    src.skip(
                        &p,
                        format!("{value}: Cutover's web provider sends GET or POST; the metric was left out"),
                    );
                    ok = false;
                }
            },
            "headers" => out.headers = headers(value, &p, src),
            "body" => out.body = text(value, &p, src).map(placeholders),
            "jsonBody" => {
                json_body = Some(placeholders(&value.to_string()));
            }
            "jsonPath" => match text(value, &p, src).map(json_path) {
                Some(Ok(path)) => out.json_path = Some(path),
                Some(Err(why)) => {
                    src.skip(&p, format!("{why}; the metric was left out"));
                    ok = false;
                }
                None => ok = false,
            },
            "timeoutSeconds" => out.timeout_seconds = timeout(value, &p, src),
            "insecure" => {
                if boolean(value, &p, src) == Some(true) {
                    src.skip(
                        &p,
                        "Cutover always verifies TLS certificates of web metrics",
                    );
                }
            }
            "authentication" => {
                src.skip(
                    &p,
                    "Cutover's web provider has no authentication (oauth2, sigv4); a static \
                     Authorization header is the closest: the metric was left out",
                );
                ok = false;
            }
            _ => src.unknown(&p),
        }
    }
    if let Some(body) = json_body {
        // Argo sets the content type of a jsonBody.
        out.body = Some(body);
        if !out
            .headers
            .iter()
            .any(|h| h.key.eq_ignore_ascii_case("content-type"))
        {
            out.headers.push(WebHeader {
                key: "Content-Type".to_owned(),
                value: "application/json".to_owned(),
            });
        }
    }
    if out.url.is_empty() {
        src.skip(path, "needs a url; the metric was left out");
        return None;
    }
    ok.then_some(out)
}

fn job(v: &Value, path: &str, src: &mut Source<'_>) -> Option<Value> {
    let mut spec = None;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "spec" => spec = Some(value.clone()),
            "metadata" => src.skip(
                &p,
                "Cutover names and labels the Jobs it runs itself; these labels and \
                 annotations are not set",
            ),
            _ => src.unknown(&p),
        }
    }
    if spec.is_none() {
        src.skip(path, "needs a Job spec; the metric was left out");
    }
    spec
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn translate(doc: Value) -> (Vec<Value>, Vec<super::super::Untranslated>) {
        let mut out = Vec::new();
        let mut src = Source {
            name: "AnalysisTemplate/t".into(),
            out: &mut out,
        };
        let t = template(&doc, &mut src);
        (t.objects, out)
    }

    #[test]
    fn a_prometheus_template_keeps_its_schedule_limits_and_args() {
        let (objects, untranslated) = translate(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": { "name": "success-rate", "namespace": "prod" },
            "spec": {
                "args": [ { "name": "service-name" }, { "name": "threshold", "value": "0.95" } ],
                "metrics": [ {
                    "name": "success-rate", "interval": "5m", "count": 3, "initialDelay": "30s",
                    "failureLimit": 1, "inconclusiveLimit": 2, "consecutiveErrorLimit": 5,
                    "successCondition": "result[0] >= {{ args.threshold }}",
                    "failureCondition": "result[0] < 0.5",
                    "provider": { "prometheus": {
                        "address": "http://prometheus:9090", "timeout": 40,
                        "query": "sum(rate(x{service=\"{{args.service-name}}\"}[5m]))"
                    } }
                } ]
            }
        }));
        assert_eq!(untranslated, vec![]);
        assert_eq!(
            objects,
            vec![json!({
                "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": { "name": "success-rate", "namespace": "prod" },
                "spec": {
                    "args": [ { "name": "service-name" }, { "name": "threshold", "value": "0.95" } ],
                    "metrics": [ {
                        "name": "success-rate", "interval": "5m", "count": 3, "initialDelay": "30s",
                        "failureLimit": 1, "inconclusiveLimit": 2, "consecutiveErrorLimit": 5,
                        "successCondition": "result >= {{args.threshold}}",
                        "failureCondition": "result < 0.5",
                        "provider": { "prometheus": {
                            "address": "http://prometheus:9090", "timeoutSeconds": 40,
                            "query": "sum(rate(x{service=\"{{args.service-name}}\"}[5m]))"
                        } }
                    } ]
                }
            })]
        );
    }

    #[test]
    fn web_job_and_untranslatable_metrics() {
        let (objects, untranslated) = translate(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "ClusterAnalysisTemplate",
            "metadata": { "name": "checks", "namespace": "ignored" },
            "spec": {
                "args": [ { "name": "token", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } } ],
                "metrics": [
                    { "name": "ok", "successCondition": "result.successful == true",
                      "provider": { "web": { "url": "http://x/{{ args.token }}", "jsonPath": "{$.data}",
                        "method": "POST", "jsonBody": { "a": 1 } } } },
                    { "name": "plain", "successCondition": "result == true",
                      "provider": { "web": { "url": "http://x/ok" } } },
                    { "name": "smoke", "provider": { "job": { "metadata": { "labels": { "a": "b" } },
                      "spec": { "backoffLimit": 0, "template": { "spec": { "restartPolicy": "Never",
                        "containers": [ { "name": "t", "image": "curl" } ] } } } } } },
                    { "name": "dd", "provider": { "datadog": { "query": "x" } } },
                    { "name": "pow", "successCondition": "result ** 2 < 4",
                      "provider": { "web": { "url": "http://x" } } }
                ]
            }
        }));
        let paths: Vec<&str> = untranslated.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "spec.args[0].valueFrom.secretKeyRef",
                "spec.metrics[2].provider.job.metadata",
                "spec.metrics[3].provider.datadog",
                "spec.metrics[4].successCondition",
            ]
        );
        let t = &objects[0];
        assert_eq!(t["kind"], "ClusterAnalysisTemplate");
        assert!(t["metadata"].get("namespace").is_none());
        let metrics = t["spec"]["metrics"].as_array().expect("metrics");
        assert_eq!(metrics.len(), 3);
        assert_eq!(
            metrics[0]["provider"]["web"],
            json!({ "url": "http://x/{{args.token}}", "jsonPath": "$.data", "method": "POST",
                    "body": "{\"a\":1}",
                    "headers": [ { "key": "Content-Type", "value": "application/json" } ] })
        );
        assert_eq!(metrics[0]["successCondition"], "result.successful == true");
        // `result == true` on a body read whole: Cutover has to read it as JSON.
        assert_eq!(metrics[1]["provider"]["web"]["jsonPath"], "$");
        assert_eq!(metrics[2]["provider"]["job"]["spec"]["backoffLimit"], 0);
        assert_eq!(t["spec"]["args"], json!([ { "name": "token" } ]));
    }
}

//! `kubectl cutover lint FILE`: validate manifests offline, with the rules the API server
//! applies to a create with `fieldValidation=Strict` (what `kubectl create`/`apply` send).
//!
//! Every YAML document of the `cutover.dev` group is checked against the CRD of its kind
//! (from [`cutover_api::crds`]), in the order kube-apiserver works:
//!
//! 1. unknown fields: reported (strict field validation) and pruned, except under
//!    `x-kubernetes-preserve-unknown-fields` and in `additionalProperties` maps;
//! 2. `null` in a non-nullable field: dropped, or replaced by the field's `default`; then
//!    every absent field with a `default` gets it;
//! 3. `status` is dropped when the version has a status subresource (create ignores it);
//! 4. `metadata`: a name (or `generateName`), a DNS-1123 subdomain; labels, annotations;
//! 5. the OpenAPI v3 schema: types, `required`, `enum`, bounds, lengths, `pattern`, …;
//! 6. the scale subresource's replicas;
//! 7. the CEL rules (`x-kubernetes-validations`), with `self` bound to the value of their
//!    node, unless an earlier problem is one the server treats as blocking (a wrong type, a
//!    missing required field, a value outside an `enum`, too long, too many); transition
//!    rules (`oldSelf`) are skipped, as on a create.
//!
//! Other documents are not checked. All problems are returned, not only the first.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};

use cel::objects::{Key, Value as Cel};
use regex::Regex;
use serde::Deserialize as _;
use serde_json::{Map, Value};

/// The API group whose documents are checked.
const GROUP: &str = "cutover.dev";

/// Fields of `metadata` (ObjectMeta) a manifest may set.
const OBJECT_META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// What the server appends to `generateName` (5 random characters): only its length matters.
const GENERATED_SUFFIX: &str = "x7b2q";

/// Longest `generateName` prefix the server keeps (63 - 5).
const MAX_GENERATE_NAME_PREFIX: usize = 58;

/// Total size of all annotations (keys and values).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Reported (as the server does) when CEL rules are skipped because of blocking problems.
const RULES_NOT_CHECKED: &str = "some validation rules were not checked because the object was \
                                 invalid; correct the existing errors to complete validation";

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file, as given.
    pub file: String,
    /// `Kind/name`, or `Kind/<document N>` when the object has no name.
    pub object: String,
    /// JSON path of the field in Kubernetes style (`spec.strategy.steps[1].setWeight`);
    /// empty when the problem is not about one field (a YAML syntax error).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.file, self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Validate every YAML document in `text` (the content of `file`) against the Cutover CRDs,
/// with the rules the API server applies: the CRD's OpenAPI v3 schema and its CEL
/// `x-kubernetes-validations`. Documents of other API groups are not checked (no finding).
pub fn lint_text(file: &str, text: &str) -> Vec<Finding> {
    static CRDS: LazyLock<Vec<Value>> = LazyLock::new(|| {
        cutover_api::crds()
            .iter()
            .filter_map(|crd| serde_json::to_value(crd).ok())
            .collect()
    });
    let crds = CRDS.as_slice();
    let mut problems = Vec::new();
    for (index, document) in documents(text).into_iter().enumerate() {
        let label = format!("<document {}>", index + 1);
        match document {
            Err(message) => problems.push(Problem {
                object: label,
                field: String::new(),
                message,
            }),
            Ok(Value::Null) => {}
            Ok(object) => lint_document(crds, &object, &label, &mut problems),
        }
    }
    problems
        .into_iter()
        .map(|p| Finding {
            file: file.to_owned(),
            object: p.object,
            field: p.field,
            message: p.message,
        })
        .collect()
}

/// A finding before the file name is added.
#[derive(Debug)]
struct Problem {
    object: String,
    field: String,
    message: String,
}

/// The documents of a YAML stream, as JSON; a syntax error ends the stream.
pub(crate) fn documents(text: &str) -> Vec<Result<Value, String>> {
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(document) {
            Ok(value) => out.push(yaml_to_json(value)),
            Err(e) => {
                out.push(Err(format!("invalid YAML: {e}")));
                break;
            }
        }
    }
    out
}

/// YAML to JSON as kubectl sends it: scalar keys become strings, tags are dropped.
fn yaml_to_json(value: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Yaml;
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{n} is not a number JSON can carry"))?
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(mapping) => {
            let mut out = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Null => "null".to_owned(),
                    other => {
                        return Err(format!(
                            "a mapping key must be a string, found {}",
                            serde_yaml::to_string(&other).unwrap_or_default().trim_end()
                        ));
                    }
                };
                out.insert(key, yaml_to_json(value)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

/// What the server needs to know about the CRD version an object is of.
#[derive(Debug)]
struct Version<'a> {
    schema: &'a Value,
    namespaced: bool,
    status_subresource: bool,
    spec_replicas_path: Option<&'a str>,
}

fn lint_document(crds: &[Value], document: &Value, label: &str, out: &mut Vec<Problem>) {
    let Some(map) = document.as_object() else {
        out.push(Problem {
            object: label.to_owned(),
            field: String::new(),
            message: format!(
                "a manifest must be a mapping (a Kubernetes object), not {}",
                json_type(document)
            ),
        });
        return;
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty());
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let object = match (kind, name) {
        (Some(kind), Some(name)) => format!("{kind}/{name}"),
        (Some(kind), None) => format!("{kind}/{label}"),
        (None, _) => label.to_owned(),
    };
    let mut problem = |field: &str, message: String| {
        out.push(Problem {
            object: object.clone(),
            field: field.to_owned(),
            message,
        });
    };
    let Some(api_version) = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    else {
        problem("apiVersion", "apiVersion must be set (a string)".to_owned());
        return;
    };
    let Some(kind) = kind else {
        problem("kind", "kind must be set (a string)".to_owned());
        return;
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if group.is_empty() && version == "v1" && kind.ends_with("List") {
        // A `v1` List: kubectl creates its items one by one.
        if let Some(items) = map.get("items").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                lint_document(crds, item, &format!("{label} item {i}"), out);
            }
        }
        return;
    }
    if group != GROUP {
        return;
    }
    let kind_of = |crd: &Value| {
        crd.pointer("/spec/names/kind")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let Some(crd) = crds
        .iter()
        .find(|crd| kind_of(crd).as_deref() == Some(kind))
    else {
        let known: Vec<String> = crds.iter().filter_map(kind_of).collect();
        problem(
            "kind",
            format!(
                "no kind {kind:?} in API group {GROUP} (its kinds: {})",
                known.join(", ")
            ),
        );
        return;
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let served: Vec<&str> = versions
        .iter()
        .filter(|v| v.get("served") != Some(&Value::Bool(false)))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    let Some(crd_version) = versions
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
        .filter(|_| served.contains(&version))
    else {
        problem(
            "apiVersion",
            format!(
                "{kind} has no served version {version:?} (served: {})",
                served
                    .iter()
                    .map(|v| format!("{GROUP}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return;
    };
    let Some(schema) = crd_version.pointer("/schema/openAPIV3Schema") else {
        return;
    };
    let version = Version {
        schema,
        namespaced: crd.pointer("/spec/scope").and_then(Value::as_str) == Some("Namespaced"),
        status_subresource: crd_version.pointer("/subresources/status").is_some(),
        spec_replicas_path: crd_version
            .pointer("/subresources/scale/specReplicasPath")
            .and_then(Value::as_str),
    };
    let mut checker = Checker::default();
    checker.run(document.clone(), &version);
    for issue in checker.issues {
        problem(&issue.field, issue.message);
    }
}

/// One problem, and whether the server would skip the CEL rules because of it.
#[derive(Debug)]
struct Issue {
    field: String,
    message: String,
    blocking: bool,
}

/// Validates one object; keeps compiled patterns and rules.
#[derive(Debug, Default)]
struct Checker {
    issues: Vec<Issue>,
    patterns: HashMap<String, Result<Regex, String>>,
    programs: HashMap<String, Rc<Result<cel::Program, String>>>,
}

impl Checker {
    fn issue(&mut self, field: &str, message: impl Into<String>, blocking: bool) {
        self.issues.push(Issue {
            field: field.to_owned(),
            message: message.into(),
            blocking,
        });
    }

    fn run(&mut self, mut object: Value, version: &Version<'_>) {
        let schema = version.schema;
        self.prune(&mut object, schema, "", true);
        prune_nulls(&mut object, Some(schema));
        apply_defaults(&mut object, Some(schema));
        if version.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        self.metadata(&mut object, version.namespaced);
        self.validate(&object, schema, "", true);
        if let Some(path) = version.spec_replicas_path {
            self.scale_replicas(&object, path);
        }
        if has_rules(schema) {
            if self.issues.iter().any(|i| i.blocking) {
                self.issue("", RULES_NOT_CHECKED, false);
            } else {
                self.rules(&object, schema, "", true);
            }
        }
    }

    /// Reports and removes unknown fields, as the server's pruning with strict field
    /// validation does. `resource`: the node is an object root (`apiVersion`, `kind`,
    /// `metadata` allowed).
    fn prune(&mut self, value: &mut Value, schema: &Value, path: &str, resource: bool) {
        match value {
            Value::Object(map) => {
                let resource = resource || flag(schema, "x-kubernetes-embedded-resource");
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields")
                    || additional == Some(&Value::Bool(true));
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let Some(child) = map.get_mut(&key) else {
                        continue;
                    };
                    if let Some(property) = properties.and_then(|p| p.get(&key)) {
                        self.prune(child, property, &field(path, &key), false);
                    } else if resource && (key == "apiVersion" || key == "kind") {
                    } else if resource && key == "metadata" {
                        self.prune_metadata(child, &field(path, &key));
                    } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                        self.prune(child, additional, &entry(path, &key), false);
                    } else if !preserve {
                        self.issue(
                            &field(path, &key),
                            format!("unknown field \"{key}\""),
                            false,
                        );
                        map.remove(&key);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, value) in items.iter_mut().enumerate() {
                        self.prune(value, item, &index(path, i), false);
                    }
                }
            }
            _ => {}
        }
    }

    fn prune_metadata(&mut self, metadata: &mut Value, path: &str) {
        if let Value::Object(map) = metadata {
            let unknown: Vec<String> = map
                .keys()
                .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                .cloned()
                .collect();
            for key in unknown {
                self.issue(
                    &field(path, &key),
                    format!("unknown field \"{key}\""),
                    false,
                );
                map.remove(&key);
            }
        }
    }

    /// ObjectMeta of the object itself: types, name, namespace, labels, annotations.
    fn metadata(&mut self, object: &mut Value, namespaced: bool) {
        let Some(root) = object.as_object_mut() else {
            return;
        };
        let metadata = root
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if metadata.is_null() {
            *metadata = Value::Object(Map::new());
        }
        let Some(meta) = metadata.as_object_mut() else {
            self.issue(
                "metadata",
                format!("must be an object, not {}", json_type(metadata)),
                true,
            );
            return;
        };
        // Types, as the server's decoding into ObjectMeta checks them.
        let mut wrong = Vec::new();
        for (key, value) in meta.iter() {
            let ok = match key.as_str() {
                "labels" | "annotations" => {
                    value.is_null()
                        || value
                            .as_object()
                            .is_some_and(|m| m.values().all(Value::is_string))
                }
                "finalizers" => {
                    value.is_null()
                        || value
                            .as_array()
                            .is_some_and(|a| a.iter().all(Value::is_string))
                }
                "ownerReferences" | "managedFields" => value.is_null() || value.is_array(),
                "generation" | "deletionGracePeriodSeconds" => {
                    value.is_null() || value.is_i64() || value.is_u64()
                }
                _ => value.is_null() || value.is_string(),
            };
            if !ok {
                let expected = match key.as_str() {
                    "labels" | "annotations" => "a map of strings to strings",
                    "finalizers" => "a list of strings",
                    "ownerReferences" | "managedFields" => "a list",
                    "generation" | "deletionGracePeriodSeconds" => "an integer",
                    _ => "a string",
                };
                wrong.push((key.clone(), expected));
            }
        }
        for (key, expected) in wrong {
            self.issue(
                &format!("metadata.{key}"),
                format!("must be {expected}"),
                true,
            );
            meta.remove(&key);
        }
        let text = |meta: &Map<String, Value>, key: &str| {
            meta.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };

        let generate_name = text(meta, "generateName");
        if let Some(prefix) = &generate_name {
            // Validated as a name with its trailing dash masked.
            let masked = match prefix.strip_suffix('-') {
                Some(rest) => format!("{rest}a"),
                None => prefix.clone(),
            };
            for message in dns1123_subdomain(&masked) {
                let message = message.replace(&format!("{masked:?}"), &format!("{prefix:?}"));
                self.issue("metadata.generateName", message, false);
            }
        }
        if text(meta, "name").is_none() {
            match &generate_name {
                // The server generates the name before it validates.
                Some(prefix) => {
                    let base: String = prefix.chars().take(MAX_GENERATE_NAME_PREFIX).collect();
                    meta.insert(
                        "name".to_owned(),
                        Value::String(format!("{base}{GENERATED_SUFFIX}")),
                    );
                }
                None => self.issue(
                    "metadata.name",
                    "Required value: name or generateName is required",
                    true,
                ),
            }
        }
        if let Some(name) = text(meta, "name") {
            for message in dns1123_subdomain(&name) {
                self.issue("metadata.name", message, false);
            }
        }
        if namespaced && let Some(namespace) = text(meta, "namespace") {
            for message in dns1123_label(&namespace) {
                self.issue("metadata.namespace", message, false);
            }
        }
        if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
            let mut messages = Vec::new();
            for (key, value) in labels {
                messages.extend(
                    qualified_name(key)
                        .into_iter()
                        .map(|m| format!("{key:?}: {m}")),
                );
                let value = value.as_str().unwrap_or_default();
                messages.extend(
                    label_value(value)
                        .into_iter()
                        .map(|m| format!("{value:?}: {m}")),
                );
            }
            for message in messages {
                self.issue("metadata.labels", message, false);
            }
        }
        if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
            let mut messages = Vec::new();
            let mut size = 0;
            for (key, value) in annotations {
                size += key.len() + value.as_str().map_or(0, str::len);
                messages.extend(
                    qualified_name(&key.to_lowercase())
                        .into_iter()
                        .map(|m| format!("{key:?}: {m}")),
                );
            }
            for message in messages {
                self.issue("metadata.annotations", message, false);
            }
            if size > MAX_ANNOTATIONS_BYTES {
                self.issue(
                    "metadata.annotations",
                    format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
                    true,
                );
            }
        }
        if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
            let mut messages = Vec::new();
            for (i, finalizer) in finalizers.iter().enumerate() {
                let finalizer = finalizer.as_str().unwrap_or_default();
                messages.extend(
                    qualified_name(finalizer)
                        .into_iter()
                        .map(|m| (i, format!("{finalizer:?}: {m}"))),
                );
            }
            for (i, message) in messages {
                self.issue(&format!("metadata.finalizers[{i}]"), message, false);
            }
        }
        if text(meta, "resourceVersion").is_some() {
            self.issue(
                "metadata.resourceVersion",
                "resourceVersion should not be set on objects to be created",
                false,
            );
        }
    }

    /// The OpenAPI v3 schema. `resource`: the node is an object root, whose `apiVersion`,
    /// `kind` and `metadata` are checked elsewhere.
    fn validate(&mut self, value: &Value, schema: &Value, path: &str, resource: bool) {
        if value.is_null() {
            if !flag(schema, "nullable") {
                if let Some(ty) = schema.get("type").and_then(Value::as_str) {
                    self.issue(path, format!("must be of type {ty}, not null"), true);
                } else if flag(schema, "x-kubernetes-int-or-string") {
                    self.issue(path, "must be an integer or a string, not null", true);
                }
            }
            return;
        }
        if !self.check_type(value, schema, path) {
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.iter().any(|o| json_equal(o, value))
        {
            let supported: Vec<String> = options.iter().map(Value::to_string).collect();
            self.issue(
                path,
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                ),
                true,
            );
        }
        match value {
            Value::Number(n) => self.validate_number(n, schema, path),
            Value::String(s) => self.validate_string(s, schema, path),
            Value::Array(items) => self.validate_array(items, schema, path),
            Value::Object(map) => self.validate_object(map, schema, path, resource),
            _ => {}
        }
        self.validate_composition(value, schema, path);
    }

    /// `type` and `x-kubernetes-int-or-string`; false when the value has the wrong type.
    fn check_type(&mut self, value: &Value, schema: &Value, path: &str) -> bool {
        if flag(schema, "x-kubernetes-int-or-string") {
            let ok = value.is_string() || is_integer(value);
            if !ok {
                self.issue(
                    path,
                    format!(
                        "must be an integer or a string, not {} {}",
                        json_type(value),
                        brief(value)
                    ),
                    true,
                );
            }
            return ok;
        }
        let Some(ty) = schema.get("type").and_then(Value::as_str) else {
            return true;
        };
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            self.issue(
                path,
                format!(
                    "must be of type {ty}, not {} {}",
                    json_type(value),
                    brief(value)
                ),
                true,
            );
        }
        ok
    }

    fn validate_number(&mut self, n: &serde_json::Number, schema: &Value, path: &str) {
        let Some(x) = n.as_f64() else {
            return;
        };
        if let Some(format) = number_format_violated(n, schema) {
            self.issue(
                path,
                format!("Invalid value: {n}: must be of type {format}"),
                false,
            );
        }
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        if let Some(min) = bound("minimum") {
            if flag(schema, "exclusiveMinimum") {
                if x <= min {
                    self.issue(
                        path,
                        format!("Invalid value: {n}: should be greater than {}", show(min)),
                        false,
                    );
                }
            } else if x < min {
                self.issue(
                    path,
                    format!(
                        "Invalid value: {n}: should be greater than or equal to {}",
                        show(min)
                    ),
                    false,
                );
            }
        }
        if let Some(max) = bound("maximum") {
            if flag(schema, "exclusiveMaximum") {
                if x >= max {
                    self.issue(
                        path,
                        format!("Invalid value: {n}: should be less than {}", show(max)),
                        false,
                    );
                }
            } else if x > max {
                self.issue(
                    path,
                    format!(
                        "Invalid value: {n}: should be less than or equal to {}",
                        show(max)
                    ),
                    false,
                );
            }
        }
        if let Some(factor) = bound("multipleOf").filter(|f| *f > 0.0) {
            let quotient = x / factor;
            if (quotient - quotient.round()).abs() > 1e-9 {
                self.issue(
                    path,
                    format!(
                        "Invalid value: {n}: should be a multiple of {}",
                        show(factor)
                    ),
                    false,
                );
            }
        }
    }

    fn validate_string(&mut self, s: &str, schema: &Value, path: &str) {
        let length = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            self.issue(
                path,
                format!("Too long: may not be more than {max} characters"),
                true,
            );
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            self.issue(
                path,
                format!("Invalid value: {s:?}: should be at least {min} chars long"),
                false,
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let compiled = self
                .patterns
                .entry(pattern.to_owned())
                .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()));
            match compiled {
                Ok(re) => {
                    if !re.is_match(s) {
                        self.issue(
                            path,
                            format!("Invalid value: {s:?}: should match '{pattern}'"),
                            false,
                        );
                    }
                }
                Err(e) => {
                    let message = format!("the CRD's pattern '{pattern}' does not compile: {e}");
                    self.issue(path, message, false);
                }
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(s) {
            self.issue(
                path,
                format!("Invalid value: {s:?}: must be a date-time (RFC 3339)"),
                false,
            );
        }
    }

    fn validate_array(&mut self, items: &[Value], schema: &Value, path: &str) {
        let count = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            self.issue(
                path,
                format!("Too many: {count}: must have at most {max} items"),
                true,
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            self.issue(
                path,
                format!("Invalid value: {count}: should have at least {min} items"),
                false,
            );
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].iter().any(|earlier| json_equal(earlier, item)) {
                        self.issue(&index(path, i), format!("Duplicate value: {item}"), false);
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let item_schema = schema.get("items");
                let key_of = |item: &Value| -> Vec<Value> {
                    keys.iter()
                        .map(|k| {
                            item.get(*k)
                                .or_else(|| {
                                    item_schema.and_then(|s| {
                                        s.pointer(&format!("/properties/{k}/default"))
                                    })
                                })
                                .cloned()
                                .unwrap_or(Value::Null)
                        })
                        .collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if items[..i].iter().any(|earlier| key_of(earlier) == key) {
                        let shown: Vec<String> = keys
                            .iter()
                            .zip(&key)
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect();
                        self.issue(
                            &index(path, i),
                            format!("Duplicate value: {{{}}}", shown.join(", ")),
                            false,
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(item) = schema.get("items") {
            for (i, value) in items.iter().enumerate() {
                self.validate(value, item, &index(path, i), false);
            }
        }
    }

    fn validate_object(
        &mut self,
        map: &Map<String, Value>,
        schema: &Value,
        path: &str,
        resource: bool,
    ) {
        let resource = resource || flag(schema, "x-kubernetes-embedded-resource");
        let count = map.len() as u64;
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && count > max
        {
            self.issue(
                path,
                format!("Too many: {count}: must have at most {max} items"),
                true,
            );
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
            && count < min
        {
            self.issue(
                path,
                format!("Invalid value: {count}: should have at least {min} properties"),
                false,
            );
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    self.issue(&field(path, key), "Required value", true);
                }
            }
        }
        if resource && flag(schema, "x-kubernetes-embedded-resource") {
            for key in ["apiVersion", "kind"] {
                if map
                    .get(key)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    self.issue(&field(path, key), "Required value: must not be empty", true);
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, value) in map {
            if let Some(property) = properties.and_then(|p| p.get(key)) {
                self.validate(value, property, &field(path, key), false);
            } else if resource && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            } else if let Some(additional) = additional {
                self.validate(value, additional, &entry(path, key), false);
            }
        }
    }

    /// `allOf`, `anyOf`, `oneOf`, `not` (value validations only, in structural schemas).
    fn validate_composition(&mut self, value: &Value, schema: &Value, path: &str) {
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(value, sub, path, false);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|sub| self.passes(value, sub, path))
        {
            self.issue(path, "must validate at least one schema (anyOf)", false);
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let passing = one
                .iter()
                .filter(|sub| self.passes(value, sub, path))
                .count();
            if passing != 1 {
                self.issue(path, "must validate one and only one schema (oneOf)", false);
            }
        }
        if let Some(not) = schema.get("not")
            && self.passes(value, not, path)
        {
            self.issue(path, "must not validate the schema (not)", false);
        }
    }

    /// Whether `value` passes `schema`, recording nothing.
    fn passes(&mut self, value: &Value, schema: &Value, path: &str) -> bool {
        let before = self.issues.len();
        self.validate(value, schema, path, false);
        let ok = self.issues.len() == before;
        self.issues.truncate(before);
        ok
    }

    /// The scale subresource reads `specReplicasPath`: a non-negative int32.
    fn scale_replicas(&mut self, object: &Value, path: &str) {
        let path = path.trim_start_matches('.');
        let pointer: String = path.split('.').map(|p| format!("/{p}")).collect();
        let Some(value) = object.pointer(&pointer).filter(|v| !v.is_null()) else {
            return;
        };
        if !is_integer(value) {
            self.issue(
                path,
                format!("Invalid value: {value}: the scale subresource needs an integer"),
                false,
            );
        } else if value.as_f64().is_some_and(|x| x < 0.0) {
            self.issue(
                path,
                format!("Invalid value: {value}: should be a non-negative integer"),
                false,
            );
        } else if value.as_f64().is_some_and(|x| x > f64::from(i32::MAX)) {
            self.issue(
                path,
                format!(
                    "Invalid value: {value}: should be less than or equal to {}",
                    i32::MAX
                ),
                false,
            );
        }
    }

    /// Evaluates the CEL rules of every node that has a (non-null) value.
    fn rules(&mut self, value: &Value, schema: &Value, path: &str, resource: bool) {
        if value.is_null() {
            return;
        }
        if let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let this = to_cel(value, Some(schema), resource);
            for rule in rules {
                self.rule(rule, &this, path);
            }
        }
        match value {
            Value::Object(map) => {
                let resource = resource || flag(schema, "x-kubernetes-embedded-resource");
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                for (key, child) in map {
                    if let Some(property) = properties.and_then(|p| p.get(key)) {
                        self.rules(child, property, &field(path, key), false);
                    } else if resource && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                    {
                    } else if let Some(additional) = additional {
                        self.rules(child, additional, &entry(path, key), false);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, child) in items.iter().enumerate() {
                        self.rules(child, item, &index(path, i), false);
                    }
                }
            }
            _ => {}
        }
    }

    fn program(&mut self, source: &str) -> Rc<Result<cel::Program, String>> {
        Rc::clone(
            self.programs.entry(source.to_owned()).or_insert_with(|| {
                Rc::new(cel::Program::compile(source).map_err(|e| e.to_string()))
            }),
        )
    }

    /// One `x-kubernetes-validations` entry, on `this` (the node's value) at `path`.
    fn rule(&mut self, rule: &Value, this: &Cel, path: &str) {
        let Some(source) = rule.get("rule").and_then(Value::as_str) else {
            return;
        };
        let program = self.program(source);
        let program = match program.as_ref() {
            Ok(program) => program,
            Err(e) => {
                self.issue(
                    path,
                    format!("the CRD's rule `{source}` is not valid CEL: {e}"),
                    false,
                );
                return;
            }
        };
        if program.references().has_variable("oldSelf") {
            return; // a transition rule: only on updates
        }
        let mut context = cel::Context::default();
        context.add_variable_from_value("self", this.clone());
        match program.execute(&context) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => {
                let at = match rule.get("fieldPath").and_then(Value::as_str) {
                    Some(relative) => append_path(path, relative),
                    None => path.to_owned(),
                };
                let message = self.rule_message(rule, source, &context);
                self.issue(&at, message, false);
            }
            Ok(other) => self.issue(
                path,
                format!(
                    "the CRD's rule `{source}` returned {} ({other:?}), not a bool",
                    other.type_of()
                ),
                false,
            ),
            Err(e) => self.issue(
                path,
                format!("the CRD's rule `{source}` could not be evaluated: {e}"),
                false,
            ),
        }
    }

    /// The message of a failed rule: `messageExpression`, else `message`, else the rule.
    fn rule_message(&mut self, rule: &Value, source: &str, context: &cel::Context) -> String {
        if let Some(expression) = rule.get("messageExpression").and_then(Value::as_str)
            && let Ok(program) = self.program(expression).as_ref()
            && let Ok(Cel::String(message)) = program.execute(context)
            && !message.trim().is_empty()
            && !message.contains('\n')
        {
            return message.as_str().to_owned();
        }
        match rule.get("message").and_then(Value::as_str) {
            Some(message) if !message.is_empty() => message.to_owned(),
            _ => format!("failed rule: {source}"),
        }
    }
}

/// The `type`/`format` the number does not fit (`integer` with format `int32`, …), as the
/// server checks it: integers default to the int64 range.
fn number_format_violated(n: &serde_json::Number, schema: &Value) -> Option<String> {
    if flag(schema, "x-kubernetes-int-or-string") {
        return None;
    }
    let ty = schema.get("type").and_then(Value::as_str)?;
    let format = schema
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let x = n.as_f64()?;
    let fits = match (ty, format) {
        ("integer", "int32") => (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&x),
        ("integer", "uint32") => (0.0..=f64::from(u32::MAX)).contains(&x),
        ("integer", "uint64") => n.is_u64() || (x >= 0.0 && x.fract() == 0.0 && x < 1.8e19),
        ("integer", _) => n.is_i64() || (x.fract() == 0.0 && x.abs() < 9.2e18),
        ("number", "float" | "float32") => x.abs() <= f64::from(f32::MAX),
        _ => true,
    };
    let format = if format.is_empty() { "int64" } else { format };
    (!fits).then(|| format!("{ty} with format {format}"))
}

/// Removes nulls of non-nullable fields without a default (the server does so on decode).
fn prune_nulls(value: &mut Value, schema: Option<&Value>) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_schema = schema.and_then(|s| field_schema(s, &key));
                let drop = map.get(&key).is_some_and(|v| {
                    v.is_null()
                        && child_schema
                            .is_some_and(|c| !flag(c, "nullable") && default_of(c).is_none())
                });
                if drop {
                    map.remove(&key);
                } else if let Some(child) = map.get_mut(&key) {
                    prune_nulls(child, child_schema);
                }
            }
        }
        Value::Array(items) => {
            let item = schema.and_then(|s| s.get("items"));
            for value in items {
                prune_nulls(value, item);
            }
        }
        _ => {}
    }
}

/// Applies `default`s: absent fields, and nulls of non-nullable fields.
fn apply_defaults(value: &mut Value, schema: Option<&Value>) {
    let Some(schema) = schema else {
        return;
    };
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, property) in properties.into_iter().flatten() {
                let Some(default) = default_of(property) else {
                    continue;
                };
                let missing = match map.get(key) {
                    None => true,
                    Some(v) => v.is_null() && !flag(property, "nullable"),
                };
                if missing {
                    map.insert(key.clone(), default.clone());
                }
            }
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map.iter_mut() {
                if let Some(property) = properties.and_then(|p| p.get(key)) {
                    apply_defaults(child, Some(property));
                } else if let Some(additional) = additional {
                    if child.is_null()
                        && !flag(additional, "nullable")
                        && let Some(default) = default_of(additional)
                    {
                        *child = default.clone();
                    }
                    apply_defaults(child, Some(additional));
                }
            }
        }
        Value::Array(items) => {
            let item = schema.get("items");
            for value in items {
                if value.is_null()
                    && let Some(item) = item
                    && !flag(item, "nullable")
                    && let Some(default) = default_of(item)
                {
                    *value = default.clone();
                }
                apply_defaults(value, item);
            }
        }
        _ => {}
    }
}

/// Converts a value to CEL as Kubernetes does for its schema: objects with properties
/// expose only those (with escaped names), maps their entries, `integer` → int, `number` →
/// double; the metadata of an object root exposes only `name` and `generateName`.
fn to_cel(value: &Value, schema: Option<&Value>, resource: bool) -> Cel {
    let ty = schema.and_then(|s| s.get("type")).and_then(Value::as_str);
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => number_to_cel(n, ty),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item = schema.and_then(|s| s.get("items"));
            Cel::List(Arc::new(
                items.iter().map(|v| to_cel(v, item, false)).collect(),
            ))
        }
        Value::Object(map) => {
            let resource =
                resource || schema.is_some_and(|s| flag(s, "x-kubernetes-embedded-resource"));
            let properties = schema
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object);
            let additional = schema
                .and_then(|s| s.get("additionalProperties"))
                .filter(|a| a.is_object());
            let mut out: HashMap<Key, Cel> = HashMap::new();
            if properties.is_some() || resource {
                for (key, child) in map {
                    if child.is_null() {
                        // Kubernetes: a null (nullable) field of an object is as if absent.
                        continue;
                    }
                    if let Some(property) = properties.and_then(|p| p.get(key)) {
                        if let Some(name) = escape(key) {
                            out.insert(string_key(&name), to_cel(child, Some(property), false));
                        }
                    } else if resource && (key == "apiVersion" || key == "kind") {
                        out.insert(string_key(key), to_cel(child, None, false));
                    } else if resource && key == "metadata" {
                        let mut metadata: HashMap<Key, Cel> = HashMap::new();
                        for name in ["name", "generateName"] {
                            if let Some(v) = child.get(name) {
                                metadata.insert(string_key(name), to_cel(v, None, false));
                            }
                        }
                        out.insert(string_key(key), Cel::from(metadata));
                    }
                }
            } else if additional.is_some() {
                for (key, child) in map {
                    out.insert(string_key(key), to_cel(child, additional, false));
                }
            }
            // Otherwise (preserved unknown fields, or an object without properties) CEL
            // sees no field, as in Kubernetes.
            Cel::from(out)
        }
    }
}

fn number_to_cel(n: &serde_json::Number, ty: Option<&str>) -> Cel {
    let float = n.as_f64().unwrap_or(f64::NAN);
    if ty == Some("number") {
        return Cel::Float(float);
    }
    if let Some(i) = n.as_i64() {
        return Cel::Int(i);
    }
    // An integral float in an `integer` field (`2.0`) is an int; larger than i64: double.
    if ty == Some("integer")
        && float.fract() == 0.0
        && float >= i64::MIN as f64
        && float < i64::MAX as f64
    {
        return Cel::Int(float as i64);
    }
    Cel::Float(float)
}

fn string_key(s: &str) -> Key {
    Key::String(Arc::new(s.to_owned()))
}

/// Whether `name` is a CEL reserved word: not a field after a `.` (Kubernetes: `__name__`).
pub(crate) fn is_cel_reserved(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    RESERVED.contains(&name)
}

/// A property name as CEL sees it (Kubernetes' escaping); `None`: not accessible.
fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if is_cel_reserved(name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// Whether the schema has a CEL rule anywhere.
fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.contains_key("x-kubernetes-validations") || map.values().any(has_rules)
        }
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// The schema of a field of an object: its property, else `additionalProperties`.
fn field_schema<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema
        .get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

fn default_of(schema: &Value) -> Option<&Value> {
    schema.get("default").filter(|d| !d.is_null())
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// An integral JSON number (`2.0` too, as kubectl sends it as `2`).
fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Numbers compare by value (`1` equals `1.0`); everything else structurally.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A short rendering of a value for a message.
fn brief(value: &Value) -> String {
    match value {
        Value::Array(_) => "[...]".to_owned(),
        Value::Object(_) => "{...}".to_owned(),
        other => {
            let text = other.to_string();
            if text.chars().count() > 60 {
                format!("{}...", text.chars().take(57).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// A bound without a useless `.0`.
fn show(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        x.to_string()
    }
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn entry(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

/// A rule's `fieldPath` (`.spec.x`, `[0].y`), relative to the rule's node.
fn append_path(path: &str, relative: &str) -> String {
    let relative = relative.strip_prefix('.').unwrap_or(relative);
    if relative.starts_with('[') || path.is_empty() {
        format!("{path}{relative}")
    } else {
        format!("{path}.{relative}")
    }
}

/// RFC 3339 date-time, as the server's `date-time` format accepts it.
fn is_date_time(s: &str) -> bool {
    static DATE_TIME: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$",
        )
        .ok()
    });
    DATE_TIME.as_ref().is_none_or(|re| re.is_match(s))
}

const DNS1123_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

fn matches_whole(pattern: &str, s: &str) -> bool {
    Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(s))
}

/// Messages for a value that is not a DNS-1123 subdomain (empty: it is one).
fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push(format!(
            "Invalid value: {s:?}: must be no more than 253 characters"
        ));
    }
    if !matches_whole(&format!(r"{DNS1123_LABEL}(\.{DNS1123_LABEL})*"), s) {
        out.push(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
             character (e.g. 'example.com')"
        ));
    }
    out
}

/// Messages for a value that is not a DNS-1123 label.
fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push(format!(
            "Invalid value: {s:?}: must be no more than 63 characters"
        ));
    }
    if !matches_whole(DNS1123_LABEL, s) {
        out.push(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 label must consist of lower case \
             alphanumeric characters or '-', and must start and end with an alphanumeric \
             character (e.g. 'my-name')"
        ));
    }
    out
}

const QUALIFIED_NAME: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

/// Messages for a key that is not a qualified name (`prefix/name`), as label keys must be.
fn qualified_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) if !name.contains('/') => (Some(prefix), name),
        Some(_) => {
            return vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', \
                 with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
                    .to_owned(),
            ];
        }
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            out.push("prefix part must be non-empty".to_owned());
        } else {
            out.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        out.push("name part must be non-empty".to_owned());
    } else {
        if name.len() > 63 {
            out.push("name part must be no more than 63 characters".to_owned());
        }
        if !matches_whole(QUALIFIED_NAME, name) {
            out.push(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
                 start and end with an alphanumeric character"
                    .to_owned(),
            );
        }
    }
    out
}

/// Messages for a label value that is not valid.
fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_owned());
    }
    if !s.is_empty() && !matches_whole(QUALIFIED_NAME, s) {
        out.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character"
                .to_owned(),
        );
    }
    out
}

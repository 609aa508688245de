//! Object plumbing shared by every feature: read one object, server-side apply what the
//! controller owns (one field manager), create an immutable object once, and the ownership
//! marks (labels, controller reference, owner-uid label away from home).

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use cutover_api::kube::api::{Patch, PatchParams};
use cutover_api::kube::{Api, Client, Resource};
use cutover_api::{BlueGreenDeployment, COLOR_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use cutover_core::Color;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::FIELD_MANAGER;
use crate::error::Error;

/// Label on objects owned away from home (no owner reference can cross namespaces or
/// clusters): the uid of the owning BlueGreenDeployment.
pub const OWNER_UID_LABEL: &str = "cutover.dev/owner-uid";
/// A namespaced object the controller reads and writes whole.
pub trait Namespaced:
    Resource<Scope = cutover_api::k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = cutover_api::k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// An object's resourceVersion as etcd counts it, to tell which of two copies is newer.
/// The API calls it opaque; every API server in use writes etcd's revision, and an object
/// whose version does not parse is simply never taken for older.
pub fn revision(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

/// Read `name`, `None` when it does not exist.
pub async fn get<K>(api: &Api<K>, kind: &'static str, name: &str) -> Result<Option<K>, Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Read {
        kind,
        name: name.to_string(),
        source,
    })
}

/// Whether `meta` names `bgd` as its controller.
pub fn controlled_by(meta: &ObjectMeta, bgd: &BlueGreenDeployment) -> bool {
    let uid = bgd.metadata.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// Whether `meta` carries Cutover's `managed-by` label (an object some BlueGreenDeployment
/// or FailoverPolicy made).
pub fn is_cutovers(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

/// Whether `meta` belongs to `bgd`: it is its controller (same namespace), or the object
/// carries its uid in [`OWNER_UID_LABEL`] (elsewhere).
pub fn owned_by(meta: &ObjectMeta, bgd: &BlueGreenDeployment) -> bool {
    let Some(uid) = bgd.metadata.uid.as_deref() else {
        return false;
    };
    controlled_by(meta, bgd)
        || meta
            .labels
            .as_ref()
            .and_then(|l| l.get(OWNER_UID_LABEL))
            .is_some_and(|v| v == uid)
}

/// Server-side apply `obj` as `name` in `ns`, with the controller's field manager (taking
/// over fields another manager set: the controller owns these objects).
pub async fn apply<K>(
    client: &Client,
    ns: &str,
    name: &str,
    obj: &K,
    kind: &'static str,
) -> Result<(), Error>
where
    K: Namespaced,
{
    apply_object(client, ns, name, obj, kind).await.map(|_| ())
}

/// [`apply`], returning the object as the API server stored it.
pub async fn apply_object<K>(
    client: &Client,
    ns: &str,
    name: &str,
    obj: &K,
    kind: &'static str,
) -> Result<K, Error>
where
    K: Namespaced,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut value =
        serde_json::to_value(obj).map_err(|source| Error::Serialize { what: kind, source })?;
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| Error::Apply {
        kind,
        name: name.to_string(),
        source,
    })
}

/// [`apply_object`]; unless the pass `checked` the object first hand (saw it in its watch
/// cache, or read it absent itself), it is read first, so that one of this name that
/// someone else made since is refused ([`Error::Taken`]), never taken over. Passes do not
/// read an object again each time while it does not exist.
pub async fn apply_owned<K>(
    client: &Client,
    ns: &str,
    name: &str,
    obj: &K,
    kind: &'static str,
    (bgd, checked): (&BlueGreenDeployment, bool),
) -> Result<K, Error>
where
    K: Namespaced,
{
    if !checked {
        refuse_taken::<K>(client, ns, name, kind, bgd).await?;
    }
    apply_object(client, ns, name, obj, kind).await
}

/// [`Error::Taken`] when `name` exists in `ns` and is not `bgd`'s: read before creating an
/// object a pass did not see.
pub async fn refuse_taken<K: Namespaced>(
    client: &Client,
    ns: &str,
    name: &str,
    kind: &'static str,
    bgd: &BlueGreenDeployment,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match get(&api, kind, name).await? {
        Some(found) if !owned_by(found.meta(), bgd) => Err(Error::Taken {
            kind,
            name: name.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Snapshots are immutable: create once; an existing one with this content-derived name
/// already holds the same data.
pub async fn create_once<K>(
    client: &Client,
    ns: &str,
    name: &str,
    obj: &K,
    kind: &'static str,
) -> Result<(), Error>
where
    K: Namespaced,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    if get(&api, kind, name).await?.is_some() {
        return Ok(());
    }
    apply(client, ns, name, obj, kind).await
}

/// Server-side apply `status` as the status of `name` (the controller's field manager):
/// the whole status is the controller's, so what it no longer says goes.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        name: name.to_string(),
        source,
    })
}

/// Server-side apply the fields `fields` (e.g. `{"spec": {"replicas": 2}}`) of `name` as
/// field manager `FIELD_MANAGER/<part>`. A part of an object the controller changes on
/// its own (a color's replicas, a run's `terminate`) has a manager of its own: applying
/// those fields alone as the main manager would drop every other field it applied.
pub async fn apply_fields<K>(
    api: &Api<K>,
    name: &str,
    part: &str,
    fields: serde_json::Value,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut patch = fields;
    patch["apiVersion"] = json!(K::api_version(&()));
    patch["kind"] = json!(K::kind(&()));
    patch["metadata"]["name"] = json!(name);
    api.patch(
        name,
        &PatchParams::apply(&format!("{FIELD_MANAGER}/{part}")).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: match K::kind(&()) {
            std::borrow::Cow::Borrowed(k) => k,
            std::borrow::Cow::Owned(_) => "object",
        },
        name: name.to_string(),
        source,
    })?;
    Ok(())
}

/// Controller owner reference to `bgd`.
pub fn owner_reference(bgd: &BlueGreenDeployment) -> Result<OwnerReference, Error> {
    bgd.controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))
}

/// The name of `bgd`, which every object it owns is named after.
pub fn name_of(bgd: &BlueGreenDeployment) -> Result<&str, Error> {
    bgd.metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))
}

/// Labels on every owned object.
pub fn owned_labels(name: &str, color: Option<Color>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (INSTANCE_LABEL.to_string(), name.to_string()),
    ]);
    if let Some(c) = color {
        labels.insert(COLOR_LABEL.to_string(), c.as_str().to_string());
    }
    labels
}

/// Metadata of an object `bgd` owns: labelled, with its controller reference.
pub fn metadata(
    bgd: &BlueGreenDeployment,
    name: String,
    color: Option<Color>,
) -> Result<ObjectMeta, Error> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: bgd.metadata.namespace.clone(),
        labels: Some(owned_labels(name_of(bgd)?, color)),
        owner_references: Some(vec![owner_reference(bgd)?]),
        ..ObjectMeta::default()
    })
}

//! The part of Gateway API v1 the router reads: GatewayClass, Gateway and HTTPRoute, typed
//! for the fields it uses. Every field is optional or defaulted, unknown fields are ignored,
//! and statuses are kept as JSON, so objects written by newer versions still load and
//! status entries of other controllers are written back untouched.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The group of every type here.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// `GatewayClass.spec`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GatewayClass",
    status = "Value",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassSpec {
    /// The controller that serves Gateways of this class.
    pub controller_name: String,
}

/// `Gateway.spec`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    status = "Value",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    /// The GatewayClass.
    pub gateway_class_name: String,
    /// Listeners.
    pub listeners: Vec<Listener>,
}

/// One listener of a Gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    /// Section name.
    pub name: String,
    /// Host name (exact or `*.` wildcard) requests must carry.
    pub hostname: Option<String>,
    /// Port.
    pub port: u16,
    /// Protocol: only `HTTP` is served.
    pub protocol: String,
    /// Which routes may attach.
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `listeners[].allowedRoutes`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AllowedRoutes {
    /// Namespaces.
    pub namespaces: Option<RouteNamespaces>,
}

/// `allowedRoutes.namespaces`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteNamespaces {
    /// `Same` (default), `All` or `Selector` (not supported: treated as no namespace).
    pub from: Option<String>,
}

/// `HTTPRoute.spec`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced,
    status = "Value",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteSpec {
    /// Gateways (and listeners) the route attaches to.
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route serves (empty: all).
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<Rule>,
}

/// A route's parent reference.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentRef {
    /// Group (default `gateway.networking.k8s.io`).
    pub group: Option<String>,
    /// Kind (default `Gateway`).
    pub kind: Option<String>,
    /// Namespace (default: the route's).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Listener name.
    pub section_name: Option<String>,
    /// Listener port.
    pub port: Option<u16>,
}

/// One rule of a route.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    /// Optional name.
    pub name: Option<String>,
    /// Matches (empty: a prefix match on `/`).
    pub matches: Vec<RouteMatch>,
    /// Filters.
    pub filters: Vec<Filter>,
    /// Weighted backends.
    pub backend_refs: Vec<BackendRef>,
}

/// One match of a rule: all its conditions must hold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteMatch {
    /// Path.
    pub path: Option<PathMatch>,
    /// Headers.
    pub headers: Vec<ValueMatch>,
    /// Query parameters.
    pub query_params: Vec<ValueMatch>,
    /// Method.
    pub method: Option<String>,
}

/// A path match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Value (default `/`).
    pub value: Option<String>,
}

/// A header or query parameter match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ValueMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Header or parameter name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A rule filter; `RequestMirror` and `RequestHeaderModifier` are served.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Filter {
    /// Filter type.
    #[serde(rename = "type")]
    pub type_: String,
    /// For `RequestMirror`.
    pub request_mirror: Option<RequestMirror>,
    /// For `RequestHeaderModifier`.
    pub request_header_modifier: Option<HeaderModifier>,
}

/// `RequestMirror`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestMirror {
    /// Where copies go.
    pub backend_ref: BackendRef,
    /// Share of requests copied, in percent.
    pub percent: Option<u32>,
    /// Share of requests copied, as a fraction.
    pub fraction: Option<Fraction>,
}

/// A fraction.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u32,
    /// Denominator (default 100).
    pub denominator: Option<u32>,
}

/// `RequestHeaderModifier`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderModifier {
    /// Headers set (replacing).
    pub set: Vec<Header>,
    /// Headers added.
    pub add: Vec<Header>,
    /// Header names removed.
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Header {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A backend reference: a Service and port.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct BackendRef {
    /// Group (default core).
    pub group: Option<String>,
    /// Kind (default `Service`).
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace (default: the route's).
    pub namespace: Option<String>,
    /// Service port.
    pub port: Option<u16>,
    /// Weight (default 1).
    pub weight: Option<u32>,
}

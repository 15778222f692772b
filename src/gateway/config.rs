//! Typed configuration. The snapshot in KV (`config:active`) is JSON in the MLflow AI Gateway
//! config shape — `endpoints:` (`name`, `endpoint_type`, `model: {provider, name, config}`,
//! `limit`), the legacy `routes:` + `route_type` spelling, and traffic routes (`routes:` with
//! `destinations`) — plus our extensions (`origins`, `residency`, `regions`, `settings`). It is
//! parsed into loose `raw` structs first, then checked field by field into the typed `Config`,
//! so every problem is reported with its path and, where possible, a suggestion. The same
//! checks run in `gatewayctl validate` and when an isolate loads the config (there each
//! endpoint, and the templates, when a request first needs them: [`Config::from_stored`]).

use std::collections::hash_map::Entry;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::gateway::check::{ConfigIssue, Issues};
use crate::gateway::features::access::{self, Access};
use crate::gateway::features::cache::{self, CachePolicy};
use crate::gateway::features::guard::{self, Guardrails};
use crate::gateway::features::identity::{self, AuthConfig};
use crate::gateway::features::template::{self, TemplateRef, Templates};
use crate::gateway::providers::Provider;
use crate::gateway::util::map::FastMap;
use crate::gateway::wire::json::{value_from_slice, Bounds, REQUEST_BOUNDS};
use edge_scan::json::{split_array_entry, Item};

/// The KV entry holding the active snapshot.
pub const ACTIVE_KEY: &str = "config:active";

#[derive(Debug)]
pub struct Config {
    pub version: String,
    endpoints: FastMap<String, EndpointSlot>,
    pub routes: FastMap<String, Arc<TrafficRoute>>,
    /// Endpoint and route names in config order (for listings).
    pub order: Vec<String>,
    /// Region name → the client locations it covers.
    pub regions: Vec<Region>,
    pub default_region: Option<String>,
    pub settings: Settings,
    pub prices: crate::gateway::features::usage::Prices,
    pub limits: crate::gateway::features::limits::LimitsConfig,
    /// `auth:` — trusted JWT issuers and their claim mapping (features::identity).
    pub auth: AuthConfig,
    /// OpenTelemetry export (`telemetry:`); off when absent.
    pub telemetry: Option<Arc<crate::gateway::features::telemetry::TelemetryConfig>>,
    /// `mcp_servers` and `mcp_policies` (what `/mcp` fronts and who may use it).
    pub mcp: crate::gateway::mcp::McpConfig,
    /// Whether any endpoint is `public` (else every model call needs a valid caller).
    any_public: bool,
    /// `templates:`, for the endpoints decoded on first use.
    templates: TemplateSection,
}

/// The `templates:` section: compiled at load ([`Decode::Eager`]), or the first time an
/// endpoint that names a template is decoded.
#[derive(Debug)]
struct TemplateSection {
    /// The section's JSON until compiled (`null` when compiled at load).
    raw: Value,
    /// The templates, and the section's first issue (an endpoint naming a template fails with
    /// it: a broken template must not be skipped).
    compiled: OnceLock<(Templates, Option<String>)>,
}

impl TemplateSection {
    fn get(&self) -> &(Templates, Option<String>) {
        self.compiled.get_or_init(|| {
            let mut issues = Issues::default();
            let templates = match &self.raw {
                Value::Null => Templates::default(),
                raw => template::check("templates", raw, &mut issues).unwrap_or_default(),
            };
            (templates, issues.0.first().map(ToString::to_string))
        })
    }
}

/// How [`Config`] decodes its endpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// All at once, every issue reported: a config being checked (`gatewayctl`, the admin API).
    Eager,
    /// Each the first time a request names it ([`Config::from_stored`]).
    OnFirstUse,
}

/// One endpoint of a [`Config`]: decoded and checked at load, or on first use.
#[derive(Debug)]
struct EndpointSlot {
    /// Where it is in the config, for its issues.
    path: ItemPath,
    /// Its JSON until decoded (`null` once decoded at load).
    raw: Pending,
    /// Its `public` flag (as written, for an endpoint not decoded yet).
    public: bool,
    /// The endpoint, or its first issue (for the log: a client sees `config_invalid`).
    decoded: OnceLock<Result<Arc<Endpoint>, String>>,
}

/// Where an endpoint is in the config (`endpoints[3]`, or a legacy `routes[1]`): a number,
/// spelled out only for an issue. (A fresh instance formatted one path per endpoint: ~700
/// instructions each, a tenth of loading a 50-endpoint config.)
#[derive(Debug, Clone, Copy)]
enum ItemPath {
    Endpoint(usize),
    Route(usize),
}

impl std::fmt::Display for ItemPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemPath::Endpoint(i) => write!(f, "endpoints[{i}]"),
            ItemPath::Route(i) => write!(f, "routes[{i}]"),
        }
    }
}

/// An endpoint's JSON until it is decoded: a tree, or (the stored config's `endpoints` list,
/// [`Config::from_stored`]) its text, so a fresh instance builds the tree of none but the
/// endpoint it serves.
#[derive(Debug)]
enum Pending {
    Tree(Value),
    /// The text, and its [`Pending::take_head`] as the scan found it (until taken).
    Text(Box<str>, Option<Head>),
}

/// An endpoint's `name` (when a valid one, written without escapes) and `public` flag.
type Head = (Option<String>, bool);

fn head(name: Option<&str>, public: bool) -> Head {
    (name.filter(|n| valid_name(n)).map(str::to_string), public)
}

impl Pending {
    fn text(item: Item<'_>) -> Pending {
        let name = item.fields[0].and_then(|raw| raw.strip_prefix('"')?.strip_suffix('"'));
        let head = item.text.starts_with('{').then(|| head(name, item.fields[1] == Some("true")));
        Pending::Text(item.text.into(), head)
    }

    fn tree(&self) -> serde_json::Result<Value> {
        match self {
            Pending::Tree(value) => Ok(value.clone()),
            Pending::Text(text, _) => value_from_slice(text.as_bytes()),
        }
    }

    fn into_tree(self) -> serde_json::Result<Value> {
        match self {
            Pending::Tree(value) => Ok(value),
            text => text.tree(),
        }
    }

    /// Its name and `public` flag, read without building its tree; `None` when it is not a
    /// JSON object. Taken, not copied: a text's head is needed once, when the config is built.
    fn take_head(&mut self) -> Option<Head> {
        match self {
            Pending::Tree(value) => value.as_object().map(|entries| {
                head(entries.get("name").and_then(Value::as_str), entries.get("public") == Some(&Value::Bool(true)))
            }),
            Pending::Text(_, head) => head.take(),
        }
    }
}

impl EndpointSlot {
    fn decoded(path: ItemPath, endpoint: Endpoint) -> Self {
        EndpointSlot {
            path,
            raw: Pending::Tree(Value::Null),
            public: endpoint.public,
            decoded: OnceLock::from(Ok(Arc::new(endpoint))),
        }
    }

    fn get(&self, regions: &[Region], templates: &TemplateSection) -> &Result<Arc<Endpoint>, String> {
        self.decoded.get_or_init(|| {
            let path = self.path.to_string();
            let value = self.raw.tree().map_err(|e| format!("{path}: not valid JSON: {e}"))?;
            let none = Templates::default();
            let templates = match value.get("template") {
                None => &none,
                Some(_) => match templates.get() {
                    (_, Some(issue)) => return Err(issue.clone()),
                    (templates, None) => templates,
                },
            };
            let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
            let mut issues = Issues::default();
            match check_endpoint(&path, value, &names, templates, &mut issues) {
                Some(endpoint) if issues.0.is_empty() => Ok(Arc::new(endpoint)),
                _ => Err(issues.0.first().map(ToString::to_string).unwrap_or_default()),
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointType {
    Chat,
    Completions,
    Embeddings,
    /// A classic (non-LLM) MLflow model behind `mlflow models serve`.
    Predict,
}

impl EndpointType {
    pub const ALL: [(&'static str, EndpointType); 4] = [
        ("llm/v1/chat", EndpointType::Chat),
        ("llm/v1/completions", EndpointType::Completions),
        ("llm/v1/embeddings", EndpointType::Embeddings),
        ("mlflow/v1/predict", EndpointType::Predict),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Chat => "llm/v1/chat",
            EndpointType::Completions => "llm/v1/completions",
            EndpointType::Embeddings => "llm/v1/embeddings",
            EndpointType::Predict => "mlflow/v1/predict",
        }
    }

    fn parse(path: &str, value: &str, issues: &mut Issues) -> Option<EndpointType> {
        let found = Self::ALL.iter().find(|(s, _)| *s == value).map(|(_, t)| *t);
        if found.is_none() {
            let names: Vec<&str> = Self::ALL.iter().map(|(s, _)| *s).collect();
            issues.unknown(path, "endpoint type", value, &names);
        }
        found
    }
}

#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub endpoint_type: EndpointType,
    pub provider: Provider,
    /// Provider-side model name (`model.name`); the client's `model` never reaches the provider.
    pub model: String,
    /// Defaults merged under the client's fields.
    pub parameters: Map<String, Value>,
    /// MLflow's `limit: {calls, renewal_period}`, kept as given.
    pub limit: Option<Value>,
    /// `limit`, checked and typed once at load (the per-request path uses this).
    pub call_limit: Option<crate::gateway::features::limits::EndpointLimit>,
    /// Where requests go, in no particular order; routing orders them per request. Never empty:
    /// without `origins` in config it holds the provider's default base URL.
    pub origins: Vec<Origin>,
    /// Requests never leave this region, not even on failover.
    pub residency: Option<String>,
    /// No API key needed (a key that is sent is still attributed and limited).
    pub public: bool,
    /// Ceilings for numeric request fields (e.g. `max_tokens`), applied after defaults.
    pub clamps: Map<String, Value>,
    /// Fields forced whatever the client sent.
    pub overrides: Map<String, Value>,
    /// The prompt template the endpoint renders (`template: name[@version]` or MLflow's
    /// `prompt_template`).
    pub template: Option<TemplateRef>,
    pub guardrails: Guardrails,
    /// Deterministic-response caching; `None` is the default policy (`auto`).
    pub cache: CachePolicy,
    /// `responses: passthrough`: the origin speaks the OpenAI Responses API itself, so
    /// `/v1/responses` requests go to its `/responses` (otherwise they are translated to chat).
    pub responses_passthrough: bool,
    /// `access: approval`: only callers with a grant (features::access).
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub url: String,
    pub region: Option<String>,
    /// Share among origins of equal preference (default 1).
    pub weight: u32,
}

/// A traffic-split route: one name, several endpoints of one type, percentages summing to 100.
#[derive(Debug)]
pub struct TrafficRoute {
    pub name: String,
    pub task_type: EndpointType,
    /// (endpoint name, percentage), in config order.
    pub destinations: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    /// Cloudflare continent codes (`EU`, `NA`, ...).
    pub continents: Vec<String>,
    /// ISO 3166 country codes; a country match wins over a continent match.
    pub countries: Vec<String>,
}

/// Gateway-wide knobs, all with safe defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Requests with a larger body get 413 before parsing.
    pub max_body_bytes: usize,
    /// Request bodies holding more JSON object keys, non-empty strings (keys too) and arrays,
    /// or JSON values and keys of any kind, get 413 while parsing: what a body costs in CPU
    /// and memory is per value, not per byte (`wire::json::REQUEST_BOUNDS`).
    pub max_body_keys: usize,
    pub max_body_strings_and_arrays: usize,
    pub max_body_values: usize,
    /// Largest origin response the gateway buffers (non-streaming).
    pub max_response_bytes: usize,
    /// Per-attempt timeout for the response head.
    pub origin_timeout_ms: u64,
    /// Budget for all attempts of one request, failover included.
    pub total_timeout_ms: u64,
    /// How long an origin that failed repeatedly is tried only as a last resort.
    pub breaker_cooldown_ms: u64,
    /// How long an isolate reuses a parsed config before reading KV again.
    pub config_ttl_ms: u64,
    /// Request header naming the client's region, for hosts without geo data (Spin). Off when
    /// empty; only picks among origins, never overrides a residency pin.
    pub region_header: String,
    /// How long stored Responses API responses stay retrievable (and continuable).
    pub responses_ttl_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 1 << 20,
            max_body_keys: REQUEST_BOUNDS.keys,
            max_body_strings_and_arrays: REQUEST_BOUNDS.items,
            max_body_values: REQUEST_BOUNDS.values,
            max_response_bytes: 16 << 20,
            origin_timeout_ms: 60_000,
            total_timeout_ms: 120_000,
            breaker_cooldown_ms: 10_000,
            config_ttl_ms: 5_000,
            region_header: String::new(),
            responses_ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// Longest timeout or interval a setting may hold (a day): deadlines are `now + setting`.
const MAX_SETTING_MS: u64 = 86_400_000;

impl Settings {
    /// How many JSON values a request body may hold.
    pub fn body_bounds(&self) -> Bounds {
        Bounds { keys: self.max_body_keys, items: self.max_body_strings_and_arrays, values: self.max_body_values }
    }

    fn check(&self, issues: &mut Issues) {
        for (name, value) in [
            ("max_body_keys", self.max_body_keys),
            ("max_body_strings_and_arrays", self.max_body_strings_and_arrays),
            ("max_body_values", self.max_body_values),
        ] {
            if value == 0 {
                issues.push(format!("settings.{name}"), "must be at least 1");
            }
        }
        for (name, value) in [
            ("origin_timeout_ms", self.origin_timeout_ms),
            ("total_timeout_ms", self.total_timeout_ms),
            ("breaker_cooldown_ms", self.breaker_cooldown_ms),
            ("config_ttl_ms", self.config_ttl_ms),
        ] {
            if value > MAX_SETTING_MS {
                issues.push(format!("settings.{name}"), format!("must be at most {MAX_SETTING_MS} (one day, in ms)"));
            }
        }
    }
}

mod raw {
    use crate::gateway::check::Issues;
    use serde::Deserialize;
    use serde_json::{Map, Value};

    pub const TOP_LEVEL: &[&str] = &[
        "version",
        "endpoints",
        "routes",
        "regions",
        "default_region",
        "settings",
        "prices",
        "limits",
        "templates",
        "auth",
        "telemetry",
        "mcp_servers",
        "mcp_policies",
    ];

    /// The top level, split by hand: taking each field out of the map moves it, where serde
    /// rebuilt every `Value` field (the whole config) through its visitor.
    pub struct Config {
        pub version: Option<Value>,
        pub endpoints: Vec<Value>,
        pub routes: Vec<Value>,
        pub regions: Map<String, Value>,
        pub default_region: Option<String>,
        pub settings: Option<Value>,
        pub prices: Option<Value>,
        pub limits: Option<Value>,
        pub templates: Option<Value>,
        pub auth: Option<Value>,
        pub telemetry: Option<Value>,
        pub mcp_servers: Value,
        pub mcp_policies: Option<Value>,
    }

    impl Config {
        /// The fields of `value`, with an issue for each unknown one (left out) and each of the
        /// wrong type (then `None`). Missing fields and `null` are absent.
        pub fn split(value: Value, issues: &mut Issues) -> Option<Config> {
            let Value::Object(mut top) = value else {
                issues.push("", "the config must be a JSON object");
                return None;
            };
            for key in top.keys().filter(|k| !TOP_LEVEL.contains(&k.as_str())) {
                issues.unknown(key.as_str(), "top-level field", key, TOP_LEVEL);
            }
            let before = issues.0.len();
            let mut take = |name: &str| top.remove(name).filter(|v| !v.is_null());
            let mut list = |name: &str, value: Option<Value>| match value {
                None => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => {
                    issues.push(name, "must be a list");
                    Vec::new()
                }
            };
            let (endpoints, routes) = (take("endpoints"), take("routes"));
            let (endpoints, routes) = (list("endpoints", endpoints), list("routes", routes));
            let regions = match take("regions") {
                None => Map::new(),
                Some(Value::Object(map)) => map,
                Some(_) => {
                    issues.push("regions", "must be an object");
                    Map::new()
                }
            };
            let default_region = match take("default_region") {
                None => None,
                Some(Value::String(name)) => Some(name),
                Some(_) => {
                    issues.push("default_region", "must be a string");
                    None
                }
            };
            let config = Config {
                version: take("version"),
                endpoints,
                routes,
                regions,
                default_region,
                settings: take("settings"),
                prices: take("prices"),
                limits: take("limits"),
                templates: take("templates"),
                auth: take("auth"),
                telemetry: take("telemetry"),
                mcp_servers: take("mcp_servers").unwrap_or_default(),
                mcp_policies: take("mcp_policies"),
            };
            (issues.0.len() == before).then_some(config)
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Endpoint {
        pub name: String,
        /// `route_type` in MLflow's legacy `routes:` spelling.
        #[serde(alias = "route_type")]
        pub endpoint_type: String,
        pub model: Model,
        #[serde(default)]
        pub parameters: Map<String, Value>,
        #[serde(default)]
        pub limit: Option<Value>,
        #[serde(default)]
        pub origins: Vec<Origin>,
        #[serde(default)]
        pub residency: Option<String>,
        #[serde(default)]
        pub public: bool,
        /// Numeric ceilings (e.g. `{max_tokens: 512}`): the issue's "limits as clamps".
        #[serde(default)]
        pub limits: Map<String, Value>,
        #[serde(default)]
        pub overrides: Map<String, Value>,
        #[serde(default)]
        pub template: Option<String>,
        #[serde(default)]
        pub prompt_template: Option<Value>,
        #[serde(default)]
        pub guardrails: Option<Value>,
        #[serde(default)]
        pub cache: Option<Value>,
        #[serde(default)]
        pub responses: Option<String>,
        pub access: Option<Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Model {
        pub provider: String,
        #[serde(default)]
        pub name: Option<String>,
        #[serde(default)]
        pub config: Map<String, Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Origin {
        pub url: String,
        #[serde(default)]
        pub region: Option<String>,
        #[serde(default)]
        pub weight: Option<u32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TrafficRoute {
        pub name: String,
        pub task_type: String,
        pub destinations: Vec<Destination>,
        #[serde(default)]
        pub routing_strategy: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Destination {
        pub name: String,
        pub traffic_percentage: u32,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Region {
        #[serde(default)]
        pub continents: Vec<String>,
        #[serde(default)]
        pub countries: Vec<String>,
    }
}

impl Config {
    /// Whether any endpoint is `public`: where none is, a model call without a valid caller
    /// is refused before its body is read.
    pub fn any_public(&self) -> bool {
        self.any_public
    }

    /// Parses and checks a JSON snapshot; on failure returns every issue found.
    pub fn from_json(bytes: &[u8]) -> Result<Config, Vec<ConfigIssue>> {
        Config::decode(bytes, Decode::Eager)
    }

    /// The pipeline's load of the snapshot in KV (checked before it was stored): everything
    /// but the endpoints is checked now, each endpoint the first time a request names it. A
    /// fresh instance (every request on Spin, a cold isolate) then decodes the endpoint it
    /// serves, not all of them: the items of `endpoints` stay text (a scan finds each one's
    /// name) until a request names one. An endpoint without a valid name is checked at once
    /// (its name is needed to find it); an invalid one found later answers `config_invalid`
    /// ([`Config::endpoint_issue`] says why, for the log) while the others keep working.
    pub fn from_stored(bytes: &[u8]) -> Result<Config, Vec<ConfigIssue>> {
        Config::decode(bytes, Decode::OnFirstUse)
    }

    fn decode(bytes: &[u8], decode: Decode) -> Result<Config, Vec<ConfigIssue>> {
        let not_json =
            |e: serde_json::Error| vec![ConfigIssue { path: String::new(), message: format!("not valid JSON: {e}") }];
        // On first use, the `endpoints` list stays text: a tree of each item when it is needed.
        let split = match (decode, std::str::from_utf8(bytes)) {
            (Decode::OnFirstUse, Ok(text)) => split_array_entry(text, "endpoints", &["name", "public"]),
            _ => None,
        };
        match split {
            Some((rest, items)) => Config::build(value_from_slice(rest.as_bytes()).map_err(not_json)?, decode, items),
            None => Config::build(value_from_slice(bytes).map_err(not_json)?, decode, Vec::new()),
        }
    }

    pub fn from_value(value: Value) -> Result<Config, Vec<ConfigIssue>> {
        Config::build(value, Decode::Eager, Vec::new())
    }

    /// `endpoint_texts`: the items of the `endpoints` list, when `value`'s list was left empty
    /// for them ([`Config::decode`]).
    fn build(value: Value, decode: Decode, endpoint_texts: Vec<Item<'_>>) -> Result<Config, Vec<ConfigIssue>> {
        let mut issues = Issues::default();
        let Some(raw) = raw::Config::split(value, &mut issues) else { return Err(issues.0) };
        let version = match raw.version {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                issues.push("version", "must be a string or a number");
                String::new()
            }
        };
        let settings = match raw.settings {
            None => Settings::default(),
            Some(v) => issues.parse("settings", v).unwrap_or_default(),
        };
        settings.check(&mut issues);

        let mut regions = Vec::new();
        for (name, value) in raw.regions {
            let path = format!("regions.{name}");
            if let Some(r) = issues.parse::<raw::Region>(&path, value) {
                regions.push(Region { name, continents: upper(r.continents), countries: upper(r.countries) });
            }
        }
        let region_names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        if let Some(region) = &raw.default_region {
            check_region("default_region", region, &region_names, &mut issues);
        }

        let templates = match (raw.templates, decode) {
            (Some(v), Decode::Eager) => {
                let checked = template::check("templates", &v, &mut issues).unwrap_or_default();
                TemplateSection { raw: Value::Null, compiled: OnceLock::from((checked, None)) }
            }
            (v, _) => TemplateSection { raw: v.unwrap_or_default(), compiled: OnceLock::new() },
        };

        // Endpoints come from `endpoints:` and from legacy `routes:` entries (`route_type`);
        // `routes:` entries with `destinations` are traffic routes.
        let texts = endpoint_texts.into_iter().map(Pending::text);
        let mut endpoint_values: Vec<(ItemPath, Pending)> = texts
            .chain(raw.endpoints.into_iter().map(Pending::Tree))
            .enumerate()
            .map(|(i, v)| (ItemPath::Endpoint(i), v))
            .collect();
        let mut route_values = Vec::new();
        for (i, value) in raw.routes.into_iter().enumerate() {
            if value.get("destinations").is_some() {
                route_values.push((format!("routes[{i}]"), value));
            } else {
                endpoint_values.push((ItemPath::Route(i), Pending::Tree(value)));
            }
        }

        let mut endpoints: FastMap<String, EndpointSlot> =
            FastMap::with_capacity_and_hasher(endpoint_values.len(), Default::default());
        let mut order = Vec::with_capacity(endpoint_values.len() + route_values.len());
        for (path, mut pending) in endpoint_values {
            // Checked now (its name found by checking it) unless it can wait for its first use.
            let deferred = match decode {
                Decode::OnFirstUse => pending.take_head(),
                Decode::Eager => None,
            };
            let (name, slot) = match deferred {
                Some((Some(name), public)) => {
                    (name, EndpointSlot { path, raw: pending, public, decoded: OnceLock::new() })
                }
                _ => {
                    let value = match pending.into_tree() {
                        Ok(value) => value,
                        Err(e) => {
                            issues.push(path.to_string(), format!("not valid JSON: {e}"));
                            continue;
                        }
                    };
                    let checked =
                        check_endpoint(&path.to_string(), value, &region_names, &templates.get().0, &mut issues);
                    let Some(endpoint) = checked else {
                        continue;
                    };
                    (endpoint.name.clone(), EndpointSlot::decoded(path, endpoint))
                }
            };
            match endpoints.entry(name) {
                Entry::Occupied(taken) => {
                    let message = format!("duplicate endpoint name \"{}\"", taken.key());
                    issues.push(format!("{}.name", slot.path), message);
                }
                Entry::Vacant(free) => {
                    order.push(free.key().clone());
                    free.insert(slot);
                }
            }
        }

        let mut routes = FastMap::default();
        let endpoint_type = |name: &str| {
            let slot = endpoints.get(name)?;
            slot.get(&regions, &templates).as_ref().ok().map(|e| e.endpoint_type)
        };
        let names: Vec<&str> = endpoints.keys().map(String::as_str).collect();
        for (path, value) in route_values {
            let Some(route) = check_route(&path, value, &names, endpoint_type, &mut issues) else { continue };
            if endpoints.contains_key(&route.name) || routes.contains_key(&route.name) {
                issues.push(
                    format!("{path}.name"),
                    format!("duplicate name \"{}\" (endpoint and route names share one namespace)", route.name),
                );
                continue;
            }
            order.push(route.name.clone());
            routes.insert(route.name.clone(), Arc::new(route));
        }

        let prices = match &raw.prices {
            Some(v) => crate::gateway::features::usage::check_prices("prices", v, &mut issues).unwrap_or_default(),
            None => Default::default(),
        };
        let limits = match &raw.limits {
            Some(v) => crate::gateway::features::limits::check_limits("limits", v, &mut issues).unwrap_or_default(),
            None => Default::default(),
        };
        let auth = match &raw.auth {
            Some(v) => identity::check_auth("auth", v, &region_names, &mut issues).unwrap_or_default(),
            None => AuthConfig::default(),
        };
        let telemetry = raw.telemetry.as_ref().and_then(|v| {
            crate::gateway::features::telemetry::config::check("telemetry", v, &mut issues).map(Arc::new)
        });
        let mcp = crate::gateway::mcp::config::check_section(
            &raw.mcp_servers,
            raw.mcp_policies.as_ref(),
            &region_names,
            &mut issues,
        );
        if issues.0.is_empty() {
            Ok(Config {
                any_public: endpoints.values().any(|e| e.public),
                templates,
                version,
                endpoints,
                routes,
                order,
                regions,
                default_region: raw.default_region,
                settings,
                prices,
                limits,
                auth,
                telemetry,
                mcp,
            })
        } else {
            Err(issues.0)
        }
    }

    /// [`Config::from_value`] plus the rules for a config about to be *stored* (admin apply,
    /// `gatewayctl validate|render|plan|apply`): credentials must be `$NAME` references, since
    /// a literal would be copied into `config:active` and every `config:v:*` entry. (A stored
    /// config with literals still loads: refusing it at runtime would take the gateway down.)
    pub fn for_storage(value: Value) -> Result<Config, Vec<ConfigIssue>> {
        let literals = literal_secrets(&value);
        match Config::from_value(value) {
            Ok(config) if literals.is_empty() => Ok(config),
            Ok(_) => Err(literals),
            Err(mut issues) => {
                issues.extend(literals);
                Err(issues)
            }
        }
    }

    /// What is valid but probably not meant: endpoints whose model has no price (a request
    /// under a USD budget is refused there, 403 `unpriced_model`). `gatewayctl validate` prints
    /// them; the admin API returns them with an applied config.
    pub fn warnings(&self) -> Vec<String> {
        self.unpriced(|_| true)
            .into_iter()
            .map(|(name, model)| {
                format!(
                    "endpoint \"{name}\" (model \"{model}\") has no price in `prices`: requests under a USD budget \
                     will be refused there; add a price or a \"*\" default"
                )
            })
            .collect()
    }

    /// The LLM endpoints (in config order) accepted by `filter` whose model has no price:
    /// `(endpoint, provider/model)`.
    pub fn unpriced(&self, filter: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        self.order
            .iter()
            .filter_map(|name| self.endpoint(name))
            .filter(|e| e.endpoint_type != EndpointType::Predict && filter(&e.name))
            .filter(|e| self.prices.get(e.provider.name(), &e.model).is_none())
            .map(|e| (e.name.clone(), format!("{}/{}", e.provider.name(), e.model)))
            .collect()
    }

    /// The endpoint named `name`, decoded on its first use (see [`Config::from_stored`]);
    /// `None` for no such endpoint or an invalid one ([`Config::endpoint_issue`]).
    pub fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(name)?.get(&self.regions, &self.templates).as_ref().ok()
    }

    /// Why the endpoint named `name` is invalid (its first issue), when it is: only a config
    /// loaded with [`Config::from_stored`] holds one (a hand-edited snapshot, or one an older
    /// version accepted).
    pub fn endpoint_issue(&self, name: &str) -> Option<&str> {
        self.endpoints.get(name)?.get(&self.regions, &self.templates).as_ref().err().map(String::as_str)
    }

    /// Whether `name` is an endpoint marked `public`, without decoding it.
    pub fn is_public(&self, name: &str) -> bool {
        self.endpoints.get(name).is_some_and(|slot| slot.public)
    }

    /// Whether a region names countries or continents (else a client's location never matters).
    pub fn maps_locations(&self) -> bool {
        self.regions.iter().any(|r| !r.countries.is_empty() || !r.continents.is_empty())
    }

    /// The region a client location falls in: country match first, then continent.
    pub fn region_of(&self, country: Option<&str>, continent: Option<&str>) -> Option<&str> {
        let by = |code: Option<&str>, pick: fn(&Region) -> &Vec<String>| {
            let code = code?;
            self.regions.iter().find(|r| pick(r).iter().any(|c| c.eq_ignore_ascii_case(code))).map(|r| r.name.as_str())
        };
        by(country, |r| &r.countries).or_else(|| by(continent, |r| &r.continents))
    }
}

/// Whether a config key names a credential: one of its words (split at `_`, `-`, `.` and
/// camelCase) is key, secret, token, password, credential(s) or bearer — `openai_api_key`,
/// `aws_secret_access_key`, `apiKey`, `vertex_credentials`, but not `portkey_provider`.
pub fn is_secret_name(name: &str) -> bool {
    const WORDS: [&str; 8] = ["key", "apikey", "secret", "token", "password", "credential", "credentials", "bearer"];
    let mut word = String::new();
    let mut words = Vec::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if matches!(c, '_' | '-' | '.' | ' ') || (c.is_ascii_uppercase() && previous_lower) {
            words.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    words.push(word);
    words.iter().any(|w| WORDS.contains(&w.as_str()) || WORDS.iter().any(|s| w.strip_suffix('s') == Some(s)))
}

/// Credential-named values under `model.config` of every endpoint (and legacy route) that are
/// literals rather than `$NAME` references. The issue names the path, never the value.
pub fn literal_secrets(value: &Value) -> Vec<ConfigIssue> {
    fn walk(path: &str, value: &Value, out: &mut Vec<ConfigIssue>) {
        let Value::Object(map) = value else { return };
        for (name, v) in map {
            let at = format!("{path}.{name}");
            match v {
                Value::String(s) if is_secret_name(name) && !s.is_empty() && !s.starts_with('$') => {
                    out.push(ConfigIssue {
                        path: at,
                        message: "must be a \"$NAME\" reference to a host secret: a literal credential would be \
                                  stored in config:active and every config:v:* entry"
                            .into(),
                    })
                }
                Value::Object(_) => walk(&at, v, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for list in ["endpoints", "routes"] {
        for (i, entry) in value.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(config) = entry.get("model").and_then(|m| m.get("config")) {
                walk(&format!("{list}[{i}].model.config"), config, &mut out);
            }
        }
    }
    out
}

fn check_region(path: &str, region: &str, known: &[&str], issues: &mut Issues) {
    if !known.contains(&region) {
        issues.unknown(path, "region", region, known);
    }
}

fn upper(codes: Vec<String>) -> Vec<String> {
    codes.into_iter().map(|c| c.to_ascii_uppercase()).collect()
}

fn check_endpoint(
    path: &str,
    value: Value,
    regions: &[&str],
    templates: &Templates,
    issues: &mut Issues,
) -> Option<Endpoint> {
    let raw: raw::Endpoint = issues.parse(path, value)?;
    let before = issues.0.len();
    if !valid_name(&raw.name) {
        issues.push(
            format!("{path}.name"),
            format!("\"{}\" is not a valid endpoint name (letters, digits, '_', '-', '.'; 1-64 chars)", raw.name),
        );
    }
    let endpoint_type = EndpointType::parse(&format!("{path}.endpoint_type"), &raw.endpoint_type, issues);
    let provider = Provider::from_config(
        &format!("{path}.model"),
        &raw.model.provider,
        raw.model.name.as_deref(),
        &raw.model.config,
        issues,
    );
    let model = raw.model.name.unwrap_or_default();
    if model.is_empty() && provider.as_ref().is_some_and(Provider::needs_model_name) {
        issues.push(format!("{path}.model.name"), "is required for this provider");
    }
    let mut origins = Vec::new();
    for (i, o) in raw.origins.into_iter().enumerate() {
        if !(o.url.starts_with("http://") || o.url.starts_with("https://")) {
            issues
                .push(format!("{path}.origins[{i}].url"), format!("\"{}\" must start with http:// or https://", o.url));
        }
        if o.weight == Some(0) {
            issues.push(format!("{path}.origins[{i}].weight"), "must be at least 1 (remove the origin to disable it)");
        }
        if let Some(region) = &o.region {
            check_region(&format!("{path}.origins[{i}].region"), region, regions, issues);
        }
        origins.push(Origin { url: o.url, region: o.region, weight: o.weight.unwrap_or(1) });
    }
    let call_limit = raw.limit.as_ref().and_then(|limit| {
        crate::gateway::features::limits::check_endpoint_limit(&format!("{path}.limit"), limit, issues)
    });
    for (key, value) in &raw.limits {
        if !value.is_number() {
            issues.push(format!("{path}.limits.{key}"), "must be a number (a ceiling for that request field)");
        }
    }
    let template = match (&raw.template, &raw.prompt_template) {
        (Some(_), Some(_)) => {
            issues.push(format!("{path}.prompt_template"), "set either `template` or `prompt_template`, not both");
            None
        }
        (Some(reference), None) => template::check_ref(&format!("{path}.template"), reference, templates, issues),
        (None, Some(inline)) => template::check_inline(&format!("{path}.prompt_template"), inline, issues),
        (None, None) => None,
    };
    if template.is_some() && matches!(endpoint_type, Some(EndpointType::Embeddings | EndpointType::Predict)) {
        issues.push(format!("{path}.template"), "only chat and completions endpoints render prompt templates");
    }
    let guardrails = match &raw.guardrails {
        Some(v) => guard::check(&format!("{path}.guardrails"), v, issues).unwrap_or_default(),
        None => Guardrails::default(),
    };
    let cache = match &raw.cache {
        Some(v) => cache::check(&format!("{path}.cache"), v, issues).unwrap_or_default(),
        None => CachePolicy::default(),
    };
    let access = match &raw.access {
        Some(v) => access::check_access(&format!("{path}.access"), v, issues).unwrap_or_default(),
        None => Access::Open,
    };
    if access == Access::Approval && raw.public {
        issues.push(
            format!("{path}.access"),
            "a public endpoint needs no caller, so it cannot require approval: drop `public` or `access`",
        );
    }
    if let Some(pin) = &raw.residency {
        check_region(&format!("{path}.residency"), pin, regions, issues);
        if !origins.iter().any(|o| o.region.as_ref() == Some(pin)) {
            issues.push(format!("{path}.residency"), format!("no origin of this endpoint is in region \"{pin}\""));
        }
    }
    let responses_passthrough = match raw.responses.as_deref() {
        None | Some("translate") => false,
        Some("passthrough") => {
            let speaks_responses = matches!(&provider, Some(Provider::OpenAi(p)) if !p.is_azure());
            if !speaks_responses || endpoint_type != Some(EndpointType::Chat) {
                issues.push(
                    format!("{path}.responses"),
                    "passthrough needs a chat endpoint of the openai provider (openai_api_type: openai)",
                );
            }
            true
        }
        Some(other) => {
            issues.unknown(format!("{path}.responses"), "responses mode", other, &["translate", "passthrough"]);
            false
        }
    };
    if issues.0.len() != before {
        return None;
    }
    let provider = provider?;
    if origins.is_empty() {
        origins.push(Origin { url: provider.default_base().to_string(), region: None, weight: 1 });
    }
    Some(Endpoint {
        name: raw.name,
        endpoint_type: endpoint_type?,
        provider,
        model,
        parameters: raw.parameters,
        limit: raw.limit,
        call_limit,
        origins,
        residency: raw.residency,
        public: raw.public,
        clamps: raw.limits,
        overrides: raw.overrides,
        template,
        guardrails,
        cache,
        responses_passthrough,
        access,
    })
}

/// `names`: the endpoints' names; `endpoint_type`: the type of the endpoint named so (`None`:
/// no such valid endpoint).
fn check_route(
    path: &str,
    value: Value,
    names: &[&str],
    endpoint_type: impl Fn(&str) -> Option<EndpointType>,
    issues: &mut Issues,
) -> Option<TrafficRoute> {
    let raw: raw::TrafficRoute = issues.parse(path, value)?;
    let before = issues.0.len();
    if !valid_name(&raw.name) {
        issues.push(format!("{path}.name"), format!("\"{}\" is not a valid route name", raw.name));
    }
    let task_type = EndpointType::parse(&format!("{path}.task_type"), &raw.task_type, issues);
    if let Some(strategy) = raw.routing_strategy.as_deref().filter(|s| *s != "TRAFFIC_SPLIT") {
        issues.unknown(format!("{path}.routing_strategy"), "routing strategy", strategy, &["TRAFFIC_SPLIT"]);
    }
    if raw.destinations.is_empty() {
        issues.push(format!("{path}.destinations"), "needs at least one destination");
    }
    for (i, d) in raw.destinations.iter().enumerate() {
        match endpoint_type(&d.name) {
            None => issues.unknown(format!("{path}.destinations[{i}].name"), "endpoint", &d.name, names),
            Some(t) if Some(t) != task_type && task_type.is_some() => issues.push(
                format!("{path}.destinations[{i}].name"),
                format!("endpoint \"{}\" is {}, but the route's task_type is {}", d.name, t.as_str(), raw.task_type),
            ),
            Some(_) => {}
        }
    }
    // Summed in u64: u32 percentages could wrap (4294967295 + 101 = 100).
    let total: u64 = raw.destinations.iter().map(|d| u64::from(d.traffic_percentage)).sum();
    if !raw.destinations.is_empty() && total != 100 {
        issues.push(format!("{path}.destinations"), format!("traffic_percentage values sum to {total}, not 100"));
    }
    if issues.0.len() != before {
        return None;
    }
    Some(TrafficRoute {
        name: raw.name,
        task_type: task_type?,
        destinations: raw.destinations.into_iter().map(|d| (d.name, d.traffic_percentage)).collect(),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::is_secret_name;

    #[test]
    fn secret_names_are_whole_words() {
        for name in [
            "openai_api_key",
            "aws_secret_access_key",
            "apiKey",
            "api-key",
            "vertex_credentials",
            "bearer",
            "Token",
            "client_secret",
            "databricks_token",
            "password",
            "x-api-key",
            "aws_bearer_token",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["portkey_provider", "model", "api_base", "monkey", "keyed", "authorization", "tokenizer"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    use super::*;
    use serde_json::json;

    fn chat_endpoint(provider: &str) -> Value {
        json!({"name": "chat", "endpoint_type": "llm/v1/chat",
               "model": {"provider": provider, "name": "gpt-4o-mini",
                         "config": {"openai_api_key": "$OPENAI_API_KEY"}}})
    }

    #[test]
    fn parses_mlflow_shaped_endpoint() {
        let config = Config::from_value(json!({"version": 3, "endpoints": [chat_endpoint("openai")]})).unwrap();
        assert_eq!(config.version, "3");
        let chat = config.endpoint("chat").unwrap();
        assert_eq!(chat.endpoint_type, EndpointType::Chat);
        assert_eq!(chat.model, "gpt-4o-mini");
    }

    #[test]
    fn unknown_provider_is_reported_with_path_and_suggestion() {
        let issues =
            Config::from_value(json!({"endpoints": [chat_endpoint("openai"), chat_endpoint("opena")]})).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(
            issues[0].to_string(),
            "endpoints[1].model.provider: unknown provider \"opena\" (did you mean \"openai\"?)"
        );
    }

    /// The top level is split by hand: each field of the wrong type is named, unknown fields
    /// are reported beside them, `null` is a missing field, and JSON errors say where.
    #[test]
    fn top_level_fields_of_the_wrong_type_are_named() {
        let text = |value: Value| -> Vec<String> {
            Config::from_value(value).unwrap_err().iter().map(ToString::to_string).collect()
        };
        assert_eq!(text(json!([])), ["the config must be a JSON object"]);
        assert_eq!(
            text(json!({"endpoints": {}, "routes": "r", "regions": [], "default_region": 1, "extra": 1})),
            [
                "extra: unknown top-level field \"extra\" (expected one of: version, endpoints, routes, regions, default_region, settings, prices, limits, templates, auth, telemetry, mcp_servers, mcp_policies)",
                "endpoints: must be a list",
                "routes: must be a list",
                "regions: must be an object",
                "default_region: must be a string",
            ]
        );
        let config = Config::from_value(json!({"version": null, "endpoints": [chat_endpoint("openai")],
            "routes": null, "regions": null, "default_region": null, "settings": null, "mcp_servers": null}))
        .unwrap();
        assert_eq!((config.version.as_str(), config.order.len()), ("", 1));
        let e = Config::from_json(b"{\"endpoints\": [}").unwrap_err();
        assert_eq!(e[0].to_string(), "not valid JSON: expected value at line 1 column 16");
    }

    #[test]
    fn reports_every_issue() {
        let issues = Config::from_value(json!({
            "endpoints": [
                {"name": "a b", "endpoint_type": "llm/v1/chatt", "model": {"provider": "openai", "name": "m"}},
                chat_endpoint("openai"),
                chat_endpoint("openai"),
            ],
            "extra": 1
        }))
        .unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.starts_with("extra: unknown top-level field")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("endpoints[0].name:")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("did you mean \"llm/v1/chat\"")), "{text:?}");
        assert!(text.iter().any(|t| t == "endpoints[2].name: duplicate endpoint name \"chat\""), "{text:?}");
    }

    #[test]
    fn legacy_routes_and_traffic_routes() {
        let config = Config::from_value(json!({
            "routes": [
                {"name": "chat", "route_type": "llm/v1/chat",
                 "model": {"provider": "openai", "name": "a", "config": {"openai_api_key": "k"}}},
                {"name": "chat2", "route_type": "llm/v1/chat",
                 "model": {"provider": "openai", "name": "b", "config": {"openai_api_key": "k"}}},
                {"name": "split", "task_type": "llm/v1/chat", "routing_strategy": "TRAFFIC_SPLIT",
                 "destinations": [{"name": "chat", "traffic_percentage": 80}, {"name": "chat2", "traffic_percentage": 20}]}
            ]
        }))
        .unwrap();
        assert_eq!(config.order, ["chat", "chat2", "split"]);
        assert_eq!(config.routes["split"].destinations, [("chat".to_string(), 80), ("chat2".to_string(), 20)]);
        // A legacy entry's issues name it where it is written.
        let issues = Config::from_value(
            json!({"routes": [chat_endpoint("openai"), {"name": "x", "route_type": "llm/v1/chat"}]}),
        )
        .unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["routes[1]: missing field `model`"]);
    }

    /// L5: percentages that wrap a u32 sum (4294967295 + 101 = 100) are refused.
    #[test]
    fn traffic_percentages_cannot_wrap_to_100() {
        let issues = Config::from_value(json!({
            "endpoints": [chat_endpoint("openai")],
            "routes": [{"name": "split", "task_type": "llm/v1/chat",
                        "destinations": [{"name": "chat", "traffic_percentage": 4294967295u64},
                                         {"name": "chat", "traffic_percentage": 101}]}]
        }))
        .unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.contains("routes[0].destinations") && t.contains("100")), "{text:?}");
        // Timeouts near u64::MAX are refused too (deadlines are now + timeout).
        let issues = Config::from_value(json!({"settings": {"total_timeout_ms": u64::MAX}})).unwrap_err();
        assert!(issues[0].to_string().starts_with("settings.total_timeout_ms"), "{issues:?}");
    }

    #[test]
    fn traffic_route_issues() {
        let issues = Config::from_value(json!({
            "endpoints": [chat_endpoint("openai")],
            "routes": [{"name": "split", "task_type": "llm/v1/embeddings",
                        "destinations": [{"name": "chat", "traffic_percentage": 50}, {"name": "chta", "traffic_percentage": 20}]}]
        }))
        .unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"routes[0].destinations: traffic_percentage values sum to 70, not 100".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("routes[0].destinations[0].name: endpoint \"chat\" is llm/v1/chat")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t
                    .starts_with("routes[0].destinations[1].name: unknown endpoint \"chta\" (did you mean \"chat\"?)")),
            "{text:?}"
        );
    }

    #[test]
    fn regions_origins_and_residency() {
        let mut endpoint = chat_endpoint("openai");
        endpoint["origins"] = json!([{"url": "http://eu.test/v1", "region": "eu"}, {"url": "http://us.test/v1", "region": "us", "weight": 3}]);
        endpoint["residency"] = json!("eu");
        let config = Config::from_value(json!({
            "regions": {"eu": {"continents": ["EU"], "countries": ["gb"]}, "us": {"continents": ["NA"]}},
            "endpoints": [endpoint]
        }))
        .unwrap();
        let chat = config.endpoint("chat").unwrap();
        assert_eq!(chat.origins[1], Origin { url: "http://us.test/v1".into(), region: Some("us".into()), weight: 3 });
        assert_eq!(config.region_of(Some("GB"), Some("XX")), Some("eu"));
        assert_eq!(config.region_of(Some("US"), Some("NA")), Some("us"));
        assert_eq!(config.region_of(None, None), None);

        let mut bad = chat_endpoint("openai");
        bad["origins"] = json!([{"url": "eu.test", "region": "europe"}]);
        bad["residency"] = json!("us");
        let issues = Config::from_value(json!({"regions": {"eu": {}, "us": {}}, "endpoints": [bad]})).unwrap_err();
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"endpoints[0].origins[0].url: \"eu.test\" must start with http:// or https://".to_string()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("endpoints[0].origins[0].region: unknown region \"europe\"")),
            "{text:?}"
        );
        assert!(
            text.contains(&"endpoints[0].residency: no origin of this endpoint is in region \"us\"".to_string()),
            "{text:?}"
        );
    }

    /// The stored config's endpoints are decoded on first use: a request pays for the one it
    /// names (and a route's destinations at load), whatever else the config holds; what cannot
    /// wait (a missing or invalid name, a duplicate, the rest of the config) is checked at load.
    #[test]
    fn a_stored_config_decodes_each_endpoint_on_first_use() {
        let endpoint = |name: &str, kind: &str| {
            json!({"name": name, "endpoint_type": kind, "public": name == "b",
                   "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K"}}})
        };
        let config = json!({"endpoints": [endpoint("a", "llm/v1/chat"), endpoint("b", "llm/v1/chat"),
            endpoint("c", "llm/v1/chatt"), endpoint("d", "llm/v1/embeddings"), endpoint("e", "llm/v1/chat")],
            "routes": [{"name": "split", "task_type": "llm/v1/chat",
                        "destinations": [{"name": "a", "traffic_percentage": 50}, {"name": "e", "traffic_percentage": 50}]}]});
        let bytes = serde_json::to_vec(&config).unwrap();
        fn decoded(c: &Config) -> Vec<&str> {
            let mut names: Vec<&str> =
                c.endpoints.iter().filter(|(_, s)| s.decoded.get().is_some()).map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            names
        }

        // Checked as a whole (gatewayctl, the admin API): every endpoint, every issue.
        let issues = Config::from_json(&bytes).unwrap_err();
        assert!(issues.iter().any(|i| i.path == "endpoints[2].endpoint_type"), "{issues:?}");

        let stored = Config::from_stored(&bytes).unwrap();
        assert_eq!(decoded(&stored), ["a", "e"], "only the route's destinations at load");
        assert!(stored.is_public("b") && !stored.is_public("a") && stored.any_public);
        assert_eq!(decoded(&stored), ["a", "e"], "is_public decodes nothing");
        assert_eq!(stored.endpoint("d").unwrap().endpoint_type, EndpointType::Embeddings);
        assert_eq!(decoded(&stored), ["a", "d", "e"]);
        assert!(stored.endpoint("c").is_none());
        assert!(stored.endpoint_issue("c").unwrap().starts_with("endpoints[2].endpoint_type"));
        assert_eq!((stored.endpoint_issue("d"), stored.endpoint_issue("zz")), (None, None));
        assert_eq!(stored.order, ["a", "b", "c", "d", "e", "split"]);

        // Templates are compiled when an endpoint naming one is first decoded; a broken one
        // fails the endpoints that name it (not skipped), and only them.
        let templated = |template: &str| {
            let mut e = endpoint("t", "llm/v1/chat");
            e["template"] = json!("greet");
            json!({"templates": {"greet": {"user": template}}, "endpoints": [e, endpoint("a", "llm/v1/chat")]})
        };
        let stored = Config::from_stored(&serde_json::to_vec(&templated("Hi {{ name }}")).unwrap()).unwrap();
        assert!(stored.endpoint("a").is_some() && stored.templates.compiled.get().is_none());
        assert_eq!(stored.endpoint("t").unwrap().template.as_ref().unwrap().name(), "greet");
        assert!(stored.templates.compiled.get().is_some());
        let broken = Config::from_stored(&serde_json::to_vec(&templated("Hi {{ name")).unwrap()).unwrap();
        assert!(broken.endpoint("a").is_some() && broken.endpoint("t").is_none());
        assert!(broken.endpoint_issue("t").unwrap().starts_with("templates.greet"), "{:?}", broken.endpoint_issue("t"));
        assert!(Config::from_json(&serde_json::to_vec(&templated("Hi {{ name")).unwrap()).is_err());

        // What a request could not do without: names, duplicates, routes, the other sections.
        for (bad, path) in [
            (json!({"endpoints": [{"endpoint_type": "llm/v1/chat"}]}), "endpoints[0]"),
            (json!({"endpoints": [endpoint("a", "llm/v1/chat"), endpoint("a", "llm/v1/chat")]}), "endpoints[1].name"),
            (
                json!({"endpoints": [endpoint("c", "llm/v1/chatt")], "routes": [{"name": "r", "task_type": "llm/v1/chat",
                "destinations": [{"name": "c", "traffic_percentage": 100}]}]}),
                "routes[0].destinations[0].name",
            ),
            (json!({"settings": {"origin_timeout_ms": "x"}, "endpoints": [endpoint("a", "llm/v1/chat")]}), "settings"),
            (
                json!({"settings": {"max_body_values": 0}, "endpoints": [endpoint("a", "llm/v1/chat")]}),
                "settings.max_body_values",
            ),
        ] {
            let issues = Config::from_stored(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
            assert!(issues.iter().any(|i| i.path.starts_with(path)), "{bad}: {issues:?}");
        }
        // What the scan cannot place, and an item that is no object, are reported at load.
        for (text, issue) in [
            (r#"{"endpoints": [3]}"#, "endpoints[0]: invalid type"),
            (r#"{"endpoints": [{"name": "a",}]}"#, "not valid JSON"),
        ] {
            let issues = Config::from_stored(text.as_bytes()).unwrap_err();
            assert!(issues.iter().any(|i| i.to_string().starts_with(issue)), "{text}: {issues:?}");
        }
        // Past its name, an item is read on first use: bad JSON there fails that endpoint.
        let bad = br#"{"endpoints": [{"name": "a", "x": tru}, {"name": "b", "endpoint_type": "llm/v1/chat",
            "model": {"provider": "openai", "name": "m", "config": {"openai_api_key": "$K"}}}]}"#;
        assert!(Config::from_json(bad).is_err());
        let stored = Config::from_stored(bad).unwrap();
        assert!(stored.endpoint("a").is_none() && stored.endpoint("b").is_some());
        assert!(stored.endpoint_issue("a").unwrap().starts_with("endpoints[0]: not valid JSON"));
        // A repeated `endpoints` is read as the checker reads it (the last one).
        let twice = br#"{"endpoints": [{"name": "a"}], "endpoints": []}"#;
        assert_eq!(
            (Config::from_stored(twice).unwrap().order.len(), Config::from_json(twice).unwrap().order.len()),
            (0, 0)
        );
    }
}

//! `databricks` / `databricks-model-serving`: Databricks Model Serving through its
//! OpenAI-compatible API, as MLflow 3.17 serves it (`mlflow/gateway/providers/databricks.py`):
//! `{host}/serving-endpoints/chat/completions` (`completions`, `embeddings`) with the serving
//! endpoint's name as `model`, or `{host}/ai-gateway/mlflow/v1/...` for Unity Catalog model
//! names (`catalog.schema.model`).
//!
//! Config (MLflow's `DatabricksConfig`): `host`, and either `token` (a personal access token) or
//! `client_id` + `client_secret` (OAuth M2M: a service principal's secret is exchanged at
//! `{host}/oidc/v1/token` for an hour's access token, cached per isolate). MLflow leaves all four
//! optional and falls back on the Databricks SDK's credential chain; the edge has none, so `host`
//! and one credential form are required.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{header, Request};
use serde_json::{Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::Result;
use crate::gateway::ports::{Clock, Secrets, Upstream};
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{check_url, header_value, join_url, json_post, resolve_secret, string_config};
use crate::gateway::providers::openai::{ask_stream_usage, openai_path, passthrough_answer};
use crate::gateway::providers::token::{
    form_encode, form_request, not_authorized, oauth_token, send_form, AccessToken, TokenCache,
};
use crate::gateway::types::Operation;
use crate::gateway::wire::json::json_body;

const CONFIG_KEYS: &[&str] = &["host", "token", "client_id", "client_secret"];
const SERVING_ENDPOINTS: &str = "/serving-endpoints";

#[derive(Debug)]
pub enum DatabricksAuth {
    /// A personal access token.
    Token(SecretRef),
    /// OAuth M2M (a service principal).
    ServicePrincipal { client_id: SecretRef, client_secret: SecretRef, token: TokenCache<AccessToken> },
}

#[derive(Debug)]
pub struct Databricks {
    /// `databricks` or `databricks-model-serving`.
    pub name: &'static str,
    /// The workspace URL, without `/serving-endpoints`.
    pub host: String,
    pub auth: DatabricksAuth,
}

/// A Unity Catalog name (`catalog.schema.model`): served through the AI Gateway API.
fn is_unity_catalog_name(model: &str) -> bool {
    model.matches('.').count() >= 2
}

impl Databricks {
    pub fn from_config(
        name: &'static str,
        path: &str,
        config: &Map<String, Value>,
        issues: &mut Issues,
    ) -> Option<Databricks> {
        let before = issues.0.len();
        let mut values = string_config(path, name, config, CONFIG_KEYS, issues);
        let host = values.remove("host");
        match &host {
            None => issues.push(
                format!("{path}.host"),
                "is required at the edge (the workspace URL, e.g. \"https://my-workspace.cloud.databricks.com\")",
            ),
            Some(url) => check_url(path, "host", url, issues),
        }
        let token = values.remove("token");
        let client_id = values.remove("client_id");
        let client_secret = values.remove("client_secret");
        let auth = match (token, client_id, client_secret) {
            (Some(token), None, None) => Some(DatabricksAuth::Token(SecretRef::parse(&token))),
            (None, Some(id), Some(secret)) => Some(DatabricksAuth::ServicePrincipal {
                client_id: SecretRef::parse(&id),
                client_secret: SecretRef::parse(&secret),
                token: TokenCache::default(),
            }),
            (Some(_), _, _) => {
                issues.push(format!("{path}.token"), "set either token or client_id + client_secret, not both");
                None
            }
            (None, Some(_), None) => {
                issues.push(format!("{path}.client_secret"), "is required with client_id (OAuth M2M)");
                None
            }
            (None, None, Some(_)) => {
                issues.push(format!("{path}.client_id"), "is required with client_secret (OAuth M2M)");
                None
            }
            (None, None, None) => {
                issues.push(
                    format!("{path}.token"),
                    "is required at the edge (there is no Databricks SDK credential chain): a personal access \
                     token (\"$SECRET\"), or client_id + client_secret of a service principal",
                );
                None
            }
        };
        if issues.0.len() != before {
            return None;
        }
        let host = host?;
        let host = match host.find(SERVING_ENDPOINTS) {
            Some(at) => host[..at].to_string(),
            None => host.trim_end_matches('/').to_string(),
        };
        Some(Databricks { name, host, auth: auth? })
    }

    /// For OAuth M2M: fetches an access token unless a fresh one is cached.
    pub async fn authorize<P: Upstream + Secrets + Clock>(&self, ports: &P, timeout_ms: u64) -> Result<()> {
        let DatabricksAuth::ServicePrincipal { client_id, client_secret, token } = &self.auth else {
            return Ok(());
        };
        token
            .ensure(ports, timeout_ms, || async {
                let now_ms = ports.now_ms();
                let basic = STANDARD.encode(format!(
                    "{}:{}",
                    resolve_secret(client_id, ports)?,
                    resolve_secret(client_secret, ports)?
                ));
                let body = form_encode(&[("grant_type", "client_credentials"), ("scope", "all-apis")]);
                let mut request = form_request(join_url(&self.host, "oidc/v1/token"), body)?;
                request.headers_mut().insert(header::AUTHORIZATION, header_value(format!("Basic {basic}"))?);
                let what = format!("the {} OAuth token exchange", self.name);
                let answer = send_form(ports, &request, timeout_ms, &what).await?;
                oauth_token(&answer, now_ms, &what)
            })
            .await
    }
}

impl Adapter for Databricks {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.host
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let op_path = openai_path(self.name, call.op)?;
        let root = if is_unity_catalog_name(call.model) { "ai-gateway/mlflow/v1" } else { "serving-endpoints" };
        let mut body = call.body;
        body.insert("model".into(), Value::String(call.model.to_string()));
        if call.stream && call.op != Operation::Embeddings {
            ask_stream_usage(&mut body);
        }
        let bearer = match &self.auth {
            DatabricksAuth::Token(token) => resolve_secret(token, secrets)?,
            DatabricksAuth::ServicePrincipal { token, .. } => {
                token.get(call.now_ms).ok_or_else(|| not_authorized(self.name))?.0
            }
        };
        let url = join_url(call.base_url, &format!("{root}/{op_path}"));
        let mut request = json_post(url, json_body(&body))?;
        request.headers_mut().insert(header::AUTHORIZATION, header_value(format!("Bearer {bearer}"))?);
        Ok(request)
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        passthrough_answer(reply)
    }

    fn stream_mode(&self, _op: Operation, _model: &str, _now_ms: u64) -> StreamMode<Self::Stream> {
        StreamMode::Passthrough
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::providers::test_support::{call, sent};
    use http::{Response, StatusCode};
    use serde_json::json;

    fn databricks(config: Value) -> Databricks {
        let mut issues = Issues::default();
        let p = Databricks::from_config("databricks", "c", config.as_object().unwrap(), &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        p.unwrap()
    }

    fn issues(config: Value) -> Vec<String> {
        let mut issues = Issues::default();
        assert!(Databricks::from_config("databricks", "e.config", config.as_object().unwrap(), &mut issues).is_none());
        issues.0.iter().map(ToString::to_string).collect()
    }

    fn host() -> MemoryHost {
        MemoryHost::new(|req| {
            assert_eq!(req.uri().path(), "/oidc/v1/token");
            Ok(Response::new(br#"{"access_token":"dbx-oauth","expires_in":3600,"token_type":"Bearer"}"#.to_vec()))
        })
        .with_secret("DATABRICKS_TOKEN", "dapi-test")
        .with_secret("DBX_CLIENT_ID", "sp-id")
        .with_secret("DBX_CLIENT_SECRET", "sp-secret")
    }

    fn build(p: &Databricks, host: &MemoryHost, op: Operation, model: &str, stream: bool) -> Result<Request<Vec<u8>>> {
        p.build_request(call(op, model, json!({"messages": []}), p.default_base(), stream, host.now_ms.get()), host)
    }

    #[test]
    fn a_personal_access_token_calls_the_serving_endpoints_api() {
        let host = host();
        let p = databricks(
            json!({"host": "https://adb-1.azuredatabricks.net/serving-endpoints/", "token": "$DATABRICKS_TOKEN"}),
        );
        assert_eq!(p.default_base(), "https://adb-1.azuredatabricks.net");
        block_on(p.authorize(&host, 1000)).unwrap();
        assert!(host.sent.borrow().is_empty(), "a PAT needs no exchange");
        let req = build(&p, &host, Operation::Chat, "databricks-meta-llama-3-3-70b-instruct", true).unwrap();
        assert_eq!(req.uri(), "https://adb-1.azuredatabricks.net/serving-endpoints/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer dapi-test");
        assert_eq!(sent(&req)["model"], "databricks-meta-llama-3-3-70b-instruct");
        assert_eq!(sent(&req)["stream_options"], json!({"include_usage": true}));
        let req = build(&p, &host, Operation::Embeddings, "system.ai.gte-large-en", false).unwrap();
        assert_eq!(req.uri(), "https://adb-1.azuredatabricks.net/ai-gateway/mlflow/v1/embeddings");
        assert_eq!(build(&p, &host, Operation::Predict, "m", false).unwrap_err().code, "unsupported_operation");
    }

    #[test]
    fn a_service_principal_exchanges_its_secret_once() {
        let host = host();
        let p = databricks(json!({"host": "https://dbc-1.cloud.databricks.com", "client_id": "$DBX_CLIENT_ID",
            "client_secret": "$DBX_CLIENT_SECRET"}));
        assert_eq!(
            build(&p, &host, Operation::Chat, "m", false).unwrap_err().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        block_on(p.authorize(&host, 1000)).unwrap();
        block_on(p.authorize(&host, 1000)).unwrap();
        let sent_requests = host.sent.borrow();
        assert_eq!(sent_requests.len(), 1);
        let exchange = &sent_requests[0];
        assert_eq!(exchange.uri(), "https://dbc-1.cloud.databricks.com/oidc/v1/token");
        assert_eq!(
            exchange.headers()["authorization"],
            format!("Basic {}", STANDARD.encode("sp-id:sp-secret")).as_str()
        );
        assert_eq!(exchange.body().as_slice(), b"grant_type=client_credentials&scope=all-apis");
        drop(sent_requests);
        assert_eq!(
            build(&p, &host, Operation::Chat, "m", false).unwrap().headers()["authorization"],
            "Bearer dbx-oauth"
        );
    }

    #[test]
    fn config_issues_name_their_path() {
        let text = issues(json!({"hots": "x"}));
        assert!(text.iter().any(|t| t.contains("did you mean \"host\"")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("e.config.host: is required at the edge")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("e.config.token: is required at the edge")), "{text:?}");
        assert_eq!(
            issues(json!({"host": "https://h", "token": "t", "client_id": "i"})),
            ["e.config.token: set either token or client_id + client_secret, not both"]
        );
        assert_eq!(
            issues(json!({"host": "https://h", "client_id": "i"})),
            ["e.config.client_secret: is required with client_id (OAuth M2M)"]
        );
        assert_eq!(
            issues(json!({"host": "https://h", "client_secret": "s"})),
            ["e.config.client_id: is required with client_secret (OAuth M2M)"]
        );
        assert!(issues(json!({"host": "h", "token": "t"}))[0].starts_with("e.config.host: \"h\" must start with http"));
    }
}

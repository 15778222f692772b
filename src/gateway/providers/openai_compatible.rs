//! The OpenAI-compatible family as data: providers whose origins speak OpenAI's wire format
//! (same paths, same answers, same SSE) and differ only in their config field names, default
//! base URL, how the key travels, a few extra headers and a few request fields. One `Family`
//! row each; one adapter (`Compatible`) serves them all. Adding such a provider is one row
//! here plus its tests.
//!
//! Config field names and default bases are MLflow 3.17's (`mlflow/gateway/config.py`,
//! `mlflow/gateway/providers/{groq,deepseek,xai,openrouter,ollama,portkey,togetherai,mistral}.py`);
//! `togetherai_api_base` and `mistral_api_base` are our extensions (MLflow hard-codes those bases).

use std::collections::HashMap;

use http::{header, HeaderName, Request};
use serde_json::{Map, Value};

use crate::gateway::check::{Issues, SecretRef};
use crate::gateway::error::Result;
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    header_value, join_url, json_post, keyed_config, map_params, param, rename_params, resolve_secret, unsupported,
    KeySpec, Param, Shape,
};
use crate::gateway::providers::openai::{ask_stream_usage, openai_path, passthrough_answer};
use crate::gateway::types::Operation;
use crate::gateway::wire::json::json_body;

/// How the credential travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key as the value of this header.
    Header(&'static str),
}

/// A config field sent as a request header.
#[derive(Debug, Clone, Copy)]
pub struct ConfigHeader {
    pub field: &'static str,
    pub header: &'static str,
    /// The field is a credential (`$SECRET` reference) sent as `Bearer <value>`.
    pub bearer_secret: bool,
}

/// How a request body goes to the origin.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// OpenAI's body as it is, with the table's renames and drops.
    Pass(&'static [Param]),
    /// Only the fields the table names (origins that refuse unknown fields).
    Only(&'static [Param]),
}

/// One OpenAI-compatible provider.
#[derive(Debug)]
pub struct Family {
    /// `model.provider`, and the config fields (`spec.provider` is the same name).
    pub spec: KeySpec,
    pub auth: Auth,
    pub headers: &'static [ConfigHeader],
    /// The endpoint types the origin serves.
    pub ops: &'static [Operation],
    /// Chat and completions bodies.
    pub chat: Body,
    pub embeddings: Body,
    /// Ask for the final usage chunk with `stream_options.include_usage` (origins that refuse
    /// `stream_options` send usage on their own).
    pub stream_usage: bool,
    /// The origin answers `encoding_format: "base64"` itself; otherwise the field is not sent
    /// and the gateway encodes the floats.
    pub base64: bool,
}

impl Family {
    pub fn name(&self) -> &'static str {
        self.spec.provider
    }
}

const ALL_OPS: &[Operation] = &[Operation::Chat, Operation::Completions, Operation::Embeddings];
const PASS: Body = Body::Pass(&[]);

/// MLflow's `_OpenAICompatibleConfig`: `api_key`, optional `api_base`.
const fn compatible(provider: &'static str, default_base: &'static str) -> Family {
    Family {
        spec: KeySpec {
            provider,
            key: "api_key",
            key_required: true,
            base: Some("api_base"),
            default_base,
            extra: &[],
        },
        auth: Auth::Bearer,
        headers: &[],
        ops: ALL_OPS,
        chat: PASS,
        embeddings: PASS,
        stream_usage: true,
        base64: true,
    }
}

/// Mistral refuses fields it does not know (422), so only these are sent.
const MISTRAL_CHAT: &[Param] = &[
    param("messages", "messages", Shape::Any),
    param("temperature", "temperature", Shape::Number),
    param("top_p", "top_p", Shape::Number),
    param("max_completion_tokens", "max_tokens", Shape::Count),
    param("max_tokens", "max_tokens", Shape::Count),
    param("stream", "stream", Shape::Any),
    param("stop", "stop", Shape::Stops),
    param("seed", "random_seed", Shape::Any),
    param("random_seed", "random_seed", Shape::Any),
    param("response_format", "response_format", Shape::Any),
    param("tools", "tools", Shape::Any),
    param("tool_choice", "tool_choice", Shape::Any),
    param("parallel_tool_calls", "parallel_tool_calls", Shape::Any),
    param("presence_penalty", "presence_penalty", Shape::Number),
    param("frequency_penalty", "frequency_penalty", Shape::Number),
    param("n", "n", Shape::Count),
    param("prediction", "prediction", Shape::Any),
    param("safe_prompt", "safe_prompt", Shape::Any),
    param("prompt_mode", "prompt_mode", Shape::Any),
];
const MISTRAL_EMBEDDINGS: &[Param] = &[
    param("input", "input", Shape::Any),
    param("dimensions", "output_dimension", Shape::Count),
    param("output_dimension", "output_dimension", Shape::Count),
    param("output_dtype", "output_dtype", Shape::Any),
];

/// The family, one row per provider.
pub static FAMILY: &[Family] = &[
    compatible("groq", "https://api.groq.com/openai/v1"),
    compatible("deepseek", "https://api.deepseek.com/v1"),
    compatible("xai", "https://api.x.ai/v1"),
    compatible("openrouter", "https://openrouter.ai/api/v1"),
    // MLflow's `OllamaConfig`: the key may be left out (its default "ollama" means none).
    Family {
        spec: KeySpec {
            provider: "ollama",
            key: "api_key",
            key_required: false,
            base: Some("api_base"),
            default_base: "http://localhost:11434/v1",
            extra: &[],
        },
        ..compatible("ollama", "http://localhost:11434/v1")
    },
    // Portkey's gateway speaks OpenAI; its key goes in `x-portkey-api-key`, the routing target
    // in `x-portkey-provider` / `x-portkey-config`, an upstream key as the bearer token.
    Family {
        spec: KeySpec {
            provider: "portkey",
            key: "api_key",
            key_required: true,
            base: Some("api_base"),
            default_base: "https://api.portkey.ai/v1",
            extra: &["portkey_provider", "portkey_config", "provider_api_key"],
        },
        auth: Auth::Header("x-portkey-api-key"),
        headers: &[
            ConfigHeader { field: "portkey_provider", header: "x-portkey-provider", bearer_secret: false },
            ConfigHeader { field: "portkey_config", header: "x-portkey-config", bearer_secret: false },
            ConfigHeader { field: "provider_api_key", header: "authorization", bearer_secret: true },
        ],
        ..compatible("portkey", "https://api.portkey.ai/v1")
    },
    Family {
        spec: KeySpec {
            provider: "togetherai",
            key: "togetherai_api_key",
            key_required: true,
            base: Some("togetherai_api_base"),
            default_base: "https://api.together.xyz/v1",
            extra: &[],
        },
        ..compatible("togetherai", "https://api.together.xyz/v1")
    },
    Family {
        spec: KeySpec {
            provider: "mistral",
            key: "mistral_api_key",
            key_required: true,
            base: Some("mistral_api_base"),
            default_base: "https://api.mistral.ai/v1",
            extra: &[],
        },
        auth: Auth::Bearer,
        headers: &[],
        // Mistral's legacy completions are code-only (FIM): chat and embeddings, as in MLflow.
        ops: &[Operation::Chat, Operation::Embeddings],
        chat: Body::Only(MISTRAL_CHAT),
        embeddings: Body::Only(MISTRAL_EMBEDDINGS),
        // Mistral's last chunk carries usage unasked, and it refuses `stream_options`.
        stream_usage: false,
        base64: false,
    },
];

/// The family row named `name`.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILY.iter().find(|f| f.name() == name)
}

/// The adapter every family row shares.
#[derive(Debug)]
pub struct Compatible {
    pub family: &'static Family,
    pub api_key: Option<SecretRef>,
    pub api_base: String,
    /// The row's `extra` config fields that were set.
    pub extra: HashMap<String, String>,
}

impl Compatible {
    pub fn from_config(
        family: &'static Family,
        path: &str,
        config: &Map<String, Value>,
        issues: &mut Issues,
    ) -> Option<Compatible> {
        let keyed = keyed_config(&family.spec, path, config, issues)?;
        Some(Compatible { family, api_key: keyed.api_key, api_base: keyed.api_base, extra: keyed.extra })
    }

    /// The origin body for `call` (without `model`'s insertion order guarantees).
    fn body(&self, op: Operation, model: &str, stream: bool, body: Map<String, Value>) -> Result<Map<String, Value>> {
        let rules = if op == Operation::Embeddings { self.family.embeddings } else { self.family.chat };
        let mut out = match rules {
            Body::Pass(table) => {
                let mut body = body;
                rename_params(&mut body, table)?;
                body
            }
            Body::Only(table) => {
                let mut out = Map::new();
                map_params(&body, table, &mut out)?;
                out
            }
        };
        out.insert("model".into(), Value::String(model.to_string()));
        if op == Operation::Embeddings && !self.family.base64 {
            out.remove("encoding_format");
        }
        if stream && op != Operation::Embeddings && self.family.stream_usage {
            ask_stream_usage(&mut out);
        }
        Ok(out)
    }
}

impl Adapter for Compatible {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.api_base
    }

    fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let name = self.family.name();
        if !self.family.ops.contains(&call.op) {
            return Err(unsupported(name, call.op));
        }
        let path = openai_path(name, call.op)?;
        let body = self.body(call.op, call.model, call.stream, call.body)?;
        // Ollama's placeholder key "ollama" means no key (MLflow's `OllamaProvider`).
        let key = self.api_key.as_ref().filter(|k| !matches!(k, SecretRef::Literal(l) if l == "ollama"));
        let key = key.map(|key| resolve_secret(key, secrets)).transpose()?;
        // Secrets first: a missing one is reported ahead of a bad URL or header value.
        let mut extra = Vec::new();
        for h in self.family.headers {
            let Some(value) = self.extra.get(h.field) else { continue };
            let value = if h.bearer_secret {
                format!("Bearer {}", resolve_secret(&SecretRef::parse(value), secrets)?)
            } else {
                value.clone()
            };
            extra.push((HeaderName::from_static(h.header), value));
        }
        let mut request = json_post(join_url(call.base_url, path), json_body(&body))?;
        let headers = request.headers_mut();
        if let Some(key) = key {
            match self.family.auth {
                Auth::Bearer => headers.append(header::AUTHORIZATION, header_value(format!("Bearer {key}"))?),
                Auth::Header(name) => headers.append(HeaderName::from_static(name), header_value(key)?),
            };
        }
        // Appended, so a table header that names one set above adds to it rather than replacing it.
        for (name, value) in extra {
            headers.append(name, header_value(value)?);
        }
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
    use crate::gateway::providers::test_support::{call, sent, TestSecrets};
    use crate::gateway::test_util::mutations;
    use http::StatusCode;
    use serde_json::json;

    const SECRETS: TestSecrets =
        TestSecrets(&[("GROQ_API_KEY", "gsk-test"), ("PORTKEY_API_KEY", "pk-test"), ("OPENAI_API_KEY", "sk-up")]);

    fn adapter(name: &str, config: Value) -> Compatible {
        let mut issues = Issues::default();
        let p = Compatible::from_config(family(name).unwrap(), "c", config.as_object().unwrap(), &mut issues);
        assert!(issues.0.is_empty(), "{:?}", issues.0);
        p.unwrap()
    }

    /// The rows' header names go through `HeaderName::from_static`, which panics on a name
    /// that is not a valid lowercase one: every name in the table is checked here instead.
    #[test]
    fn every_family_header_name_is_a_valid_lowercase_name() {
        for row in FAMILY {
            let auth = match row.auth {
                Auth::Header(name) => Some(name),
                Auth::Bearer => None,
            };
            for name in auth.into_iter().chain(row.headers.iter().map(|h| h.header)) {
                let parsed =
                    HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{}: {name}: {e}", row.name()));
                assert_eq!(parsed.as_str(), name, "{}: header names must be lowercase", row.name());
            }
        }
    }

    fn issues(name: &str, config: Value) -> Vec<String> {
        let mut issues = Issues::default();
        let p = Compatible::from_config(family(name).unwrap(), "e.config", config.as_object().unwrap(), &mut issues);
        assert!(p.is_none());
        issues.0.iter().map(ToString::to_string).collect()
    }

    fn build(p: &Compatible, op: Operation, body: Value, stream: bool) -> Result<Request<Vec<u8>>> {
        p.build_request(call(op, "m-1", body, p.default_base(), stream, 0), &SECRETS)
    }

    #[test]
    fn every_row_has_mlflows_default_base_and_fields() {
        let expected = [
            ("groq", "https://api.groq.com/openai/v1", "api_key"),
            ("deepseek", "https://api.deepseek.com/v1", "api_key"),
            ("xai", "https://api.x.ai/v1", "api_key"),
            ("openrouter", "https://openrouter.ai/api/v1", "api_key"),
            ("ollama", "http://localhost:11434/v1", "api_key"),
            ("portkey", "https://api.portkey.ai/v1", "api_key"),
            ("togetherai", "https://api.together.xyz/v1", "togetherai_api_key"),
            ("mistral", "https://api.mistral.ai/v1", "mistral_api_key"),
        ];
        assert_eq!(FAMILY.len(), expected.len());
        for (name, base, key) in expected {
            let row = family(name).unwrap();
            assert_eq!((row.spec.default_base, row.spec.key), (base, key), "{name}");
        }
    }

    #[test]
    fn groq_style_row_builds_an_openai_request() {
        let p = adapter("groq", json!({"api_key": "$GROQ_API_KEY", "api_base": "http://127.0.0.1:9/v1/"}));
        let req = build(&p, Operation::Chat, json!({"messages": [], "seed": 3}), true).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer gsk-test");
        assert_eq!(
            sent(&req),
            json!({"model": "m-1", "messages": [], "seed": 3, "stream_options": {"include_usage": true}})
        );
        let req = build(&p, Operation::Embeddings, json!({"input": "x", "encoding_format": "base64"}), false).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/v1/embeddings");
        assert_eq!(sent(&req)["encoding_format"], "base64", "OpenAI-compatible origins answer base64 themselves");
        let p = adapter("xai", json!({"api_key": "k"}));
        let req = build(&p, Operation::Completions, json!({"prompt": "x"}), false).unwrap();
        assert_eq!(req.uri(), "https://api.x.ai/v1/completions");
        assert_eq!(build(&p, Operation::Predict, json!({}), false).unwrap_err().code, "unsupported_operation");
    }

    #[test]
    fn ollama_needs_no_key_and_sends_none_for_the_placeholder() {
        let p = adapter("ollama", json!({}));
        assert_eq!(p.default_base(), "http://localhost:11434/v1");
        let req = build(&p, Operation::Chat, json!({"messages": []}), false).unwrap();
        assert!(req.headers().get("authorization").is_none());
        let p = adapter("ollama", json!({"api_key": "ollama"}));
        assert!(build(&p, Operation::Chat, json!({}), false).unwrap().headers().get("authorization").is_none());
        let p = adapter("ollama", json!({"api_key": "real"}));
        assert_eq!(build(&p, Operation::Chat, json!({}), false).unwrap().headers()["authorization"], "Bearer real");
    }

    #[test]
    fn portkey_sends_its_routing_headers() {
        let p = adapter(
            "portkey",
            json!({"api_key": "$PORTKEY_API_KEY", "portkey_provider": "openai", "provider_api_key": "$OPENAI_API_KEY",
                "portkey_config": "pc-123"}),
        );
        let req = build(&p, Operation::Chat, json!({"messages": []}), false).unwrap();
        let h = req.headers();
        assert_eq!(h["x-portkey-api-key"], "pk-test");
        assert_eq!(h["x-portkey-provider"], "openai");
        assert_eq!(h["x-portkey-config"], "pc-123");
        assert_eq!(h["authorization"], "Bearer sk-up");
        let p = adapter("portkey", json!({"api_key": "$PORTKEY_API_KEY", "provider_api_key": "$UNSET"}));
        let e = build(&p, Operation::Chat, json!({}), false).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("$UNSET"));
    }

    #[test]
    fn mistral_gets_only_its_fields_under_its_names() {
        let p = adapter("mistral", json!({"mistral_api_key": "k"}));
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "seed": 7, "max_completion_tokens": 9,
            "max_tokens": 3, "stop": "END", "user": "u1", "logit_bias": {}, "stream": true,
            "stream_options": {"include_usage": true}});
        let req = build(&p, Operation::Chat, body, true).unwrap();
        assert_eq!(req.uri(), "https://api.mistral.ai/v1/chat/completions");
        assert_eq!(
            sent(&req),
            json!({"model": "m-1", "messages": [{"role": "user", "content": "hi"}], "random_seed": 7,
                "max_tokens": 9, "stop": ["END"], "stream": true})
        );
        let req = build(
            &p,
            Operation::Embeddings,
            json!({"input": ["a"], "dimensions": 8, "encoding_format": "base64"}),
            false,
        )
        .unwrap();
        assert_eq!(sent(&req), json!({"model": "m-1", "input": ["a"], "output_dimension": 8}));
        assert_eq!(
            build(&p, Operation::Completions, json!({"prompt": "x"}), false).unwrap_err().code,
            "unsupported_operation"
        );
        let e = build(&p, Operation::Chat, json!({"max_tokens": -1}), false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn togetherai_uses_its_mlflow_key_name() {
        let p = adapter("togetherai", json!({"togetherai_api_key": "tk"}));
        let req = build(&p, Operation::Embeddings, json!({"input": "x"}), false).unwrap();
        assert_eq!(req.uri(), "https://api.together.xyz/v1/embeddings");
        assert_eq!(req.headers()["authorization"], "Bearer tk");
    }

    #[test]
    fn config_issues_name_their_path() {
        let text = issues("groq", json!({"api_kye": "k"}));
        assert!(
            text.iter().any(|t| t.starts_with("e.config.api_kye: unknown groq config key")
                && t.contains("did you mean \"api_key\"")),
            "{text:?}"
        );
        assert!(text.contains(&"e.config.api_key: is required (use a \"$SECRET_NAME\" reference)".to_string()));
        let text = issues("mistral", json!({"mistral_api_key": "k", "mistral_api_base": "api.mistral.ai"}));
        assert!(text[0].starts_with("e.config.mistral_api_base: \"api.mistral.ai\" must start with http"), "{text:?}");
        let text = issues("ollama", json!({"api_key": ""}));
        assert!(text[0].starts_with("e.config.api_key: must not be empty"), "{text:?}");
        let text = issues("portkey", json!({"api_key": "k", "portkey_provder": "openai"}));
        assert!(text[0].contains("did you mean \"portkey_provider\""), "{text:?}");
    }

    #[test]
    fn hostile_bodies_never_panic() {
        let template = json!({"messages": [{"role": "user", "content": "hi"}], "seed": 1, "stop": ["a"],
            "max_tokens": 5, "input": ["x"], "dimensions": 4, "stream_options": {"include_usage": false}});
        for row in FAMILY {
            let p = adapter(row.name(), json!({ row.spec.key: "k" }));
            for body in mutations(&template) {
                for op in [Operation::Chat, Operation::Completions, Operation::Embeddings] {
                    let _ = build(&p, op, body.clone(), true);
                }
            }
        }
    }
}

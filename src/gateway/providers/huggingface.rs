//! `huggingface-text-generation-inference`: a Hugging Face TGI server at `hf_server_url`.
//!
//! Completions use TGI's native `POST /generate` the way MLflow's provider does
//! (`mlflow/gateway/providers/huggingface.py`): `max_tokens` becomes `max_new_tokens`, `n` must
//! be 1, and `details`/`decoder_input_details` are asked for so the answer carries the token
//! counts. Chat uses TGI's OpenAI-compatible Messages API (`POST /v1/chat/completions`), whose
//! answers and SSE streams are already OpenAI-shaped. TGI serves no embeddings.

use http::Request;
use serde_json::{json, Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{
    join_url, json_post, map_params, param, string_config, synthetic_id, take_server_url, Param, Shape,
};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::{openai_usage, usage_json};

const CONFIG_KEYS: &[&str] = &["hf_server_url"];
/// OpenAI fields under TGI `/generate` names, then TGI parameters a client may send under their
/// own names. (`temperature` and `top_p` need TGI's sampling rules: see `generate_body`.)
const PARAMETERS: &[Param] = &[
    param("max_completion_tokens", "max_new_tokens", Shape::Count),
    param("max_tokens", "max_new_tokens", Shape::Count),
    param("stop", "stop", Shape::Stops),
    param("top_k", "top_k", Shape::Any),
    param("repetition_penalty", "repetition_penalty", Shape::Any),
    param("frequency_penalty", "frequency_penalty", Shape::Any),
    param("seed", "seed", Shape::Any),
    param("truncate", "truncate", Shape::Any),
    param("typical_p", "typical_p", Shape::Any),
    param("watermark", "watermark", Shape::Any),
    param("return_full_text", "return_full_text", Shape::Any),
    param("do_sample", "do_sample", Shape::Any),
    param("top_n_tokens", "top_n_tokens", Shape::Any),
    param("grammar", "grammar", Shape::Any),
    param("adapter_id", "adapter_id", Shape::Any),
];

#[derive(Debug)]
pub struct Tgi {
    pub server_url: String,
}

impl Tgi {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Tgi> {
        let before = issues.0.len();
        let mut values = string_config(path, "huggingface-text-generation-inference", config, CONFIG_KEYS, issues);
        let hint = "the TGI server's base URL, e.g. \"http://127.0.0.1:8080\"";
        let url = take_server_url(path, "hf_server_url", hint, &mut values, issues);
        if issues.0.len() != before {
            return None;
        }
        Some(Tgi { server_url: url? })
    }
}

fn unprocessable(message: impl Into<String>) -> GatewayError {
    GatewayError::unprocessable(ErrorCode::UnsupportedParameter, message)
}

/// OpenAI completions body → TGI `{"inputs", "parameters"}`.
fn generate_body(body: &Map<String, Value>) -> Result<Value> {
    let prompt = match body.get("prompt") {
        Some(Value::String(p)) => p.as_str(),
        Some(Value::Array(ps)) if ps.len() == 1 => match ps.first() {
            Some(Value::String(p)) => p.as_str(),
            _ => return Err(GatewayError::bad_request(ErrorCode::MissingField, "\"prompt\" must be a string")),
        },
        Some(Value::Array(_)) => return Err(unprocessable("TGI takes one prompt per request")),
        _ => return Err(GatewayError::bad_request(ErrorCode::MissingField, "\"prompt\" must be a string")),
    };
    if body.contains_key("max_new_tokens") {
        return Err(unprocessable("Invalid parameter max_new_tokens. Use max_tokens instead."));
    }
    // TGI cannot generate several candidates per request.
    if let Some(n) = body.get("n").filter(|n| !n.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(unprocessable(format!(
                "'n' must be '1' for the Text Generation Inference provider. Received value: '{n}'."
            )));
        }
    }
    let present = |key: &str| body.get(key).filter(|v| !v.is_null());
    let mut parameters = Map::new();
    // TGI wants temperature > 0 and 0 < top_p < 1; 0 and 1 mean "off" (greedy, no nucleus).
    // (A client's own `do_sample`, mapped below, wins.)
    match present("temperature").and_then(Value::as_f64) {
        Some(t) if t > 0.0 => {
            parameters.insert("temperature".into(), json!(t));
            parameters.insert("do_sample".into(), Value::Bool(true));
        }
        Some(_) => {
            parameters.insert("do_sample".into(), Value::Bool(false));
        }
        None => {}
    }
    if let Some(sample) = present("do_sample") {
        parameters.insert("do_sample".into(), sample.clone());
    }
    map_params(body, PARAMETERS, &mut parameters)?;
    if let Some(p) = present("top_p").and_then(Value::as_f64).filter(|p| *p > 0.0 && *p < 1.0) {
        parameters.insert("top_p".into(), json!(p));
    }
    parameters.insert("details".into(), Value::Bool(true));
    parameters.insert("decoder_input_details".into(), Value::Bool(true));
    Ok(json!({"inputs": prompt, "parameters": parameters}))
}

fn finish_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("length") => "length",
        // eos_token, stop_sequence.
        _ => "stop",
    }
}

/// TGI's `/generate` answer → `text_completion`.
fn completion(value: &Value, body: &[u8], model: &str, now_ms: u64) -> Result<(Value, Usage)> {
    // `/generate` answers an object; the Inference API (and `/` with one input) a one-item list.
    let answer = match value {
        Value::Array(items) => items.first().unwrap_or(&Value::Null),
        other => other,
    };
    let Some(text) = answer.get("generated_text").and_then(Value::as_str) else {
        return Err(bad_response("expected {\"generated_text\": ..., \"details\": {...}} from TGI"));
    };
    let details = answer.get("details");
    let usage = Usage {
        prompt_tokens: details.and_then(|d| d.get("prefill")).and_then(Value::as_array).map_or(0, |p| p.len() as u64),
        completion_tokens: details.and_then(|d| d.get("generated_tokens")).and_then(Value::as_u64).unwrap_or(0),
    };
    let finish = finish_reason(details.and_then(|d| d.get("finish_reason")).and_then(Value::as_str));
    let out = json!({
        "id": synthetic_id("cmpl", body, now_ms), "object": "text_completion", "created": now_ms / 1000,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
        "usage": usage_json(usage),
    });
    Ok((out, usage))
}

impl Adapter for Tgi {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.server_url
    }

    fn build_request(&self, call: Call<'_>, _secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let (path, payload) = match call.op {
            Operation::Chat => {
                // The Messages API ignores `model` but wants one; "tgi" is its documented value.
                let mut body = call.body;
                body.insert("model".into(), Value::String("tgi".into()));
                ("v1/chat/completions", Value::Object(body))
            }
            Operation::Completions => ("generate", generate_body(&call.body)?),
            Operation::Embeddings => {
                return Err(GatewayError::bad_request(
                    ErrorCode::UnsupportedOperation,
                    "huggingface-text-generation-inference serves text generation only, not embeddings",
                ))
            }
            Operation::Predict => {
                return Err(GatewayError::bad_request(
                    ErrorCode::UnsupportedOperation,
                    "huggingface-text-generation-inference endpoints do not serve MLflow model predictions",
                ))
            }
        };
        json_post(join_url(call.base_url, path), json_body(&payload))
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        let Reply { op, body, model, now_ms, .. } = reply;
        // TGI errors are `{"error": "...", "error_type": "..."}`.
        let value = reply.success_json()?;
        match op {
            Operation::Completions => {
                let (out, usage) = completion(&value, body, model, now_ms)?;
                Ok(Translated { body: json_body(&out), usage: Some(usage), fields: None })
            }
            _ => {
                // The Messages API is OpenAI-shaped: pass the bytes on.
                if !value.is_object() {
                    return Err(bad_response("not a JSON object"));
                }
                Ok(Translated { body: body.to_vec(), usage: openai_usage(&value), fields: None })
            }
        }
    }

    fn stream_mode(&self, op: Operation, _model: &str, _now_ms: u64) -> StreamMode<Self::Stream> {
        match op {
            // The Messages API streams OpenAI `chat.completion.chunk` SSE.
            Operation::Chat => StreamMode::Passthrough,
            // `/generate_stream` has its own token events: answered whole, replayed.
            _ => StreamMode::Buffered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::test_support::{self, call, config_issues, parsed, sent, NO_SECRETS};
    use http::StatusCode;

    fn adapter() -> Tgi {
        test_support::adapter(Tgi::from_config, json!({"hf_server_url": "http://tgi:8080"}))
    }

    fn build(op: Operation, body: Value, stream: bool) -> Result<Request<Vec<u8>>> {
        let p = adapter();
        p.build_request(call(op, "", body, p.default_base(), stream, 0), &NO_SECRETS)
    }

    fn translate(op: Operation, status: StatusCode, body: &[u8]) -> Result<(Value, Option<Usage>)> {
        let reply = Reply { op, status, body, model: "tgi-model", now_ms: 1_700_000_000_000, wanted: &[] };
        adapter().translate_response(reply).map(parsed)
    }

    #[test]
    fn config_issues_name_their_path() {
        let text = config_issues(Tgi::from_config, json!({"hf_server_uri": "http://x"}));
        assert!(text
            .iter()
            .any(|t| t.starts_with("e.config.hf_server_uri: unknown") && t.contains("did you mean \"hf_server_url\"")));
        assert!(text.iter().any(|t| t.starts_with("e.config.hf_server_url: is required")), "{text:?}");
        let text = config_issues(Tgi::from_config, json!({"hf_server_url": "tgi"}));
        assert!(text[0].starts_with("e.config.hf_server_url: \"tgi\" must start with http"));
    }

    #[test]
    fn completions_go_to_generate() {
        let body = json!({"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.7, "top_p": 0.9,
            "stop": "\n", "n": 1, "top_k": 5, "user": "x", "stream": true});
        let req = build(Operation::Completions, body, false).unwrap();
        assert_eq!(req.uri(), "http://tgi:8080/generate");
        assert_eq!(
            sent(&req),
            json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 20, "temperature": 0.7,
                "do_sample": true, "top_p": 0.9, "stop": ["\n"], "top_k": 5, "details": true,
                "decoder_input_details": true}})
        );
        let v = sent(
            &build(Operation::Completions, json!({"prompt": ["x"], "temperature": 0, "top_p": 1}), false).unwrap(),
        );
        assert_eq!(
            v,
            json!({"inputs": "x", "parameters": {"do_sample": false, "details": true, "decoder_input_details": true}})
        );
        let e = build(Operation::Completions, json!({"prompt": "x", "n": 2}), false).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = build(Operation::Completions, json!({"prompt": "x", "max_new_tokens": 2}), false).unwrap_err();
        assert!(e.message.contains("Use max_tokens instead"));
        assert_eq!(build(Operation::Completions, json!({}), false).unwrap_err().code, "missing_field");
    }

    #[test]
    fn chat_uses_the_messages_api_and_streams_through() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 5});
        let req = build(Operation::Chat, body, true).unwrap();
        assert_eq!(req.uri(), "http://tgi:8080/v1/chat/completions");
        assert_eq!(
            sent(&req),
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 5, "model": "tgi"})
        );
        let p = adapter();
        assert!(matches!(p.stream_mode(Operation::Chat, "", 0), StreamMode::Passthrough));
        assert!(matches!(p.stream_mode(Operation::Completions, "", 0), StreamMode::Buffered));
        assert_eq!(
            build(Operation::Embeddings, json!({"input": "x"}), false).unwrap_err().code,
            "unsupported_operation"
        );
    }

    #[test]
    fn generate_answers_become_text_completions() {
        let body = br#"{"generated_text": " there was a dragon", "details": {"finish_reason": "length",
            "generated_tokens": 4, "seed": null, "prefill": [{"id": 1, "text": "<s>", "logprob": null},
            {"id": 9038, "text": "Once", "logprob": -9.1}], "tokens": []}}"#;
        let (v, usage) = translate(Operation::Completions, StatusCode::OK, body).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["created"], 1_700_000_000);
        assert_eq!(v["model"], "tgi-model");
        assert_eq!(v["choices"][0]["text"], " there was a dragon");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"], json!({"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}));
        assert_eq!(usage, Some(Usage { prompt_tokens: 2, completion_tokens: 4 }));
        for (reason, expected) in [("eos_token", "stop"), ("stop_sequence", "stop")] {
            let body = format!(
                r#"[{{"generated_text": "x", "details": {{"finish_reason": "{reason}", "generated_tokens": 1}}}}]"#
            );
            let (v, usage) = translate(Operation::Completions, StatusCode::OK, body.as_bytes()).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], expected);
            assert_eq!(usage.unwrap().prompt_tokens, 0);
        }
        for body in [&b"[]"[..], br#"{"generated": "x"}"#, b"nope"] {
            let e = translate(Operation::Completions, StatusCode::OK, body).unwrap_err();
            assert_eq!(e.code, "origin_bad_response");
        }
    }

    #[test]
    fn chat_answers_pass_through_and_errors_map() {
        let ok = br#"{"object": "chat.completion", "id": "", "created": 1, "model": "tgi", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}"#;
        let reply = Reply { op: Operation::Chat, status: StatusCode::OK, body: ok, model: "", now_ms: 0, wanted: &[] };
        let t = adapter().translate_response(reply).unwrap();
        assert_eq!(t.body, ok.to_vec());
        assert_eq!(t.usage.unwrap().total(), 4);

        let err = br#"{"error": "Input validation error: `temperature` must be strictly positive",
            "error_type": "validation"}"#;
        let e = translate(Operation::Completions, StatusCode::UNPROCESSABLE_ENTITY, err).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("strictly positive"));
        let e = translate(Operation::Chat, StatusCode::TOO_MANY_REQUESTS, br#"{"error": "Model is overloaded"}"#)
            .unwrap_err();
        assert_eq!(e.code, "origin_rate_limited");
        let e = translate(Operation::Chat, StatusCode::SERVICE_UNAVAILABLE, b"").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
    }
}

//! `mlflow-model-serving`: a model behind an MLflow scoring server (`mlflow models serve`,
//! Databricks-style serving). Everything goes to `POST {model_server_url}/invocations`.
//!
//! Chat, completions and embeddings follow MLflow's own gateway mapping
//! (`mlflow/gateway/providers/mlflow.py`): the prompt, the single chat message's content or the
//! embedding input becomes `inputs`, every other non-null field becomes `params`, and the
//! answer `{"predictions": [...]}` is turned into the OpenAI shape. `Operation::Predict` is a
//! classic scoring call: the body is checked against the scoring protocol and forwarded as is.
//! The scoring server does not stream, so streamed calls are buffered by the gateway.

use http::Request;
use serde_json::{json, Map, Value};

use crate::gateway::check::{did_you_mean, Issues};
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::providers::common::{join_url, json_post, string_config, synthetic_id, take_server_url};
use crate::gateway::types::Operation;
use crate::gateway::wire::json::{bad_response, json_body};
use crate::gateway::wire::openai::embedding_data;

const CONFIG_KEYS: &[&str] = &["model_server_url"];
/// The scoring protocol's input keys: a request carries exactly one of them.
pub const SCORING_INPUT_KEYS: &[&str] = &["dataframe_split", "dataframe_records", "instances", "inputs"];
/// Request fields that are transport, not model parameters.
const NOT_PARAMS: &[&str] = &["stream", "stream_options", "model"];

#[derive(Debug)]
pub struct ModelServing {
    pub server_url: String,
}

impl ModelServing {
    pub fn from_config(path: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<ModelServing> {
        let before = issues.0.len();
        let mut values = string_config(path, "mlflow-model-serving", config, CONFIG_KEYS, issues);
        let hint = "the scoring server's base URL, e.g. \"http://127.0.0.1:5000\"";
        let url = take_server_url(path, "model_server_url", hint, &mut values, issues);
        if issues.0.len() != before {
            return None;
        }
        Some(ModelServing { server_url: url? })
    }
}

/// Checks a body against the MLflow scoring protocol: exactly one of `dataframe_split`,
/// `dataframe_records`, `instances`, `inputs`, an optional `params` object, nothing else.
pub fn validate_scoring_request(body: &Map<String, Value>) -> Result<()> {
    let allowed = "dataframe_split, dataframe_records, instances, inputs";
    let unknown: Vec<&str> =
        body.keys().map(String::as_str).filter(|k| *k != "params" && !SCORING_INPUT_KEYS.contains(k)).collect();
    if !unknown.is_empty() {
        let mut names: Vec<String> =
            unknown.iter().take(5).map(|k| format!("\"{}\"", crate::gateway::util::text::truncate(k, 64))).collect();
        if unknown.len() > 5 {
            names.push(format!("and {} more", unknown.len() - 5));
        }
        let mut candidates = SCORING_INPUT_KEYS.to_vec();
        candidates.push("params");
        let hint = unknown
            .iter()
            .find_map(|k| did_you_mean(k, &candidates).map(|s| format!(" (\"{k}\": did you mean \"{s}\"?)")))
            .unwrap_or_default();
        return Err(GatewayError::bad_request(
            ErrorCode::InvalidScoringRequest,
            format!(
                "unexpected key(s) {} in the scoring request{hint}; it takes exactly one of {allowed}, \
                 plus an optional \"params\" object",
                names.join(", ")
            ),
        ));
    }
    let found: Vec<&str> = SCORING_INPUT_KEYS.iter().copied().filter(|k| body.contains_key(*k)).collect();
    if found.len() != 1 {
        let found = if found.is_empty() { "none of them".to_string() } else { found.join(", ") };
        return Err(GatewayError::bad_request(
            ErrorCode::InvalidScoringRequest,
            format!("a scoring request needs exactly one of {allowed}; found {found}"),
        ));
    }
    if body.get("params").is_some_and(|p| !p.is_object()) {
        return Err(GatewayError::bad_request(ErrorCode::InvalidScoringRequest, "\"params\" must be a JSON object"));
    }
    Ok(())
}

/// `{"inputs": [...], "params": {...}}`: `key`'s value (wrapped in a list unless it is one)
/// as inputs, every other non-null field as params (omitted when empty), like MLflow.
fn scoring_payload(mut body: Map<String, Value>, key: &str) -> Result<Map<String, Value>> {
    let inputs = match body.remove(key) {
        None | Some(Value::Null) => {
            return Err(GatewayError::bad_request(ErrorCode::MissingField, format!("\"{key}\" is required")));
        }
        Some(Value::Array(items)) => items,
        Some(other) => vec![other],
    };
    let params: Map<String, Value> =
        body.into_iter().filter(|(k, v)| !v.is_null() && !NOT_PARAMS.contains(&k.as_str())).collect();
    let mut out = Map::new();
    out.insert("inputs".into(), Value::Array(inputs));
    if !params.is_empty() {
        out.insert("params".into(), Value::Object(params));
    }
    Ok(out)
}

/// The text of a chat message's `content`: a string, or the text parts of a part list.
fn message_text(message: &Value) -> Result<String> {
    match message.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text") | None, Some(text)) => texts.push(text),
                    _ => {
                        return Err(GatewayError::bad_request(
                            ErrorCode::UnsupportedContent,
                            "MLflow model serving takes text content only",
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        _ => Err(GatewayError::bad_request(ErrorCode::InvalidMessage, "the message needs a string \"content\"")),
    }
}

fn chat_payload(mut body: Map<String, Value>) -> Result<Map<String, Value>> {
    let message = match body.get("messages") {
        Some(Value::Array(messages)) if messages.len() > 1 => {
            return Err(GatewayError::unprocessable(
                ErrorCode::TooManyMessages,
                format!(
                    "MLflow chat models are only capable of processing a single query at a time. \
                     The request submitted consists of {} queries.",
                    messages.len()
                ),
            ));
        }
        Some(Value::Array(messages)) => messages.first().cloned(),
        _ => None,
    };
    let Some(message) = message else {
        return Err(GatewayError::bad_request(ErrorCode::MissingField, "\"messages\" must be a list with one message"));
    };
    let content = message_text(&message)?;
    body.insert("messages".into(), Value::String(content));
    scoring_payload(body, "messages")
}

const TEXT_SHAPE: &str = "expected {\"predictions\": [<string>, ...]} from the MLflow model server";
const EMBEDDING_SHAPE: &str = "expected {\"predictions\": [[<number>, ...], ...]} from the MLflow model server";

/// The answer texts of `{"predictions": ...}`. Besides MLflow's shapes (a list of strings, or
/// a dict with one key or a `choices` key holding it), accepts a bare string and list items
/// that are OpenAI-like choices (`message.content`, `text`) or `{generated_text}` dicts.
fn text_predictions(value: &Value) -> Result<Vec<String>> {
    let Some(predictions) = value.get("predictions") else {
        return Err(bad_response(format!("the body has no \"predictions\" ({TEXT_SHAPE})")));
    };
    let list = match predictions {
        Value::Object(map) if map.len() == 1 => map.values().next().unwrap_or(&Value::Null),
        Value::Object(map) => match map.get("choices").or_else(|| map.get("candidates")) {
            Some(choices) => choices,
            None => return Err(bad_response(format!("\"predictions\" is a dict without \"choices\" ({TEXT_SHAPE})"))),
        },
        other => other,
    };
    let items = match list {
        Value::String(s) => return Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => return Err(bad_response(format!("\"predictions\" is empty ({TEXT_SHAPE})"))),
        _ => return Err(bad_response(format!("\"predictions\" is not a list ({TEXT_SHAPE})"))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let text = match item {
                Value::String(s) => Some(s.as_str()),
                Value::Object(_) => ["/message/content", "/text", "/generated_text", "/content"]
                    .iter()
                    .find_map(|p| item.pointer(p).and_then(Value::as_str)),
                _ => None,
            };
            text.map(str::to_owned)
                .ok_or_else(|| bad_response(format!("prediction {i} is not a string ({TEXT_SHAPE})")))
        })
        .collect()
}

fn is_number_list(v: &Value) -> bool {
    matches!(v, Value::Array(xs) if !xs.is_empty() && xs.iter().all(Value::is_number))
}

/// The vectors of `{"predictions": [[...], ...]}` (or a single flat vector).
fn embedding_predictions(value: &Value) -> Result<Vec<Value>> {
    match value.get("predictions") {
        Some(p) if is_number_list(p) => Ok(vec![p.clone()]),
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(is_number_list) => Ok(items.clone()),
        Some(_) => Err(bad_response(format!("\"predictions\" is not a non-empty list of vectors ({EMBEDDING_SHAPE})"))),
        None => Err(bad_response(format!("the body has no \"predictions\" ({EMBEDDING_SHAPE})"))),
    }
}

impl Adapter for ModelServing {
    type Stream = NoTranslation;

    fn default_base(&self) -> &str {
        &self.server_url
    }

    fn build_request(&self, call: Call<'_>, _secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        let payload = match call.op {
            Operation::Chat => chat_payload(call.body)?,
            Operation::Completions => scoring_payload(call.body, "prompt")?,
            Operation::Embeddings => scoring_payload(call.body, "input")?,
            Operation::Predict => {
                validate_scoring_request(&call.body)?;
                call.body
            }
        };
        json_post(join_url(call.base_url, "invocations"), json_body(&payload))
    }

    fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        let Reply { op, body, model, now_ms, .. } = reply;
        // MLflow's `{"error_code", "message"}`: 4xx keep their status, 5xx become 502.
        let value = reply.success_json()?;
        let created = now_ms / 1000;
        // MLflow reports no token counts: its usage fields are null.
        let translated = match op {
            Operation::Predict => return Ok(Translated { body: body.to_vec(), usage: None, fields: None }),
            Operation::Chat => {
                let choices: Vec<Value> = text_predictions(&value)?
                    .into_iter()
                    .enumerate()
                    .map(|(index, text)| {
                        json!({"index": index, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"})
                    })
                    .collect();
                json!({
                    "id": synthetic_id("chatcmpl", body, now_ms), "object": "chat.completion",
                    "created": created, "model": model, "choices": choices,
                    "usage": {"prompt_tokens": null, "completion_tokens": null, "total_tokens": null},
                })
            }
            Operation::Completions => {
                let choices: Vec<Value> = text_predictions(&value)?
                    .into_iter()
                    .enumerate()
                    .map(|(index, text)| {
                        json!({"index": index, "text": text, "finish_reason": "stop", "logprobs": null})
                    })
                    .collect();
                json!({
                    "id": synthetic_id("cmpl", body, now_ms), "object": "text_completion",
                    "created": created, "model": model, "choices": choices,
                    "usage": {"prompt_tokens": null, "completion_tokens": null, "total_tokens": null},
                })
            }
            Operation::Embeddings => {
                let data = embedding_data(embedding_predictions(&value)?);
                json!({
                    "object": "list", "data": data, "model": model,
                    "usage": {"prompt_tokens": null, "total_tokens": null},
                })
            }
        };
        Ok(Translated { body: json_body(&translated), usage: None, fields: None })
    }

    fn stream_mode(&self, _op: Operation, _model: &str, _now_ms: u64) -> StreamMode<Self::Stream> {
        // `mlflow models serve` answers with one JSON body, never a stream.
        StreamMode::Buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::providers::test_support::{self, call, config_issues, sent, NO_SECRETS};
    use http::StatusCode;

    fn adapter() -> ModelServing {
        test_support::adapter(ModelServing::from_config, json!({"model_server_url": "http://127.0.0.1:5001/"}))
    }

    fn build(op: Operation, body: Value) -> Result<Request<Vec<u8>>> {
        let p = adapter();
        p.build_request(call(op, "", body, p.default_base(), false, 0), &NO_SECRETS)
    }

    fn translate(op: Operation, status: StatusCode, body: &[u8]) -> Result<Value> {
        let reply = Reply { op, status, body, model: "my-model", now_ms: 1_700_000_000_123, wanted: &[] };
        adapter().translate_response(reply).map(|t| {
            assert!(t.usage.is_none());
            test_support::parsed(t).0
        })
    }

    #[test]
    fn config_requires_an_http_url_and_suggests_typos() {
        let text = config_issues(ModelServing::from_config, json!({"model_server_uri": "http://x"}));
        assert!(text
            .iter()
            .any(|t| t.starts_with("e.config.model_server_uri: unknown")
                && t.contains("did you mean \"model_server_url\"")));
        assert!(text.iter().any(|t| t.starts_with("e.config.model_server_url: is required")), "{text:?}");

        let text = config_issues(ModelServing::from_config, json!({"model_server_url": "localhost:5000"}));
        assert!(text[0].starts_with("e.config.model_server_url: \"localhost:5000\" must start"));
    }

    #[test]
    fn completions_map_prompt_to_inputs_and_the_rest_to_params() {
        let body = json!({"prompt": "hi", "temperature": 0.5, "max_tokens": 10, "stop": null, "stream": true});
        let req = build(Operation::Completions, body).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:5001/invocations");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert_eq!(sent(&req), json!({"inputs": ["hi"], "params": {"temperature": 0.5, "max_tokens": 10}}));
        let req = build(Operation::Completions, json!({"prompt": ["a", "b"]})).unwrap();
        assert_eq!(sent(&req), json!({"inputs": ["a", "b"]}));
        let e = build(Operation::Completions, json!({"temperature": 1})).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "missing_field"));
    }

    #[test]
    fn chat_takes_exactly_one_message() {
        let body = json!({"messages": [{"role": "user", "content": "What is MLflow?"}], "n": 1});
        let req = build(Operation::Chat, body).unwrap();
        assert_eq!(sent(&req), json!({"inputs": ["What is MLflow?"], "params": {"n": 1}}));
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]});
        assert_eq!(sent(&build(Operation::Chat, parts).unwrap()), json!({"inputs": ["a"]}));

        let two = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]});
        let e = build(Operation::Chat, two).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("consists of 2 queries"), "{}", e.message);
        assert_eq!(build(Operation::Chat, json!({"messages": []})).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(build(Operation::Chat, json!({"messages": [7]})).unwrap_err().status, StatusCode::BAD_REQUEST);
        let image = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]});
        assert_eq!(build(Operation::Chat, image).unwrap_err().code, "unsupported_content");
    }

    #[test]
    fn embeddings_send_the_input_list() {
        let req = build(Operation::Embeddings, json!({"input": ["a sentence", "another"]})).unwrap();
        assert_eq!(sent(&req), json!({"inputs": ["a sentence", "another"]}));
        let req = build(Operation::Embeddings, json!({"input": "one", "encoding_format": "float"})).unwrap();
        assert_eq!(sent(&req), json!({"inputs": ["one"], "params": {"encoding_format": "float"}}));
    }

    #[test]
    fn predict_validates_and_forwards_as_is() {
        let body = json!({"dataframe_split": {"columns": ["x"], "data": [[1]]}, "params": {"k": 2}});
        let req = build(Operation::Predict, body.clone()).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:5001/invocations");
        assert_eq!(sent(&req), body);

        let e = build(Operation::Predict, json!({"inputs": [1], "instances": [1]})).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_scoring_request"));
        assert!(e.message.contains("dataframe_split, dataframe_records, instances, inputs"), "{}", e.message);
        assert!(e.message.ends_with("found instances, inputs"), "{}", e.message);
        let e = build(Operation::Predict, json!({"params": {}})).unwrap_err();
        assert!(e.message.ends_with("found none of them"), "{}", e.message);
        let e = build(Operation::Predict, json!({"input": [1], "extra": 1})).unwrap_err();
        assert!(e.message.contains("\"input\"") && e.message.contains("\"extra\""), "{}", e.message);
        assert!(e.message.contains("(\"input\": did you mean \"inputs\"?)"), "{}", e.message);
        let e = build(Operation::Predict, json!({"inputs": [1], "params": [1]})).unwrap_err();
        assert_eq!(e.message, "\"params\" must be a JSON object");
    }

    #[test]
    fn chat_and_completion_answers_become_openai_shapes() {
        let v = translate(Operation::Chat, StatusCode::OK, br#"{"predictions": ["answer"]}"#).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["created"], 1_700_000_000);
        assert_eq!(v["model"], "my-model");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(
            v["choices"],
            json!([{"index": 0, "message": {"role": "assistant", "content": "answer"}, "finish_reason": "stop"}])
        );
        assert_eq!(v["usage"], json!({"prompt_tokens": null, "completion_tokens": null, "total_tokens": null}));

        let v = translate(Operation::Completions, StatusCode::OK, br#"{"predictions": ["hello", "hi"]}"#).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][1]["text"], "hi");
        assert_eq!(v["choices"][1]["index"], 1);
    }

    #[test]
    fn lenient_prediction_shapes() {
        for body in [
            r#"{"predictions": {"choices": ["x"], "other": 1}}"#,
            r#"{"predictions": {"output": ["x"]}}"#,
            r#"{"predictions": "x"}"#,
            r#"{"predictions": [{"generated_text": "x"}]}"#,
            r#"{"predictions": {"choices": [{"message": {"role": "assistant", "content": "x"}}], "id": "1"}}"#,
        ] {
            let v = translate(Operation::Completions, StatusCode::OK, body.as_bytes()).unwrap();
            assert_eq!(v["choices"][0]["text"], "x", "{body}");
        }
    }

    #[test]
    fn wrong_shapes_are_bad_gateway_with_the_expected_shape() {
        for body in [
            r#"{"predictions": []}"#,
            r#"{"predictions": [1]}"#,
            r#"{"predictions": {"a": 1, "b": 2}}"#,
            r#"{"outputs": ["x"]}"#,
            r#"[1]"#,
            r#"not json"#,
        ] {
            let e = translate(Operation::Chat, StatusCode::OK, body.as_bytes()).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_GATEWAY, "origin_bad_response"), "{body}");
        }
        let e = translate(Operation::Chat, StatusCode::OK, br#"{"predictions": [1]}"#).unwrap_err();
        assert!(e.message.contains("expected {\"predictions\": [<string>, ...]}"), "{}", e.message);
    }

    #[test]
    fn embeddings_answers() {
        let v =
            translate(Operation::Embeddings, StatusCode::OK, br#"{"predictions": [[0.1, -0.2], [0.3, 0]]}"#).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1], json!({"object": "embedding", "embedding": [0.3, 0], "index": 1}));
        assert_eq!(v["model"], "my-model");
        let v = translate(Operation::Embeddings, StatusCode::OK, br#"{"predictions": [0.5, 1.5]}"#).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 1.5]));
        for body in [r#"{"predictions": []}"#, r#"{"predictions": [[]]}"#, r#"{"predictions": ["a"]}"#] {
            let e = translate(Operation::Embeddings, StatusCode::OK, body.as_bytes()).unwrap_err();
            assert_eq!(e.code, "origin_bad_response", "{body}");
        }
    }

    #[test]
    fn predict_answers_pass_through_and_errors_map() {
        let body = br#"{"predictions": [{"a": 1}]}"#;
        let reply = Reply { op: Operation::Predict, status: StatusCode::OK, body, model: "", now_ms: 0, wanted: &[] };
        assert_eq!(adapter().translate_response(reply).unwrap().body, body.to_vec());
        let e = translate(Operation::Predict, StatusCode::OK, b"<html>").unwrap_err();
        assert_eq!(e.code, "origin_bad_response");

        let err = br#"{"error_code": "BAD_REQUEST", "message": "Failed to parse input"}"#;
        let e = translate(Operation::Predict, StatusCode::BAD_REQUEST, err).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("Failed to parse input"));
        let err = br#"{"error_code": "INTERNAL_ERROR", "message": "boom"}"#;
        let e = translate(Operation::Chat, StatusCode::INTERNAL_SERVER_ERROR, err).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(e.message.contains("boom"));
    }

    #[test]
    fn never_streams() {
        assert!(matches!(adapter().stream_mode(Operation::Chat, "m", 0), StreamMode::Buffered));
    }
}

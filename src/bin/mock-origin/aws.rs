//! Amazon Bedrock Runtime and STS, as far as the gateway uses them: `Converse`,
//! `ConverseStream` (answered in AWS's binary event-stream framing, checksums by `crc32fast`),
//! `InvokeModel` for Titan and Cohere embeddings, and STS `AssumeRole` (XML). Every request must
//! carry a valid Signature Version 4 for a key the mock knows (`creds`), checked here with an
//! implementation of its own, or a Bedrock API key as a bearer token.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::creds::AwsSecret;
use crate::embed;
use crate::exchange::{unix_now, Ctx, Reply, Usage};
use crate::text::{self, Finish, Options, Output, Prompt};

pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
const ERROR_TYPE: HeaderName = HeaderName::from_static("x-amzn-errortype");

/// Bedrock's error body, with the exception name in `x-amzn-ErrorType`.
pub fn error(status: StatusCode, kind: &'static str, message: &str) -> Reply {
    Reply::json(status, &json!({ "message": message })).with_header(ERROR_TYPE, HeaderValue::from_static(kind))
}

pub fn fault_error(status: StatusCode) -> Reply {
    match status {
        StatusCode::TOO_MANY_REQUESTS => error(status, "ThrottlingException", "Too many requests, please wait."),
        StatusCode::SERVICE_UNAVAILABLE => error(status, "ServiceUnavailableException", "Service unavailable."),
        _ => error(status, "InternalServerException", "Internal server error."),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding of everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let digit = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], digit(i + 1), digit(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the request's SigV4 `Authorization` for `service`; `Err` is the rejection.
fn verify_sigv4(ctx: &Ctx<'_>, service: &str) -> Result<(), Reply> {
    let deny = |message: &str| Err(error(StatusCode::FORBIDDEN, "InvalidSignatureException", message));
    let Some(auth) = ctx.header("authorization") else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return deny("Authorization header requires the AWS4-HMAC-SHA256 scheme.");
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',').map(str::trim) {
        match field.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return deny("Authorization header requires Credential, SignedHeaders and Signature.");
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, scope_service, "aws4_request"] = parts.as_slice() else {
        return deny("Credential should be scoped to a valid region and service.");
    };
    if *scope_service != service {
        return deny(&format!("Credential should be scoped to correct service: '{service}'."));
    }
    let Some(AwsSecret { secret_access_key, session_token }) = ctx.state.creds.aws_secret(key_id) else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    if session_token.as_deref() != ctx.header("x-amz-security-token") {
        return Err(error(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let Some(amz_date) = ctx.header("x-amz-date").filter(|d| d.len() == 16 && d.starts_with(date)) else {
        return deny("X-Amz-Date is missing or does not match the credential scope date.");
    };
    let payload_hash = sha256_hex(ctx.body);
    if ctx.header("x-amz-content-sha256").is_some_and(|h| h != payload_hash) {
        return deny("The provided 'x-amz-content-sha256' header does not match what was computed.");
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || (session_token.is_some() && !names.contains(&"x-amz-security-token")) {
        return deny("Host (and a session token) must be signed.");
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let values: Vec<String> = ctx
            .headers
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // The path as sent is encoded once; SigV4 encodes each segment once more.
    let canonical_uri: String =
        ctx.path.split('/').map(|segment| encode(&encode(&decode(segment)))).collect::<Vec<_>>().join("/");
    let canonical_uri = if canonical_uri.is_empty() { "/".to_string() } else { canonical_uri };
    let mut query: Vec<(String, String)> = ctx
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k)), encode(&decode(v)))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        ctx.method,
        query.join("&")
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut key = hmac(format!("AWS4{secret_access_key}").as_bytes(), date.as_bytes());
    for part in [*region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    if hex(&hmac(&key, to_sign.as_bytes())) != signature {
        return deny(
            "The request signature we calculated does not match the signature you provided. Check your AWS \
             Secret Access Key and signing method.",
        );
    }
    Ok(())
}

/// Bedrock accepts SigV4 or a Bedrock API key (`Authorization: Bearer`).
fn authorize_bedrock(ctx: &Ctx<'_>) -> Result<(), Reply> {
    if ctx.bearer().is_some() {
        return Ok(());
    }
    verify_sigv4(ctx, "bedrock")
}

// ---------------------------------------------------------------------------------------
// Bedrock Runtime

/// `POST /model/{modelId}/{converse|converse-stream|invoke}`.
pub fn bedrock(ctx: &Ctx<'_>, rest: &str) -> Reply {
    let Some((model, action)) = rest.rsplit_once('/') else {
        return error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation");
    };
    let model = decode(model);
    if let Err(reply) = authorize_bedrock(ctx) {
        return reply;
    }
    let Some(request) = ctx.json_object() else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "Malformed input request, please reformat.");
    };
    match action {
        "converse" => converse(ctx, &model, &request, false),
        "converse-stream" => converse(ctx, &model, &request, true),
        "invoke" => invoke(&model, &request),
        _ => error(StatusCode::NOT_FOUND, "UnknownOperationException", "Unknown operation"),
    }
}

fn block_texts(content: Option<&Value>) -> Option<String> {
    let texts: Vec<&str> = content?.as_array()?.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
    (!texts.is_empty()).then(|| texts.join(" "))
}

fn converse(ctx: &Ctx<'_>, model: &str, request: &Map<String, Value>, stream: bool) -> Reply {
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "messages: required");
    };
    if request.contains_key("model") || request.contains_key("max_tokens") {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "extraneous key in the request body");
    }
    let mut prompt = Prompt::default();
    if let Some(system) = block_texts(request.get("system")) {
        prompt.count(&system);
    }
    for message in messages {
        if let Some(text) = block_texts(message.get("content")) {
            prompt.count(&text);
            if message.get("role").and_then(Value::as_str) == Some("user") {
                prompt.last_user_text = text;
            }
        }
    }
    prompt.ends_with_user_text = messages.last().is_some_and(|m| {
        m.get("role").and_then(Value::as_str) == Some("user") && block_texts(m.get("content")).is_some()
    });
    let inference = request.get("inferenceConfig");
    let options = Options {
        max_tokens: inference.and_then(|c| c.get("maxTokens")).and_then(Value::as_u64),
        stop: inference
            .and_then(|c| c.get("stopSequences"))
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        tool: request.get("toolConfig").and_then(|c| c.pointer("/tools/0/toolSpec/name")).and_then(Value::as_str),
    };
    let output = text::respond(&prompt, &options);
    let usage = Usage { prompt: prompt.input_tokens, completion: output.tokens() };
    let usage_json = json!({"inputTokens": usage.prompt, "outputTokens": usage.completion,
        "totalTokens": usage.prompt + usage.completion});
    let tool_id = format!("tooluse_{}_{}", ctx.state.name(), ctx.state.next_id());
    let stop_reason = match &output {
        Output::ToolCall { .. } => "tool_use",
        Output::Text { finish: Finish::MaxTokens, .. } => "max_tokens",
        Output::Text { finish: Finish::StopSequence(_), .. } => "stop_sequence",
        Output::Text { finish: Finish::Stop, .. } => "end_turn",
    };
    let _ = model;
    if !stream {
        let content = match &output {
            Output::Text { text, .. } => json!([{"text": text}]),
            Output::ToolCall { name, input, .. } => {
                json!([{"toolUse": {"toolUseId": tool_id, "name": name, "input": input}}])
            }
        };
        let answer = json!({"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason, "usage": usage_json, "metrics": {"latencyMs": 1}});
        return Reply::ok_json(&answer).with_usage(usage);
    }
    let mut frames = vec![event("messageStart", &json!({"role": "assistant"}))];
    match &output {
        Output::Text { text, .. } => {
            for piece in text::pieces(text) {
                frames.push(event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": piece}})));
            }
        }
        Output::ToolCall { name, arguments, .. } => {
            let start = json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": tool_id, "name": name}}});
            frames.push(event("contentBlockStart", &start));
            let (a, b) = arguments.split_at(arguments.len() / 2);
            for part in [a, b] {
                frames.push(event(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": part}}}),
                ));
            }
        }
    }
    frames.push(event("contentBlockStop", &json!({"contentBlockIndex": 0})));
    frames.push(event("messageStop", &json!({"stopReason": stop_reason})));
    frames.push(event("metadata", &json!({"usage": usage_json, "metrics": {"latencyMs": 1}})));
    Reply::stream(EVENT_STREAM, frames).with_usage(usage)
}

fn invoke(model: &str, request: &Map<String, Value>) -> Reply {
    if model.contains("cohere.embed") {
        let Some(texts) = request.get("texts").and_then(Value::as_array) else {
            return error(StatusCode::BAD_REQUEST, "ValidationException", "texts: required");
        };
        let vectors: Vec<Value> = texts
            .iter()
            .map(|t| embed::to_json(&embed::embedding(t.as_str().unwrap_or_default(), embed::DEFAULT_DIMENSIONS)))
            .collect();
        return Reply::ok_json(
            &json!({"id": "emb-1", "embeddings": vectors, "texts": texts, "response_type": "embeddings_floats"}),
        );
    }
    if !model.contains("titan-embed") {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "The provided model doesn't support this operation.",
        );
    }
    let Some(text) = request.get("inputText").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "ValidationException", "inputText: required");
    };
    let dimensions =
        request.get("dimensions").and_then(Value::as_u64).map_or(embed::DEFAULT_DIMENSIONS, |d| d as usize);
    let tokens = text::count_words(text);
    Reply::ok_json(
        &json!({"embedding": embed::to_json(&embed::embedding(text, dimensions)), "inputTextTokenCount": tokens}),
    )
    .with_usage(Usage { prompt: tokens, completion: 0 })
}

/// One event-stream message with a JSON payload.
fn event(kind: &str, payload: &Value) -> Bytes {
    encode_message(
        &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
        payload.to_string().as_bytes(),
    )
}

/// The event-stream framing: prelude (total length, headers length, CRC32 of both), string
/// headers, payload, CRC32 of everything before.
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    Bytes::from(out)
}

// ---------------------------------------------------------------------------------------
// STS

fn sts_error(status: StatusCode, code: &str, message: &str) -> Reply {
    let xml = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>mock</RequestId></ErrorResponse>"
    );
    Reply::full(status, "text/xml", Bytes::from(xml))
}

fn form_param(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| decode(&v.replace('+', " ")))
    })
}

/// `POST /` with `Action=AssumeRole`: new temporary credentials the mock then accepts.
pub fn sts(ctx: &Ctx<'_>) -> Reply {
    if let Err(reply) = verify_sigv4(ctx, "sts") {
        return reply;
    }
    let form = String::from_utf8_lossy(ctx.body);
    if form_param(&form, "Action").as_deref() != Some("AssumeRole") {
        return sts_error(StatusCode::BAD_REQUEST, "InvalidAction", "Could not find operation for this request.");
    }
    let Some(role_arn) = form_param(&form, "RoleArn").filter(|a| a.starts_with("arn:aws:iam::")) else {
        return sts_error(StatusCode::BAD_REQUEST, "ValidationError", "RoleArn is invalid.");
    };
    let duration: u64 = form_param(&form, "DurationSeconds").and_then(|d| d.parse().ok()).unwrap_or(3600);
    if !(900..=43_200).contains(&duration) {
        return sts_error(StatusCode::BAD_REQUEST, "ValidationError", "DurationSeconds is out of range.");
    }
    let session = form_param(&form, "RoleSessionName").unwrap_or_default();
    let serial = ctx.state.next_id();
    let key_id = format!("ASIAMOCK{serial:08}");
    let secret = AwsSecret {
        secret_access_key: format!("mock/role/secret+{serial}"),
        session_token: Some(format!("FwoGZXIvYXdzEMock{serial}+token/=")),
    };
    ctx.state.creds.add_aws(key_id.clone(), secret.clone());
    let expiration = iso8601(unix_now() + duration);
    let xml = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
         <AssumedRoleUser><AssumedRoleId>AROAMOCK:{session}</AssumedRoleId><Arn>{role_arn}/{session}</Arn></AssumedRoleUser>\
         <Credentials><AccessKeyId>{key_id}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
         </AssumeRoleResult><ResponseMetadata><RequestId>mock-{serial}</RequestId></ResponseMetadata></AssumeRoleResponse>",
        secret.secret_access_key,
        secret.session_token.unwrap_or_default(),
    );
    Reply::full(StatusCode::OK, "text/xml", Bytes::from(xml))
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn iso8601(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_dates() {
        let frame = encode_message(&[(":event-type", "x")], b"{}");
        assert_eq!(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize, frame.len());
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(iso8601(1_440_938_160), "2015-08-30T12:36:00Z");
        assert_eq!(decode("a.b-v1%3A0"), "a.b-v1:0");
        assert_eq!(encode("a:b/c"), "a%3Ab%2Fc");
    }
}

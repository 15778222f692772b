//! What every AWS origin needs, written here on `sha2` + `hmac` (no AWS SDK at the edge):
//! Signature Version 4 request signing, credentials (keys, session tokens, STS AssumeRole with
//! a per-isolate cache), and the binary event-stream framing (`application/vnd.amazon.eventstream`)
//! that Bedrock's `ConverseStream` answers in, decoded as it arrives into SSE events the stream
//! pump can parse.
//!
//! CRC32 (IEEE, as the event-stream prelude and message checksums use) is a 1 KiB table built
//! at compile time rather than `crc32fast`: frames are a few hundred bytes, so speed does not
//! matter, and the bundle is smaller without crc32fast's 16 KiB slice-by-16 tables.

use hmac::{Hmac, Mac};
use http::header::{self, HeaderName};
use http::Request;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::gateway::check::SecretRef;
use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::ports::{Clock, Secrets, Upstream};
use crate::gateway::providers::common::{header_value, resolve_secret, xml_text};
use crate::gateway::providers::token::{form_encode, form_request, send_form, FORM_CONTENT_TYPE};
use crate::gateway::util::order;
use crate::gateway::util::text::{hex, percent_decode};
use crate::gateway::util::time::parse_day;
use crate::gateway::wire::sse;

// ---------------------------------------------------------------------------------------
// Signature Version 4

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// SigV4's canonical URI for every service but S3: each segment of the path *as sent* is
/// URI-encoded again, so a model id's `:` travels as `%3A` and is signed as `%253A`.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/').map(uri_encode).collect::<Vec<_>>().join("/")
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in milliseconds (proleptic Gregorian, UTC).
pub fn amz_date(now_ms: u64) -> String {
    let secs = now_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One request to sign. `path` is the path exactly as it goes on the wire and `query` the
/// already-canonical query string; `headers` are the signed headers with lowercase names.
pub struct SigningRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_hash: &'a str,
    pub amz_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// The `Authorization` header value for `req` (AWS4-HMAC-SHA256).
pub fn authorization(req: &SigningRequest<'_>, access_key_id: &str, secret_access_key: &str) -> String {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    order::sort(&mut headers);
    let signed_headers = headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        canonical_uri(req.path),
        req.query,
        req.payload_hash
    );
    let date = req.amz_date.get(..8).unwrap_or(req.amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", req.amz_date, sha256_hex(canonical_request.as_bytes()));
    let mut key = hmac(format!("AWS4{secret_access_key}").as_bytes(), date.as_bytes());
    for part in [req.region, req.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The `Host` header an HTTP client sends for `uri` (default ports dropped, no userinfo).
pub fn host_header(uri: &http::Uri) -> Option<String> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    Some(match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    })
}

/// AWS credentials, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

/// Where access keys come from: config references, or the host's secrets under the names of
/// AWS's environment credential provider (`AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefs {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
    pub session_token: Option<SecretRef>,
    /// A missing session token is fine (the environment form: it is optional there).
    pub session_token_optional: bool,
}

impl KeyRefs {
    /// The environment step of AWS's default credential chain, with host secrets for the
    /// environment.
    pub fn environment() -> KeyRefs {
        KeyRefs {
            access_key_id: SecretRef::Env("AWS_ACCESS_KEY_ID".into()),
            secret_access_key: SecretRef::Env("AWS_SECRET_ACCESS_KEY".into()),
            session_token: Some(SecretRef::Env("AWS_SESSION_TOKEN".into())),
            session_token_optional: true,
        }
    }

    pub fn resolve(&self, secrets: &impl Secrets) -> Result<Credentials> {
        let session_token = match &self.session_token {
            Some(SecretRef::Env(name)) if self.session_token_optional => secrets.secret(name).filter(|t| !t.is_empty()),
            Some(token) => Some(resolve_secret(token, secrets)?),
            None => None,
        };
        Ok(Credentials {
            access_key_id: resolve_secret(&self.access_key_id, secrets)?,
            secret_access_key: resolve_secret(&self.secret_access_key, secrets)?,
            session_token,
        })
    }
}

/// Where a signature is valid: SigV4's credential scope.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// Signs a POST for `scope`: adds `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (temporary credentials) and `Authorization`. `extra_signed` are
/// further headers (lowercase names) that must be signed too (e.g. `content-type`).
pub fn sign(
    request: &mut Request<Vec<u8>>,
    extra_signed: &[(&str, &str)],
    credentials: &Credentials,
    scope: Scope<'_>,
    now_ms: u64,
) -> Result<()> {
    let Scope { region, service } = scope;
    let uri = request.uri();
    let Some(host) = host_header(uri) else {
        return Err(GatewayError::not_configured(
            ErrorCode::BadOriginRequest,
            format!("the {service} URL has no host"),
        ));
    };
    let payload_hash = sha256_hex(request.body());
    let date = amz_date(now_ms);
    let mut signed: Vec<(&str, &str)> =
        vec![("host", &host), ("x-amz-content-sha256", &payload_hash), ("x-amz-date", &date)];
    signed.extend_from_slice(extra_signed);
    if let Some(token) = &credentials.session_token {
        signed.push(("x-amz-security-token", token));
    }
    let query = canonical_query(uri.query().unwrap_or(""));
    let signing = SigningRequest {
        method: "POST",
        path: uri.path(),
        query: &query,
        headers: &signed,
        payload_hash: &payload_hash,
        amz_date: &date,
        region,
        service,
    };
    let auth = authorization(&signing, &credentials.access_key_id, &credentials.secret_access_key);
    let headers = request.headers_mut();
    headers.insert(HeaderName::from_static("x-amz-date"), header_value(date)?);
    headers.insert(HeaderName::from_static("x-amz-content-sha256"), header_value(payload_hash)?);
    headers.insert(header::AUTHORIZATION, header_value(auth)?);
    if let Some(token) = &credentials.session_token {
        headers.insert(HeaderName::from_static("x-amz-security-token"), header_value(token.as_str())?);
    }
    Ok(())
}

/// SigV4's canonical query string: parameters sorted, names and values encoded once.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&percent_decode(k, false)), uri_encode(&percent_decode(v, false)))
        })
        .collect();
    order::sort(&mut pairs);
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

// ---------------------------------------------------------------------------------------
// STS AssumeRole

/// The role session name MLflow uses.
pub const ROLE_SESSION_NAME: &str = "ai-gateway-bedrock";

/// One role to assume: STS `AssumeRole` in `region` (at `sts_base`), signed with `caller`.
pub struct AssumeRole<'a> {
    pub sts_base: &'a str,
    pub region: &'a str,
    pub role_arn: &'a str,
    pub duration_secs: u64,
    pub caller: &'a Credentials,
}

/// Assumes the role: `(temporary credentials, expires_at_ms)`.
pub async fn assume_role<P: Upstream + Clock>(
    ports: &P,
    role: AssumeRole<'_>,
    timeout_ms: u64,
) -> Result<(Credentials, u64)> {
    let now_ms = ports.now_ms();
    let duration = role.duration_secs.to_string();
    let body = form_encode(&[
        ("Action", "AssumeRole"),
        ("DurationSeconds", &duration),
        ("RoleArn", role.role_arn),
        ("RoleSessionName", ROLE_SESSION_NAME),
        ("Version", "2011-06-15"),
    ]);
    let url = format!("{}/", role.sts_base.trim_end_matches('/'));
    let mut request = form_request(url, body)?;
    sign(
        &mut request,
        &[("content-type", FORM_CONTENT_TYPE)],
        role.caller,
        Scope { region: role.region, service: "sts" },
        now_ms,
    )?;
    let what = "the STS AssumeRole call";
    let answer = send_form(ports, &request, timeout_ms, what).await?;
    let text = String::from_utf8_lossy(&answer);
    let bad =
        |problem: &str| GatewayError::bad_gateway(ErrorCode::OriginBadResponse, format!("{what} answered {problem}"));
    let credentials = xml_text(&text, "Credentials").ok_or_else(|| bad("no Credentials"))?;
    let field = |name: &str| xml_text(credentials, name).map(xml_unescape).filter(|v| !v.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return Err(bad("credentials without AccessKeyId or SecretAccessKey"));
    };
    let expires_at = field("Expiration")
        .and_then(|e| parse_timestamp_ms(&e))
        .unwrap_or(now_ms + role.duration_secs.saturating_mul(1000));
    Ok((Credentials { access_key_id, secret_access_key, session_token: field("SessionToken") }, expires_at))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// Unix ms of an ISO 8601 UTC timestamp (`2024-05-01T12:34:56Z`, fractions allowed).
pub fn parse_timestamp_ms(s: &str) -> Option<u64> {
    let days = parse_day(s.get(..10)?)?;
    let time = s.get(11..19)?;
    if s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let mut parts = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
    if h > 23 || m > 59 || sec > 60 || days < 0 {
        return None;
    }
    Some((days as u64 * 86_400 + h * 3600 + m * 60 + sec) * 1000)
}

// ---------------------------------------------------------------------------------------
// Event-stream framing

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The content type of an event stream.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Largest message accepted (AWS documents 16 MiB for a message, 128 KiB for headers).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
const PRELUDE: usize = 12;

/// One decoded event-stream message: its string headers and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Splits event-stream bytes into messages as they arrive, checking both CRCs. After a bad
/// frame it stops: a stream's framing cannot be resynchronised.
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    buf: Vec<u8>,
    failed: bool,
}

impl EventStreamDecoder {
    /// Feeds bytes; returns the complete messages, then the framing error if one was found.
    pub fn push(&mut self, bytes: &[u8]) -> (Vec<Message>, Option<String>) {
        let mut messages = Vec::new();
        if self.failed {
            return (messages, None);
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let error = loop {
            let rest = &self.buf[at..];
            if rest.len() < PRELUDE {
                break None;
            }
            let total = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let headers_len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let prelude_crc = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if crc32(&rest[..8]) != prelude_crc {
                break Some("event-stream prelude checksum mismatch".to_string());
            }
            if !(PRELUDE + 4..=MAX_MESSAGE).contains(&total) || headers_len > total - PRELUDE - 4 {
                break Some(format!("event-stream message of impossible length {total}"));
            }
            if rest.len() < total {
                break None;
            }
            let frame = &rest[..total];
            let message_crc =
                u32::from_be_bytes([frame[total - 4], frame[total - 3], frame[total - 2], frame[total - 1]]);
            if crc32(&frame[..total - 4]) != message_crc {
                break Some("event-stream message checksum mismatch".to_string());
            }
            match parse_headers(&frame[PRELUDE..PRELUDE + headers_len]) {
                Some(headers) => {
                    messages.push(Message { headers, payload: frame[PRELUDE + headers_len..total - 4].to_vec() })
                }
                None => break Some("event-stream message with malformed headers".to_string()),
            }
            at += total;
        };
        if error.is_some() {
            self.failed = true;
            self.buf = Vec::new();
        } else {
            self.buf.drain(..at);
        }
        (messages, error)
    }

    /// The stream ended: an incomplete message left over is an error.
    pub fn finish(&mut self) -> Option<String> {
        let left = std::mem::take(&mut self.buf).len();
        (!self.failed && left > 0).then(|| format!("event stream ended inside a message ({left} bytes left)"))
    }
}

/// Header values by type tag (the event-stream spec): strings are kept, others skipped.
fn parse_headers(mut bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name_len = usize::from(*bytes.first()?);
        let name = std::str::from_utf8(bytes.get(1..1 + name_len)?).ok()?.to_string();
        let kind = *bytes.get(1 + name_len)?;
        bytes = &bytes[2 + name_len..];
        let skip = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
                let value = bytes.get(2..2 + len)?;
                if kind == 7 {
                    headers.push((name, std::str::from_utf8(value).ok()?.to_string()));
                }
                2 + len
            }
            _ => return None,
        };
        bytes = bytes.get(skip..)?;
    }
    Some(headers)
}

/// Event-stream bytes → SSE: each event message becomes `event: <:event-type>` with its JSON
/// payload as `data`; exception and error messages, and framing errors (a bad checksum), become
/// an `event: exception` with `{"type", "message"}`, after which nothing more is decoded.
#[derive(Debug, Default)]
pub struct EventStreamToSse {
    decoder: EventStreamDecoder,
}

impl EventStreamToSse {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let (messages, error) = self.decoder.push(bytes);
        for message in messages {
            write_message(&message, out);
        }
        if let Some(error) = error {
            write_exception(out, "eventStreamError", &error);
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(error) = self.decoder.finish() {
            write_exception(out, "eventStreamError", &error);
        }
    }
}

fn write_exception(out: &mut Vec<u8>, kind: &str, message: &str) {
    sse::write_event(out, "exception", &json!({"type": kind, "message": message}));
}

fn write_message(message: &Message, out: &mut Vec<u8>) {
    match message.header(":message-type") {
        Some("event") | None => {
            let Some(kind) = message.header(":event-type") else { return };
            let payload = String::from_utf8_lossy(&message.payload);
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(kind.replace(['\r', '\n'], "").as_bytes());
            out.push(b'\n');
            for line in payload.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
                out.push(b'\n');
            }
            out.push(b'\n');
        }
        Some(kind) => {
            // `exception` (`:exception-type`, JSON payload with `message`) or `error`
            // (`:error-code`, `:error-message` headers).
            let name = message.header(":exception-type").or(message.header(":error-code")).unwrap_or(kind);
            let payload: Option<Value> = serde_json::from_slice(&message.payload).ok();
            let text = payload
                .as_ref()
                .and_then(|p| p.get("message").or_else(|| p.get("Message")))
                .and_then(Value::as_str)
                .or(message.header(":error-message"))
                .unwrap_or("");
            write_exception(out, name, text);
        }
    }
}

/// Encodes one message (for tests and the mock's mirror image).
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out[..8]).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ports::memory::{block_on, MemoryHost};
    use crate::gateway::wire::sse::SseParser;
    use http::{Response, StatusCode};

    #[test]
    fn sigv4_get_vanilla_test_vector() {
        // aws-sig-v4-test-suite/get-vanilla.
        let empty_hash = sha256_hex(b"");
        let request = SigningRequest {
            method: "GET",
            path: "/",
            query: "",
            headers: &[("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z")],
            payload_hash: &empty_hash,
            amz_date: "20150830T123600Z",
            region: "us-east-1",
            service: "service",
        };
        assert_eq!(
            authorization(&request, "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn dates_and_uri_encoding() {
        assert_eq!(amz_date(1_440_938_160_000), "20150830T123600Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400_000), "20000229T000000Z");
        assert_eq!(amz_date(1_709_251_199_999), "20240229T235959Z");
        assert_eq!(amz_date(4_102_444_800_000), "21000101T000000Z");
        assert_eq!(uri_encode("a.b-c_d~e:0/ x"), "a.b-c_d~e%3A0%2F%20x");
        assert_eq!(canonical_uri("/model/a.b-v1%3A0/converse"), "/model/a.b-v1%253A0/converse");
        assert_eq!(canonical_uri(""), "/");
    }

    #[test]
    fn canonical_queries_are_sorted_and_encoded_once() {
        assert_eq!(canonical_query("b=2&a=1%2F&c"), "a=1%2F&b=2&c=");
        assert_eq!(canonical_query(""), "");
        assert_eq!(percent_decode("a%2fb%zz%", false), "a/b%zz%");
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn timestamps_and_xml() {
        assert_eq!(parse_timestamp_ms("2015-08-30T12:36:00Z"), Some(1_440_938_160_000));
        assert_eq!(parse_timestamp_ms("2015-08-30T12:36:00.123Z"), Some(1_440_938_160_000));
        for bad in ["2015-08-30 12:36:00Z", "2015-08-30T25:00:00Z", "x", "2015-02-30T00:00:00Z", ""] {
            assert_eq!(parse_timestamp_ms(bad), None, "{bad}");
        }
        let xml = "<A><B> x&amp;y </B><C/></A>";
        assert_eq!(xml_text(xml, "B").map(xml_unescape), Some("x&y".to_string()));
        assert_eq!(xml_text(xml, "C"), None);
    }

    fn keys() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    const STS_ANSWER: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><Arn>arn:aws:sts::123:assumed-role/r/ai-gateway-bedrock</Arn></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIATEMP</AccessKeyId>
      <SecretAccessKey>tempsecret</SecretAccessKey>
      <SessionToken>FwoGZXIvYXdzE+/token==</SessionToken>
      <Expiration>2023-11-14T22:28:20Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;

    #[test]
    fn assume_role_signs_a_form_and_reads_the_credentials() {
        let host = MemoryHost::new(|_| Ok(Response::new(STS_ANSWER.as_bytes().to_vec())));
        let caller = keys();
        let role = AssumeRole {
            sts_base: "https://sts.us-east-1.amazonaws.com",
            region: "us-east-1",
            role_arn: "arn:aws:iam::123:role/r",
            duration_secs: 900,
            caller: &caller,
        };
        let (creds, expires) = block_on(assume_role(&host, role, 1000)).unwrap();
        assert_eq!(creds.access_key_id, "ASIATEMP");
        assert_eq!(creds.secret_access_key, "tempsecret");
        assert_eq!(creds.session_token.as_deref(), Some("FwoGZXIvYXdzE+/token=="));
        assert_eq!(expires, 1_700_000_900_000);
        let sent = host.sent.borrow();
        let req = &sent[0];
        assert_eq!(req.uri(), "https://sts.us-east-1.amazonaws.com/");
        assert_eq!(
            String::from_utf8_lossy(req.body()),
            "Action=AssumeRole&DurationSeconds=900&RoleArn=arn%3Aaws%3Aiam%3A%3A123%3Arole%2Fr\
             &RoleSessionName=ai-gateway-bedrock&Version=2011-06-15"
        );
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-1/sts/aws4_request, "));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"), "{auth}");
        // Recompute the signature from the request as sent.
        let hash = sha256_hex(req.body());
        let date = req.headers()["x-amz-date"].to_str().unwrap();
        let expected = authorization(
            &SigningRequest {
                method: "POST",
                path: "/",
                query: "",
                headers: &[
                    ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
                    ("host", "sts.us-east-1.amazonaws.com"),
                    ("x-amz-content-sha256", &hash),
                    ("x-amz-date", date),
                ],
                payload_hash: &hash,
                amz_date: date,
                region: "us-east-1",
                service: "sts",
            },
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(auth, expected);
    }

    #[test]
    fn assume_role_failures_keep_stss_reason() {
        let denied = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
            <Message>User is not authorized to perform: sts:AssumeRole</Message></Error></ErrorResponse>";
        for (status, body, code, text) in [
            (StatusCode::FORBIDDEN, denied, "origin_rejected", "not authorized to perform: sts:AssumeRole"),
            (StatusCode::OK, "<x/>", "origin_bad_response", "no Credentials"),
            (
                StatusCode::OK,
                "<Credentials><AccessKeyId>A</AccessKeyId></Credentials>",
                "origin_bad_response",
                "without AccessKeyId or SecretAccessKey",
            ),
        ] {
            let host = MemoryHost::new(move |_| {
                let mut r = Response::new(body.as_bytes().to_vec());
                *r.status_mut() = status;
                Ok(r)
            });
            let caller = keys();
            let role = AssumeRole {
                sts_base: "http://sts",
                region: "r",
                role_arn: "arn:x",
                duration_secs: 900,
                caller: &caller,
            };
            let e = block_on(assume_role(&host, role, 1000)).unwrap_err();
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(text), "{}", e.message);
            assert!(!e.message.contains("wJalr"));
        }
    }

    fn events(sse: &[u8]) -> Vec<(Option<String>, String)> {
        let mut parser = SseParser::new();
        let mut events = parser.push(sse);
        events.extend(parser.finish());
        events.into_iter().map(|e| (e.event, e.data)).collect()
    }

    fn stream() -> Vec<u8> {
        let mut bytes = Vec::new();
        for (kind, payload) in [
            ("messageStart", r#"{"role":"assistant"}"#),
            ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hi\nthere"}}"#),
            ("messageStop", r#"{"stopReason":"end_turn"}"#),
        ] {
            let headers = [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")];
            bytes.extend(encode_message(&headers, payload.as_bytes()));
        }
        bytes
    }

    #[test]
    fn event_streams_decode_at_every_split() {
        let bytes = stream();
        let mut whole = EventStreamToSse::new();
        let mut expected = Vec::new();
        whole.decode(&bytes, &mut expected);
        whole.finish(&mut expected);
        let parsed = events(&expected);
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[1],
            (Some("contentBlockDelta".into()), r#"{"contentBlockIndex":0,"delta":{"text":"Hi\nthere"}}"#.into())
        );
        for split in 0..=bytes.len() {
            let mut d = EventStreamToSse::new();
            let mut out = Vec::new();
            d.decode(&bytes[..split], &mut out);
            d.decode(&bytes[split..], &mut out);
            d.finish(&mut out);
            assert_eq!(out, expected, "split at {split}");
        }
        let mut d = EventStreamToSse::new();
        let mut out = Vec::new();
        for b in &bytes {
            d.decode(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn bad_checksums_and_truncation_become_one_exception() {
        let good = stream();
        // A flipped payload byte: the message CRC fails on the second message.
        let first_len = u32::from_be_bytes([good[0], good[1], good[2], good[3]]) as usize;
        let mut bad = good.clone();
        bad[first_len + 40] ^= 0x01;
        let mut d = EventStreamToSse::new();
        let mut out = Vec::new();
        d.decode(&bad, &mut out);
        d.decode(&good, &mut out); // ignored: the framing is lost
        d.finish(&mut out);
        let parsed = events(&out);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed[1].0.as_deref(), Some("exception"));
        assert!(parsed[1].1.contains("message checksum mismatch"));
        // A damaged prelude.
        let mut bad = good.clone();
        bad[2] ^= 0x40;
        let mut out = Vec::new();
        EventStreamToSse::new().decode(&bad, &mut out);
        assert!(events(&out)[0].1.contains("prelude checksum mismatch"));
        // A stream cut inside a message.
        let mut d = EventStreamToSse::new();
        let mut out = Vec::new();
        d.decode(&good[..good.len() - 3], &mut out);
        d.finish(&mut out);
        let parsed = events(&out);
        assert!(parsed.last().unwrap().1.contains("ended inside a message"), "{parsed:?}");
    }

    #[test]
    fn exception_frames_and_hostile_bytes() {
        let exception = encode_message(
            &[(":message-type", "exception"), (":exception-type", "throttlingException")],
            br#"{"message":"Too many tokens"}"#,
        );
        let error = encode_message(
            &[(":message-type", "error"), (":error-code", "InternalFailure"), (":error-message", "boom")],
            b"",
        );
        let mut out = Vec::new();
        let mut d = EventStreamToSse::new();
        d.decode(&exception, &mut out);
        let mut d2 = EventStreamToSse::new();
        d2.decode(&error, &mut out);
        let parsed = events(&out);
        assert_eq!(
            parsed[0],
            (Some("exception".into()), r#"{"message":"Too many tokens","type":"throttlingException"}"#.into())
        );
        assert_eq!(parsed[1], (Some("exception".into()), r#"{"message":"boom","type":"InternalFailure"}"#.into()));
        // Every header type is skipped correctly; garbage never panics.
        let mut headers = vec![0u8];
        headers.extend_from_slice(b""); // empty name
        let mut message = encode_message(&[(":event-type", "x")], b"{}");
        let mut rng = 1u32;
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let at = rng as usize % message.len();
            message[at] = message[at].wrapping_add((rng >> 8) as u8);
            let mut out = Vec::new();
            let mut d = EventStreamToSse::new();
            d.decode(&message, &mut out);
            d.finish(&mut out);
        }
        assert_eq!(parse_headers(&[3, b'a', b'b', b'c', 4, 0, 0, 0, 1, 1, b'x', 9]), None);
        let typed: Vec<u8> = [
            &[1, b'a', 0][..],
            &[1, b'b', 2, 7],
            &[1, b'c', 3, 0, 1],
            &[1, b'd', 5, 0, 0, 0, 0, 0, 0, 0, 1],
            &[1, b'e', 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[1, b'f', 6, 0, 1, 0xff],
            &[1, b'g', 7, 0, 2, b'o', b'k'],
        ]
        .concat();
        assert_eq!(parse_headers(&typed), Some(vec![("g".to_string(), "ok".to_string())]));
        let _ = headers;
    }

    #[test]
    fn environment_keys_come_from_host_secrets() {
        let host = MemoryHost::new(|_| Err(crate::gateway::ports::UpstreamError::Timeout))
            .with_secret("AWS_ACCESS_KEY_ID", "AKID")
            .with_secret("AWS_SECRET_ACCESS_KEY", "sec");
        let creds = KeyRefs::environment().resolve(&host).unwrap();
        assert_eq!((creds.access_key_id.as_str(), creds.session_token.as_deref()), ("AKID", None));
        let host = host.with_secret("AWS_SESSION_TOKEN", "tok");
        assert_eq!(KeyRefs::environment().resolve(&host).unwrap().session_token.as_deref(), Some("tok"));
        let bare = MemoryHost::new(|_| Err(crate::gateway::ports::UpstreamError::Timeout));
        let e = KeyRefs::environment().resolve(&bare).unwrap_err();
        assert!(e.message.contains("$AWS_ACCESS_KEY_ID"), "{}", e.message);
        assert_eq!(format!("{creds:?}"), "Credentials { .. }");
    }
}

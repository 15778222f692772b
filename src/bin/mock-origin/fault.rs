//! Injected failures: what they are and how they are configured.

use std::time::Duration;

use http::HeaderMap;
use serde_json::{json, Value};

use crate::exchange::non_empty_header;

/// How long `hang` keeps a request waiting unless `delay_ms` says otherwise.
pub const HANG: Duration = Duration::from_secs(300);
/// Default wait for `delay`.
const DEFAULT_DELAY: Duration = Duration::from_millis(1000);
/// Default gap between events for `slow_stream`.
const DEFAULT_STREAM_GAP: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hang,
    Delay,
    Status500,
    Status503,
    Status429,
    SlowStream,
    CutStream,
    /// One byte of a streamed answer flipped (a bad event-stream checksum).
    CorruptStream,
    MalformedJson,
    WrongContentType,
    Reset,
}

impl Mode {
    pub const ALL: [Mode; 11] = [
        Mode::Hang,
        Mode::Delay,
        Mode::Status500,
        Mode::Status503,
        Mode::Status429,
        Mode::SlowStream,
        Mode::CutStream,
        Mode::CorruptStream,
        Mode::MalformedJson,
        Mode::WrongContentType,
        Mode::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Hang => "hang",
            Mode::Delay => "delay",
            Mode::Status500 => "status_500",
            Mode::Status503 => "status_503",
            Mode::Status429 => "status_429",
            Mode::SlowStream => "slow_stream",
            Mode::CutStream => "cut_stream",
            Mode::CorruptStream => "corrupt_stream",
            Mode::MalformedJson => "malformed_json",
            Mode::WrongContentType => "wrong_content_type",
            Mode::Reset => "reset",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// Stream faults only make sense for (and only match) streaming responses.
    pub fn streams_only(self) -> bool {
        matches!(self, Mode::SlowStream | Mode::CutStream | Mode::CorruptStream)
    }
}

/// One fault to apply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub mode: Mode,
    pub delay: Option<Duration>,
    pub retry_after: Option<u64>,
}

impl Fault {
    /// The wait used by `delay`, `hang` and `slow_stream`.
    pub fn delay_or_default(&self) -> Duration {
        self.delay.unwrap_or(match self.mode {
            Mode::Hang => HANG,
            Mode::SlowStream => DEFAULT_STREAM_GAP,
            _ => DEFAULT_DELAY,
        })
    }

    /// `Retry-After` seconds for `status_429` (and `status_503` when set).
    pub fn retry_after_or_default(&self) -> u64 {
        self.retry_after.unwrap_or(1)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.mode.name(),
            "delay_ms": self.delay.map(|d| d.as_millis() as u64),
            "retry_after": self.retry_after,
        })
    }
}

/// A fault armed through `POST /_mock/fault`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub fault: Fault,
    /// Requests still to be affected; `None` means unlimited.
    pub remaining: Option<u64>,
    /// Only requests whose path starts with this prefix match.
    pub path: Option<String>,
}

impl Armed {
    /// Whether this fault applies to a request for `path`.
    pub fn matches(&self, path: &str, is_stream: bool) -> bool {
        let path_ok = self.path.as_deref().is_none_or(|p| path.starts_with(p));
        path_ok && (is_stream || !self.fault.mode.streams_only())
    }

    pub fn to_json(&self) -> Value {
        let mut value = self.fault.to_json();
        value["times"] = json!(self.remaining);
        value["path"] = json!(self.path);
        value
    }
}

/// A number given either as a JSON number or as a numeric string.
fn number(value: Option<&Value>) -> Result<Option<u64>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| format!("expected a non-negative integer, got {n}"))
        }
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| format!("expected a non-negative integer, got {s:?}"))
        }
        Some(other) => Err(format!("expected a non-negative integer, got {other}")),
    }
}

/// Parses the body of `POST /_mock/fault`; `Ok(None)` clears the fault.
pub fn parse_config(body: &Value) -> Result<Option<Armed>, String> {
    let mode = body.get("mode").and_then(Value::as_str).ok_or("missing \"mode\"")?;
    if mode == "none" {
        return Ok(None);
    }
    let mode = Mode::parse(mode).ok_or_else(|| unknown_mode(mode))?;
    let field = |name: &str| number(body.get(name)).map_err(|e| format!("\"{name}\": {e}"));
    let remaining = field("times")?;
    if remaining == Some(0) {
        return Ok(None);
    }
    let fault =
        Fault { mode, delay: field("delay_ms")?.map(Duration::from_millis), retry_after: field("retry_after")? };
    let path = match body.get("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => return Err("\"path\" must be a string prefix".into()),
    };
    Ok(Some(Armed { fault, remaining, path }))
}

/// The per-request override: `x-mock-fault` (+ `x-mock-delay-ms`,
/// `x-mock-retry-after`). `Ok(None)` when the header is absent;
/// `Ok(Some(None))` for `x-mock-fault: none`.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<Option<Fault>>, String> {
    let Some(mode) = non_empty_header(headers, "x-mock-fault") else {
        return Ok(None);
    };
    if mode.eq_ignore_ascii_case("none") {
        return Ok(Some(None));
    }
    let mode = Mode::parse(&mode.to_ascii_lowercase()).ok_or_else(|| unknown_mode(mode))?;
    let header_number = |name: &str| {
        non_empty_header(headers, name)
            .map(|v| v.parse::<u64>().map_err(|_| format!("{name}: expected a non-negative integer, got {v:?}")))
            .transpose()
    };
    Ok(Some(Some(Fault {
        mode,
        delay: header_number("x-mock-delay-ms")?.map(Duration::from_millis),
        retry_after: header_number("x-mock-retry-after")?,
    })))
}

fn unknown_mode(mode: &str) -> String {
    let known: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
    format!("unknown fault mode {mode:?}; expected none or one of {}", known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn parses_config() {
        let armed = parse_config(&json!({"mode": "status_429", "times": 2, "retry_after": "7"}))
            .expect("valid")
            .expect("armed");
        assert_eq!(armed.fault.mode, Mode::Status429);
        assert_eq!(armed.remaining, Some(2));
        assert_eq!(armed.fault.retry_after_or_default(), 7);
        assert_eq!(parse_config(&json!({"mode": "none"})), Ok(None));
        assert_eq!(parse_config(&json!({"mode": "hang", "times": 0})), Ok(None));
        assert!(parse_config(&json!({"mode": "bogus"})).is_err());
        assert!(parse_config(&json!({"times": 1})).is_err());
        assert!(parse_config(&json!({"mode": "delay", "delay_ms": -1})).is_err());
    }

    #[test]
    fn every_mode_round_trips() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.name()), Some(mode));
        }
    }

    #[test]
    fn stream_faults_match_streams_only() {
        let armed = |mode| Armed {
            fault: Fault { mode, delay: None, retry_after: None },
            remaining: None,
            path: Some("/v1/".into()),
        };
        assert!(armed(Mode::CutStream).matches("/v1/messages", true));
        assert!(!armed(Mode::CutStream).matches("/v1/messages", false));
        assert!(armed(Mode::Status500).matches("/v1/messages", false));
        assert!(!armed(Mode::Status500).matches("/echo/x", false));
    }

    #[test]
    fn parses_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers), Ok(None));
        headers.insert("x-mock-fault", HeaderValue::from_static("delay"));
        headers.insert("x-mock-delay-ms", HeaderValue::from_static("25"));
        let fault = from_headers(&headers).expect("valid").expect("present").expect("fault");
        assert_eq!(fault.mode, Mode::Delay);
        assert_eq!(fault.delay_or_default(), Duration::from_millis(25));
        headers.insert("x-mock-fault", HeaderValue::from_static("none"));
        assert_eq!(from_headers(&headers), Ok(Some(None)));
        headers.insert("x-mock-fault", HeaderValue::from_static("explode"));
        assert!(from_headers(&headers).is_err());
    }
}

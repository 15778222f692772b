//! Test scaffolding shared by the provider files' tests.

use http::Request;
use serde_json::{Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Call, Translated};
use crate::gateway::types::{Operation, Usage};

/// Host secrets for tests: a fixed list of `(name, value)`; every other name is unset.
pub(crate) struct TestSecrets(pub &'static [(&'static str, &'static str)]);

impl Secrets for TestSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, value)| value.to_string())
    }
}

/// A host with no secrets at all.
pub(crate) const NO_SECRETS: TestSecrets = TestSecrets(&[]);

/// A provider's `from_config`.
pub(crate) type FromConfig<P> = fn(&str, &Map<String, Value>, &mut Issues) -> Option<P>;

/// The adapter `from_config` makes of `config` (at path `c`), which must raise no issue.
pub(crate) fn adapter<P>(from_config: FromConfig<P>, config: Value) -> P {
    let mut issues = Issues::default();
    let p = from_config("c", config.as_object().unwrap(), &mut issues);
    assert!(issues.0.is_empty(), "{:?}", issues.0);
    p.unwrap()
}

/// The issues `from_config` reports for `config` at path `e.config`, which it must refuse.
pub(crate) fn config_issues<P>(from_config: FromConfig<P>, config: Value) -> Vec<String> {
    let mut issues = Issues::default();
    assert!(from_config("e.config", config.as_object().unwrap(), &mut issues).is_none());
    issues.0.iter().map(ToString::to_string).collect()
}

/// A call of `op` with `body` (a JSON object).
pub(crate) fn call<'a>(
    op: Operation,
    model: &'a str,
    body: Value,
    base_url: &'a str,
    stream: bool,
    now_ms: u64,
) -> Call<'a> {
    Call { op, model, body: body.as_object().unwrap().clone(), base_url, stream, now_ms, written: None }
}

/// The JSON body of a built origin request.
pub(crate) fn sent(req: &Request<Vec<u8>>) -> Value {
    serde_json::from_slice(req.body()).unwrap()
}

/// A translated answer's body, parsed, and its usage.
pub(crate) fn parsed(t: Translated) -> (Value, Option<Usage>) {
    (serde_json::from_slice(&t.body).unwrap(), t.usage)
}

//! MLflow clients (`POST /endpoints/{name}/invocations`, `/gateway/{name}/invocations`): the
//! path names the endpoint and the body is OpenAI-shaped (LLM endpoints) or a scoring request
//! (`mlflow models serve` endpoints); MLflow ignores a `model` field, and so do we.

use serde_json::{Map, Value};

/// The request without `model` (the path's `name` is the endpoint).
pub fn read(mut body: Map<String, Value>) -> Map<String, Value> {
    body.remove("model");
    body
}

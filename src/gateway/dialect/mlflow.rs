//! MLflow clients (`POST /endpoints/{name}/invocations`, `/gateway/{name}/invocations`): the
//! path names the endpoint and the body is OpenAI-shaped (LLM endpoints) or a scoring request
//! (`mlflow models serve` endpoints); MLflow ignores a `model` field, and so do we. MLflow
//! 3.x's `/gateway/{name}/mlflow/invocations` tells chat from embeddings by the body.

use serde_json::{Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};
use crate::gateway::types::Operation;

/// The request without `model` (the path's `name` is the endpoint).
pub fn read(mut body: Map<String, Value>) -> Map<String, Value> {
    body.remove("model");
    body
}

/// MLflow 3.x's unified invocations: `messages` is a chat request, `input` an embeddings one.
pub fn unified_operation(body: &Map<String, Value>) -> Result<Operation> {
    if body.contains_key("messages") {
        Ok(Operation::Chat)
    } else if body.contains_key("input") {
        Ok(Operation::Embeddings)
    } else {
        Err(GatewayError::bad_request(
            ErrorCode::InvalidRequest,
            "Invalid request: payload format must be either chat (`messages`) or embeddings (`input`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_util::object;
    use serde_json::json;

    #[test]
    fn unified_invocations_tell_chat_from_embeddings() {
        assert_eq!(unified_operation(&object(json!({"messages": []}))).unwrap(), Operation::Chat);
        assert_eq!(unified_operation(&object(json!({"input": "x"}))).unwrap(), Operation::Embeddings);
        assert_eq!(unified_operation(&object(json!({"prompt": "x"}))).unwrap_err().code, "invalid_request");
        assert_eq!(read(object(json!({"model": "m", "input": 1}))), object(json!({"input": 1})));
    }
}

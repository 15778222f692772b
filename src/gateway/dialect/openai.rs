//! OpenAI clients (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`): the internal
//! shape already, so reading means taking out `model`, which names one of our endpoints (the
//! provider-side model is the endpoint's); answers, streams and errors go out as they are.

use serde_json::{Map, Value};

use crate::gateway::error::{ErrorCode, GatewayError, Result};

/// The endpoint name (`model`) and the rest of the request.
pub fn read(mut body: Map<String, Value>) -> Result<(String, Map<String, Value>)> {
    let name = match body.remove("model") {
        Some(Value::String(name)) => name,
        Some(_) => {
            return Err(GatewayError::bad_request(
                ErrorCode::InvalidModel,
                "`model` must be a string naming an endpoint",
            ))
        }
        None => {
            return Err(GatewayError::bad_request(
                ErrorCode::MissingModel,
                "`model` is required: name a configured endpoint",
            ))
        }
    };
    Ok((name, body))
}

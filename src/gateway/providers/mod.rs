//! The provider registry: one file per wire format, one `Provider` variant per provider.
//! Inside the gateway every request and response is in OpenAI's shape (the lingua franca of
//! LLM APIs); each adapter (`adapter::Adapter`) translates that to its provider's wire format
//! and back, including streams. Shared helpers live in `common`. Adding a provider = one file
//! implementing `Adapter` + one line per match below.

pub mod adapter;
pub mod common;

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod huggingface;
pub mod mlflow;
pub mod openai;

#[cfg(test)]
pub(crate) mod test_support;

use http::Request;
use serde_json::{Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::error::Result;
use crate::gateway::ports::Secrets;
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::sse::SseEvent;
use crate::gateway::wire::stream::StreamTranslate;

/// The providers' stream translators, as an enum so the per-chunk path has no dynamic dispatch.
pub enum ProviderStream {
    AnthropicToOpenAi(anthropic::StreamToOpenAi),
    GeminiToOpenAi(gemini::StreamToOpenAi),
}

impl From<anthropic::StreamToOpenAi> for ProviderStream {
    fn from(t: anthropic::StreamToOpenAi) -> Self {
        ProviderStream::AnthropicToOpenAi(t)
    }
}

impl From<gemini::StreamToOpenAi> for ProviderStream {
    fn from(t: gemini::StreamToOpenAi) -> Self {
        ProviderStream::GeminiToOpenAi(t)
    }
}

impl From<NoTranslation> for ProviderStream {
    fn from(never: NoTranslation) -> Self {
        match never {}
    }
}

impl StreamTranslate for ProviderStream {
    fn event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        match self {
            ProviderStream::AnthropicToOpenAi(t) => t.event(event, out),
            ProviderStream::GeminiToOpenAi(t) => t.event(event, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            ProviderStream::AnthropicToOpenAi(t) => t.finish(out),
            ProviderStream::GeminiToOpenAi(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            ProviderStream::AnthropicToOpenAi(t) => t.usage(),
            ProviderStream::GeminiToOpenAi(t) => t.usage(),
        }
    }
}

#[derive(Debug)]
pub enum Provider {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
    Gemini(gemini::Gemini),
    Bedrock(bedrock::Bedrock),
    Cohere(cohere::Cohere),
    HuggingFaceTgi(huggingface::Tgi),
    MlflowModelServing(mlflow::ModelServing),
}

/// Provider names accepted in `model.provider` (MLflow's spellings).
pub const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "bedrock",
    "amazon-bedrock",
    "cohere",
    "huggingface-text-generation-inference",
    "mlflow-model-serving",
];

/// Dispatches a method call to whichever adapter `$provider` holds.
macro_rules! each_provider {
    ($provider:expr, $p:ident => $call:expr) => {
        match $provider {
            Provider::OpenAi($p) => $call,
            Provider::Anthropic($p) => $call,
            Provider::Gemini($p) => $call,
            Provider::Bedrock($p) => $call,
            Provider::Cohere($p) => $call,
            Provider::HuggingFaceTgi($p) => $call,
            Provider::MlflowModelServing($p) => $call,
        }
    };
}

impl Provider {
    /// Checks `model.provider` and `model.config` at `path` (e.g. `endpoints[0].model`).
    pub fn from_config(path: &str, name: &str, config: &Map<String, Value>, issues: &mut Issues) -> Option<Provider> {
        let path = format!("{path}.config");
        Some(match name {
            "openai" => Provider::OpenAi(openai::OpenAi::from_config(&path, config, issues)?),
            "anthropic" => Provider::Anthropic(anthropic::Anthropic::from_config(&path, config, issues)?),
            "gemini" => Provider::Gemini(gemini::Gemini::from_config(&path, config, issues)?),
            "bedrock" | "amazon-bedrock" => Provider::Bedrock(bedrock::Bedrock::from_config(&path, config, issues)?),
            "cohere" => Provider::Cohere(cohere::Cohere::from_config(&path, config, issues)?),
            "huggingface-text-generation-inference" => {
                Provider::HuggingFaceTgi(huggingface::Tgi::from_config(&path, config, issues)?)
            }
            "mlflow-model-serving" => {
                Provider::MlflowModelServing(mlflow::ModelServing::from_config(&path, config, issues)?)
            }
            _ => {
                let path = path.trim_end_matches(".config");
                issues.unknown(format!("{path}.provider"), "provider", name, PROVIDERS);
                return None;
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gemini",
            Provider::Bedrock(_) => "bedrock",
            Provider::Cohere(_) => "cohere",
            Provider::HuggingFaceTgi(_) => "huggingface-text-generation-inference",
            Provider::MlflowModelServing(_) => "mlflow-model-serving",
        }
    }

    /// Whether `model.name` must be set (some providers route by URL instead).
    pub fn needs_model_name(&self) -> bool {
        match self {
            Provider::OpenAi(p) => !p.is_azure(),
            Provider::HuggingFaceTgi(_) | Provider::MlflowModelServing(_) => false,
            _ => true,
        }
    }

    pub fn default_base(&self) -> &str {
        each_provider!(self, p => p.default_base())
    }

    pub fn build_request(&self, call: Call<'_>, secrets: &impl Secrets) -> Result<Request<Vec<u8>>> {
        each_provider!(self, p => p.build_request(call, secrets))
    }

    pub fn translate_response(&self, reply: Reply<'_>) -> Result<Translated> {
        each_provider!(self, p => p.translate_response(reply))
    }

    pub fn stream_mode(&self, op: Operation, model: &str, now_ms: u64) -> StreamMode<ProviderStream> {
        each_provider!(self, p => p.stream_mode(op, model, now_ms).map(Into::into))
    }
}

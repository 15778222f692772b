//! The provider registry: one file per wire format, one `Provider` variant per adapter, and
//! every MLflow 3.17 provider name either served here or refused with its reason.
//! Inside the gateway every request and response is in OpenAI's shape (the lingua franca of
//! LLM APIs); each adapter (`adapter::Adapter`) translates that to its provider's wire format
//! and back, including streams. Shared helpers live in `common`; credentials that need an
//! outbound call first (OAuth tokens, STS) in `token`, filled by `Provider::authorize`.
//!
//! Adding an OpenAI-compatible provider = one row in `openai_compatible::FAMILY`. Adding another
//! = one file implementing `Adapter` + one line per match below.

pub mod adapter;
pub mod common;
pub mod token;

pub mod anthropic;
pub mod aws;
pub mod bedrock;
pub mod cohere;
pub mod databricks;
pub mod gemini;
pub mod google_auth;
pub mod huggingface;
pub mod mlflow;
pub mod openai;
pub mod openai_compatible;
pub mod vertex;

#[cfg(test)]
pub(crate) mod test_support;

use http::Request;
use serde_json::{Map, Value};

use crate::gateway::check::Issues;
use crate::gateway::error::Result;
use crate::gateway::ports::{Secrets, Signatures, Upstream};
use crate::gateway::providers::adapter::{Adapter, Call, NoTranslation, Reply, StreamMode, Translated};
use crate::gateway::types::{Operation, Usage};
use crate::gateway::wire::sse::SseEvent;
use crate::gateway::wire::stream::StreamTranslate;

/// The providers' stream translators, as an enum so the per-chunk path has no dynamic dispatch.
pub enum ProviderStream {
    AnthropicToOpenAi(anthropic::StreamToOpenAi),
    GeminiToOpenAi(gemini::StreamToOpenAi),
    BedrockToOpenAi(bedrock::ConverseStreamToOpenAi),
}

impl ProviderStream {
    /// For origins whose streams are not SSE, what decodes their bytes into SSE events first
    /// (the pump's first stage parses SSE): Bedrock's binary event stream.
    pub fn decoder(&self) -> Option<StreamDecoder> {
        match self {
            ProviderStream::BedrockToOpenAi(_) => Some(StreamDecoder::AwsEventStream(aws::EventStreamToSse::new())),
            _ => None,
        }
    }
}

/// Decodes a non-SSE origin stream into SSE bytes, as they arrive.
pub enum StreamDecoder {
    AwsEventStream(aws::EventStreamToSse),
}

impl StreamDecoder {
    /// The content type of the streams this decodes (a 2xx answer of another type is not one).
    pub fn content_type(&self) -> &'static str {
        match self {
            StreamDecoder::AwsEventStream(_) => aws::EVENT_STREAM,
        }
    }

    /// Origin bytes in, SSE bytes out (nothing while a frame is incomplete).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        match self {
            StreamDecoder::AwsEventStream(d) => d.decode(bytes, out),
        }
    }

    /// The origin body ended: an incomplete frame becomes an error event.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            StreamDecoder::AwsEventStream(d) => d.finish(out),
        }
    }
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

impl From<bedrock::ConverseStreamToOpenAi> for ProviderStream {
    fn from(t: bedrock::ConverseStreamToOpenAi) -> Self {
        ProviderStream::BedrockToOpenAi(t)
    }
}

impl From<vertex::VertexStream> for ProviderStream {
    fn from(t: vertex::VertexStream) -> Self {
        match t {
            vertex::VertexStream::Gemini(t) => ProviderStream::GeminiToOpenAi(t),
            vertex::VertexStream::Claude(t) => ProviderStream::AnthropicToOpenAi(t),
        }
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
            ProviderStream::BedrockToOpenAi(t) => t.event(event, out),
        }
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            ProviderStream::AnthropicToOpenAi(t) => t.finish(out),
            ProviderStream::GeminiToOpenAi(t) => t.finish(out),
            ProviderStream::BedrockToOpenAi(t) => t.finish(out),
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            ProviderStream::AnthropicToOpenAi(t) => t.usage(),
            ProviderStream::GeminiToOpenAi(t) => t.usage(),
            ProviderStream::BedrockToOpenAi(t) => t.usage(),
        }
    }
}

#[derive(Debug)]
pub enum Provider {
    /// `openai` and `azure`.
    OpenAi(openai::OpenAi),
    /// One row of the OpenAI-compatible family table.
    Compatible(openai_compatible::Compatible),
    Databricks(databricks::Databricks),
    Anthropic(anthropic::Anthropic),
    Gemini(gemini::Gemini),
    VertexAi(vertex::VertexAi),
    Bedrock(bedrock::Bedrock),
    Cohere(cohere::Cohere),
    HuggingFaceTgi(huggingface::Tgi),
    MlflowModelServing(mlflow::ModelServing),
}

/// Provider names served (MLflow's spellings), besides the `openai_compatible::FAMILY` rows.
const SERVED: &[&str] = &[
    "openai",
    "azure",
    "anthropic",
    "gemini",
    "vertex_ai",
    "bedrock",
    "amazon-bedrock",
    "cohere",
    "databricks",
    "databricks-model-serving",
    "huggingface-text-generation-inference",
    "mlflow-model-serving",
];

/// MLflow 3.17 provider names the gateway refuses, each with the reason given at its path.
pub const REFUSED: &[(&str, &str)] = &[
    ("palm", "is not served: Google shut the PaLM API down; use provider gemini (gemini_api_key) or vertex_ai"),
    (
        "mosaicml",
        "is not served: MosaicML's inference API was shut down after Databricks acquired MosaicML; serve the model \
         on Databricks and use provider databricks",
    ),
    (
        "litellm",
        "is not served: LiteLLM is a Python library that calls providers in-process, not an HTTP origin; name the \
         provider it would call (openai, anthropic, bedrock, ...), or reach a LiteLLM proxy server with provider \
         openai and openai_api_base",
    ),
    (
        "ai21labs",
        "is not served: MLflow's ai21labs provider only takes AI21's Jurassic-2 models (j2-ultra, j2-mid, j2-light) \
         and their /complete API, which AI21 retired on 2024-11-14; its Jamba models speak OpenAI's chat API: use \
         provider openai with openai_api_base https://api.ai21.com/studio/v1",
    ),
    (
        "typesafe",
        "is not served: TypeSafe System One is a passthrough-only API (MLflow serves it only on its \
         /gateway/typesafe passthrough route), not chat, completions or embeddings",
    ),
    (
        "sap-ai-core",
        "is not served: MLflow's sap-ai-core provider reads its URL from the MLFLOW_GENAI_JUDGE_BASE_URL environment \
         variable and leaves authentication to a cluster egress proxy, so its config holds nothing an edge gateway \
         could call; reach the AI Core orchestration API through such a proxy with provider openai",
    ),
];

/// Every provider name MLflow 3.17 knows, served or refused (for did-you-mean).
pub fn known_names() -> Vec<&'static str> {
    let family = openai_compatible::FAMILY.iter().map(openai_compatible::Family::name);
    SERVED.iter().copied().chain(family).chain(REFUSED.iter().map(|(name, _)| *name)).collect()
}

/// Dispatches a method call to whichever adapter `$provider` holds.
macro_rules! each_provider {
    ($provider:expr, $p:ident => $call:expr) => {
        match $provider {
            Provider::OpenAi($p) => $call,
            Provider::Compatible($p) => $call,
            Provider::Databricks($p) => $call,
            Provider::Anthropic($p) => $call,
            Provider::Gemini($p) => $call,
            Provider::VertexAi($p) => $call,
            Provider::Bedrock($p) => $call,
            Provider::Cohere($p) => $call,
            Provider::HuggingFaceTgi($p) => $call,
            Provider::MlflowModelServing($p) => $call,
        }
    };
}

impl Provider {
    /// Checks `model.provider` and `model.config` at `path` (e.g. `endpoints[0].model`);
    /// `model` is `model.name` (Vertex AI picks its wire format by it).
    pub fn from_config(
        path: &str,
        name: &str,
        model: Option<&str>,
        config: &Map<String, Value>,
        issues: &mut Issues,
    ) -> Option<Provider> {
        let config_path = format!("{path}.config");
        let path_ref = config_path.as_str();
        Some(match name {
            "openai" => Provider::OpenAi(openai::OpenAi::from_config(path_ref, config, issues)?),
            "azure" => Provider::OpenAi(openai::OpenAi::azure_from_config(path_ref, config, issues)?),
            "anthropic" => Provider::Anthropic(anthropic::Anthropic::from_config(path_ref, config, issues)?),
            "gemini" => Provider::Gemini(gemini::Gemini::from_config(path_ref, config, issues)?),
            "vertex_ai" => Provider::VertexAi(vertex::VertexAi::from_config(path_ref, model, config, issues)?),
            "bedrock" | "amazon-bedrock" => Provider::Bedrock(bedrock::Bedrock::from_config(path_ref, config, issues)?),
            "cohere" => Provider::Cohere(cohere::Cohere::from_config(path_ref, config, issues)?),
            "databricks" => {
                Provider::Databricks(databricks::Databricks::from_config("databricks", path_ref, config, issues)?)
            }
            "databricks-model-serving" => Provider::Databricks(databricks::Databricks::from_config(
                "databricks-model-serving",
                path_ref,
                config,
                issues,
            )?),
            "huggingface-text-generation-inference" => {
                Provider::HuggingFaceTgi(huggingface::Tgi::from_config(path_ref, config, issues)?)
            }
            "mlflow-model-serving" => {
                Provider::MlflowModelServing(mlflow::ModelServing::from_config(path_ref, config, issues)?)
            }
            other => {
                if let Some(family) = openai_compatible::family(other) {
                    let adapter = openai_compatible::Compatible::from_config(family, path_ref, config, issues)?;
                    return Some(Provider::Compatible(adapter));
                }
                match REFUSED.iter().find(|(refused, _)| *refused == other) {
                    Some((_, reason)) => issues.push(format!("{path}.provider"), format!("\"{other}\" {reason}")),
                    None => issues.unknown(format!("{path}.provider"), "provider", other, &known_names()),
                }
                return None;
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Provider::OpenAi(p) => p.name,
            Provider::Compatible(p) => p.family.name(),
            Provider::Databricks(p) => p.name,
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gemini",
            Provider::VertexAi(_) => "vertex_ai",
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

    /// Obtains the credentials that take an outbound call of their own (Vertex AI's OAuth
    /// token, Databricks' OAuth M2M token, Bedrock's STS role credentials), unless the
    /// provider's per-isolate cache holds fresh ones. Call it once per model call before
    /// `build_request`; for every other provider it returns at once.
    pub async fn authorize<P: Upstream + Secrets + Signatures>(&self, ports: &P, timeout_ms: u64) -> Result<()> {
        match self {
            Provider::VertexAi(p) => p.authorize(ports, timeout_ms).await,
            Provider::Databricks(p) => p.authorize(ports, timeout_ms).await,
            Provider::Bedrock(p) => p.authorize(ports, timeout_ms).await,
            _ => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `mlflow.gateway.config.Provider` of MLflow 3.17 (26 names).
    const MLFLOW_PROVIDERS: &[&str] = &[
        "openai",
        "anthropic",
        "cohere",
        "ai21labs",
        "mlflow-model-serving",
        "mosaicml",
        "huggingface-text-generation-inference",
        "palm",
        "gemini",
        "bedrock",
        "amazon-bedrock",
        "databricks-model-serving",
        "databricks",
        "mistral",
        "togetherai",
        "litellm",
        "azure",
        "groq",
        "deepseek",
        "xai",
        "openrouter",
        "ollama",
        "vertex_ai",
        "portkey",
        "sap-ai-core",
        "typesafe",
    ];

    /// A config each served provider accepts, in MLflow's field names.
    fn served_config(name: &str) -> Value {
        match name {
            "openai" => json!({"openai_api_key": "$K"}),
            "azure" => {
                json!({"openai_api_key": "$K", "openai_api_type": "azure", "openai_api_base": "https://x.openai.azure.com",
                "openai_deployment_name": "d", "openai_api_version": "2024-06-01"})
            }
            "anthropic" => json!({"anthropic_api_key": "$K"}),
            "cohere" => json!({"cohere_api_key": "$K"}),
            "gemini" => json!({"gemini_api_key": "$K"}),
            "mistral" => json!({"mistral_api_key": "$K"}),
            "togetherai" => json!({"togetherai_api_key": "$K"}),
            "bedrock" | "amazon-bedrock" => json!({"aws_config": {"aws_region": "us-east-1"}}),
            "databricks" | "databricks-model-serving" => json!({"host": "https://h", "token": "$K"}),
            "vertex_ai" => json!({"vertex_project": "p", "vertex_credentials": "$K"}),
            "huggingface-text-generation-inference" => json!({"hf_server_url": "http://tgi"}),
            "mlflow-model-serving" => json!({"model_server_url": "http://mlflow"}),
            "ollama" => json!({}),
            _ => json!({"api_key": "$K"}),
        }
    }

    #[test]
    fn every_mlflow_provider_name_is_served_or_refused_with_a_reason() {
        let mut served = 0;
        for name in MLFLOW_PROVIDERS {
            let mut issues = Issues::default();
            let refused = REFUSED.iter().any(|(r, _)| r == name);
            let config = served_config(name);
            let provider = Provider::from_config("e.model", name, Some("m"), config.as_object().unwrap(), &mut issues);
            if refused {
                assert!(provider.is_none());
                assert_eq!(issues.0.len(), 1, "{name}");
                assert_eq!(issues.0[0].path, "e.model.provider");
                assert!(issues.0[0].message.starts_with(&format!("\"{name}\" is not served: ")), "{:?}", issues.0);
            } else {
                assert!(issues.0.is_empty(), "{name}: {:?}", issues.0);
                let provider = provider.unwrap();
                assert!(known_names().contains(&provider.name()), "{name}");
                served += 1;
            }
        }
        assert_eq!(served, 20);
        assert_eq!(REFUSED.len(), 6);
        assert_eq!(known_names().len(), MLFLOW_PROVIDERS.len());
        for name in known_names() {
            assert!(MLFLOW_PROVIDERS.contains(&name), "{name} is not an MLflow provider name");
        }
    }

    #[test]
    fn unknown_names_get_a_suggestion() {
        let mut issues = Issues::default();
        assert!(Provider::from_config("e.model", "vertex-ai", None, &Map::new(), &mut issues).is_none());
        assert_eq!(
            issues.0[0].to_string(),
            "e.model.provider: unknown provider \"vertex-ai\" (did you mean \"vertex_ai\"?)"
        );
        let mut issues = Issues::default();
        assert!(Provider::from_config("e.model", "grok", None, &Map::new(), &mut issues).is_none());
        assert!(issues.0[0].message.contains("did you mean \"groq\""), "{:?}", issues.0);
    }

    #[test]
    fn azure_defaults_to_the_azure_api_type() {
        let mut issues = Issues::default();
        let config = json!({"openai_api_key": "$K", "openai_api_base": "https://x.openai.azure.com"});
        let p = Provider::from_config("e.model", "azure", Some("m"), config.as_object().unwrap(), &mut issues);
        assert!(p.is_none());
        let text: Vec<String> = issues.0.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(
                &"e.model.config.openai_deployment_name: is required when openai_api_type is azure or azuread"
                    .to_string()
            ),
            "{text:?}"
        );
        let config = served_config("azure");
        let mut issues = Issues::default();
        let p = Provider::from_config("e.model", "azure", None, config.as_object().unwrap(), &mut issues).unwrap();
        assert_eq!(p.name(), "azure");
        assert!(!p.needs_model_name());
    }
}

//! The vocabulary every layer shares: what a client asked for and what it cost.

/// What the client asked for, independent of the API it spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Completions,
    Embeddings,
    /// A classic MLflow model's scoring call (`dataframe_split`, `inputs`, ...).
    Predict,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Completions => "completions",
            Operation::Embeddings => "embeddings",
            Operation::Predict => "predict",
        }
    }
}

/// Tokens an answer used, as the origin reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A stream chunk's usage, as `edge_scan` reads it.
impl From<edge_scan::chunk::Usage> for Usage {
    fn from(u: edge_scan::chunk::Usage) -> Self {
        Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }
    }
}

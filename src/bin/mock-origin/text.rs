//! Deterministic text behaviour shared by every wire format: token counting,
//! the echo reply, stop sequences, `max_tokens` truncation and tool calls.

use serde_json::{json, Value};

/// Counts "tokens": whitespace-separated words.
pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits `text` into streaming pieces, one word per piece.
///
/// Each piece carries the whitespace that precedes its word, and the last piece
/// also carries any trailing whitespace, so concatenating the pieces gives back
/// `text` exactly. Whitespace-only text yields no pieces.
pub fn pieces(text: &str) -> Vec<&str> {
    let mut ends = Vec::new();
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space && in_word {
            ends.push(i);
        }
        in_word = !space;
    }
    if in_word {
        ends.push(text.len());
    }
    if let Some(last) = ends.last_mut() {
        *last = text.len();
    }
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let piece = &text[start..end];
            start = end;
            piece
        })
        .collect()
}

/// The prefix of `text` holding its first `max` words (without the whitespace
/// after the last kept word), or `None` when `text` has at most `max` words.
pub fn truncate_words(text: &str, max: u64) -> Option<&str> {
    let mut words = 0u64;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && !in_word {
            if words == max {
                return Some(text[..i].trim_end());
            }
            words += 1;
        }
        in_word = !space;
    }
    None
}

/// What the caller's request looks like, reduced to what the mock needs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Prompt {
    /// Words across all message contents (and the system prompt).
    pub input_tokens: u64,
    /// Text of the last user message that has text, parts joined with a space.
    pub last_user_text: String,
    /// Whether the conversation ends with a user message carrying text (rather
    /// than, say, a tool result).
    pub ends_with_user_text: bool,
}

impl Prompt {
    /// Adds the words of one piece of prompt content.
    pub fn count(&mut self, text: &str) {
        self.input_tokens += count_words(text);
    }
}

/// Generation knobs common to every provider.
#[derive(Debug, Default, Clone)]
pub struct Options<'a> {
    pub max_tokens: Option<u64>,
    pub stop: Vec<String>,
    /// Name of the first declared tool, when tools are present and allowed.
    pub tool: Option<&'a str>,
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Natural end of the reply.
    Stop,
    /// A stop sequence was hit (the sequence itself is not in the text).
    StopSequence(String),
    /// The reply was cut at `max_tokens` words.
    MaxTokens,
}

/// The mock's answer to a chat-like request.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Text {
        text: String,
        finish: Finish,
    },
    ToolCall {
        name: String,
        /// `{"text": <last user text>}`.
        input: Value,
        /// `input` serialised as compact JSON.
        arguments: String,
    },
}

impl Output {
    /// Completion tokens: words of the reply text, or of the tool arguments.
    pub fn tokens(&self) -> u64 {
        match self {
            Output::Text { text, .. } => count_words(text),
            Output::ToolCall { arguments, .. } => count_words(arguments),
        }
    }
}

/// Prefix of every reply.
pub const ECHO_PREFIX: &str = "echo: ";

/// The reply text for a chat-like prompt.
pub fn echo(text: &str) -> String {
    format!("{ECHO_PREFIX}{text}")
}

/// Whether the user asked for a tool call.
fn wants_tool(text: &str) -> bool {
    text.to_lowercase().contains("call tool")
}

/// Produces the deterministic answer to `prompt`.
pub fn respond(prompt: &Prompt, options: &Options<'_>) -> Output {
    if let Some(name) = options.tool {
        if prompt.ends_with_user_text && wants_tool(&prompt.last_user_text) {
            let input = json!({ "text": prompt.last_user_text });
            return Output::ToolCall { name: name.to_owned(), arguments: input.to_string(), input };
        }
    }
    let (text, finish) = limit(&echo(&prompt.last_user_text), options);
    Output::Text { text, finish }
}

/// Applies stop sequences, then the word budget, to a full reply.
///
/// Stop sequences are looked for in the echoed text only (after the
/// `echo: ` prefix), so that e.g. a stop sequence `"o"` does not cut the
/// reply inside the fixed prefix.
pub fn limit(reply: &str, options: &Options<'_>) -> (String, Finish) {
    let mut text = reply;
    let mut finish = Finish::Stop;
    let searched_from = if reply.starts_with(ECHO_PREFIX) { ECHO_PREFIX.len() } else { 0 };
    let earliest = options
        .stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let at = reply.get(searched_from..)?.find(s.as_str())?;
            Some((searched_from + at, s))
        })
        .min_by_key(|(at, _)| *at);
    if let Some((at, sequence)) = earliest {
        text = &reply[..at];
        finish = Finish::StopSequence(sequence.clone());
    }
    if let Some(max) = options.max_tokens {
        if let Some(cut) = truncate_words(text, max) {
            text = cut;
            finish = Finish::MaxTokens;
        }
    }
    (text.to_owned(), finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(text: &str) -> Prompt {
        Prompt { input_tokens: count_words(text), last_user_text: text.to_owned(), ends_with_user_text: true }
    }

    #[test]
    fn counts_whitespace_separated_words() {
        assert_eq!(count_words(""), 0);
        assert_eq!(count_words("   "), 0);
        assert_eq!(count_words("hello"), 1);
        assert_eq!(count_words(" hello \n big\tworld "), 3);
    }

    #[test]
    fn pieces_reassemble_exactly() {
        for text in ["echo: hello world", "  a  b\n", "one", "", "   ", "x y z "] {
            let parts = pieces(text);
            assert_eq!(parts.len() as u64, count_words(text), "{text:?}");
            if !parts.is_empty() {
                assert_eq!(parts.concat(), text);
            }
        }
        assert_eq!(pieces("echo: hi there"), vec!["echo:", " hi", " there"]);
    }

    #[test]
    fn truncates_to_word_budget() {
        assert_eq!(truncate_words("echo: a b c", 2), Some("echo: a"));
        assert_eq!(truncate_words("echo: a b c", 4), None);
        assert_eq!(truncate_words("echo: a b c", 9), None);
        assert_eq!(truncate_words("echo: a", 0), Some(""));
    }

    #[test]
    fn echoes_the_last_user_text() {
        let out = respond(&prompt("hello world"), &Options::default());
        assert_eq!(out, Output::Text { text: "echo: hello world".into(), finish: Finish::Stop });
        assert_eq!(out.tokens(), 3);
    }

    #[test]
    fn max_tokens_truncates() {
        let options = Options { max_tokens: Some(2), ..Options::default() };
        let out = respond(&prompt("one two three"), &options);
        assert_eq!(out, Output::Text { text: "echo: one".into(), finish: Finish::MaxTokens });
    }

    #[test]
    fn stop_sequence_cuts_before_the_sequence() {
        let options = Options { stop: vec!["three".into(), "two".into()], ..Options::default() };
        let (text, finish) = limit("echo: one two three", &options);
        assert_eq!(text, "echo: one ");
        assert_eq!(finish, Finish::StopSequence("two".into()));

        let in_prefix = Options { stop: vec!["o".into()], ..Options::default() };
        assert_eq!(limit("echo: one two", &in_prefix), ("echo: ".to_owned(), Finish::StopSequence("o".into())));

        let tight = Options { max_tokens: Some(1), ..options };
        assert_eq!(limit("echo: one two three", &tight), ("echo:".to_owned(), Finish::MaxTokens));
    }

    #[test]
    fn tool_call_only_when_asked_and_tools_present() {
        let options = Options { tool: Some("lookup"), ..Options::default() };
        let out = respond(&prompt("please Call Tool now"), &options);
        let Output::ToolCall { name, arguments, .. } = &out else {
            panic!("expected a tool call, got {out:?}");
        };
        assert_eq!(name, "lookup");
        assert_eq!(arguments, r#"{"text":"please Call Tool now"}"#);
        assert_eq!(out.tokens(), 4);

        let no_tools = respond(&prompt("call tool"), &Options::default());
        assert!(matches!(no_tools, Output::Text { .. }));

        let mut after_result = prompt("call tool");
        after_result.ends_with_user_text = false;
        assert!(matches!(respond(&after_result, &options), Output::Text { .. }));
    }
}

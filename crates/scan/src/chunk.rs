//! What the gateway reads from an OpenAI stream chunk (its ids, usage and each choice's
//! progress), parsed straight from the event's text without building a JSON tree. Every
//! chunk of a stream is read (once, for the watch stage and the meter together); a
//! `serde_json::Value` per read, allocating every key and dropping a map per object, was ~90% of
//! a pass-through stream's CPU (~17k instructions a chunk).
//!
//! As lenient as the tree it replaced: a field of an unexpected type reads as absent (an
//! `index` of `"x"` is 0, a `content` of `5` has no text), a non-object chunk has no facts,
//! and a repeated key counts as its last occurrence. Only text that is not JSON fails.

use std::borrow::Cow;

use serde::de::{IgnoredAny, MapAccess, SeqAccess};
use serde_json::Value;

use crate::lenient::{entries, lenient_deserialize, Count, Lenient, NotNull, Str};
use crate::like_last::{LikeLast, Span, Varying};

mod fast;

/// The facts of one chunk.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkFacts<'a> {
    pub id: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    pub object: Option<Cow<'a, str>>,
    /// `usage`, when it is an object (a count that is not a non-negative integer reads as 0).
    pub usage: Option<Usage>,
    /// `choices`, when it is an array.
    pub choices: Option<ChoiceList>,
}

/// A chunk's choices. Nearly every chunk has one: it is kept inline, so reading a chunk
/// allocates nothing for it.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct ChoiceList {
    first: Option<ChoiceFacts>,
    /// The second and later (only when there is a first).
    rest: Vec<ChoiceFacts>,
}

impl ChoiceList {
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    pub fn iter(&self) -> std::iter::Chain<std::option::Iter<'_, ChoiceFacts>, std::slice::Iter<'_, ChoiceFacts>> {
        self.first.iter().chain(self.rest.iter())
    }

    /// The choices as two slices (the first, the rest): plain slice loops for callers built
    /// for size, where the chained iterator is not inlined (~120 instructions a chunk).
    pub fn as_slices(&self) -> [&[ChoiceFacts]; 2] {
        [self.first.as_slice(), &self.rest]
    }

    fn push(&mut self, choice: ChoiceFacts) {
        match self.first {
            None => self.first = Some(choice),
            Some(_) => self.rest.push(choice),
        }
    }
}

impl<'a> IntoIterator for &'a ChoiceList {
    type Item = &'a ChoiceFacts;
    type IntoIter = std::iter::Chain<std::option::Iter<'a, ChoiceFacts>, std::slice::Iter<'a, ChoiceFacts>>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<ChoiceFacts> for ChoiceList {
    fn from_iter<I: IntoIterator<Item = ChoiceFacts>>(choices: I) -> Self {
        let mut list = ChoiceList::default();
        for choice in choices {
            list.push(choice);
        }
        list
    }
}

/// A chunk's `usage` counts.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One choice of a chunk.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct ChoiceFacts {
    /// `index`, 0 when missing or not a non-negative integer.
    pub index: u64,
    /// Bytes of `delta.content` and of `text` (completions), when strings.
    pub content_bytes: usize,
    pub text_bytes: usize,
    /// `delta.tool_calls` is present (whatever its value), and the bytes of its calls'
    /// `function.name` and `function.arguments`.
    pub has_tool_calls: bool,
    pub tool_call_bytes: usize,
    /// `finish_reason` is present and not null.
    pub finished: bool,
}

impl ChunkFacts<'_> {
    /// The facts of `data` (an SSE event's data); `None` when it is not JSON.
    pub fn parse(data: &str) -> Option<ChunkFacts<'_>> {
        fast::facts(data).or_else(|| lenient_facts(data))
    }
}

/// The `usage` of a whole (not streamed) OpenAI answer read by hand, the rest of it checked as
/// JSON and not built: `Some(None)` when it has no `usage`; a `usage` that is not an object
/// counts no tokens, and a count that is not a non-negative integer reads as 0, as `Value::get`
/// reads a tree. `None` when the reading by hand is not sure ([`crate::reader`]: not an object,
/// an escaped key, not JSON...): the caller's tree reading decides. (Kept as a tree, an
/// answer's `usage` was ~17 allocations and its reading ~16k instructions of a forwarded
/// request's ~195k.)
pub fn answer_usage(text: &str) -> Option<Option<Usage>> {
    fast::answer_usage(text)
}

/// Reads one stream's chunks for their facts. Nearly every chunk of a streamed answer differs
/// from the one before only in its text (`delta.content`): such a chunk is not read again
/// ([`LikeLast`]); its facts are the previous chunk's with the new text's length.
#[derive(Debug, Default)]
pub struct FactsReader {
    last: Option<Shape>,
}

/// A chunk with one choice and one content string, read in full: the bytes around that string,
/// and its facts (its strings as places in those bytes).
#[derive(Debug, Default)]
struct Shape {
    like: LikeLast,
    id: Option<Span>,
    model: Option<Span>,
    object: Option<Span>,
    usage: Option<Usage>,
    choice: ChoiceFacts,
}

impl FactsReader {
    pub fn read<'a>(&mut self, data: &'a str) -> Option<ChunkFacts<'a>> {
        // Not through `like_last`: its facts and text, returned together and taken apart, were
        // a copy of the facts (~50 instructions a chunk).
        if let Some(last) = &self.last {
            if let Some((text, varying)) = last.like.text(data) {
                return Some(last.facts_like(data, varying, text.len()));
            }
        }
        self.read_in_full(data)
    }

    /// [`FactsReader::read`], the facts handed to `use_facts` and dropped here: in code built for
    /// speed, where the caller's drop of them (built for size) was ~50 instructions a chunk.
    pub fn read_with(&mut self, data: &str, use_facts: &mut dyn FnMut(Option<&ChunkFacts>)) {
        use_facts(self.read(data).as_ref());
    }

    /// The facts of a chunk that is the last one with another text, and that text (unescaped):
    /// adding such a chunk to an assembled answer is adding its text, as the last one had no
    /// tool calls, no `text` and no `error`. `None` for any other chunk (nothing is read in full).
    pub fn like_last<'a>(&self, data: &'a str) -> Option<(ChunkFacts<'a>, Cow<'a, str>)> {
        let last = self.last.as_ref()?;
        let (text, varying) = last.like.text(data)?;
        Some((last.facts_like(data, varying, text.len()), text))
    }

    /// A chunk read for its parts instead (`like_last` said no): kept as the last one when it is
    /// a text chunk, so the ones like it need not be read.
    pub fn remember(&mut self, data: &str, parts: &ChunkParts) {
        let text_chunk = matches!(parts.choices.as_deref(), Some([c]) if c.content.is_some() && c.text.is_none() && !c.has_tool_calls)
            && parts.error.is_none();
        if text_chunk {
            self.read_in_full(data);
        }
    }

    fn read_in_full<'a>(&mut self, data: &'a str) -> Option<ChunkFacts<'a>> {
        let Some((facts, content)) = fast::facts_and_content(data) else {
            return lenient_facts(data);
        };
        match content {
            Some((start, end)) => {
                let mut last = self.last.take().unwrap_or_default();
                self.last = last.remember(data, Varying { start, end }, &facts).then_some(last);
            }
            None => self.last = None,
        }
        Some(facts)
    }
}

impl Shape {
    /// The facts of `data`, a chunk like this one but for its text, of `content_bytes` at `varying`.
    #[inline(always)]
    fn facts_like<'a>(&self, data: &'a str, varying: Varying, content_bytes: usize) -> ChunkFacts<'a> {
        ChunkFacts {
            id: varying.text(data, self.id),
            model: varying.text(data, self.model),
            object: varying.text(data, self.object),
            usage: self.usage,
            choices: Some(ChoiceList { first: Some(ChoiceFacts { content_bytes, ..self.choice }), rest: Vec::new() }),
        }
    }

    /// Keeps `facts`' chunk (`data`, its content string at `varying`); false if it cannot.
    fn remember(&mut self, data: &str, varying: Varying, facts: &ChunkFacts) -> bool {
        // Only a text chunk: adding it again to an answer adds nothing but its text.
        let Some(choice) = facts.choices.as_ref().and_then(|c| c.first) else { return false };
        if choice.has_tool_calls || choice.text_bytes > 0 {
            return false;
        }
        // Each string is borrowed from `data` (the fast reading never copies one).
        let span = |text: &Option<Cow<str>>| match text {
            None => Some(None),
            Some(text) => varying.span_of(data, text).map(Some),
        };
        let (Some(id), Some(model), Some(object)) = (span(&facts.id), span(&facts.model), span(&facts.object)) else {
            return false;
        };
        self.like.remember(data, varying);
        (self.id, self.model, self.object, self.usage, self.choice) = (id, model, object, facts.usage, choice);
        true
    }
}

/// The facts through serde_json and the lenient visitors: every chunk the fast reader leaves.
fn lenient_facts(data: &str) -> Option<ChunkFacts<'_>> {
    crate::lenient::parse(data)
}

/// All of a chunk that a whole answer is assembled from (a streamed answer kept by the cache
/// or checked by the output guard): the texts borrowed from the event where they have no
/// escapes, the small fields as JSON values of any type, as a `Value` tree reads them. The
/// hand-written reader (`fast`) reads nearly every chunk; the rest go through the tree.
#[derive(Debug, Default, PartialEq)]
pub struct ChunkParts<'a> {
    pub id: Option<Value>,
    pub model: Option<Value>,
    /// `object`, when a string (only its facts need it).
    pub object: Option<Cow<'a, str>>,
    pub created: Option<Value>,
    pub usage: Option<Value>,
    pub error: Option<Value>,
    /// `choices`, when it is an array (an element that is not an object reads as a default
    /// choice, as `get` on it finds nothing).
    pub choices: Option<Vec<ChoiceParts<'a>>>,
}

/// One choice of a chunk, for [`ChunkParts`].
#[derive(Debug, Default, PartialEq)]
pub struct ChoiceParts<'a> {
    /// `index`, 0 when missing or not a non-negative integer.
    pub index: u64,
    pub role: Option<Value>,
    /// `delta.content` and `text`, when strings.
    pub content: Option<Cow<'a, str>>,
    pub text: Option<Cow<'a, str>>,
    /// `delta.tool_calls`, when it is an array; `has_tool_calls`: it is there, whatever its value.
    pub tool_calls: Option<Vec<CallParts<'a>>>,
    pub has_tool_calls: bool,
    pub finish_reason: Option<Value>,
}

/// One tool call of a choice's delta, for [`ChunkParts`].
#[derive(Debug, Default, PartialEq)]
pub struct CallParts<'a> {
    pub index: u64,
    pub id: Option<Value>,
    pub kind: Option<Value>,
    /// `function.name` and `function.arguments`, when strings.
    pub name: Option<Cow<'a, str>>,
    pub arguments: Option<Cow<'a, str>>,
}

impl ChunkParts<'_> {
    /// The parts of `data` (an SSE event's data); `None` when it is not JSON.
    pub fn parse(data: &str) -> Option<ChunkParts<'_>> {
        fast::parts(data).or_else(|| tree_parts(data))
    }

    /// The chunk's facts, as [`ChunkFacts::parse`] reads them: a stream whose answer is kept
    /// reads each chunk once, for its parts, not a second time for its facts.
    pub fn facts(&self) -> ChunkFacts<'_> {
        fn text(v: &Option<Value>) -> Option<Cow<'_, str>> {
            v.as_ref().and_then(Value::as_str).map(Cow::Borrowed)
        }
        let count = |u: &Value, key: &str| u.get(key).and_then(Value::as_u64).unwrap_or(0);
        ChunkFacts {
            id: text(&self.id),
            model: text(&self.model),
            object: self.object.as_deref().map(Cow::Borrowed),
            usage: self.usage.as_ref().filter(|u| u.is_object()).map(|u| Usage {
                prompt_tokens: count(u, "prompt_tokens"),
                completion_tokens: count(u, "completion_tokens"),
            }),
            choices: self.choices.as_ref().map(|choices| choices.iter().map(ChoiceParts::facts).collect()),
        }
    }
}

impl ChoiceParts<'_> {
    fn facts(&self) -> ChoiceFacts {
        let len = |text: &Option<Cow<str>>| text.as_deref().map_or(0, str::len);
        let calls = self.tool_calls.as_deref().unwrap_or_default();
        ChoiceFacts {
            index: self.index,
            content_bytes: len(&self.content),
            text_bytes: len(&self.text),
            has_tool_calls: self.has_tool_calls,
            tool_call_bytes: calls.iter().fold(0usize, |n, c| n.saturating_add(len(&c.name) + len(&c.arguments))),
            finished: self.finish_reason.as_ref().is_some_and(|f| !f.is_null()),
        }
    }
}

/// The parts through a `serde_json::Value` tree: every chunk the fast reader leaves (rare:
/// escaped keys, floats, deep nesting, invalid JSON). A tree, not lenient visitors like the
/// facts' fallback: its code is in the worker anyway, the visitors were 5.6 KB gzipped.
fn tree_parts(data: &str) -> Option<ChunkParts<'static>> {
    let chunk: Value = data.parse().ok()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| Cow::Owned(s.to_owned()));
    let index = |v: &Value| v.get("index").and_then(Value::as_u64).unwrap_or(0);
    Some(ChunkParts {
        id: chunk.get("id").cloned(),
        model: chunk.get("model").cloned(),
        object: text(chunk.get("object")),
        created: chunk.get("created").cloned(),
        usage: chunk.get("usage").cloned(),
        error: chunk.get("error").cloned(),
        choices: chunk.get("choices").and_then(Value::as_array).map(|choices| {
            choices
                .iter()
                .map(|choice| {
                    let delta = choice.get("delta");
                    ChoiceParts {
                        index: index(choice),
                        role: delta.and_then(|d| d.get("role")).cloned(),
                        content: text(delta.and_then(|d| d.get("content"))),
                        text: text(choice.get("text")),
                        has_tool_calls: delta.and_then(|d| d.get("tool_calls")).is_some(),
                        tool_calls: delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).map(|calls| {
                            calls
                                .iter()
                                .map(|call| CallParts {
                                    index: index(call),
                                    id: call.get("id").cloned(),
                                    kind: call.get("type").cloned(),
                                    name: text(call.pointer("/function/name")),
                                    arguments: text(call.pointer("/function/arguments")),
                                })
                                .collect()
                        }),
                        finish_reason: choice.get("finish_reason").cloned(),
                    }
                })
                .collect()
        }),
    })
}

lenient_deserialize!(
    ChunkFacts<'de>,
    Str<'de>,
    Count,
    NotNull,
    UsageField,
    Choices,
    ChoiceFacts,
    Delta,
    ToolCalls,
    ToolCall,
    Function
);

impl<'de> Lenient<'de> for ChunkFacts<'de> {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut facts = ChunkFacts::default();
        entries(map, |key, map| {
            match key {
                "id" => facts.id = map.next_value::<Str<'de>>()?.0,
                "model" => facts.model = map.next_value::<Str<'de>>()?.0,
                "object" => facts.object = map.next_value::<Str<'de>>()?.0,
                "usage" => facts.usage = map.next_value::<UsageField>()?.0,
                "choices" => facts.choices = map.next_value::<Choices>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(facts)
    }
}

#[derive(Default)]
struct UsageField(Option<Usage>);

impl<'de> Lenient<'de> for UsageField {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut usage = Usage::default();
        entries(map, |key, map| {
            match key {
                "prompt_tokens" => usage.prompt_tokens = map.next_value::<Count>()?.0,
                "completion_tokens" => usage.completion_tokens = map.next_value::<Count>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(UsageField(Some(usage)))
    }
}

#[derive(Default)]
struct Choices(Option<ChoiceList>);

impl<'de> Lenient<'de> for Choices {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut choices = ChoiceList::default();
        while let Some(choice) = seq.next_element::<ChoiceFacts>()? {
            choices.push(choice);
        }
        Ok(Choices(Some(choices)))
    }
}

impl<'de> Lenient<'de> for ChoiceFacts {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut choice = ChoiceFacts::default();
        let mut delta = Delta::default();
        entries(map, |key, map| {
            match key {
                "index" => choice.index = map.next_value::<Count>()?.0,
                "text" => choice.text_bytes = map.next_value::<Str<'de>>()?.len(),
                "finish_reason" => choice.finished = map.next_value::<NotNull>()?.0,
                "delta" => delta = map.next_value::<Delta>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        choice.content_bytes = delta.content_bytes;
        choice.has_tool_calls = delta.tool_calls.is_some();
        choice.tool_call_bytes = delta.tool_calls.map_or(0, |calls| calls.0);
        Ok(choice)
    }
}

#[derive(Default)]
struct Delta {
    content_bytes: usize,
    tool_calls: Option<ToolCalls>,
}

impl<'de> Lenient<'de> for Delta {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut delta = Delta::default();
        entries(map, |key, map| {
            match key {
                "content" => delta.content_bytes = map.next_value::<Str<'de>>()?.len(),
                "tool_calls" => delta.tool_calls = Some(map.next_value::<ToolCalls>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(delta)
    }
}

/// The bytes of the calls' function names and arguments.
#[derive(Default)]
struct ToolCalls(usize);

impl<'de> Lenient<'de> for ToolCalls {
    fn seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut bytes = 0usize;
        while let Some(call) = seq.next_element::<ToolCall>()? {
            bytes = bytes.saturating_add(call.0);
        }
        Ok(ToolCalls(bytes))
    }
}

#[derive(Default)]
struct ToolCall(usize);

impl<'de> Lenient<'de> for ToolCall {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let mut bytes = 0;
        entries(map, |key, map| {
            match key {
                "function" => bytes = map.next_value::<Function>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(ToolCall(bytes))
    }
}

/// `function`'s name and arguments, in bytes.
#[derive(Default)]
struct Function(usize);

impl<'de> Lenient<'de> for Function {
    fn map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let (mut name, mut arguments) = (0, 0);
        entries(map, |key, map| {
            match key {
                "name" => name = map.next_value::<Str<'de>>()?.len(),
                "arguments" => arguments = map.next_value::<Str<'de>>()?.len(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(Function(name + arguments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The facts as the `Value`-tree code this replaced read them.
    fn from_tree(chunk: &Value) -> ChunkFacts<'static> {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| Cow::Owned(s.to_owned()));
        let len = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, str::len);
        ChunkFacts {
            id: text(chunk.get("id")),
            model: text(chunk.get("model")),
            object: text(chunk.get("object")),
            usage: chunk.get("usage").filter(|u| u.is_object()).map(|u| Usage {
                prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
                completion_tokens: u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
            }),
            choices: chunk.get("choices").and_then(Value::as_array).map(|choices| {
                choices
                    .iter()
                    .map(|choice| {
                        let delta = choice.get("delta");
                        let calls = delta.and_then(|d| d.get("tool_calls"));
                        ChoiceFacts {
                            index: choice.get("index").and_then(Value::as_u64).unwrap_or(0),
                            content_bytes: len(delta.and_then(|d| d.get("content"))),
                            text_bytes: len(choice.get("text")),
                            has_tool_calls: calls.is_some(),
                            tool_call_bytes: calls
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .map(|c| {
                                    let f = c.get("function");
                                    len(f.and_then(|f| f.get("name"))) + len(f.and_then(|f| f.get("arguments")))
                                })
                                .sum(),
                            finished: choice.get("finish_reason").is_some_and(|f| !f.is_null()),
                        }
                    })
                    .collect()
            }),
        }
    }

    /// Well-formed, odd and hostile chunks read the same as through a `Value` tree; text that
    /// is not JSON reads as nothing, as before.
    #[test]
    fn facts_match_the_tree_reading() {
        for data in [
            r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hé\n"},"finish_reason":null}]}"#,
            r#"{"id":"c1","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"a\":1}"}},7,{"function":"x"}]},"finish_reason":"tool_calls"}],"usage":null}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"details":{"x":[1,2]}}}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":1.5},"choices":{"0":{}}}"#,
            r#"{"usage":[1],"choices":[5,"x",null,{"index":"3","text":"abc","finish_reason":false}]}"#,
            r#"{"choices":[{"delta":"text","text":7,"finish_reason":{}}],"id":5,"model":null,"object":["x"]}"#,
            r#"{"choices":[{"delta":{"tool_calls":null}}],"id":"a","id":"b"}"#,
            r#"{"choices":[{"index":18446744073709551615,"delta":{"content":"\u00e9\ud83d\ude00"}}]}"#,
            r#"{"choices":[{"index":1e3}],"nested":[[[[{"deep":[{"a":{"b":[]}}]}]]]]}"#,
            r#"[1,2,{"choices":[]}]"#,
            r#""just a string""#,
            r#"null"#,
            r#"  {"id" : "spaced" }  "#,
            r#"{"id":"c","created":17,"model":"m","error":null,"choices":[{"index":2,"delta":{"role":"assistant","tool_calls":[{"index":1,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"q\":\"\u00e9\"}"}},{"function":{"name":5,"arguments":null},"id":7}]},"finish_reason":"stop"}]}"#,
            r#"{"error":{"message":"boom"},"created":"x","usage":[],"choices":[{"delta":{"role":5,"content":"a","content":7},"delta":{"content":"b"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[3,{"function":"f"}]},"text":"t"}],"choices":[{"index":4}]}"#,
        ] {
            let tree: Value = data.parse().unwrap();
            assert_eq!(ChunkFacts::parse(data), Some(from_tree(&tree)), "{data}");
            // The parts' fallback is the tree reading itself: this checks the fast reader.
            assert_eq!(ChunkParts::parse(data), tree_parts(data), "{data}");
            assert_eq!(ChunkParts::parse(data).as_ref().map(ChunkParts::facts), Some(from_tree(&tree)), "{data}");
            assert!(tree_parts(data).is_some(), "{data}");
        }
        for data in ["", "[DONE]", "{", r#"{"id":"x"} trailing"#, r#"{"a":tru}"#, "{\"a\":\"\u{1}\"}"] {
            assert!(data.parse::<Value>().is_err(), "{data}");
            assert_eq!(ChunkFacts::parse(data), None, "{data}");
            assert_eq!(ChunkParts::parse(data), None, "{data}");
        }
    }

    /// A whole answer's usage reads as the tree reading did (`usage` present: its counts, 0 for
    /// a count that is not a non-negative integer or a `usage` that is not an object), or not
    /// at all where the reading by hand is not sure (the caller's tree reading then decides).
    #[test]
    fn answer_usage_matches_the_tree_reading() {
        let from_tree = |tree: &Value| {
            tree.get("usage").map(|u| Usage {
                prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
                completion_tokens: u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
            })
        };
        for data in [
            r#"{"id":"c","choices":[{"message":{"content":"hé \"q\""}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            r#"{"choices":[]}"#,
            r#"{"usage":null}"#,
            r#"{"usage":[1,2]}"#,
            r#"{"usage":{"prompt_tokens":-1,"completion_tokens":1.5}}"#,
            r#"{"usage":{"prompt_tokens":3},"usage":{"completion_tokens":4}}"#,
            r#"  {"usage" : { "prompt_tokens" : 9 } }  "#,
        ] {
            let tree: Value = data.parse().unwrap();
            assert_eq!(answer_usage(data), Some(from_tree(&tree)), "{data}");
        }
        // Not sure: an escaped key, an exponent, not an object, not JSON.
        for data in [
            r#"{"\u0075sage":{"prompt_tokens":5}}"#,
            r#"{"usage":{"prompt_tokens":1e2}}"#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
            "null",
            "",
            r#"{"usage":{}} trailing"#,
            r#"{"usage":tru}"#,
        ] {
            assert_eq!(answer_usage(data), None, "{data}");
        }
    }

    /// A stream read with [`FactsReader`] has the facts each chunk has read alone, whatever
    /// follows what: chunks that differ only in their text (the shortcut), in a byte around it,
    /// in the text's kind (escapes, a number, a bad escape), or in their shape.
    #[test]
    fn a_stream_reader_reads_each_chunk_as_if_alone() {
        let shapes = [
            r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":@},"finish_reason":null}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":@},"finish_reason":"stop"}]}"#,
            r#"{"id":"c2","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":@},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":@}}]}"#,
            r#"{"choices":[{"delta":{"content":@}}],"model":"after","usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#"{"choices":[{"delta":{"content":@},"delta":{}}]}"#,
            r#"{"choices":[{"delta":{"content":@,"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"content":@}}],"choices":[{"index":1}]}"#,
            r#"{"choices":[{"delta":{"content":@}},{"index":1,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"content":@,"tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"id":"a\"b","choices":[{"delta":{"content":@}}]}"#,
            r#"{"choices":[{"delta":{"content":@},"text":"t"}]}"#,
            r#"{"error":null,"choices":[{"delta":{"content":@}}]}"#,
            r#"{"choices":[{"delta":{"content":@},"index":0}]}"#,
            r#"{"choices":[{"delta":{"content":@},"index":1}]}"#,
        ];
        let mut rng = crate::test_rng(13); // which way each chunk is read
        let mut reader = FactsReader::default();
        let mut shortcut = 0;
        for data in crate::like_last::test_stream(&shapes, 7, 5000) {
            let alone = ChunkFacts::parse(&data);
            shortcut += usize::from(reader.like_last(&data).is_some());
            if rng(2) == 0 {
                assert_eq!(reader.read(&data), alone, "{data}");
                continue;
            }
            // As an answer being kept reads them: the shortcut's text, else the parts.
            match reader.like_last(&data) {
                Some((facts, text)) => {
                    assert_eq!(Some(facts), alone, "{data}");
                    // The text handed over is the chunk's only text.
                    let parts = ChunkParts::parse(&data).unwrap();
                    let choices = parts.choices.as_deref().unwrap_or_default();
                    assert_eq!((choices.len(), choices[0].content.as_deref()), (1, Some(&*text)), "{data}");
                    assert!(choices[0].text.is_none() && !choices[0].has_tool_calls && parts.error.is_none(), "{data}");
                }
                None => match ChunkParts::parse(&data) {
                    Some(parts) => reader.remember(&data, &parts),
                    None => assert_eq!(reader.read(&data), alone, "{data}"),
                },
            }
        }
        assert!(shortcut > 300, "the shortcut was taken {shortcut} times");
    }
}

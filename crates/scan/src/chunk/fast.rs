//! [`ChunkFacts`] and [`ChunkParts`] read by hand ([`crate::reader`]), for the chunks a stream is made of.

use serde_json::Value;

use super::{CallParts, ChoiceFacts, ChoiceList, ChoiceParts, ChunkFacts, ChunkParts, Usage};
use crate::reader::{whole_object, Reader, Text};

/// The facts of `data`, or `None` when the slow reading must decide.
pub(super) fn facts(data: &str) -> Option<ChunkFacts<'_>> {
    facts_and_content(data).map(|(facts, _)| facts)
}

/// [`facts`], and where the chunk's one `delta.content` string is (from its opening quote to
/// past its closing one) when it has exactly one: the rest of the chunk decides the facts.
pub(super) fn facts_and_content(data: &str) -> Option<(ChunkFacts<'_>, Option<(usize, usize)>)> {
    let mut facts = ChunkFacts::default();
    let mut content = Content::None;
    whole_object(data, |r, key| {
        match key {
            b"id" => facts.id = r.plain_str()?,
            b"model" => facts.model = r.plain_str()?,
            b"object" => facts.object = r.plain_str()?,
            b"usage" => facts.usage = r.usage()?,
            b"choices" => {
                if facts.choices.is_some() {
                    content = Content::Several; // which `choices` counts is the reading's rule
                }
                facts.choices = r.choices(&mut content)?;
            }
            b"error" => {
                content = Content::Several; // an answer being assembled skips an error chunk's text
                r.skip()?;
            }
            _ => r.skip()?,
        }
        Some(())
    })?;
    let one_choice = facts.choices.as_ref().is_some_and(|c| c.len() == 1);
    let span = match content {
        Content::One(start, end) if one_choice => Some((start, end)),
        _ => None,
    };
    Some((facts, span))
}

/// A whole answer's `usage` (see [`super::answer_usage`]), or `None` when the slow reading
/// must decide.
pub(super) fn answer_usage(data: &str) -> Option<Option<Usage>> {
    let mut usage = None;
    whole_object(data, |r, key| {
        match key {
            b"usage" => usage = Some(r.usage()?.unwrap_or_default()),
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(usage)
}

/// The `delta.content` strings a chunk has: where the one is, if there is just one.
#[derive(Clone, Copy)]
enum Content {
    None,
    One(usize, usize),
    Several,
}

/// The parts of `data`, or `None` when the slow reading must decide.
pub(super) fn parts(data: &str) -> Option<ChunkParts<'_>> {
    let mut parts = ChunkParts::default();
    whole_object(data, |r, key| {
        match key {
            b"id" => parts.id = Some(r.value()?),
            b"model" => parts.model = Some(r.value()?),
            b"object" => parts.object = r.text()?,
            b"created" => parts.created = Some(r.value()?),
            b"usage" => parts.usage = Some(r.value()?),
            b"error" => parts.error = Some(r.value()?),
            b"choices" => parts.choices = r.list(Reader::choice_parts)?,
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(parts)
}

/// A choice's `delta`: role, content, tool calls (when an array), and whether `tool_calls`
/// is there at all.
type DeltaParts<'a> = (Option<Value>, Text<'a>, Option<Vec<CallParts<'a>>>, bool);

impl<'a> Reader<'a> {
    /// A choice's parts; an element that is not an object is a default one.
    fn choice_parts(&mut self) -> Option<ChoiceParts<'a>> {
        let mut choice = ChoiceParts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| choice);
        }
        // The last `delta` counts, as in the lenient reading.
        let mut delta = Default::default();
        self.object(|r, key| {
            match key {
                b"index" => choice.index = r.count()?,
                b"text" => choice.text = r.text()?,
                b"finish_reason" => choice.finish_reason = Some(r.value()?),
                b"delta" => delta = r.delta_parts()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        (choice.role, choice.content, choice.tool_calls, choice.has_tool_calls) = delta;
        Some(choice)
    }

    /// `delta`: role, content and tool calls; all absent when it is not an object.
    fn delta_parts(&mut self) -> Option<DeltaParts<'a>> {
        let mut delta = DeltaParts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| delta);
        }
        self.object(|r, key| {
            match key {
                b"role" => delta.0 = Some(r.value()?),
                b"content" => delta.1 = r.text()?,
                b"tool_calls" => (delta.2, delta.3) = (r.list(Reader::call_parts)?, true),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(delta)
    }

    /// A tool call's parts; an element that is not an object is a default one.
    fn call_parts(&mut self) -> Option<CallParts<'a>> {
        let mut call = CallParts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| call);
        }
        self.object(|r, key| {
            match key {
                b"index" => call.index = r.count()?,
                b"id" => call.id = Some(r.value()?),
                b"type" => call.kind = Some(r.value()?),
                b"function" => (call.name, call.arguments) = r.function_parts()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(call)
    }

    /// `function`'s name and arguments, when strings; both absent when it is not an object.
    fn function_parts(&mut self) -> Option<(Text<'a>, Text<'a>)> {
        let (mut name, mut arguments) = (None, None);
        if self.peek()? != b'{' {
            return self.skip().map(|()| (name, arguments));
        }
        self.object(|r, key| {
            match key {
                b"name" => name = r.text()?,
                b"arguments" => arguments = r.text()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some((name, arguments))
    }

    fn usage(&mut self) -> Option<Option<Usage>> {
        if self.peek()? != b'{' {
            return self.skip().map(|()| None);
        }
        let mut usage = Usage::default();
        self.object(|r, key| {
            match key {
                b"prompt_tokens" => usage.prompt_tokens = r.count()?,
                b"completion_tokens" => usage.completion_tokens = r.count()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(Some(usage))
    }

    fn choices(&mut self, content: &mut Content) -> Option<Option<ChoiceList>> {
        if self.peek()? != b'[' {
            return self.skip().map(|()| None);
        }
        let mut choices = ChoiceList::default();
        self.array(|r| {
            choices.push(r.choice(content)?);
            Some(())
        })?;
        Some(Some(choices))
    }

    /// A choice; an element that is not an object is a default one.
    fn choice(&mut self, content: &mut Content) -> Option<ChoiceFacts> {
        let mut choice = ChoiceFacts::default();
        if self.peek()? != b'{' {
            return self.skip().map(|()| choice);
        }
        // The last `delta` counts, as in the lenient reading.
        let (mut content_bytes, mut tool_calls, mut deltas) = (0, None, 0);
        self.object(|r, key| {
            match key {
                b"index" => choice.index = r.count()?,
                b"text" => choice.text_bytes = r.str_len()?,
                b"finish_reason" => choice.finished = r.not_null()?,
                b"delta" => {
                    deltas += 1;
                    if deltas > 1 {
                        *content = Content::Several;
                    }
                    (content_bytes, tool_calls) = r.delta(content)?;
                }
                _ => r.skip()?,
            }
            Some(())
        })?;
        choice.content_bytes = content_bytes;
        choice.has_tool_calls = tool_calls.is_some();
        choice.tool_call_bytes = tool_calls.unwrap_or(0);
        Some(choice)
    }

    /// `delta`: its content's bytes and, when `tool_calls` is present (whatever its value),
    /// the bytes of the calls' names and arguments.
    fn delta(&mut self, strings: &mut Content) -> Option<(usize, Option<usize>)> {
        let (mut content, mut calls) = (0, None);
        if self.peek()? != b'{' {
            return self.skip().map(|()| (content, calls));
        }
        self.object(|r, key| {
            match key {
                b"content" => {
                    let start = r.at;
                    content = r.str_len()?;
                    if r.s[start] == b'"' {
                        *strings = match strings {
                            Content::None => Content::One(start, r.at),
                            _ => Content::Several,
                        };
                    }
                }
                b"tool_calls" => calls = Some(r.tool_calls()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some((content, calls))
    }

    fn tool_calls(&mut self) -> Option<usize> {
        let mut bytes = 0usize;
        if self.peek()? != b'[' {
            return self.skip().map(|()| bytes);
        }
        self.array(|r| {
            bytes = bytes.saturating_add(r.tool_call()?);
            Some(())
        })?;
        Some(bytes)
    }

    /// A call's function name and arguments, in bytes (the last `function` counts).
    fn tool_call(&mut self) -> Option<usize> {
        let mut bytes = 0;
        if self.peek()? != b'{' {
            return self.skip().map(|()| bytes);
        }
        self.object(|r, key| {
            match key {
                b"function" => bytes = r.function()?,
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(bytes)
    }

    /// `function`'s name and arguments, in bytes.
    fn function(&mut self) -> Option<usize> {
        let len = |text: Text<'_>| text.map_or(0, |t| t.len());
        self.function_parts().map(|(name, arguments)| len(name) + len(arguments))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lenient_facts, tree_parts};
    use super::{facts, parts};
    use crate::reader::random_json;

    const KEYS: [&str; 23] = [
        "id",
        "model",
        "object",
        "usage",
        "choices",
        "index",
        "delta",
        "content",
        "text",
        "finish_reason",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "prompt_tokens",
        "completion_tokens",
        "x",
        "i\\u0064",
        "created",
        "error",
        "role",
        "type",
        "id",
    ];
    /// Wherever the fast reader answers, it answers what serde_json and the lenient visitors
    /// (for parts: the `Value` tree) do, over random chunk-shaped JSON (keys the gateway reads,
    /// values of every type, odd numbers and escapes) and mutations of it (cut, a byte changed);
    /// and it does answer for most well-formed chunks, so the slow path is the exception.
    #[test]
    fn fast_facts_agree_with_the_lenient_reading() {
        let mut rng = crate::test_rng(0x5eed_c4a7);
        let (mut answered, mut answered_parts, mut well_formed) = (0, 0, 0);
        for case in 0..60_000 {
            // A chunk: an object of the keys read at its top level.
            let top = [0, 1, 2, 3, 4, 18, 19].map(|k| KEYS[k]);
            let mut data = random_json::object(&mut rng, &KEYS, &top);
            if case % 3 == 0 {
                random_json::mutate(&mut rng, &mut data);
            }
            let slow = lenient_facts(&data);
            if let Some(fast) = facts(&data) {
                assert_eq!(Some(fast), slow, "{data}");
                answered += 1;
            }
            let slow_parts = tree_parts(&data);
            // A kept stream's facts come from its parts: the same as read directly. (The tree
            // refuses some text the facts' reading skips, e.g. a lone surrogate escape: then the
            // facts are read directly.)
            if let Some(slow_parts) = &slow_parts {
                assert_eq!(Some(slow_parts.facts()), slow, "{data}");
            }
            if let Some(fast) = parts(&data) {
                assert_eq!(Some(fast), slow_parts, "{data}");
                answered_parts += 1;
            }
            well_formed += usize::from(case % 3 != 0 && slow.is_some());
        }
        assert!(answered * 2 > well_formed, "the fast reader answered {answered} of {well_formed} well-formed chunks");
        assert!(answered_parts * 2 > well_formed, "parts: {answered_parts} of {well_formed} well-formed chunks");
        for chunk in [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"h\u00e9\n"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}}"#,
            r#"{"id":"c","object":"text_completion","choices":[{"text":"abc","index":0,"logprobs":null,"finish_reason":"length"}]}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
        ] {
            assert!(facts(chunk).is_some(), "{chunk}");
            assert_eq!(facts(chunk), lenient_facts(chunk), "{chunk}");
            assert!(parts(chunk).is_some(), "{chunk}");
            assert_eq!(parts(chunk), tree_parts(chunk), "{chunk}");
        }
    }
}

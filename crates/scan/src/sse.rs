//! Server-sent events: the incremental parser every origin stream goes through (bytes in as
//! they arrive, complete events out, never the whole body).

/// One parsed event. `event` is the `event:` field (Anthropic uses it; OpenAI does not).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Appends `data: <data>\n\n`. Here, not in the gateway: built at opt-level 3, one call for
/// what costs three out-of-line copies (~140 instructions an event) where code is built for size.
pub fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

/// Longest line, and largest event (its data lines together), the parser buffers. An origin
/// that sends more without a line break, or one event that large, has its stream ended with
/// an error instead of being buffered without bound.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Splits a byte stream into events; chunks may end anywhere, even inside a UTF-8 character.
/// Linear in the bytes pushed: each byte is scanned for line breaks a fixed number of times
/// (never again on a later push), and the buffer is shifted once per push, not once per line.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` known to hold no line break.
    scanned: usize,
    /// The event being read: its data lines so far, joined with `\n`; `data_lines` says whether
    /// there was one (an empty `data:` line still makes an event). Handed to the caller when
    /// complete, then emptied and reused, so a stream read with `push_each` allocates nothing
    /// per event.
    current: SseEvent,
    /// An `event:` name's buffer, kept between events for reuse.
    spare_name: String,
    data_lines: bool,
    data_bytes: usize,
    overflowed: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A line or an event exceeded [`MAX_EVENT_BYTES`]: the parser dropped it and yields
    /// nothing more (the stream is broken).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes held for an incomplete line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.push_each(chunk, &mut |event| events.push(std::mem::take(event)));
        events
    }

    /// Feeds a chunk, handing each event it completes to `each` (which may take its strings;
    /// what it leaves is reused for the next event). `dyn`, not generic: one copy of the parser
    /// in the worker instead of one per caller (an indirect call per event costs nothing here).
    pub fn push_each(&mut self, chunk: &[u8], each: &mut dyn FnMut(&mut SseEvent)) {
        if self.overflowed {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.buf);
        // The complete lines end at the last line break, which is past what was scanned.
        let complete = memchr::memrchr(b'\n', &buf[self.scanned..]).map_or(0, |at| self.scanned + at + 1);
        let lines = &buf[..complete];
        // One UTF-8 check for all of them (a line break is never inside a character); line by
        // line, with a lossy copy of the bad ones, only when it fails.
        match std::str::from_utf8(lines) {
            Ok(text) => {
                let mut start = 0;
                while start < lines.len() {
                    // An event's blank line is found without a search (a memchr call cost ~65
                    // instructions, most of a short line's cost); memchr for the others:
                    // str::split's searcher cost ~3x as much a line.
                    let end = match lines[start] {
                        b'\n' => start,
                        _ => memchr::memchr(b'\n', &lines[start..]).map_or(lines.len(), |at| start + at),
                    };
                    let line = &text[start..end]; // both ends next to an ASCII line break
                    start = end + 1;
                    self.line(line.strip_suffix('\r').unwrap_or(line), each);
                    if self.overflowed {
                        return;
                    }
                }
            }
            Err(_) => {
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    let line = &line[..line.len() - 1];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.line(&String::from_utf8_lossy(line), each);
                    if self.overflowed {
                        return;
                    }
                }
            }
        }
        let mut buf = buf;
        buf.drain(..complete);
        self.scanned = buf.len();
        if buf.len() > MAX_EVENT_BYTES {
            self.overflow();
            return;
        }
        self.buf = buf;
    }

    /// Ends the stream: a final event without its blank line still counts.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.finish_each(&mut |event| events.push(std::mem::take(event)));
        events
    }

    /// [`SseParser::finish`], handing the last event (if any) to `each`.
    pub fn finish_each(&mut self, each: &mut dyn FnMut(&mut SseEvent)) {
        if self.overflowed {
            return;
        }
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.scanned = 0;
            self.line(&String::from_utf8_lossy(&rest), each);
        }
        self.line("", each);
    }

    fn overflow(&mut self) {
        self.overflowed = true;
        self.buf = Vec::new();
        self.scanned = 0;
        self.current = SseEvent::default();
        self.data_lines = false;
        self.data_bytes = 0;
    }

    fn line(&mut self, line: &str, each: &mut dyn FnMut(&mut SseEvent)) {
        if line.is_empty() {
            if self.data_lines || self.current.event.is_some() {
                each(&mut self.current);
                self.current.data.clear();
                if let Some(name) = self.current.event.take() {
                    self.spare_name = name;
                }
                self.data_lines = false;
                self.data_bytes = 0;
            }
            return;
        }
        if line.starts_with(':') {
            return; // comment / keep-alive
        }
        // Nearly every line is a data line: its field is known without searching for the colon.
        let (field, value) = match line.strip_prefix("data:") {
            Some(value) => ("data", value),
            None => line.split_once(':').unwrap_or((line, "")),
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => {
                let mut name = self.current.event.take().unwrap_or_else(|| std::mem::take(&mut self.spare_name));
                name.clear();
                name.push_str(value);
                self.current.event = Some(name);
            }
            "data" => {
                self.data_bytes = self.data_bytes.saturating_add(value.len() + 1);
                if self.data_bytes > MAX_EVENT_BYTES {
                    self.overflow();
                    return;
                }
                if std::mem::replace(&mut self.data_lines, true) {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
            }
            _ => {} // id, retry: not needed for translation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushed in random pieces, random lines (blank ones in runs) are split as `str::split`
    /// splits the whole stream, each handed to `line` once.
    #[test]
    fn lines_are_split_as_str_split_splits_them() {
        let lines =
            ["", "", "data: x", "data:", "data: {\"a\":1}\r", ": ping", "event: e", "\r", "id: 1", "data: \u{1F600}"];
        let mut rng = crate::test_rng(5);
        for _ in 0..500 {
            let n = rng(40);
            let text: String = (0..n).map(|_| format!("{}\n", lines[rng(lines.len())])).collect();
            let mut expected = Vec::new();
            let mut reference = SseParser::new();
            for line in text.split_terminator('\n') {
                reference.line(line.strip_suffix('\r').unwrap_or(line), &mut |e| expected.push(e.clone()));
            }
            let (mut p, mut events, mut at) = (SseParser::new(), Vec::new(), 0);
            while at < text.len() {
                let to = (at + 1 + rng(60)).min(text.len());
                p.push_each(&text.as_bytes()[at..to], &mut |e| events.push(e.clone()));
                at = to;
            }
            assert_eq!(events, expected, "{text:?}");
        }
    }

    #[test]
    fn events_split_across_arbitrary_chunks() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\n: ping\ndata: x\r\ndata: y\n\nevent: a\nevent: b\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut p = SseParser::new();
            let mut events = p.push(&stream[..split]);
            events.extend(p.push(&stream[split..]));
            events.extend(p.finish());
            // The same events handed out one by one from the parser's reused buffers.
            let (mut p, mut each) = (SseParser::new(), Vec::new());
            p.push_each(&stream[..split], &mut |e| each.push(e.clone()));
            p.push_each(&stream[split..], &mut |e| each.push(e.clone()));
            p.finish_each(&mut |e| each.push(e.clone()));
            assert_eq!(each, events, "split at {split}");
            assert_eq!(
                events,
                vec![
                    SseEvent { event: Some("message_start".into()), data: "{\"a\":1}".into() },
                    SseEvent { event: None, data: "x\ny".into() },
                    SseEvent { event: Some("b".into()), data: String::new() },
                    SseEvent { event: None, data: "[DONE]".into() },
                ],
                "split at {split}"
            );
        }
    }

    /// M6: the parser never rescans what it has scanned (a line trickling in byte by byte was
    /// quadratic), never shifts its buffer once per line (a chunk of many lines was quadratic),
    /// and gives up on a line or event over `MAX_EVENT_BYTES` instead of buffering it whole.
    #[test]
    fn parsing_is_linear_and_bounded() {
        // Linear, checked by what the parser keeps rather than by a clock: a line fed byte by
        // byte is scanned once (everything held is marked scanned after each push, so the next
        // push searches only its own bytes).
        let mut p = SseParser::new();
        let line = vec![b'x'; 200_000];
        for (i, b) in line.iter().enumerate() {
            assert!(p.push(std::slice::from_ref(b)).is_empty());
            assert_eq!((p.scanned, p.buffered()), (i + 1, i + 1));
        }
        assert_eq!(p.push(b"\n\n").len(), 0, "a line with no field name is ignored");
        assert_eq!((p.scanned, p.buffered()), (0, 0));
        let many = "data: {}\n\n".repeat(100_000);
        assert_eq!(SseParser::new().push(many.as_bytes()).len(), 100_000);

        let mut p = SseParser::new();
        let giant = vec![b'a'; 64 * 1024];
        p.push(b"data: ");
        for _ in 0..(MAX_EVENT_BYTES / giant.len() + 2) {
            assert!(p.push(&giant).is_empty());
        }
        assert!(p.overflowed());
        assert!(p.buffered() <= MAX_EVENT_BYTES + giant.len(), "{}", p.buffered());
        assert!(p.push(b"\n\ndata: late\n\n").is_empty(), "nothing after an overflow");
        assert!(p.finish().is_empty());
        // Many data lines adding up to too much overflow as well.
        let mut p = SseParser::new();
        let line = format!("data: {}\n", "b".repeat(1000));
        for _ in 0..(MAX_EVENT_BYTES / 1000 + 2) {
            p.push(line.as_bytes());
        }
        assert!(p.overflowed());
    }

    #[test]
    fn unterminated_last_event_is_flushed_by_finish() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: tail").is_empty());
        assert_eq!(p.finish(), vec![SseEvent { event: None, data: "tail".into() }]);
    }
}

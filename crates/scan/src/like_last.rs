//! An event like the last one but for one string: most events of a stream are (each chunk of
//! an answer differs from the one before only in its text), and reading one in full costs
//! ~1,000-2,000 instructions where comparing it with the last costs ~150. The last event read
//! in full is kept as the bytes before its varying string and the bytes after it; an event with
//! the same bytes around a JSON string there reads as the last one with that string.

use std::borrow::Cow;

use crate::reader::text_at;

/// The bytes of the last event around its varying string.
#[derive(Debug, Default)]
pub(crate) struct LikeLast {
    before: Vec<u8>,
    after: Vec<u8>,
}

/// Where a string of the last event is: in the bytes before its varying string, or after it.
/// An event like the last has it in the same place.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Span {
    Before(usize, usize),
    After(usize, usize),
}

/// Where the event now being read has its varying string (from its opening quote to past its
/// closing one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Varying {
    pub start: usize,
    pub end: usize,
}

impl Varying {
    /// Where `text`, a string borrowed from `data`, is around this varying string; `None` for
    /// one that is not borrowed or overlaps it.
    pub fn span_of(self, data: &str, text: &str) -> Option<Span> {
        let at = (text.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let end = at + text.len();
        if end > data.len() {
            return None; // not from `data`
        }
        if end <= self.start {
            Some(Span::Before(at, end))
        } else if at >= self.end {
            Some(Span::After(at - self.end, end - self.end))
        } else {
            None
        }
    }

    /// The string at `span` of an event like the last, whose varying string this is.
    pub fn text<'a>(self, data: &'a str, span: Option<Span>) -> Option<Cow<'a, str>> {
        let (from, to) = match span? {
            Span::Before(from, to) => (from, to),
            Span::After(from, to) => (self.end + from, self.end + to),
        };
        data.get(from..to).map(Cow::Borrowed)
    }
}

impl LikeLast {
    /// Keeps `data`, read in full, whose varying string is at `varying`.
    pub fn remember(&mut self, data: &str, varying: Varying) {
        self.before.clear();
        self.before.extend_from_slice(&data.as_bytes()[..varying.start]);
        self.after.clear();
        self.after.extend_from_slice(&data.as_bytes()[varying.end..]);
    }

    /// When `data` is the last event with another JSON string where its varying one was: that
    /// string (unescaped) and where it is.
    #[inline]
    pub fn text<'a>(&self, data: &'a str) -> Option<(Cow<'a, str>, Varying)> {
        let bytes = data.as_bytes();
        if !bytes.starts_with(&self.before) {
            return None;
        }
        let (text, end) = text_at(data, self.before.len())?;
        (bytes[end..] == self.after[..]).then_some((text, Varying { start: self.before.len(), end }))
    }
}

/// The last event of a stream that read as nothing (none of the fields read, all absent),
/// kept around a string value it skipped: an event like it but for that string reads as nothing
/// too (a string where another was cannot make a field read), and is not read (~150
/// instructions instead of ~900 for a 40-byte event: a stream of events in another format).
#[derive(Debug, Default)]
pub(crate) struct LikeNothing {
    last: LikeLast,
    kept: bool,
}

impl LikeNothing {
    /// Whether `data` reads as nothing because it is like the last event kept.
    pub fn is_like(&self, data: &str) -> bool {
        self.kept && self.last.text(data).is_some()
    }

    /// After reading `data` in full: keeps it when it read as nothing and skipped a string value
    /// (at `skipped`), else forgets the last.
    pub fn after(&mut self, data: &str, nothing: bool, skipped: Option<Varying>) {
        self.kept = match skipped {
            Some(varying) if nothing => {
                self.last.remember(data, varying);
                true
            }
            _ => false,
        };
    }
}

/// For the readers' tests: `n` events of a stream, in runs of one of `shapes` (run lengths
/// random), each with its `@` replaced by a string of any kind: plain, empty, escaped, a lone
/// surrogate, a bad escape, a number, null, one followed by a space, non-ASCII, long ones (past
/// the first 16 bytes, plain or escaped there).
#[cfg(test)]
pub(crate) fn test_stream(shapes: &[&str], seed: u64, n: usize) -> Vec<String> {
    let texts = [
        r#""hi""#,
        r#""""#,
        r#""h\u00e9\n""#,
        r#""\ud800""#,
        r#""bad \x""#,
        "5",
        "null",
        r#""x" "#,
        r#""é😀""#,
        r#""a text of more than sixteen bytes, plain""#,
        r#""a text of more than sixteen bytes\n, escaped""#,
    ];
    let mut rng = crate::test_rng(seed);
    let mut shape = 0;
    (0..n)
        .map(|_| {
            if rng(8) == 0 {
                shape = rng(shapes.len());
            }
            shapes[shape].replace('@', texts[rng(texts.len())])
        })
        .collect()
}

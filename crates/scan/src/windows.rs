//! Where in a text a regular expression can match, read off the pattern: every match starts
//! with a byte of a known set and is at most so many bytes long (`\b\d{3}-\d{2}-\d{4}\b`:
//! a digit, 11 bytes). The regex then runs only over short windows around those bytes instead
//! of the whole text: the guard's regex engine (regex-lite, chosen for size) costs ~550
//! instructions a byte, so a deny rule over 200 KB of prose took ~18 ms.
//!
//! The reading is conservative: any syntax it does not fully understand (unbounded
//! repetition, anchors, Unicode classes, flags other than `i`, ...) gives no windows, and the
//! regex runs over the whole text as before. A window keeps one character of context on each
//! side, so `\b` at a match's edges sees the same neighbours as in the whole text.

use crate::syntax::{self, complement, escaped_set, escapes_itself, fold_case, set, utf8_len};

/// The shape of a pattern's matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    /// Bytes a match can start with (never a UTF-8 continuation byte).
    first: [bool; 256],
    /// Longest match, in bytes.
    max_len: usize,
}

/// Longest match the windows are worth it for; longer patterns run over the whole text.
const MAX_LEN: usize = 1024;

impl Windows {
    /// The shape of `pattern`'s matches (`case_insensitive`: the `i` flag set for all of it),
    /// or `None` when it cannot be read off safely.
    pub fn of(pattern: &str, case_insensitive: bool) -> Option<Windows> {
        let mut parser = Parser { p: pattern.as_bytes(), at: 0, depth: 0 };
        let shape = parser.alternation(case_insensitive)?;
        if parser.at != parser.p.len() || shape.min == 0 || shape.max > MAX_LEN {
            return None;
        }
        let mut first = shape.first;
        first[0x80..0xC0].fill(false); // a character never starts with a continuation byte
        Some(Windows { first, max_len: shape.max })
    }

    /// The windows of `text` every match lies in, in order: byte ranges on character
    /// boundaries, each from one character before a possible start to one character after the
    /// longest match from the last start it covers.
    pub fn spans<'t>(&'t self, text: &'t str) -> impl Iterator<Item = (usize, usize)> + 't {
        let b = text.as_bytes();
        let is_start = |i: &usize| self.first[usize::from(b[*i])];
        let mut at = 0;
        std::iter::from_fn(move || {
            let start = (at..b.len()).find(is_start)?;
            let mut reach = start + self.max_len;
            let mut scanned = start + 1;
            loop {
                let to = char_after(text, reach.min(b.len()));
                // A possible start before the window's end (its context included) extends it.
                match (scanned..to).find(is_start) {
                    Some(next) => {
                        reach = next + self.max_len;
                        scanned = next + 1;
                    }
                    None => {
                        at = to;
                        return Some((char_before(text, start), to));
                    }
                }
            }
        })
    }
}

/// The start of the character before `i` (or 0).
fn char_before(text: &str, i: usize) -> usize {
    let mut j = i.saturating_sub(1);
    while j > 0 && !text.is_char_boundary(j) {
        j -= 1;
    }
    j
}

/// The end of the character at or after `i` (rounded up to a boundary first), or the text's end.
fn char_after(text: &str, i: usize) -> usize {
    let mut j = i;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    if j < text.len() {
        j += 1;
        while j < text.len() && !text.is_char_boundary(j) {
            j += 1;
        }
    }
    j
}

/// What a piece of a pattern matches: its possible first bytes and its length range in bytes.
#[derive(Clone)]
struct Shape {
    first: [bool; 256],
    min: usize,
    max: usize,
}

impl Shape {
    fn empty() -> Shape {
        Shape { first: [false; 256], min: 0, max: 0 }
    }

    fn bytes(set: [bool; 256], max: usize) -> Shape {
        Shape { first: set, min: 1, max }
    }

    /// `self` then `next`.
    fn then(mut self, next: &Shape) -> Shape {
        if self.min == 0 {
            for (a, b) in self.first.iter_mut().zip(next.first) {
                *a |= b;
            }
        }
        self.min += next.min;
        self.max += next.max;
        self
    }

    /// `self` or `other`.
    fn or(mut self, other: &Shape) -> Shape {
        for (a, b) in self.first.iter_mut().zip(other.first) {
            *a |= b;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self
    }
}

struct Parser<'p> {
    p: &'p [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.p.get(self.at).copied()
    }

    fn alternation(&mut self, ci: bool) -> Option<Shape> {
        let (mut shape, mut ci) = self.sequence(ci)?;
        while self.peek() == Some(b'|') {
            self.at += 1;
            let (next, next_ci) = self.sequence(ci)?;
            shape = shape.or(&next);
            ci = next_ci;
        }
        Some(shape)
    }

    /// A sequence up to `|` or `)`, and whether the `i` flag is on at its end (a `(?i)` in it
    /// holds to the end of the enclosing group, alternatives after it included).
    fn sequence(&mut self, mut ci: bool) -> Option<(Shape, bool)> {
        let mut shape = Shape::empty();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            // A standalone flag group, `(?i)`, applies to the rest of the sequence.
            if self.p[self.at..].starts_with(b"(?i)") {
                self.at += 4;
                ci = true;
                continue;
            }
            let atom = self.atom(ci)?;
            let atom = self.repetition(atom)?;
            shape = shape.then(&atom);
            if shape.max > MAX_LEN {
                return None;
            }
        }
        Some((shape, ci))
    }

    fn repetition(&mut self, atom: Shape) -> Option<Shape> {
        let (min, max) = match self.peek() {
            Some(b'?') => {
                self.at += 1;
                (0, 1)
            }
            Some(b'*' | b'+') => return None, // unbounded
            Some(b'{') => {
                let close = self.p[self.at..].iter().position(|&c| c == b'}')?;
                let inner = std::str::from_utf8(&self.p[self.at + 1..self.at + close]).ok()?;
                self.at += close + 1;
                let number = |s: &str| {
                    (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<usize>().ok()).flatten()
                };
                match inner.split_once(',') {
                    None => {
                        let n = number(inner)?;
                        (n, n)
                    }
                    Some((lo, hi)) => (number(lo)?, number(hi)?), // `{n,}`: unbounded, no windows
                }
            }
            _ => return Some(atom),
        };
        if self.peek() == Some(b'?') {
            self.at += 1; // lazy: the same matches
        }
        if min > max || max > MAX_LEN {
            return None;
        }
        Some(Shape {
            first: if max == 0 { [false; 256] } else { atom.first },
            min: atom.min.checked_mul(min)?,
            max: atom.max.checked_mul(max)?,
        })
    }

    fn atom(&mut self, ci: bool) -> Option<Shape> {
        let c = self.peek()?;
        let fold = |s: [bool; 256]| if ci { fold_case(s) } else { s };
        match c {
            b'(' => {
                self.depth += 1;
                if self.depth > 16 {
                    return None;
                }
                self.at += 1;
                let mut inner_ci = ci;
                if self.peek() == Some(b'?') {
                    let rest = &self.p[self.at..];
                    if rest.starts_with(b"?:") {
                        self.at += 2;
                    } else if rest.starts_with(b"?i:") {
                        self.at += 3;
                        inner_ci = true;
                    } else if rest.starts_with(b"?P<")
                        || (rest.starts_with(b"?<") && !matches!(rest.get(2), Some(b'=' | b'!')))
                    {
                        self.at += rest.iter().position(|&c| c == b'>')? + 1;
                    } else {
                        return None; // other flags, look-around: not read
                    }
                }
                let shape = self.alternation(inner_ci)?;
                if self.peek() != Some(b')') {
                    return None;
                }
                self.at += 1;
                self.depth -= 1;
                Some(shape)
            }
            b'[' => self.class(ci),
            b'.' => {
                self.at += 1;
                Some(Shape::bytes(complement(&set([b'\n'])), 4))
            }
            b'\\' => {
                let e = *self.p.get(self.at + 1)?;
                self.at += 2;
                match e {
                    b'b' | b'B' | b'<' | b'>' => Some(Shape::empty()), // word boundaries
                    b'D' | b'W' | b'S' => Some(Shape::bytes(complement(&escaped_set(e.to_ascii_lowercase())?), 4)),
                    e if escapes_itself(e) => Some(Shape::bytes(fold(set([e])), 1)),
                    e => Some(Shape::bytes(escaped_set(e)?, 1)), // \x, \u, \p, \A, \z, octal, ...: not read
                }
            }
            b'^' | b'$' | b'*' | b'+' | b'?' | b'{' | b'}' | b']' | b')' | b'|' => None,
            _ => {
                // A literal character (all its bytes).
                let len = utf8_len(c)?;
                self.at += len;
                Some(Shape::bytes(fold(set([c])), len))
            }
        }
    }

    fn class(&mut self, ci: bool) -> Option<Shape> {
        let class = syntax::class(self.p, &mut self.at, ci)?;
        if class.negated {
            return Some(Shape::bytes(complement(&class.members), 4));
        }
        let mut first = class.members;
        if class.non_ascii {
            for f in first.iter_mut().skip(0xC0) {
                *f = true;
            }
        }
        Some(Shape::bytes(first, if class.non_ascii { 4 } else { 1 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_lite::RegexBuilder;

    /// What the windows are for: a match exists in the text exactly when one exists in a window.
    fn windowed(windows: &Windows, regex: &regex_lite::Regex, text: &str) -> bool {
        windows.spans(text).any(|(from, to)| regex.is_match(&text[from..to]))
    }

    #[test]
    fn shapes_are_read_off_common_patterns_and_refused_for_the_rest() {
        let shape = |p: &str| {
            Windows::of(p, false)
                .map(|w| (w.max_len, (0..=255u8).filter(|&b| w.first[usize::from(b)]).collect::<Vec<_>>()))
        };
        assert_eq!(shape(r"\b\d{3}-\d{2}-\d{4}\b"), Some((11, (b'0'..=b'9').collect())));
        assert_eq!(shape(r"sk-[a-z]{4}"), Some((7, vec![b's'])));
        assert_eq!(Windows::of("sk-[a-z]{4}", true).map(|w| w.first[usize::from(b'S')]), Some(true));
        assert_eq!(shape(r"(?:ab|c)d?"), Some((3, vec![b'a', b'c'])));
        assert_eq!(shape(r"x?y"), Some((2, vec![b'x', b'y'])));
        for refused in [
            r"a+",
            r"a*b",
            r"^abc",
            r"abc$",
            r"a{2,}",
            r"\pL",
            r"(?s)a.",
            r"(?=a)",
            r"",
            r"a?",
            r"[[:alpha:]]",
            r"(a",
            r"a)",
        ] {
            assert_eq!(Windows::of(refused, false), None, "{refused}");
        }
    }

    /// Differential: over many random texts (ASCII, digits, separators, multi-byte
    /// characters), the windowed search and the plain one agree for every pattern.
    #[test]
    fn windowed_search_agrees_with_the_whole_text_search() {
        let patterns = [
            r"\b\d{3}-\d{2}-\d{4}\b",
            r"\d{4}[ -]?\d{4}",
            r"(?i)project\s(?:blue|red)bird",
            r"[A-Z]{2}\d{2}",
            r"\bé\w\b",
            r"[^a-z0-9 ]{2}",
            r"\W\d",
            r"x.y",
            r"(ab|cd){2}",
            r"[é-ü]\d",
            r"\Bq\B",
            r"a{0}b",
            r"(?i)x|y",
            r"(?i:ab)c",
            r"[a-c]{2}\b",
            r"\<a\w\>",
        ];
        let alphabet: Vec<&str> = vec![
            "1", "2", "3", "-", " ", "a", "b", "c", "d", "x", "y", "q", "é", "ü", "日", "A", "Z", "X", "Y", "Q", "D",
            "AB", "_", ".", "\n", "project", "PROJECT", "blue", "bird", "\t",
        ];
        let mut next = crate::test_rng(0x9E37_79B9_7F4A_7C15u64);
        for pattern in patterns {
            for ci in [false, true] {
                let regex = RegexBuilder::new(pattern).case_insensitive(ci).build().unwrap();
                let Some(windows) = Windows::of(pattern, ci) else { panic!("{pattern} should have windows") };
                for _ in 0..3000 {
                    let len = next(40);
                    let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
                    assert_eq!(
                        windowed(&windows, &regex, &text),
                        regex.is_match(&text),
                        "{pattern} (ci {ci}) on {text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn windows_cover_only_the_neighbourhood_of_possible_starts() {
        let w = Windows::of(r"\b\d{3}\b", false).unwrap();
        let text = format!("{}123{}", "lorem ipsum ".repeat(100), " dolor".repeat(100));
        let spans: Vec<_> = w.spans(&text).collect();
        // From the character before the first digit to one after the longest match from the last.
        assert_eq!(spans, vec![(1199, 1206)]);
        assert_eq!(w.spans("no digits here").count(), 0);
    }
}

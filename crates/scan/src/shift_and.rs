//! Exact matching for the simplest regular expressions, a sequence of character classes with
//! counted repetition (`\b\d{3}-\d{2}-\d{4}\b`, `TCK-\d+`, `sk-[a-zA-Z0-9]{20,40}`), at a few
//! instructions a byte instead of regex-lite's ~550 (its PikeVM; the `regex` crate's DFAs would
//! add 112 KB to the gzipped worker, measured). A deny rule over 199 KB of digit groups took
//! 19 ms that way.
//!
//! Every byte of a match is one position of the pattern (at most 64, one bit each of a `u64`);
//! after each byte of the text the set of positions some match attempt has just filled advances
//! by a shift, masked by the positions that byte may fill (the shift-and algorithm), with two
//! extensions: optional positions may be skipped (`x?`, `x{2,4}`), looped ones repeated (`x+`,
//! `x*`). Reading is conservative: anything else (groups, alternation, anchors, `.` or negated
//! classes, which match characters of several bytes, lazy repetition, `\b` inside the pattern,
//! non-ASCII under `i`) gives `None`, and the caller keeps using the regex.
//!
//! Matches are reported leftmost-longest. For a sequence of greedy single-character items that
//! is what a backtracking engine's leftmost-first finds (the differential test checks it
//! against regex-lite).

use crate::syntax::{self, escaped_set, escapes_itself, fold_case, is_word, set, ByteSet};

/// A compiled pattern: at most 64 positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftAnd {
    /// For each byte, the positions it may fill.
    masks: Box<[u64; 256]>,
    /// Positions a match may skip.
    optional: u64,
    /// Positions that may be filled again right after themselves.
    looped: u64,
    /// Positions a match may end at (every position after them is optional).
    accept: u64,
    /// Number of positions.
    len: usize,
    /// What `\b` or `\B` before the first position asks of the match's start.
    start: Edge,
    /// Whether `start` holds, at `word before << 1 | word after` (a lookup per byte, where
    /// matching on the edge cost a few branches).
    start_holds: [bool; 4],
    /// What `\b` or `\B` after the last position asks of the match's end.
    end: Edge,
    /// No optional positions, and only the last may repeat (then with no edge after it).
    rigid: bool,
    /// The positions a match can begin in (the first, and those after optional ones).
    startable: u64,
    /// The positions a match's second byte can fill.
    second: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    Any,
    /// `\b`: a word character on exactly one side.
    Boundary,
    /// `\B`: word characters on both sides or on neither.
    NotBoundary,
}

impl Edge {
    /// Whether the edge holds where the characters on either side are (`true`) or are not
    /// word characters; a text's ends count as non-word.
    #[inline]
    fn holds(self, word_before: bool, word_after: bool) -> bool {
        match self {
            Edge::Any => true,
            Edge::Boundary => word_before != word_after,
            Edge::NotBoundary => word_before == word_after,
        }
    }
}

/// Whether the byte at `i` (if any) is a word character.
fn word_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|&c| is_word(c))
}

const MAX_POSITIONS: usize = 64;
const NONE: usize = usize::MAX;

/// Two generations of per-position attempt starts; an entry counts only while its position
/// is live, so the buffer needs no clearing between uses.
type Starts = [[usize; MAX_POSITIONS]; 2];

impl ShiftAnd {
    /// `pattern` compiled (`case_insensitive`: the `i` flag for all of it), or `None` when it is
    /// not a plain sequence of classes (see the module's doc).
    pub fn of(pattern: &str, case_insensitive: bool) -> Option<ShiftAnd> {
        let p = pattern.as_bytes();
        let mut at = 0;
        let edge = |p: &[u8], at: usize| match p.get(at..at + 2) {
            // `\b{...}` is a special boundary or a repeated one: not read.
            Some(b"\\b") if p.get(at + 2) != Some(&b'{') => Some(Edge::Boundary),
            Some(b"\\B") if p.get(at + 2) != Some(&b'{') => Some(Edge::NotBoundary),
            _ => None,
        };
        let start = match edge(p, 0) {
            Some(e) => {
                at = 2;
                e
            }
            None => Edge::Any,
        };
        let mut sa = ShiftAnd {
            masks: Box::new([0; 256]),
            optional: 0,
            looped: 0,
            accept: 0,
            len: 0,
            start,
            start_holds: [(false, false), (false, true), (true, false), (true, true)].map(|(b, a)| start.holds(b, a)),
            end: Edge::Any,
            rigid: false,
            startable: 0,
            second: 0,
        };
        while at < p.len() {
            if let Some(e) = edge(p, at) {
                if at + 2 != p.len() {
                    return None; // a boundary inside the pattern
                }
                sa.end = e;
                break;
            }
            let item = item(p, &mut at, case_insensitive)?;
            let (min, max) = repetition(p, &mut at)?;
            match item {
                Item::Bytes(bytes) => {
                    if (min, max) != (1, Some(1)) {
                        return None; // a quantifier on a character of several bytes
                    }
                    for b in bytes {
                        sa.push(&set([*b]), false, false)?;
                    }
                }
                Item::Class(members) => {
                    for _ in 0..min {
                        sa.push(&members, false, false)?;
                    }
                    match max {
                        Some(max) => {
                            for _ in min..max {
                                sa.push(&members, true, false)?;
                            }
                        }
                        None if min == 0 => sa.push(&members, true, true)?,
                        None => sa.looped |= 1 << (sa.len - 1),
                    }
                }
            }
        }
        let required = !sa.optional & mask(sa.len);
        if required == 0 {
            return None; // could match the empty string
        }
        let last_required = 63 - required.leading_zeros() as usize;
        sa.accept = mask(sa.len) & !mask(last_required);
        let last = 1u64 << (sa.len - 1);
        sa.rigid = sa.optional == 0 && (sa.looped == 0 || (sa.looped == last && sa.end == Edge::Any));
        sa.startable = sa.enterable(0, true);
        sa.second = sa.enterable(sa.startable, false);
        Some(sa)
    }

    fn push(&mut self, members: &ByteSet, optional: bool, looped: bool) -> Option<()> {
        if self.len == MAX_POSITIONS {
            return None;
        }
        let bit = 1u64 << self.len;
        for (mask, member) in self.masks.iter_mut().zip(members) {
            if *member {
                *mask |= bit;
            }
        }
        if optional {
            self.optional |= bit;
        }
        if looped {
            self.looped |= bit;
        }
        self.len += 1;
        Some(())
    }

    /// The positions the next byte may fill, given those the previous one filled and whether
    /// a match may start here.
    #[inline]
    fn enterable(&self, filled: u64, may_start: bool) -> u64 {
        let mut enter = (filled << 1) | (filled & self.looped) | u64::from(may_start);
        // A skipped optional position lets the one after it be entered too.
        while enter & self.optional != 0 {
            let next = enter | ((enter & self.optional) << 1);
            if next == enter {
                break;
            }
            enter = next;
        }
        enter
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        if self.rigid {
            self.first_rigid(text.as_bytes(), 0).is_some()
        } else {
            self.first_end(text.as_bytes(), 0).is_some()
        }
    }

    /// The matches in `text`, in order, without overlaps, as `(start, end)` byte ranges: what
    /// regex-lite's `find_iter` gives for the same pattern.
    pub fn find_iter<'t>(&'t self, text: &'t str) -> impl Iterator<Item = (usize, usize)> + 't {
        let b = text.as_bytes();
        let mut at = 0;
        let mut starts = Box::new([[NONE; MAX_POSITIONS]; 2]); // reused: 1 KB to set per match was most of its cost
        std::iter::from_fn(move || {
            let found = if self.rigid {
                // The longest match runs on while the last position repeats.
                let start = self.first_rigid(b, at)?;
                let mut to = start + self.len;
                while self.looped != 0 && b.get(to).is_some_and(|&c| self.masks[usize::from(c)] & self.looped != 0) {
                    to += 1;
                }
                Some((start, to))
            } else {
                let (_, quiet) = self.first_end(b, at)?;
                self.leftmost_longest(b, quiet, &mut starts)
            };
            if let Some((_, end)) = found {
                at = end;
            }
            found
        })
    }

    /// Appends the matches of [`Self::find_iter`] to `found`: the loop compiled here, for
    /// speed (a caller's generic loop over the iterator is compiled where it is written, and a
    /// callback per match cost ~65 instructions over 33k ticket ids).
    pub fn find_into(&self, text: &str, found: &mut Vec<(usize, usize)>) {
        found.extend(self.find_iter(text));
    }

    /// For a rigid pattern, the start of the leftmost match starting at or after `from`: every
    /// match is `len` bytes (plus repeats of the last), so each place a match can begin is
    /// checked byte by byte against the positions, with no per-byte state to carry
    /// (`TCK-\d+` over ticket ids: ~125 instructions a match, where shift-and took ~250).
    fn first_rigid(&self, b: &[u8], from: usize) -> Option<usize> {
        let mut start = from;
        loop {
            start = self.next_start(b, start)?;
            let end = start + self.len;
            if end > b.len() {
                return None;
            }
            let matches = b[start..end].iter().enumerate().all(|(k, &c)| self.masks[usize::from(c)] & (1 << k) != 0)
                && self.start.holds(start > 0 && word_at(b, start - 1), word_at(b, start))
                && self.end.holds(word_at(b, end - 1), word_at(b, end));
            if matches {
                return Some(start);
            }
            start += 1;
        }
    }

    /// The end of the first match that ends at or after `from` (matches starting at or after
    /// `from`), and the earliest index a match ending there can start at: past the last byte
    /// after which no attempt was alive.
    fn first_end(&self, b: &[u8], from: usize) -> Option<(usize, usize)> {
        let mut filled = 0u64;
        let mut quiet = from;
        let mut i = from;
        let mut word_before = from > 0 && word_at(b, from - 1);
        while i < b.len() {
            if filled == 0 {
                i = self.next_start(b, i)?;
                quiet = i;
                word_before = i > 0 && word_at(b, i - 1);
            }
            let c = b[i];
            let word = is_word(c);
            let may_start = self.start_holds[usize::from(word_before) << 1 | usize::from(word)];
            filled = self.enterable(filled, may_start) & self.masks[usize::from(c)];
            if filled == 0 {
                quiet = i + 1;
            } else if filled & self.accept != 0 && self.end.holds(word, word_at(b, i + 1)) {
                return Some((i + 1, quiet));
            }
            word_before = word;
            i += 1;
        }
        None
    }

    /// With no attempt alive, the first index at or after `i` where a match can begin (edges
    /// aside): its byte fills a first position, and the next byte continues the attempt unless
    /// that byte alone is a match. Most bytes of prose begin none, and in digit-heavy text
    /// most digits are followed by a separator no match continues with (`\d{3}-` over
    /// `1-2 1-2 ...`), so the attempts are skipped at a few instructions a byte.
    #[inline]
    fn next_start(&self, b: &[u8], mut i: usize) -> Option<usize> {
        while i < b.len() {
            let first = self.masks[usize::from(b[i])] & self.startable;
            if first != 0
                && (first & self.accept != 0
                    || b.get(i + 1).is_some_and(|&c| self.masks[usize::from(c)] & self.second != 0))
            {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The leftmost-longest match starting at or after `from`, tracking for each live position
    /// the earliest start of an attempt that filled it. Only positions the next byte could
    /// enter are visited, and it runs only from where `first_end` saw the match's attempt begin.
    fn leftmost_longest(&self, b: &[u8], from: usize, starts: &mut Starts) -> Option<(usize, usize)> {
        let mut live = 0u64;
        let mut best: Option<(usize, usize)> = None;
        let mut word_before = from > 0 && word_at(b, from - 1);
        for (i, &c) in b.iter().enumerate().skip(from) {
            let word = is_word(c);
            let may_start = best.is_none() && self.start.holds(word_before, word);
            let fills = self.masks[usize::from(c)];
            let ends_here = self.end.holds(word, word_at(b, i + 1));
            let [even, odd] = starts;
            let (old, new) = if i % 2 == 0 { (&*even, odd) } else { (&*odd, even) };
            let mut next_live = 0u64;
            let mut enter_prev = NONE; // the earliest start that may enter position k - 1
            let enterable = self.enterable(live, may_start);
            let mut candidates = enterable;
            while candidates != 0 {
                let k = candidates.trailing_zeros() as usize;
                let bit = 1u64 << k;
                let mut enter = match k {
                    0 if may_start => i,
                    0 => NONE,
                    _ if live & (bit >> 1) != 0 => old[k - 1],
                    _ => NONE,
                };
                if self.looped & live & bit != 0 {
                    enter = enter.min(old[k]);
                }
                if self.optional & enterable & (bit >> 1) != 0 {
                    // k - 1 was the previous candidate: skipping it enters k.
                    enter = enter.min(enter_prev);
                }
                candidates &= candidates - 1;
                // Attempts that started after the best match's start can no longer win.
                if best.is_some_and(|(s, _)| enter > s) {
                    enter = NONE;
                }
                enter_prev = enter;
                if enter == NONE || fills & bit == 0 {
                    continue;
                }
                new[k] = enter;
                next_live |= bit;
                if self.accept & bit != 0
                    && ends_here
                    && best.is_none_or(|(bs, be)| enter < bs || (enter == bs && i + 1 > be))
                {
                    best = Some((enter, i + 1));
                }
            }
            live = next_live;
            if live == 0 && best.is_some() {
                break;
            }
            word_before = word;
        }
        best
    }
}

/// The positions below `n`.
fn mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

#[allow(clippy::large_enum_variant)] // one at a time, while a pattern is read
enum Item<'p> {
    /// One ASCII class.
    Class(ByteSet),
    /// The bytes of one non-ASCII character.
    Bytes(&'p [u8]),
}

/// One character's item at `p[*at]`, moving `at` past it.
fn item<'p>(p: &'p [u8], at: &mut usize, ci: bool) -> Option<Item<'p>> {
    let fold = |s: ByteSet| if ci { fold_case(s) } else { s };
    let c = *p.get(*at)?;
    match c {
        b'[' => {
            let class = syntax::class(p, at, ci)?;
            // Negated and non-ASCII classes match characters of several bytes: not read.
            (!class.negated && !class.non_ascii).then_some(Item::Class(class.members))
        }
        b'\\' => {
            let e = *p.get(*at + 1)?;
            *at += 2;
            if escapes_itself(e) {
                Some(Item::Class(fold(set([e]))))
            } else {
                escaped_set(e).map(Item::Class) // `\D`, `\b`, `\x..`, `\pL`, ...: not read
            }
        }
        b'(' | b')' | b'|' | b'^' | b'$' | b'.' | b'*' | b'+' | b'?' | b'{' | b'}' | b']' => None,
        c if c < 0x80 => {
            *at += 1;
            Some(Item::Class(fold(set([c]))))
        }
        c => {
            let len = syntax::utf8_len(c)?;
            let bytes = p.get(*at..*at + len)?;
            *at += len;
            // Case folding beyond ASCII is regex-lite's business: not read.
            (!ci).then_some(Item::Bytes(bytes))
        }
    }
}

/// The repetition after an item (`?`, `*`, `+`, `{n}`, `{n,}`, `{n,m}`; greedy only) as
/// `(min, max)`, `max` `None` for unbounded; `(1, Some(1))` when there is none.
fn repetition(p: &[u8], at: &mut usize) -> Option<(usize, Option<usize>)> {
    let range = match p.get(*at) {
        Some(b'?') => (0, Some(1)),
        Some(b'*') => (0, None),
        Some(b'+') => (1, None),
        Some(b'{') => {
            let close = p[*at..].iter().position(|&c| c == b'}')?;
            let inner = std::str::from_utf8(&p[*at + 1..*at + close]).ok()?;
            *at += close;
            let number = |s: &str| {
                (!s.is_empty() && s.len() <= 3 && s.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| s.parse().ok())
                    .flatten()
            };
            match inner.split_once(',') {
                None => number(inner).map(|n| (n, Some(n)))?,
                Some((lo, "")) => (number(lo)?, None),
                Some((lo, hi)) => (number(lo)?, Some(number(hi)?)),
            }
        }
        _ => return Some((1, Some(1))),
    };
    *at += 1;
    if matches!(p.get(*at), Some(b'?' | b'*' | b'+' | b'{')) {
        return None; // lazy (different matches) or a repeated repetition
    }
    match range {
        (min, Some(max)) if min > max => None,
        range => Some(range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_lite::RegexBuilder;

    #[test]
    fn plain_sequences_are_read_and_the_rest_refused() {
        for read in [r"\b\d{3}-\d{2}-\d{4}\b", r"TCK-\d+", r"sk-[a-zA-Z0-9]{20,40}", r"a?b*c", r"x{0}y", r"é\d", r"\Bq"]
        {
            assert!(ShiftAnd::of(read, false).is_some(), "{read}");
        }
        for refused in [
            r"a|b",
            r"(ab)",
            r"^a",
            r"a$",
            r".a",
            r"\Da",
            r"[^a]",
            r"[é]",
            r"a+?",
            r"a??",
            r"a\bb",
            r"\b{start}a",
            r"\<a",
            r"a?",
            r"a*",
            r"",
            r"\pL",
            r"\x41",
            r"é+",
            r"a{2,1}",
            r"a{1000}",
            &"a".repeat(65),
        ] {
            assert_eq!(ShiftAnd::of(refused, false), None, "{refused}");
        }
        assert_eq!(ShiftAnd::of("é", true), None, "non-ASCII under (?i) is not read");
        assert!(ShiftAnd::of(&"a".repeat(64), false).is_some());
    }

    /// Differential: random patterns of the readable kind over a small alphabet, random texts;
    /// `is_match` and every match of `find_iter` agree with regex-lite.
    #[test]
    fn matches_agree_with_regex_lite() {
        let mut next = crate::test_rng(0x2545_F491_4F6C_DD1Du64);
        let atoms = ["a", "b", "-", r"\d", r"\w", r"\s", "[ab]", "[a-c1]", "é", "A", r"\."];
        let quantifiers = ["", "", "", "?", "*", "+", "{2}", "{0,2}", "{1,3}", "{2,}"];
        let edges = ["", "", r"\b", r"\B"];
        let alphabet = ["a", "b", "c", "A", "1", "2", "-", " ", "_", "é", ".", "\n", "日"];
        let mut compiled = 0;
        let mut found = 0;
        for _ in 0..3000 {
            let mut pattern = String::from(edges[next(edges.len())]);
            for _ in 0..1 + next(4) {
                let atom = atoms[next(atoms.len())];
                pattern.push_str(atom);
                if atom != "é" {
                    pattern.push_str(quantifiers[next(quantifiers.len())]);
                }
            }
            pattern.push_str(edges[next(edges.len())]);
            let ci = next(3) == 0;
            let Some(sa) = ShiftAnd::of(&pattern, ci) else { continue };
            compiled += 1;
            let regex = RegexBuilder::new(&pattern).case_insensitive(ci).build().unwrap();
            for _ in 0..40 {
                let text: String = (0..next(24)).map(|_| alphabet[next(alphabet.len())]).collect();
                assert_eq!(sa.is_match(&text), regex.is_match(&text), "{pattern} (ci {ci}) on {text:?}");
                let ours: Vec<_> = sa.find_iter(&text).collect();
                let theirs: Vec<_> = regex.find_iter(&text).map(|m| (m.start(), m.end())).collect();
                found += ours.len();
                assert_eq!(ours, theirs, "{pattern} (ci {ci}) on {text:?}");
            }
        }
        assert!(compiled > 1500 && found > 10_000, "only {compiled} patterns read, {found} matches");
    }

    #[test]
    fn long_texts_are_scanned_in_one_pass() {
        let ssn = ShiftAnd::of(r"\b\d{3}-\d{2}-\d{4}\b", true).unwrap();
        let groups = "1-2 ".repeat(50_000);
        assert!(!ssn.is_match(&groups));
        assert!(ssn.is_match(&format!("{groups}123-45-6789")));
        assert!(!ssn.is_match(&format!("{groups}123-45-67890")));
        let ticket = ShiftAnd::of(r"TCK-\d+", false).unwrap();
        let text = "TCK-12 ".repeat(1000);
        let spans: Vec<_> = ticket.find_iter(&text).collect();
        assert_eq!(spans.len(), 1000);
        assert_eq!(spans[999], (6993, 6999));
    }
}

//! The spans a redaction replaces: each detector's finds merged into those kept so far, and
//! the text rewritten with their placeholders, compiled for speed (at the gateway's size
//! optimization, 33k ticket ids cost ~90 instructions a span in these two steps alone).

/// A span kept for replacement: `(start, end, index of the rule that found it)`.
pub type Span = (usize, usize, usize);

/// Sets `out` to `kept` plus those of `found` (sorted by start) that overlap nothing kept
/// before them, tagged with `index`: earlier rules win overlaps. One pass, so a text with many
/// matches stays linear.
pub fn merge(kept: &[Span], found: &[(usize, usize)], index: usize, out: &mut Vec<Span>) {
    out.clear();
    out.reserve(kept.len() + found.len());
    if kept.is_empty() {
        // The usual case (one rule finds something): only the found spans to keep apart.
        for &(start, end) in found {
            if out.last().is_none_or(|&(_, e, _)| e <= start) {
                out.push((start, end, index));
            }
        }
        return;
    }
    let mut next = kept.iter().copied().peekable();
    for &(start, end) in found {
        while let Some(k) = next.next_if(|k| k.0 < start) {
            out.push(k);
        }
        let clear_before = out.last().is_none_or(|&(_, e, _)| e <= start);
        let clear_after = next.peek().is_none_or(|&(s, _, _)| s >= end);
        if clear_before && clear_after {
            out.push((start, end, index));
        }
    }
    out.extend(next);
}

/// Pieces of up to this many bytes are copied as this many (see [`replace`]).
const WIDE: usize = 16;

/// A redaction's placeholders, by rule index; each also followed by [`WIDE`] bytes of padding
/// (to be copied wide) once a text has many spans.
pub struct Placeholders<'a> {
    texts: Vec<&'a str>,
    padded: std::cell::OnceCell<Vec<Vec<u8>>>,
}

impl<'a> Placeholders<'a> {
    pub fn new(texts: Vec<&'a str>) -> Placeholders<'a> {
        Placeholders { texts, padded: std::cell::OnceCell::new() }
    }

    fn padded(&self) -> &[Vec<u8>] {
        self.padded.get_or_init(|| {
            (self.texts.iter())
                .map(|text| {
                    let mut padded = text.as_bytes().to_vec();
                    padded.resize(text.len() + WIDE, 0);
                    padded
                })
                .collect()
        })
    }
}

/// `text` with each of `spans` (sorted, apart, on character boundaries) replaced by
/// `placeholders[index]`, written into one allocation of the exact size (with many spans,
/// plus [`WIDE`] bytes). Many spans have their pieces of up to [`WIDE`] bytes (a placeholder,
/// the gap between two ticket ids) copied as [`WIDE`] bytes, the excess overwritten by the
/// next piece or cut at the end: a copy of fixed size is two moves, one of any size a call to
/// `memcpy` (33k ticket ids: ~25 instructions a span saved). That costs ~300 instructions a
/// text (the buffer cleared, the result checked for UTF-8), more than few spans save.
pub fn replace(text: &str, spans: &[Span], placeholders: &Placeholders<'_>) -> String {
    let texts = &placeholders.texts;
    let len = spans.iter().fold(text.len(), |len, &(start, end, index)| len - (end - start) + texts[index].len());
    let mut at = 0;
    if spans.len() < MANY {
        let mut out = String::with_capacity(len);
        for &(start, end, index) in spans {
            out.push_str(&text[at..start]);
            out.push_str(texts[index]);
            at = end;
        }
        out.push_str(&text[at..]);
        return out;
    }
    let mut out = vec![0; len + WIDE];
    let mut written = 0;
    let bytes = text.as_bytes();
    let padded = placeholders.padded();
    for &(start, end, index) in spans {
        put(&mut out, &mut written, &bytes[at..], start - at);
        put(&mut out, &mut written, &padded[index], texts[index].len());
        at = end;
    }
    put(&mut out, &mut written, &bytes[at..], bytes.len() - at);
    out.truncate(written);
    // Whole characters copied in order: always UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Spans from which [`replace`] copies pieces wide.
const MANY: usize = 16;

/// Copies the first `n` bytes of `from` to `out` at `*written`, wide when they are few and
/// `from` has [`WIDE`] bytes to read (`out` has [`WIDE`] bytes to spare past the end).
fn put(out: &mut [u8], written: &mut usize, from: &[u8], n: usize) {
    let at = *written;
    if n <= WIDE && from.len() >= WIDE {
        out[at..at + WIDE].copy_from_slice(&from[..WIDE]);
    } else {
        out[at..at + n].copy_from_slice(&from[..n]);
    }
    *written = at + n;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_spans_keep_the_earlier_ones_and_touching_is_not_overlapping() {
        let mut out = vec![(9, 9, 9)]; // overwritten
        merge(&[(0, 5, 0), (10, 15, 0)], &[(3, 4), (5, 10), (9, 11), (12, 20), (20, 22), (21, 23)], 1, &mut out);
        assert_eq!(out, vec![(0, 5, 0), (5, 10, 1), (10, 15, 0), (20, 22, 1)]);
        merge(&[], &[(1, 2), (1, 3)], 2, &mut out);
        assert_eq!(out, vec![(1, 2, 2)]);
    }

    /// `text` with `spans` replaced, piece by piece.
    fn replace_by_pieces(text: &str, spans: &[Span], placeholders: &[&str]) -> String {
        let mut out = String::new();
        let mut at = 0;
        for &(start, end, index) in spans {
            out.push_str(&text[at..start]);
            out.push_str(placeholders[index]);
            at = end;
        }
        out + &text[at..]
    }

    /// Few spans or many (copied wide), the text is what copying piece by piece gives: short
    /// and long gaps and placeholders, spans at either end, multi-byte characters.
    #[test]
    fn replaced_text_is_written_as_piece_by_piece() {
        let placeholders = ["", "[X]", "[SIXTEEN BYTES!]", "[SEVENTEEN BYTES!]", "[A MUCH LONGER PLACEHOLDER]"];
        let wide = Placeholders::new(placeholders.to_vec());
        let mut next = crate::test_rng(3);
        let mut copied_wide = 0;
        for _ in 0..5_000 {
            let chars: Vec<char> = (0..next(120)).map(|_| ['a', ' ', 'é', '日', '1'][next(5)]).collect();
            let text: String = chars.iter().collect();
            let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let mut spans = Vec::new();
            let mut from = 0;
            while from < bounds.len() && next(12) > 0 {
                let start = from + next(4.min(bounds.len() - from));
                let end = start + next(8.min(bounds.len() - start));
                spans.push((bounds[start], bounds[end], next(placeholders.len())));
                from = end + usize::from(end == start);
            }
            let out = replace(&text, &spans, &wide);
            assert_eq!(out, replace_by_pieces(&text, &spans, &placeholders), "{text:?} {spans:?}");
            let spare = if spans.len() < MANY { 0 } else { WIDE };
            assert_eq!(out.capacity(), out.len() + spare, "one allocation");
            copied_wide += usize::from(spare > 0);
        }
        assert!((400..4600).contains(&copied_wide), "both ways are tried: {copied_wide} wide");
    }
}

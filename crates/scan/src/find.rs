//! ASCII case-insensitive substring search, for the guard's literal deny rules and the
//! literal prefilter of its regexes: candidates are found with `memchr2` on the needle's first
//! byte in both cases (vectorized where the target has it), then compared.

/// Whether `hay` contains `needle`, ASCII letters compared case-insensitively.
pub fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else { return false };
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut at = 0;
    while hay.len() - at >= needle.len() {
        let Some(offset) = memchr::memchr2(lower, upper, &hay[at..=hay.len() - needle.len()]) else { return false };
        let start = at + offset;
        if hay[start..start + needle.len()].eq_ignore_ascii_case(needle) {
            return true;
        }
        at = start + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::contains_ascii_ci;

    #[test]
    fn finds_needles_in_any_case_and_nothing_else() {
        assert!(contains_ascii_ci(b"tell me about PROJECT Bluebird please", b"project bluebird"));
        assert!(contains_ascii_ci(b"project bluebird", b"project bluebird"));
        assert!(contains_ascii_ci(b"xx--9ab", b"9AB"));
        assert!(!contains_ascii_ci(b"project bluebir", b"project bluebird"));
        assert!(!contains_ascii_ci(b"pppppppppp", b"pq"));
        assert!(!contains_ascii_ci(b"", b"a"));
        assert!(!contains_ascii_ci(b"abc", b""));
        assert!(contains_ascii_ci("naïve PROJECT x".as_bytes(), b"project"));
    }
}

//! Pieces of regex-lite's pattern syntax that the pattern readers share (`windows`, `shift_and`):
//! byte sets, Perl classes, bracketed classes and escapes. Everything is ASCII, as in
//! regex-lite: `\d`, `\w`, `\s` and `\b` know no other letters or digits.

/// A set of bytes, indexed by byte.
pub(crate) type ByteSet = [bool; 256];

pub(crate) fn set(bytes: impl IntoIterator<Item = u8>) -> ByteSet {
    let mut s = [false; 256];
    for b in bytes {
        s[usize::from(b)] = true;
    }
    s
}

/// Every byte that can start a character not in the ASCII set `members`: the complement of a
/// class (`\D`, `[^...]`, `.`).
pub(crate) fn complement(members: &ByteSet) -> ByteSet {
    let mut s = [false; 256];
    for b in 0..256 {
        s[b] = if b < 0x80 { !members[b] } else { b >= 0xC0 };
    }
    s
}

pub(crate) fn fold_case(mut s: ByteSet) -> ByteSet {
    for b in b'a'..=b'z' {
        let (lower, upper) = (usize::from(b), usize::from(b.to_ascii_uppercase()));
        let either = s[lower] || s[upper];
        s[lower] = either;
        s[upper] = either;
    }
    s
}

/// `\w` and the word side of `\b`.
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    WORD[usize::from(b)]
}

static WORD: ByteSet = {
    let mut s = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        s[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    s
};

/// The ASCII bytes of a one-character escape: a Perl class (`\d`, `\w`, `\s`) or a control
/// character; `None` for any other escape.
pub(crate) fn escaped_set(e: u8) -> Option<ByteSet> {
    Some(match e {
        b'd' => set(b'0'..=b'9'),
        b'w' => set((0..=255u8).filter(|&b| is_word(b))),
        b's' => set([b'\t', b'\n', 0x0B, 0x0C, b'\r', b' ']),
        b'n' => set([b'\n']),
        b't' => set([b'\t']),
        b'r' => set([b'\r']),
        b'f' => set([0x0C]),
        b'v' => set([0x0B]),
        _ => return None,
    })
}

/// Whether `\e` is the literal character `e` in regex-lite (its meta and escapable characters:
/// ASCII punctuation except `<` and `>`, which are the word-start and word-end assertions).
pub(crate) fn escapes_itself(e: u8) -> bool {
    e.is_ascii_punctuation() && e != b'<' && e != b'>'
}

/// The length of the UTF-8 character starting with `first`.
pub(crate) fn utf8_len(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7F => Some(1),
        0xC0..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF7 => Some(4),
        _ => None,
    }
}

/// A bracketed class as read by [`class`].
pub(crate) struct Class {
    /// The ASCII members (case-folded under `i`).
    pub(crate) members: ByteSet,
    /// `[^...]`.
    pub(crate) negated: bool,
    /// Some member is not ASCII (then `members` lists only the ASCII ones).
    pub(crate) non_ascii: bool,
}

/// `[...]` at `p[*at]`: literals, ranges and Perl classes, possibly negated; anything fancier
/// (nested classes, set operations, POSIX classes) is not read. Moves `at` past the `]`.
pub(crate) fn class(p: &[u8], at: &mut usize, ci: bool) -> Option<Class> {
    *at += 1;
    let negated = p.get(*at) == Some(&b'^');
    if negated {
        *at += 1;
    }
    let mut members = [false; 256];
    let mut non_ascii = false;
    let mut first_item = true;
    loop {
        let c = *p.get(*at)?;
        if c == b']' && !first_item {
            *at += 1;
            break;
        }
        first_item = false;
        if c == b'[' || p[*at..].starts_with(b"&&") || p[*at..].starts_with(b"--") {
            return None;
        }
        let low = match c {
            b'\\' => {
                let e = *p.get(*at + 1)?;
                *at += 2;
                if !escapes_itself(e) {
                    for (m, b) in members.iter_mut().zip(escaped_set(e)?) {
                        *m |= b;
                    }
                    continue;
                }
                e
            }
            c => {
                *at += utf8_len(c)?;
                c
            }
        };
        // A range `low-high` (a `-` before `]` is a literal).
        if p.get(*at) == Some(&b'-') && p.get(*at + 1).is_some_and(|&n| n != b']') {
            *at += 1;
            let high = *p.get(*at)?;
            if high == b'\\' || high == b'[' {
                return None;
            }
            *at += utf8_len(high)?;
            if low >= 0x80 || high >= 0x80 {
                non_ascii = true;
                for m in members.iter_mut().take(0x80).skip(usize::from(low.min(0x80))) {
                    *m = true;
                }
            } else {
                if low > high {
                    return None;
                }
                for b in low..=high {
                    members[usize::from(b)] = true;
                }
            }
        } else if low >= 0x80 {
            non_ascii = true;
        } else {
            members[usize::from(low)] = true;
        }
    }
    let members = if ci { fold_case(members) } else { members };
    Some(Class { members, negated, non_ascii })
}

//! Small text helpers shared across layers.

/// Percent-decodes a URL path segment or query component; `+` means a space in queries only.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Bytes written in place, not pushed: at opt-level "z" each `String::push` or
    // `extend_from_slice` stays a call (~50 instructions a byte of input, ~1% of a request
    // that hashes its key). Pairs, not indices: `out[2 * i]` kept two bounds checks a byte.
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [high, low] = pair {
            *high = DIGITS[usize::from(b >> 4)];
            *low = DIGITS[usize::from(b & 15)];
        }
    }
    String::from_utf8(out).unwrap_or_default() // ASCII digits only: always valid
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Text from outside (an origin's error message, a host's connect error) with what could be a
/// credential or an internal address replaced: URLs → `[url]`, IPv4 addresses → `[host]`,
/// masked or key-shaped tokens (`sk-…`, `AIza…`, `ghp_…`, `***`, long letter-and-digit runs)
/// → `[redacted]`. Words keep their surrounding punctuation.
pub fn scrub(text: &str) -> String {
    const PREFIXES: &[&str] =
        &["sk-", "sk_", "pk-", "pk_", "rk-", "rk_", "AIza", "ghp_", "gho_", "ghs_", "xoxb-", "xoxp-", "key-", "hf_"];
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let edge =
            |c: char| matches!(c, '"' | '\'' | '(' | ')' | ',' | '.' | ';' | ':' | '[' | ']' | '{' | '}' | '<' | '>');
        let core = word.trim_matches(edge);
        let start = word.len() - word.trim_start_matches(edge).len();
        let keyish = core.len() >= 20
            && core.bytes().any(|b| b.is_ascii_digit())
            && core.bytes().any(|b| b.is_ascii_alphabetic())
            && core.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'/' | b'+' | b'.'));
        let ipv4 = {
            let host = core.split(':').next().unwrap_or("");
            let parts: Vec<&str> = host.split('.').collect();
            parts.len() == 4
                && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        };
        let replacement = if core.contains("://") {
            Some("[url]")
        } else if core.contains("***") || PREFIXES.iter().any(|p| core.starts_with(p)) || keyish {
            Some("[redacted]")
        } else if ipv4 {
            Some("[host]")
        } else {
            None
        };
        match replacement {
            Some(r) if !core.is_empty() => {
                out.push_str(&word[..start]);
                out.push_str(r);
                out.push_str(&word[start + core.len()..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

/// Simple lowercase mapping for ASCII, Latin-1, Latin Extended-A, Greek and basic Cyrillic,
/// computed rather than looked up: std's Unicode case tables cost ~20 KB of wasm. Other
/// characters map to themselves.
pub fn lower_char(c: char) -> char {
    let u = c as u32;
    let mapped = match u {
        0x41..=0x5A | 0xC0..=0xD6 | 0xD8..=0xDE | 0x391..=0x3A1 | 0x3A3..=0x3AB | 0x410..=0x42F => u + 0x20,
        0x400..=0x40F => u + 0x50,
        0x130 => 0x69,
        0x178 => 0xFF,
        0x386 => 0x3AC,
        0x388..=0x38A => u + 0x25,
        0x38C => 0x3CC,
        0x38E..=0x38F => u + 0x3F,
        0x100..=0x12F | 0x132..=0x137 | 0x14A..=0x177 if u.is_multiple_of(2) => u + 1,
        0x139..=0x148 | 0x179..=0x17E if !u.is_multiple_of(2) => u + 1,
        _ => u,
    };
    char::from_u32(mapped).unwrap_or(c)
}

/// The inverse of [`lower_char`] (plus `ı`, final `ς` and long `ſ`).
pub fn upper_char(c: char) -> char {
    let u = c as u32;
    let mapped = match u {
        0x61..=0x7A | 0xE0..=0xF6 | 0xF8..=0xFE | 0x3B1..=0x3C1 | 0x3C3..=0x3CB | 0x430..=0x44F => u - 0x20,
        0x450..=0x45F => u - 0x50,
        0xFF => 0x178,
        0x131 => 0x49,
        0x17F => 0x53,
        0x3C2 => 0x3A3,
        0x3AC => 0x386,
        0x3AD..=0x3AF => u - 0x25,
        0x3CC => 0x38C,
        0x3CD..=0x3CE => u - 0x3F,
        0x101..=0x12F | 0x133..=0x137 | 0x14B..=0x177 if !u.is_multiple_of(2) => u - 1,
        0x13A..=0x148 | 0x17A..=0x17E if u.is_multiple_of(2) => u - 1,
        _ => u,
    };
    char::from_u32(mapped).unwrap_or(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_percent_decoding() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a%20b+c", false), "a b+c");
        assert_eq!(truncate("h\u{e9}llo", 2), "h");
    }

    #[test]
    fn scrub_removes_credentials_and_addresses() {
        assert_eq!(
            scrub("Incorrect API key provided: sk-proj-Ab12****Yz9Q. See https://x.example/keys."),
            "Incorrect API key provided: [redacted]. See [url]."
        );
        assert_eq!(scrub("refused by 10.0.0.7:8080 (AIzaSyXYZ)"), "refused by [host] ([redacted])");
        assert_eq!(scrub("model gpt-4o-mini not found"), "model gpt-4o-mini not found");
        assert_eq!(scrub("token abc123def456ghi789jkl0"), "token [redacted]");
    }

    #[test]
    fn case_mapping_agrees_with_unicode() {
        for u in 0..0x500u32 {
            let Some(c) = char::from_u32(u) else { continue };
            let std_lower: Vec<char> = c.to_lowercase().collect();
            let std_upper: Vec<char> = c.to_uppercase().collect();
            if lower_char(c) != c && u != 0x130 {
                // (U+0130's full lowercase is two chars; its simple lowercase is `i`.)
                assert_eq!(std_lower, [lower_char(c)], "lower {c:?} U+{u:04X}");
            }
            if upper_char(c) != c {
                assert_eq!(std_upper, [upper_char(c)], "upper {c:?} U+{u:04X}");
            }
            // Full coverage of ASCII, Latin-1, Latin Extended-A, basic Greek and Cyrillic.
            let covered = u < 0x180 || (0x386..=0x3CE).contains(&u) || (0x400..=0x45F).contains(&u);
            if covered && std_lower.len() == 1 && u != 0x130 {
                assert_eq!(lower_char(c), std_lower[0], "lower {c:?} U+{u:04X}");
            }
            if covered && std_upper.len() == 1 && !matches!(u, 0xB5 | 0x390 | 0x3B0) {
                assert_eq!(upper_char(c), std_upper[0], "upper {c:?} U+{u:04X}");
            }
        }
    }
}

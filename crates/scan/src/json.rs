//! JSON written straight into an output buffer: strings for the bodies built per stream chunk,
//! and whole values for every body the gateway writes. serde_json's own code, instantiated
//! here so it is compiled for speed (generic code is compiled in the crate that instantiates
//! it; in the gateway, built for size, or through `Display`'s formatter, writing a request of
//! 5,000 short messages cost ~58 instructions a byte).

/// Appends `s` as a JSON string (quotes and escapes as serde_json writes them).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(out, s);
}

/// Appends `n` in decimal (serde_json's integer writer, without `format!`'s machinery).
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &n);
}

/// Appends `value` as JSON, the bytes of `serde_json::to_vec`.
pub fn write_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    // Writing into a Vec cannot fail, and a `Value` always serializes (its keys are strings).
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for s in ["", "plain", "quote \" backslash \\ newline \n tab \t", "\u{1}\u{1f}", "é 日本 🚀"] {
            let mut out = b"x".to_vec();
            super::write_str(&mut out, s);
            assert_eq!(&out[1..], serde_json::to_string(s).unwrap().as_bytes(), "{s:?}");
        }
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            super::write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}

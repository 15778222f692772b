//! JSON strings written straight into an output buffer, for the bodies built per stream chunk
//! (serde_json's escaping, instantiated here so it is compiled for speed).

/// Appends `s` as a JSON string (quotes and escapes as serde_json writes them).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(out, s);
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
    }
}

//! Deterministic embeddings derived from SHA-256 of the input text.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Number of dimensions when the caller does not ask for a size.
pub const DEFAULT_DIMENSIONS: usize = 8;
/// Upper bound on requested dimensions, to keep responses small.
pub const MAX_DIMENSIONS: usize = 4096;

/// An embedding of `dimensions` floats in `[-1, 1]`.
///
/// The first 8 values come from `sha256(text)` read as big-endian `u32`s;
/// further values (when more dimensions are asked for) come from
/// `sha256(text || block_index_le)`.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.clamp(1, MAX_DIMENSIONS);
    let mut values = Vec::with_capacity(dimensions);
    let mut block: u32 = 0;
    while values.len() < dimensions {
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        if block > 0 {
            hasher.update(block.to_le_bytes());
        }
        let digest = hasher.finalize();
        for chunk in digest.chunks_exact(4) {
            if values.len() == dimensions {
                break;
            }
            let raw = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            values.push((f64::from(raw) / f64::from(u32::MAX) * 2.0 - 1.0) as f32);
        }
        block += 1;
    }
    values
}

/// The values as a JSON array, each written with the shortest decimal that
/// round-trips as an `f32` (rather than the `f64` widening's long tail).
pub fn to_json(values: &[f32]) -> Value {
    values
        .iter()
        .map(|v| {
            let short: f64 = v.to_string().parse().unwrap_or(f64::from(*v));
            Value::from(short)
        })
        .collect()
}

/// OpenAI's `encoding_format: "base64"`: little-endian `f32`s, base64-encoded.
pub fn to_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64(&bytes)
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let a = embedding("hello", DEFAULT_DIMENSIONS);
        assert_eq!(a.len(), 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("hello!", 8));
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn longer_vectors_extend_the_default_one() {
        let long = embedding("hello", 20);
        assert_eq!(long.len(), 20);
        assert_eq!(&long[..8], embedding("hello", 8).as_slice());
    }

    #[test]
    fn first_value_matches_the_digest() {
        // sha256("") starts with e3b0c442.
        let expected = (f64::from(0xe3b0_c442u32) / f64::from(u32::MAX) * 2.0 - 1.0) as f32;
        assert_eq!(embedding("", 8)[0], expected);
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(to_base64(&[1.0]), "AACAPw==");
    }

    #[test]
    fn json_values_are_short() {
        assert_eq!(to_json(&[0.1f32, -0.5]).to_string(), "[0.1,-0.5]");
    }
}

//! Public-key signatures with SHA-256 (the `Signatures` port in ports/mod.rs, its key type and
//! its RustCrypto implementation here): RS256 (RSASSA-PKCS1-v1_5) and ES256 (ECDSA on P-256),
//! for verifying JWTs (features/identity) and signing Google service-account assertions
//! (providers/google_auth).
//!
//! A port, not a library call, because the worker has the runtime's WebCrypto
//! (`crypto.subtle`): it ships no RSA or P-256 code of its own (RustCrypto's `rsa`, `p256`,
//! `num-bigint-dig` and their encoders are ~100 KB of the wasm's code) and verifies in native
//! code rather than in bignum arithmetic compiled to wasm. Every other host (Spin, native,
//! tests) keeps the port's defaults, which call [`rustcrypto`] here (the `rustcrypto` feature);
//! the worker is built without that feature and implements both methods itself.

/// A public key from an issuer's JWKS, as its JWK gives it (big-endian bytes). Only the
/// shape is checked where one is made: a key the signer cannot use verifies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RS256: modulus and public exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the point's affine coordinates.
    P256 { x: [u8; 32], y: [u8; 32] },
}

impl PublicKey {
    /// The key as a JWK with its public members only (what WebCrypto's `importKey` takes).
    pub fn jwk(&self) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        match self {
            PublicKey::Rsa { n, e } => {
                format!(r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#, URL_SAFE_NO_PAD.encode(n), URL_SAFE_NO_PAD.encode(e))
            }
            PublicKey::P256 { x, y } => format!(
                r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x),
                URL_SAFE_NO_PAD.encode(y)
            ),
        }
    }
}

/// The port's implementation in Rust (RustCrypto), for every host but the worker.
#[cfg(feature = "rustcrypto")]
pub mod rustcrypto {
    use rsa::pkcs1v15::SigningKey;
    use rsa::rand_core::{CryptoRng, RngCore};
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
    use sha2::{Digest, Sha256};

    use crate::gateway::ports::signatures::PublicKey;
    use crate::gateway::util::der;

    pub fn verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        match key {
            PublicKey::Rsa { n, e } => {
                let Ok(key) = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e)) else {
                    return false;
                };
                key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message), signature).is_ok()
            }
            PublicKey::P256 { x, y } => {
                use p256::ecdsa::signature::Verifier;
                let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
                // Refuses points not on the curve (and the identity).
                let Ok(key) = p256::ecdsa::VerifyingKey::from_encoded_point(&point) else { return false };
                // JWS ECDSA signatures are r || s, 32 bytes each (RFC 7518 §3.4), not DER.
                let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else { return false };
                key.verify(message, &signature).is_ok()
            }
        }
    }

    /// `seed` seeds the RSA blinding (PKCS#1 v1.5 signatures are deterministic: blinding
    /// changes nothing but timing).
    pub fn sign_rs256(pkcs8: &[u8], message: &[u8], seed: [u8; 32]) -> Option<Vec<u8>> {
        let ints = der::pkcs8_rsa_inner(pkcs8).and_then(der::pkcs1_integers)?;
        let [_, n, e, d, p, q, ..] = ints.map(BigUint::from_bytes_be);
        let key = RsaPrivateKey::from_components(n, e, d, vec![p, q]).ok()?;
        let signature = SigningKey::<Sha256>::new(key).try_sign_with_rng(&mut HashDrbg::new(seed), message).ok()?;
        Some(signature.to_vec())
    }

    /// A deterministic random bit generator (SHA-256 in counter mode over a 32-byte seed from
    /// the host's CSPRNG), for RSA blinding: `rsa` wants a `CryptoRng`, the ports hand out
    /// bytes.
    pub(crate) struct HashDrbg {
        seed: [u8; 32],
        counter: u64,
        block: [u8; 32],
        used: usize,
    }

    impl HashDrbg {
        pub(crate) fn new(seed: [u8; 32]) -> Self {
            HashDrbg { seed, counter: 0, block: [0; 32], used: 32 }
        }
    }

    impl RngCore for HashDrbg {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }

        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }

        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for byte in dest {
                if self.used == self.block.len() {
                    let mut hasher = Sha256::new();
                    hasher.update(self.seed);
                    hasher.update(self.counter.to_le_bytes());
                    self.block = hasher.finalize().into();
                    self.counter += 1;
                    self.used = 0;
                }
                *byte = self.block[self.used];
                self.used += 1;
            }
        }

        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl CryptoRng for HashDrbg {}

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::gateway::features::identity::testing;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;

        /// What the worker's WebCrypto gets (`importKey("jwk", …)`) and what RustCrypto
        /// verifies agree: the test provider's keys, their JWK text, a tampered signature,
        /// a point off the curve, a key of the wrong type.
        #[test]
        fn verifies_the_test_providers_tokens_and_nothing_else() {
            let claims = testing::claims_at(1_700_000_000_000, "gw");
            let (rsa, ec) = (testing::rsa_public(), testing::ec_public());
            assert_eq!(
                ec.jwk(),
                format!(r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#, testing::EC_X, testing::EC_Y)
            );
            assert_eq!(rsa.jwk(), format!(r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#, testing::RSA_N, testing::RSA_E));
            for (token, key, other) in
                [(testing::sign_rs256(&claims, None), &rsa, &ec), (testing::sign_es256(&claims, None), &ec, &rsa)]
            {
                let (input, signature) = token.rsplit_once('.').unwrap();
                let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
                assert!(verify(key, input.as_bytes(), &signature));
                assert!(!verify(other, input.as_bytes(), &signature));
                assert!(!verify(key, format!("{input}x").as_bytes(), &signature));
                signature[5] ^= 1;
                assert!(!verify(key, input.as_bytes(), &signature));
            }
            let PublicKey::P256 { x, .. } = ec else { unreachable!() };
            let off_curve = PublicKey::P256 { x, y: x };
            let token = testing::sign_es256(&claims, None);
            let (input, signature) = token.rsplit_once('.').unwrap();
            assert!(!verify(&off_curve, input.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).unwrap()));
        }

        #[test]
        fn drbg_streams_are_seeded() {
            let (mut a, mut b) = (HashDrbg::new([1; 32]), HashDrbg::new([1; 32]));
            let mut x = [0u8; 100];
            let mut y = [0u8; 100];
            a.fill_bytes(&mut x);
            b.fill_bytes(&mut y[..33]);
            b.fill_bytes(&mut y[33..]);
            assert_eq!(x, y);
            assert_ne!(HashDrbg::new([2; 32]).next_u64(), HashDrbg::new([1; 32]).next_u64());
        }
    }
}

//! A minimal DER reader and writer for RSA private keys (PKCS#1 `RSAPrivateKey` and its PKCS#8
//! `PrivateKeyInfo` wrapping), instead of the `der`/`pkcs8` crates (about 30 KB of wasm for
//! what is a sequence of integers). Shape only: whether the numbers make a key is for the
//! signer (RustCrypto or WebCrypto) to say.

/// 1.2.840.113549.1.1.1 (rsaEncryption).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const NULL: u8 = 0x05;

/// `(tag, contents, rest)` of the DER item at the start of `input`.
pub fn item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes.iter().fold(0usize, |len, b| len << 8 | usize::from(*b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The nine integers of a two-prime PKCS#1 `RSAPrivateKey { version 0, n, e, d, p, q, dp, dq,
/// qinv }`, big-endian as written.
pub fn pkcs1_integers(der: &[u8]) -> Option<[&[u8]; 9]> {
    let (SEQUENCE, mut rest, _) = item(der)? else { return None };
    let mut ints = [&[][..]; 9];
    for slot in &mut ints {
        let (INTEGER, int, after) = item(rest)? else { return None };
        *slot = int;
        rest = after;
    }
    (rest.is_empty() && ints[0] == [0]).then_some(ints)
}

/// The PKCS#1 key inside a PKCS#8 `PrivateKeyInfo { version, AlgorithmIdentifier {
/// rsaEncryption, NULL }, OCTET STRING }`.
pub fn pkcs8_rsa_inner(der: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, info, _) = item(der)? else { return None };
    let (INTEGER, _version, rest) = item(info)? else { return None };
    let (SEQUENCE, algorithm, rest) = item(rest)? else { return None };
    let (OID, oid, _) = item(algorithm)? else { return None };
    let (OCTET_STRING, key, _) = item(rest)? else { return None };
    (oid == RSA_ENCRYPTION).then_some(key)
}

/// A PKCS#1 key wrapped as PKCS#8 (the one private-key form WebCrypto imports).
pub fn pkcs8_of_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    let mut algorithm = Vec::with_capacity(15);
    push_item(&mut algorithm, OID, RSA_ENCRYPTION);
    push_item(&mut algorithm, NULL, &[]);
    let mut info = Vec::with_capacity(pkcs1.len() + 32);
    push_item(&mut info, INTEGER, &[0]);
    push_item(&mut info, SEQUENCE, &algorithm);
    push_item(&mut info, OCTET_STRING, pkcs1);
    let mut out = Vec::with_capacity(info.len() + 6);
    push_item(&mut out, SEQUENCE, &info);
    out
}

fn push_item(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKCS#1 body of nine small integers (shape only).
    fn pkcs1(version: u8) -> Vec<u8> {
        let mut ints = Vec::new();
        push_item(&mut ints, INTEGER, &[version]);
        for i in 1..9u8 {
            push_item(&mut ints, INTEGER, &[i; 200]); // long enough for multi-byte lengths
        }
        let mut out = Vec::new();
        push_item(&mut out, SEQUENCE, &ints);
        out
    }

    #[test]
    fn wraps_and_unwraps() {
        let key = pkcs1(0);
        let ints = pkcs1_integers(&key).unwrap();
        assert_eq!((ints[0], ints[8].len(), ints[8][0]), (&[0u8][..], 200, 8));
        let wrapped = pkcs8_of_pkcs1(&key);
        assert_eq!(pkcs8_rsa_inner(&wrapped), Some(&key[..]));
        assert!(pkcs1_integers(&pkcs1(1)).is_none(), "only version 0 (two primes)");
    }

    #[test]
    fn hostile_der_never_panics() {
        let wrapped = pkcs8_of_pkcs1(&pkcs1(0));
        for cut in 0..wrapped.len() {
            assert!(pkcs8_rsa_inner(&wrapped[..cut]).and_then(pkcs1_integers).is_none());
        }
        for at in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[at] ^= 0x5a;
            let _ = pkcs8_rsa_inner(&bad).and_then(pkcs1_integers);
        }
        assert!(item(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(item(&[0x30, 0x80]).is_none());
    }
}

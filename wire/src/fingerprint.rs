//! The keyed fingerprint of a secret, shared by the agent (which replaces secrets with
//! it) and the collector (`tapline-collector fingerprint`, so an operator holding a
//! leaked key can look for it): the first 64 bits of a keyed BLAKE3 hash.

#[derive(Debug, thiserror::Error)]
#[error("fingerprint_key: `hex:` must be followed by 64 hex digits")]
pub struct BadKey;

/// The 32-byte key of a configured `fingerprint_key`: `hex:` and 64 hex digits, or any
/// passphrase (stretched with BLAKE3's key derivation).
pub fn key_from_config(key: &str) -> Result<[u8; 32], BadKey> {
    match key.strip_prefix("hex:") {
        Some(hex) => {
            if hex.len() != 64 {
                return Err(BadKey);
            }
            let mut k = [0u8; 32];
            for (i, b) in k.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or(BadKey)?, 16)
                    .map_err(|_| BadKey)?;
            }
            Ok(k)
        }
        None => Ok(blake3::derive_key(
            "tapline 2026 fingerprint key",
            key.as_bytes(),
        )),
    }
}

pub fn fingerprint(key: &[u8; 32], secret: &[u8]) -> u64 {
    let h = blake3::keyed_hash(key, secret);
    let b = h.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_passphrase_keys() {
        let k = key_from_config(&format!("hex:{}", "ab".repeat(32))).unwrap();
        assert_eq!(k, [0xab; 32]);
        assert!(key_from_config("hex:abc").is_err());
        let p = key_from_config("correct horse").unwrap();
        assert_ne!(fingerprint(&p, b"sk_live_1"), fingerprint(&k, b"sk_live_1"));
        assert_eq!(fingerprint(&p, b"x"), fingerprint(&p, b"x"));
    }
}

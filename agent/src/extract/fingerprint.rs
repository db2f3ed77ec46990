//! Keyed fingerprints of secrets. A secret never leaves the node: tokens, keys, session
//! ids and login names are replaced by the first 64 bits of a keyed BLAKE3 hash, so the
//! collector can tell that two events used the same credential without learning it.
//! Nodes configured with the same key give the same fingerprint to the same secret.

/// Hashes secrets with a node-wide key.
#[derive(Clone)]
pub struct Fingerprinter {
    key: [u8; 32],
    /// The key was drawn at random (no configured key): fingerprints differ between runs.
    pub ephemeral: bool,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fingerprinter")
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

pub use tapline_wire::fingerprint::BadKey;

impl Fingerprinter {
    /// From the configured key: `hex:` and 64 hex digits, or any passphrase (stretched
    /// with BLAKE3's key derivation). `None` draws a random key.
    pub fn new(key: Option<&str>) -> Result<Self, BadKey> {
        match key {
            None => Ok(Fingerprinter {
                key: random_key(),
                ephemeral: true,
            }),
            Some(k) => Ok(Fingerprinter {
                key: tapline_wire::fingerprint::key_from_config(k)?,
                ephemeral: false,
            }),
        }
    }

    pub fn fingerprint(&self, secret: &[u8]) -> u64 {
        tapline_wire::fingerprint::fingerprint(&self.key, secret)
    }
}

fn random_key() -> [u8; 32] {
    use std::io::Read;
    let mut k = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .is_err()
    {
        // No urandom: the clock and the address space layout are the best we have.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = format!("{t}{:p}", &k);
        k = blake3::hash(seed.as_bytes()).into();
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_fingerprint_other_key_other() {
        let a = Fingerprinter::new(Some("node secret")).unwrap();
        let b = Fingerprinter::new(Some("node secret")).unwrap();
        let c = Fingerprinter::new(Some("other")).unwrap();
        assert_eq!(a.fingerprint(b"tok"), b.fingerprint(b"tok"));
        assert_ne!(a.fingerprint(b"tok"), c.fingerprint(b"tok"));
        assert_ne!(a.fingerprint(b"tok"), a.fingerprint(b"tok2"));
        let hex = format!("hex:{}", "ab".repeat(32));
        assert!(Fingerprinter::new(Some(&hex)).is_ok());
        assert!(Fingerprinter::new(Some("hex:zz")).is_err());
        assert!(Fingerprinter::new(None).unwrap().ephemeral);
    }
}

//! JSON Web Tokens: the header and payload of a bearer token are read (bounded), the
//! configured claims kept, and the signature checked when a key is configured.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};

use super::config::JwtKey;

/// Longest token looked at; longer ones are opaque bearer tokens.
pub const MAX_TOKEN: usize = 8 << 10;
/// Longest claim value kept in clear.
pub const MAX_CLAIM: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `Some(true)`: a configured key verified the signature; `Some(false)`: keys are
    /// configured and none verified it; `None`: no key applies (unverified).
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token longer than {MAX_TOKEN} bytes")]
    TooLong,
    #[error("not three dot-separated parts")]
    Shape,
    #[error("a part is not base64url")]
    Base64,
    #[error("header or payload is not a JSON object")]
    Json,
}

/// Whether a bearer credential has the shape of a JWT (`xxx.yyy.zzz`, JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Base64)
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Json),
    }
}

pub fn parse(token: &str, keys: &KeySet) -> Result<Jwt, JwtError> {
    if token.len() > MAX_TOKEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let header = object(&b64(h)?)?;
    let claims = object(&b64(p)?)?;
    let verified = verify(&header, &token[..h.len() + 1 + p.len()], s, keys);
    Ok(Jwt {
        header,
        claims,
        verified,
    })
}

/// Keys that verify token signatures: HMAC secrets and RSA public keys (from a JWKS).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub hmac: Vec<JwtKey>,
    pub rsa: Vec<RsaKey>,
}

#[derive(Debug, Clone)]
pub struct RsaKey {
    pub kid: Option<String>,
    pub key: rsa::RsaPublicKey,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document (a JSON object with a `keys` array)")]
    Shape,
    #[error("key {0}: {1}")]
    Key(usize, String),
}

impl KeySet {
    pub fn is_empty(&self) -> bool {
        self.hmac.is_empty() && self.rsa.is_empty()
    }

    /// Adds the RSA keys of a JWKS document (`{"keys":[{"kty":"RSA","kid":…,"n":…,"e":…}]}`);
    /// keys of other types are skipped. Returns how many were added.
    pub fn add_jwks(&mut self, json: &str) -> Result<usize, JwksError> {
        let doc: Value = serde_json::from_str(json).map_err(|_| JwksError::Shape)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::Shape)?;
        let mut added = 0;
        for (i, k) in keys.iter().enumerate() {
            if k.get("kty").and_then(Value::as_str) != Some("RSA") {
                continue;
            }
            let part = |name: &str| -> Result<rsa::BigUint, JwksError> {
                let v = k
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| JwksError::Key(i, format!("no `{name}`")))?;
                Ok(rsa::BigUint::from_bytes_be(&b64(v).map_err(|_| {
                    JwksError::Key(i, format!("`{name}` is not base64url"))
                })?))
            };
            let key = rsa::RsaPublicKey::new(part("n")?, part("e")?)
                .map_err(|e| JwksError::Key(i, e.to_string()))?;
            self.rsa.push(RsaKey {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_string),
                key,
            });
            added += 1;
        }
        Ok(added)
    }
}

fn verify(header: &Map<String, Value>, signed: &str, sig: &str, keys: &KeySet) -> Option<bool> {
    if keys.is_empty() {
        return None;
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let applies = |k: &Option<String>| k.is_none() || k.as_deref() == kid;
    let hmac: Vec<&JwtKey> = keys.hmac.iter().filter(|k| applies(&k.kid)).collect();
    let rsa: Vec<&RsaKey> = keys.rsa.iter().filter(|k| applies(&k.kid)).collect();
    if hmac.is_empty() && rsa.is_empty() {
        return None;
    }
    let Ok(sig) = b64(sig) else {
        return Some(false);
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let ok = hmac
        .iter()
        .any(|k| hmac_ok(alg, k.secret.as_bytes(), signed, &sig))
        || rsa.iter().any(|k| rsa_ok(alg, &k.key, signed, &sig));
    Some(ok)
}

/// Checks an RS256/384/512 (PKCS#1 v1.5) signature.
fn rsa_ok(alg: &str, key: &rsa::RsaPublicKey, signed: &str, sig: &[u8]) -> bool {
    use rsa::signature::Verifier;
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
        return false;
    };
    let data = signed.as_bytes();
    match alg {
        "RS256" => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
            .verify(data, &sig)
            .is_ok(),
        "RS384" => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key.clone())
            .verify(data, &sig)
            .is_ok(),
        "RS512" => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key.clone())
            .verify(data, &sig)
            .is_ok(),
        _ => false,
    }
}

/// Checks an HMAC signature; "none" and algorithms without a configured key type never
/// verify.
fn hmac_ok(alg: &str, secret: &[u8], signed: &str, sig: &[u8]) -> bool {
    macro_rules! check {
        ($d:ty) => {
            match Hmac::<$d>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(signed.as_bytes());
                    mac.verify_slice(sig).is_ok()
                }
                Err(_) => false,
            }
        };
    }
    match alg {
        "HS256" => check!(sha2::Sha256),
        "HS384" => check!(sha2::Sha384),
        "HS512" => check!(sha2::Sha512),
        _ => false,
    }
}

/// A claim value as text: strings as they are, numbers and booleans printed, lists of
/// strings joined by spaces (`roles`); objects are not kept. Cut at [`MAX_CLAIM`].
pub fn claim_text(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    let mut end = s.len().min(MAX_CLAIM);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(s[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, claims: &str, key: &[u8]) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signed = format!("{}.{}", e.encode(header), e.encode(claims));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", e.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn claims_and_signature() {
        let t = token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"usr_1","tenant":"t_acme","roles":["admin","ops"],"exp":1800000000}"#,
            b"k1",
        );
        assert!(looks_like_jwt(&t));
        let key = |s: &str| KeySet {
            hmac: vec![JwtKey {
                kid: None,
                secret: s.into(),
            }],
            rsa: Vec::new(),
        };
        let j = parse(&t, &KeySet::default()).unwrap();
        assert_eq!(j.verified, None);
        assert_eq!(claim_text(&j.claims["roles"]).unwrap(), "admin ops");
        assert_eq!(claim_text(&j.claims["exp"]).unwrap(), "1800000000");
        assert_eq!(parse(&t, &key("k1")).unwrap().verified, Some(true));
        assert_eq!(parse(&t, &key("wrong")).unwrap().verified, Some(false));
        // alg=none never verifies.
        let none = token(r#"{"alg":"none"}"#, r#"{"sub":"x"}"#, b"k1");
        assert_eq!(parse(&none, &key("k1")).unwrap().verified, Some(false));
    }

    #[test]
    fn rs256_from_a_jwks() {
        let mut keys = KeySet::default();
        let n = keys.add_jwks(include_str!("testdata/jwks.json")).unwrap();
        assert_eq!(n, 1, "the EC key is skipped");
        let token = include_str!("testdata/rs256.jwt").trim();
        let j = parse(token, &keys).unwrap();
        assert_eq!(j.verified, Some(true));
        assert_eq!(claim_text(&j.claims["tenant"]).unwrap(), "t_initech");
        // A changed payload no longer verifies.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"usr_rsa","tenant":"t_other"}"#);
        parts[1] = &other;
        assert_eq!(
            parse(&parts.join("."), &keys).unwrap().verified,
            Some(false)
        );
        assert!(KeySet::default().add_jwks("[]").is_err());
    }

    #[test]
    fn hostile_tokens_are_refused() {
        assert_eq!(
            parse(&"eyJ".repeat(10_000), &KeySet::default()),
            Err(JwtError::TooLong)
        );
        assert_eq!(parse("eyJa.b", &KeySet::default()), Err(JwtError::Shape));
        assert_eq!(
            parse("eyJ!!.e30.x", &KeySet::default()),
            Err(JwtError::Base64)
        );
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let deep = format!("{}.{}.x", e.encode("{}"), e.encode("[".repeat(3000)));
        assert_eq!(parse(&deep, &KeySet::default()), Err(JwtError::Json));
    }
}

//! Redaction of the HTTP log: the values of credential headers, cookies and secret query
//! parameters are replaced by their keyed fingerprint, so the log can be kept and shared
//! like the events are.

use super::{ExtractConfig, Fingerprinter, listed};

/// Headers whose value is always a credential.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization"];
/// Query and form parameters that hold passwords or client secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
];

#[derive(Debug, Clone)]
pub struct Redactor {
    headers: Vec<String>,
    params: Vec<String>,
    fingerprinter: Fingerprinter,
    /// Lengths of the header names that may need redaction (most names are ruled out
    /// by their length alone).
    lengths: u128,
    /// The last secret and its fingerprint: keep-alive connections repeat the same one.
    last: std::cell::RefCell<Option<(Vec<u8>, u64)>>,
}

impl Redactor {
    pub fn new(config: &ExtractConfig, fingerprinter: Fingerprinter) -> Self {
        let headers: Vec<String> = CREDENTIAL_HEADERS
            .iter()
            .map(|s| s.to_string())
            .chain(config.api_key_headers.iter().cloned())
            .collect();
        let params = SECRET_PARAMS
            .iter()
            .map(|s| s.to_string())
            .chain(config.api_key_params.iter().cloned())
            .chain(config.token_params.iter().cloned())
            .collect();
        let lengths = headers
            .iter()
            .map(String::len)
            .chain([b"cookie".len(), b"set-cookie".len()])
            .filter(|&l| l < 128)
            .fold(0u128, |m, l| m | 1 << l);
        Redactor {
            headers,
            params,
            fingerprinter,
            lengths,
            last: std::cell::RefCell::new(None),
        }
    }

    fn mark(&self, secret: &[u8]) -> String {
        let mut last = self.last.borrow_mut();
        let fp = match &*last {
            Some((s, fp)) if s == secret => *fp,
            _ => {
                let fp = self.fingerprinter.fingerprint(secret);
                *last = Some((secret.to_vec(), fp));
                fp
            }
        };
        let mut out = String::with_capacity(21);
        out.push_str("[fp:");
        for i in (0..16).rev() {
            out.push(char::from(
                b"0123456789abcdef"[((fp >> (i * 4)) & 0xf) as usize],
            ));
        }
        out.push(']');
        out
    }

    /// The logged value of a header, when it must not be logged as sent.
    pub fn header(&self, name: &[u8], value: &[u8]) -> Option<String> {
        if name.len() >= 128 || self.lengths & (1 << name.len()) == 0 {
            return None;
        }
        if name.eq_ignore_ascii_case(b"cookie") {
            let parts: Vec<String> = value
                .split(|&b| b == b';')
                .map(|c| {
                    let c = crate::http::head::trim(c);
                    match c.iter().position(|&b| b == b'=') {
                        Some(i) => format!(
                            "{}={}",
                            String::from_utf8_lossy(&c[..i]),
                            self.mark(&c[i + 1..])
                        ),
                        None => self.mark(c),
                    }
                })
                .collect();
            return Some(parts.join("; "));
        }
        if name.eq_ignore_ascii_case(b"set-cookie") {
            let (first, attrs) = match value.iter().position(|&b| b == b';') {
                Some(i) => (&value[..i], &value[i..]),
                None => (value, &value[value.len()..]),
            };
            let cookie = match first.iter().position(|&b| b == b'=') {
                Some(i) => format!(
                    "{}={}",
                    String::from_utf8_lossy(&first[..i]),
                    self.mark(&first[i + 1..])
                ),
                None => self.mark(first),
            };
            return Some(format!("{cookie}{}", String::from_utf8_lossy(attrs)));
        }
        if listed(&self.headers, name) {
            let v = crate::http::head::trim(value);
            // Keep the scheme of an Authorization value: "Bearer [fp:…]".
            return Some(match v.iter().position(|&b| b == b' ') {
                Some(i)
                    if name.eq_ignore_ascii_case(b"authorization")
                        || name.eq_ignore_ascii_case(b"proxy-authorization") =>
                {
                    let mut out = String::from_utf8_lossy(&v[..=i]).into_owned();
                    out.push_str(&self.mark(crate::http::head::trim(&v[i + 1..])));
                    out
                }
                _ => self.mark(v),
            });
        }
        None
    }

    /// A request target with the values of secret query parameters replaced.
    pub fn target(&self, target: &[u8]) -> Option<Vec<u8>> {
        let q = target.iter().position(|&b| b == b'?')?;
        let mut changed = false;
        let mut out = target[..=q].to_vec();
        for (i, pair) in target[q + 1..].split(|&b| b == b'&').enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            match pair.iter().position(|&b| b == b'=') {
                Some(eq) if listed(&self.params, &super::form_decode(&pair[..eq])) => {
                    out.extend_from_slice(&pair[..=eq]);
                    out.extend_from_slice(self.mark(&pair[eq + 1..]).as_bytes());
                    changed = true;
                }
                _ => out.extend_from_slice(pair),
            }
        }
        changed.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_replaced() {
        let fp = Fingerprinter::new(Some("k")).unwrap();
        let r = Redactor::new(&ExtractConfig::default(), fp);
        let v = r.header(b"Authorization", b"Bearer abc.def.ghi").unwrap();
        assert!(v.starts_with("Bearer [fp:") && !v.contains("abc"));
        let v = r.header(b"Cookie", b"sid=s3cr3t; theme=dark").unwrap();
        assert!(v.starts_with("sid=[fp:") && !v.contains("s3cr3t") && !v.contains("dark"));
        let v = r
            .header(b"Set-Cookie", b"session=xyz123; Path=/; HttpOnly")
            .unwrap();
        assert!(v.ends_with("; Path=/; HttpOnly") && !v.contains("xyz123"));
        assert!(r.header(b"X-API-Key", b"sk_live_1").is_some());
        assert_eq!(r.header(b"Accept", b"*/*"), None);
        let t = r
            .target(b"/login?user=a&password=hunter2&api_key=k1")
            .unwrap();
        let t = String::from_utf8(t).unwrap();
        assert!(
            t.starts_with("/login?user=a&password=[fp:")
                && !t.contains("hunter2")
                && !t.contains("k1")
        );
        assert_eq!(r.target(b"/x?a=1"), None);
    }
}

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

/// What a header holds, for redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// `Authorization`-style: keep the scheme, redact the credential.
    Credential,
    /// A bare secret (API-key headers).
    Secret,
    /// `Cookie`: every value.
    Cookie,
    /// `Set-Cookie`: the value, attributes kept.
    SetCookie,
}

#[derive(Debug, Clone)]
pub struct Redactor {
    /// Sensitive header names (lower case) by length: most names are ruled out by their
    /// length, the rest by one comparison.
    by_len: Vec<Vec<(String, HeaderKind)>>,
    params: Vec<String>,
    fingerprinter: Fingerprinter,
    /// The last secret and its fingerprint: keep-alive connections repeat the same one.
    last: std::cell::RefCell<Option<(Vec<u8>, u64)>>,
}

impl Redactor {
    pub fn new(config: &ExtractConfig, fingerprinter: Fingerprinter) -> Self {
        let mut by_len: Vec<Vec<(String, HeaderKind)>> = vec![Vec::new(); 65];
        let names = CREDENTIAL_HEADERS
            .iter()
            .map(|s| (s.to_string(), HeaderKind::Credential))
            .chain(
                config
                    .api_key_headers
                    .iter()
                    .map(|s| (s.to_ascii_lowercase(), HeaderKind::Secret)),
            )
            .chain([
                ("cookie".to_string(), HeaderKind::Cookie),
                ("set-cookie".to_string(), HeaderKind::SetCookie),
            ]);
        for (name, kind) in names {
            if let Some(slot) = by_len.get_mut(name.len())
                && !slot.iter().any(|(n, _)| *n == name)
            {
                slot.push((name, kind));
            }
        }
        let params = SECRET_PARAMS
            .iter()
            .map(|s| s.to_string())
            .chain(config.api_key_params.iter().cloned())
            .chain(config.token_params.iter().cloned())
            .collect();
        Redactor {
            by_len,
            params,
            fingerprinter,
            last: std::cell::RefCell::new(None),
        }
    }

    /// Whether (and how) a header's value must be redacted.
    pub fn classify(&self, name: &[u8]) -> Option<HeaderKind> {
        self.by_len
            .get(name.len())?
            .iter()
            .find(|(n, _)| crate::http::head::eq_lowercase(name, n.as_bytes()))
            .map(|(_, k)| *k)
    }

    /// The fingerprint that stands for a secret in the log.
    pub fn fingerprint(&self, secret: &[u8]) -> u64 {
        let mut last = self.last.borrow_mut();
        match &*last {
            Some((s, fp)) if s == secret => *fp,
            _ => {
                let fp = self.fingerprinter.fingerprint(secret);
                *last = Some((secret.to_vec(), fp));
                fp
            }
        }
    }

    /// Appends `[fp:<16 hex digits>]` for a secret.
    pub fn write_mark(&self, secret: &[u8], out: &mut Vec<u8>) {
        let fp = self.fingerprint(secret);
        let mut mark = *b"[fp:0000000000000000]";
        for (i, digit) in mark[4..20].iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((fp >> ((15 - i) * 4)) & 0xf) as usize];
        }
        out.extend_from_slice(&mark);
    }

    /// Appends the logged form of a header value of `kind`; `text` writes bytes that came
    /// from the message (so the caller can escape them).
    pub fn write_value(
        &self,
        kind: HeaderKind,
        value: &[u8],
        out: &mut Vec<u8>,
        text: impl Fn(&mut Vec<u8>, &[u8]),
    ) {
        let trim = crate::http::head::trim;
        match kind {
            HeaderKind::Cookie => {
                for (i, c) in value.split(|&b| b == b';').enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"; ");
                    }
                    let c = trim(c);
                    match c.iter().position(|&b| b == b'=') {
                        Some(eq) => {
                            text(out, &c[..=eq]);
                            self.write_mark(&c[eq + 1..], out);
                        }
                        None => self.write_mark(c, out),
                    }
                }
            }
            HeaderKind::SetCookie => {
                let (first, attrs) = match value.iter().position(|&b| b == b';') {
                    Some(i) => (&value[..i], &value[i..]),
                    None => (value, &value[value.len()..]),
                };
                match first.iter().position(|&b| b == b'=') {
                    Some(eq) => {
                        text(out, &first[..=eq]);
                        self.write_mark(&first[eq + 1..], out);
                    }
                    None => self.write_mark(first, out),
                }
                text(out, attrs);
            }
            HeaderKind::Credential => {
                let v = trim(value);
                match v.iter().position(|&b| b == b' ') {
                    Some(i) => {
                        text(out, &v[..=i]);
                        self.write_mark(trim(&v[i + 1..]), out);
                    }
                    None => self.write_mark(v, out),
                }
            }
            HeaderKind::Secret => self.write_mark(trim(value), out),
        }
    }

    /// The logged value of a header, when it must not be logged as sent.
    pub fn header(&self, name: &[u8], value: &[u8]) -> Option<String> {
        let kind = self.classify(name)?;
        let mut out = Vec::new();
        self.write_value(kind, value, &mut out, |o, t| o.extend_from_slice(t));
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Whether a (form-encoded) parameter name is one whose value is redacted.
    fn secret_param(&self, raw: &[u8]) -> bool {
        if raw.iter().any(|&b| b == b'%' || b == b'+') {
            listed(&self.params, &super::form_decode(raw))
        } else {
            listed(&self.params, raw)
        }
    }

    /// A request target with the values of secret query parameters replaced.
    pub fn target(&self, target: &[u8]) -> Option<Vec<u8>> {
        let q = memchr::memchr(b'?', target)?;
        // Where the value of a secret `name=value` pair starts.
        let secret = |pair: &[u8]| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            self.secret_param(&pair[..eq]).then_some(eq + 1)
        };
        let pairs = || target[q + 1..].split(|&b| b == b'&');
        // Most targets have no secret: they are not copied.
        pairs().find_map(secret)?;
        let mut out = target[..=q].to_vec();
        for (i, pair) in pairs().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            match secret(pair) {
                Some(value) => {
                    out.extend_from_slice(&pair[..value]);
                    self.write_mark(&pair[value..], &mut out);
                }
                None => out.extend_from_slice(pair),
            }
        }
        Some(out)
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

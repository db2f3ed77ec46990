//! A bounded, allocation-free scan of a JSON body for scalar fields: every `"key": value`
//! whose value is a string or a number is reported with its key. No tree is built;
//! nesting deeper than a bound, malformed input or an end inside a value stops the scan,
//! so a hostile body costs one linear pass and nothing else.

/// Deepest nesting followed.
pub const MAX_DEPTH: usize = 32;

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    Complete,
    /// The body ended inside a value (a captured prefix of a longer body).
    Truncated,
    /// Nesting went deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Not JSON at some point.
    Malformed,
}

/// Calls `field(key, value)` for each scalar member of every object. Strings are given
/// without quotes (escapes left as they are), numbers as written. Stops when `field`
/// returns `false`.
pub fn scan(json: &[u8], mut field: impl FnMut(&[u8], &[u8]) -> bool) -> ScanEnd {
    // true: inside an object; false: inside an array.
    let mut stack = [false; MAX_DEPTH];
    let mut depth = 0usize;
    let mut key: Option<(usize, usize)> = None;
    // In an object, the next string is a key.
    let mut expect_key = false;
    let mut i = 0;
    let n = json.len();
    while i < n {
        let c = json[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | b',' | b':' => {
                if c == b',' && depth > 0 && stack[depth - 1] {
                    expect_key = true;
                }
                i += 1;
            }
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return ScanEnd::TooDeep;
                }
                stack[depth] = c == b'{';
                depth += 1;
                expect_key = c == b'{';
                key = None;
                i += 1;
            }
            b'}' | b']' => {
                if depth == 0 || stack[depth - 1] != (c == b'}') {
                    return ScanEnd::Malformed;
                }
                depth -= 1;
                expect_key = false;
                key = None;
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                loop {
                    match memchr::memchr2(b'"', b'\\', &json[j..]) {
                        None => return ScanEnd::Truncated,
                        Some(k) if json[j + k] == b'\\' => j += k + 2,
                        Some(k) => {
                            j += k;
                            break;
                        }
                    }
                    if j >= n {
                        return ScanEnd::Truncated;
                    }
                }
                if expect_key {
                    key = Some((start, j));
                    expect_key = false;
                } else if let Some((ks, ke)) = key.take()
                    && !field(&json[ks..ke], &json[start..j])
                {
                    return ScanEnd::Complete;
                }
                i = j + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < n && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                if i == n && depth > 0 {
                    return ScanEnd::Truncated;
                }
                if let Some((ks, ke)) = key.take()
                    && !field(&json[ks..ke], &json[start..i])
                {
                    return ScanEnd::Complete;
                }
            }
            b't' | b'f' | b'n' => {
                let word: &[u8] = match c {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                if json[i..].starts_with(word) {
                    i += word.len();
                    key = None;
                } else if word.starts_with(&json[i..]) {
                    return ScanEnd::Truncated;
                } else {
                    return ScanEnd::Malformed;
                }
            }
            _ => return ScanEnd::Malformed,
        }
    }
    if depth == 0 {
        ScanEnd::Complete
    } else {
        ScanEnd::Truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> (Vec<(String, String)>, ScanEnd) {
        let mut v = Vec::new();
        let end = scan(json.as_bytes(), |k, val| {
            v.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(val).into_owned(),
            ));
            true
        });
        (v, end)
    }

    #[test]
    fn scalar_members_at_any_depth() {
        let (v, end) = fields(
            r#"{"data":[{"id":"inv_1","amount":12.5,"paid":true,"customer":{"id":"cus_9"}},{"id":"inv_2","note":null}],"has_more":false}"#,
        );
        assert_eq!(end, ScanEnd::Complete);
        let keys: Vec<_> = v.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(keys, ["id=inv_1", "amount=12.5", "id=cus_9", "id=inv_2"]);
        let (v, _) = fields(r#"{"a\"b":"x\"y","n":-3}"#);
        assert_eq!(v[0], ("a\\\"b".into(), "x\\\"y".into()));
        assert_eq!(v[1], ("n".into(), "-3".into()));
    }

    #[test]
    fn hostile_bodies_end_the_scan() {
        assert_eq!(fields(&"[".repeat(100_000)).1, ScanEnd::TooDeep);
        assert_eq!(fields(r#"{"id":"abc"#).1, ScanEnd::Truncated);
        assert_eq!(fields(r#"{"id":12"#).1, ScanEnd::Truncated);
        assert_eq!(fields("{]").1, ScanEnd::Malformed);
        assert_eq!(fields("<html>").1, ScanEnd::Malformed);
        let (v, end) = fields(r#"{"id":"a","x":tru"#);
        assert_eq!((v.len(), end), (1, ScanEnd::Truncated));
        // An endless string is one linear pass.
        let long = format!("{{\"id\":\"{}", "a".repeat(1 << 20));
        assert_eq!(fields(&long).1, ScanEnd::Truncated);
    }
}

//! Lenient parsing of HTTP/1.x message heads (start line and header fields).
//!
//! A passive sensor must read what servers accept, not what RFC 9112 allows, or an
//! attacker hides from it by sending the slightly malformed: bare LF line ends, folded
//! lines, missing colons, lower-case `http/1.1`, white space before the colon. Each of
//! these is parsed the way permissive servers (and libhtp/Zeek) do, and flagged.

use std::ops::Range;

use super::Anomaly;

/// One header field; ranges index into [`Head::buf`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Range<u32>,
    pub value: Range<u32>,
}

/// A parsed message head. Holds its own copy of the bytes; fields are ranges into it,
/// so a head costs two allocations however many headers it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub buf: Vec<u8>,
    /// Request: method, target, version. Response: version, status code, reason.
    pub start: [Range<u32>; 3],
    pub fields: Vec<Field>,
}

impl Head {
    pub fn bytes(&self, r: &Range<u32>) -> &[u8] {
        &self.buf[r.start as usize..r.end as usize]
    }

    pub fn part(&self, i: usize) -> &[u8] {
        self.bytes(&self.start[i])
    }

    /// First header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| self.bytes(&f.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| self.bytes(&f.value))
    }

    /// Every value of headers named `name`, in wire order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.bytes(&f.name).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| self.bytes(&f.value))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (self.bytes(&f.name), self.bytes(&f.value)))
    }
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c'] = s {
        s = rest;
    }
    s
}

fn trim_range(buf: &[u8], r: Range<usize>) -> Range<u32> {
    let s = &buf[r.clone()];
    let t = trim(s);
    let start = r.start + (t.as_ptr() as usize - s.as_ptr() as usize);
    start as u32..(start + t.len()) as u32
}

/// Strips the line terminator (LF, CRLF, or a lone trailing CR).
fn line_end(buf: &[u8], start: usize, end: usize) -> usize {
    let mut e = end;
    if e > start && buf[e - 1] == b'\n' {
        e -= 1;
    }
    if e > start && buf[e - 1] == b'\r' {
        e -= 1;
    }
    e
}

/// Splits a complete head (terminator included) into lines without their ends. A bare
/// CR ends a line too (libhtp and browsers read it so; evaders use it); `bare_cr`
/// records that one did.
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
    bare_cr: bool,
}

impl Iterator for Lines<'_> {
    type Item = Range<usize>;
    fn next(&mut self) -> Option<Range<usize>> {
        let (buf, pos) = (self.buf, self.pos);
        if pos >= buf.len() {
            return None;
        }
        let mut end = buf.len();
        for i in memchr::memchr2_iter(b'\n', b'\r', &buf[pos..]) {
            let at = pos + i;
            if buf[at] == b'\n' {
                end = at + 1;
                break;
            }
            match buf.get(at + 1) {
                Some(b'\n') => {
                    end = at + 2;
                    break;
                }
                // A CR at the very end of an incomplete head is just stripped.
                None => {}
                Some(_) => {
                    self.bare_cr = true;
                    end = at + 1;
                    break;
                }
            }
        }
        self.pos = end;
        Some(pos..line_end(buf, pos, end))
    }
}

fn lines(buf: &[u8]) -> Lines<'_> {
    Lines {
        buf,
        pos: 0,
        bare_cr: false,
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits a start line into up to three space-separated parts; the third keeps any
/// further spaces (a reason phrase, or a target with spaces before the version).
fn split_start(buf: &[u8], line: Range<usize>) -> [Range<usize>; 3] {
    let mut parts: [Range<usize>; 3] = [line.end..line.end, line.end..line.end, line.end..line.end];
    let mut pos = line.start;
    while pos < line.end && is_space(buf[pos]) {
        pos += 1;
    }
    for (i, part) in parts.iter_mut().enumerate() {
        let start = pos;
        if i == 2 {
            *part = start..line.end;
            break;
        }
        while pos < line.end && !is_space(buf[pos]) {
            pos += 1;
        }
        *part = start..pos;
        while pos < line.end && is_space(buf[pos]) {
            pos += 1;
        }
    }
    parts
}

/// Whether `s` is an HTTP version token, `HTTP/x.y` in any case.
pub fn is_http_version(s: &[u8]) -> bool {
    s.len() >= 5 && s[..5].eq_ignore_ascii_case(b"HTTP/")
}

/// Whether a line looks like the start of a response. Used to decide between a status
/// line and an HTTP/0.9 body, and to resynchronise after a gap.
pub fn looks_like_status_line(line: &[u8]) -> bool {
    let t = trim(line);
    is_http_version(t)
}

/// Whether a line looks like the start of a request, for resynchronising after a gap:
/// an upper-case method token, a space, a target, and an HTTP version at the end.
pub fn looks_like_request_line(line: &[u8]) -> bool {
    let line = trim(line);
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let method = &line[..sp];
    !method.is_empty()
        && method.len() <= 32
        && method
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
        && line
            .rsplit(|&b| b == b' ')
            .next()
            .is_some_and(is_http_version)
}

/// Whether the start of a client stream could be a request: a method token followed
/// by white space, or a line that ends in an HTTP version.
pub fn plausible_request_line(line: &[u8]) -> bool {
    let n = line.iter().take_while(|&&b| is_tchar(b)).count();
    if n > 0 && line.get(n).is_some_and(|&b| is_space(b)) {
        return true;
    }
    let t = trim(line);
    t.len() >= 8 && is_http_version(&t[t.len() - 8..])
}

/// RFC 9110 token characters, which a method must consist of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a parsed request head starts with a method token followed by white space.
/// Lines that fail this are not requests (servers answer them 400) and are not logged
/// as such.
pub fn is_valid_request_line(h: &Head) -> bool {
    let m = h.part(0);
    !m.is_empty()
        && m.iter().all(|&b| is_tchar(b))
        && (!h.part(1).is_empty() || !h.part(2).is_empty())
}

/// Whether a line is a `Transfer-Encoding`, `Content-Length` or `Content-Encoding` field.
fn is_framing_field(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let name = trim(&line[..colon]);
    [
        &b"transfer-encoding"[..],
        b"content-length",
        b"content-encoding",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

pub struct HeadLimits {
    pub max_fields: usize,
}

/// Parses a complete head. `buf` holds the start line, the header lines and the empty
/// line that ends them (absent for HTTP/0.9 requests).
pub fn parse(mut buf: Vec<u8>, limits: &HeadLimits, anomalies: &mut Anomaly) -> Head {
    let mut it = lines(&buf);
    let first = it.next().unwrap_or(0..0);
    let parts = split_start(&buf, first);
    let mut start = parts.clone().map(|r| r.start as u32..r.end as u32);
    // A request target with spaces: the version is the last word of the line.
    if !parts[2].is_empty() {
        let third = &buf[parts[2].clone()];
        if !is_http_version(third)
            && !third.iter().all(u8::is_ascii_digit)
            && let Some(sp) = third.iter().rposition(|&b| is_space(b))
        {
            let last = parts[2].start + sp + 1..parts[2].end;
            if is_http_version(&buf[last.clone()]) {
                let mut uri_end = parts[2].start + sp;
                while uri_end > parts[1].start && is_space(buf[uri_end - 1]) {
                    uri_end -= 1;
                }
                start[1] = parts[1].start as u32..uri_end as u32;
                start[2] = last.start as u32..last.end as u32;
            }
        }
    }
    // "OPTIONS HTTP/1.1": no target, the second word is the version.
    if parts[2].is_empty() && is_http_version(&buf[parts[1].clone()]) {
        start[2] = start[1].clone();
        start[1] = start[1].start..start[1].start;
    }
    let mut fields: Vec<Field> = Vec::with_capacity(16);
    let mut folded: Vec<(usize, Range<usize>)> = Vec::new();
    for line in it.by_ref() {
        if line.is_empty() {
            break;
        }
        if is_space(buf[line.start]) {
            // obs-fold: continuation of the previous field's value, unless it is itself a
            // framing header: an indented "Transfer-Encoding: chunked" still frames the
            // body for lenient readers (libhtp), so an evader cannot hide it this way.
            *anomalies |= Anomaly::OBSOLETE_LINE_FOLDING;
            if let Some(last) = fields.len().checked_sub(1)
                && !is_framing_field(&buf[line.clone()])
            {
                folded.push((last, line));
                continue;
            }
        }
        if fields.len() >= limits.max_fields {
            *anomalies |= Anomaly::TOO_MANY_HEADERS;
            continue;
        }
        let l = &buf[line.clone()];
        match memchr::memchr(b':', l) {
            Some(colon) => {
                let name_raw = line.start..line.start + colon;
                let name = trim_range(&buf, name_raw.clone());
                if name.end as usize != name_raw.end {
                    *anomalies |= Anomaly::HEADER_NAME_WHITESPACE;
                }
                let value = trim_range(&buf, line.start + colon + 1..line.end);
                fields.push(Field { name, value });
            }
            None => {
                *anomalies |= Anomaly::HEADER_WITHOUT_COLON;
                let name = trim_range(&buf, line.clone());
                let end = name.end;
                fields.push(Field {
                    name,
                    value: end..end,
                });
            }
        }
    }
    if it.bare_cr {
        *anomalies |= Anomaly::BARE_CR_LINE_END;
    }
    // Rebuild folded values at the end of the buffer so each value stays contiguous.
    if !folded.is_empty() {
        let mut i = 0;
        while i < folded.len() {
            let idx = folded[i].0;
            let orig = fields[idx].value.clone();
            let new_start = buf.len();
            buf.extend_from_within(orig.start as usize..orig.end as usize);
            while i < folded.len() && folded[i].0 == idx {
                let cont = trim_range(&buf, folded[i].1.clone());
                if !cont.is_empty() {
                    if buf.len() > new_start {
                        buf.push(b' ');
                    }
                    buf.extend_from_within(cont.start as usize..cont.end as usize);
                }
                i += 1;
            }
            fields[idx].value = new_start as u32..buf.len() as u32;
        }
    }
    Head { buf, start, fields }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (Head, Anomaly) {
        let mut a = Anomaly::empty();
        let h = parse(
            s.as_bytes().to_vec(),
            &HeadLimits { max_fields: 100 },
            &mut a,
        );
        (h, a)
    }

    #[test]
    fn request_line_and_headers() {
        let (h, a) = p("GET /a?b=c HTTP/1.1\r\nHost: x.com\r\nUser-Agent:  curl \r\n\r\n");
        assert_eq!(h.part(0), b"GET");
        assert_eq!(h.part(1), b"/a?b=c");
        assert_eq!(h.part(2), b"HTTP/1.1");
        assert_eq!(h.header("host"), Some(&b"x.com"[..]));
        assert_eq!(h.header("USER-AGENT"), Some(&b"curl"[..]));
        assert!(a.is_empty());
    }

    #[test]
    fn lenient_forms_are_flagged() {
        let (h, a) = p("GET /x y HTTP/1.0\nX-A: 1\n  2\nBroken\nTransfer-Encoding : chunked\n\n");
        assert_eq!(h.part(1), b"/x y");
        assert_eq!(h.part(2), b"HTTP/1.0");
        assert_eq!(h.header("x-a"), Some(&b"1 2"[..]));
        assert_eq!(h.header("transfer-encoding"), Some(&b"chunked"[..]));
        assert!(a.contains(Anomaly::OBSOLETE_LINE_FOLDING));
        assert!(a.contains(Anomaly::HEADER_WITHOUT_COLON));
        assert!(a.contains(Anomaly::HEADER_NAME_WHITESPACE));
    }

    #[test]
    fn status_line() {
        let (h, _) = p("HTTP/1.1 404 Not Found Here\r\n\r\n");
        assert_eq!(h.part(0), b"HTTP/1.1");
        assert_eq!(h.part(1), b"404");
        assert_eq!(h.part(2), b"Not Found Here");
    }

    #[test]
    fn field_count_is_bounded() {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..500 {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        let mut a = Anomaly::empty();
        let h = parse(s.into_bytes(), &HeadLimits { max_fields: 64 }, &mut a);
        assert_eq!(h.fields.len(), 64);
        assert!(a.contains(Anomaly::TOO_MANY_HEADERS));
    }
}

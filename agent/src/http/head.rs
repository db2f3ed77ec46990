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

/// Header names that framing, the log or extraction read from nearly every message.
/// Their positions are recorded while the head is parsed, so reading them later costs
/// no scan of the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Host,
    UserAgent,
    ContentType,
    ContentLength,
    TransferEncoding,
    ContentEncoding,
    Referer,
    Location,
    Cookie,
    Authorization,
    XForwardedFor,
    Forwarded,
    Expect,
}

impl Known {
    const COUNT: usize = 13;

    /// The name in lower case.
    pub fn name(self) -> &'static str {
        match self {
            Known::Host => "host",
            Known::UserAgent => "user-agent",
            Known::ContentType => "content-type",
            Known::ContentLength => "content-length",
            Known::TransferEncoding => "transfer-encoding",
            Known::ContentEncoding => "content-encoding",
            Known::Referer => "referer",
            Known::Location => "location",
            Known::Cookie => "cookie",
            Known::Authorization => "authorization",
            Known::XForwardedFor => "x-forwarded-for",
            Known::Forwarded => "forwarded",
            Known::Expect => "expect",
        }
    }

    /// The known name `name` is (ASCII case-insensitive). Its length and first letter
    /// leave at most one candidate, then one comparison decides.
    #[inline]
    fn of(name: &[u8]) -> Option<Known> {
        let k = match (name.len(), name.first()? | 0x20) {
            (4, b'h') => Known::Host,
            (6, b'c') => Known::Cookie,
            (6, b'e') => Known::Expect,
            (7, b'r') => Known::Referer,
            (8, b'l') => Known::Location,
            (9, b'f') => Known::Forwarded,
            (10, b'u') => Known::UserAgent,
            (12, b'c') => Known::ContentType,
            (13, b'a') => Known::Authorization,
            (14, b'c') => Known::ContentLength,
            (15, b'x') => Known::XForwardedFor,
            (16, b'c') => Known::ContentEncoding,
            (17, b't') => Known::TransferEncoding,
            _ => return None,
        };
        eq_lowercase(name, k.name().as_bytes()).then_some(k)
    }
}

/// Whether `name` equals `lower` (in which ASCII letters are lower case) ignoring ASCII
/// case; a word at a time.
pub fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    // Letters of `lower` accept either case: their bit 0x20 is ORed into `name`'s byte.
    // Every other byte must be equal. The sums are taken on 7-bit values so that no byte
    // carries into the next; bytes with the high bit set are not letters.
    let same = |a: u64, t: u64| {
        let t7 = t & (ONES * 0x7f);
        let letter = t7.wrapping_add(ONES * (0x80 - 0x61))
            & !t7.wrapping_add(ONES * (0x80 - 0x7b))
            & !t
            & (ONES << 7);
        (a | letter >> 2) == t
    };
    let word =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return name
            .iter()
            .zip(lower)
            .all(|(&a, &t)| a == t || (t.is_ascii_lowercase() && a | 0x20 == t));
    }
    let mut i = 0;
    while i + 8 <= n {
        if !same(word(name, i), word(lower, i)) {
            return false;
        }
        i += 8;
    }
    i == n || same(word(name, n - 8), word(lower, n - 8))
}

/// Where the known headers are: the first field of each (index + 1, 0 when absent) and
/// which of them occur more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KnownFields {
    first: [u32; Known::COUNT],
    repeated: u16,
}

impl KnownFields {
    fn add(&mut self, name: &[u8], index: usize) {
        if let Some(k) = Known::of(name) {
            let slot = &mut self.first[k as usize];
            if *slot == 0 {
                *slot = index as u32 + 1;
            } else {
                self.repeated |= 1 << k as u16;
            }
        }
    }
}

/// A parsed message head. Holds its own copy of the bytes; fields are ranges into it,
/// so a head costs two allocations however many headers it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub buf: Vec<u8>,
    /// Request: method, target, version. Response: version, status code, reason.
    pub start: [Range<u32>; 3],
    /// Read-only outside parsing: `known` indexes it.
    fields: Vec<Field>,
    known: KnownFields,
}

impl Head {
    fn new(buf: Vec<u8>, start: [Range<u32>; 3], fields: Vec<Field>) -> Head {
        let mut known = KnownFields::default();
        for (i, f) in fields.iter().enumerate() {
            known.add(&buf[f.name.start as usize..f.name.end as usize], i);
        }
        Head {
            buf,
            start,
            fields,
            known,
        }
    }

    pub fn bytes(&self, r: &Range<u32>) -> &[u8] {
        &self.buf[r.start as usize..r.end as usize]
    }

    pub fn part(&self, i: usize) -> &[u8] {
        self.bytes(&self.start[i])
    }

    /// The fields named `k`: from its first occurrence, to the end if it repeats (the
    /// caller then filters by name), else that one alone.
    #[inline]
    fn known_fields(&self, k: Known) -> (&[Field], bool) {
        match self.known.first[k as usize] as usize {
            0 => (&[], false),
            i if self.known.repeated & (1 << k as u16) != 0 => (&self.fields[i - 1..], true),
            i => (&self.fields[i - 1..i], false),
        }
    }

    /// The value of the first `k` header: no scan, the parser recorded where it is.
    #[inline]
    pub fn get(&self, k: Known) -> Option<&[u8]> {
        self.known_fields(k).0.first().map(|f| self.bytes(&f.value))
    }

    /// Every value of `k` headers, in wire order.
    pub fn get_all(&self, k: Known) -> impl Iterator<Item = &[u8]> + '_ {
        let (fields, filter) = self.known_fields(k);
        fields
            .iter()
            .filter(move |f| {
                !filter
                    || self
                        .bytes(&f.name)
                        .eq_ignore_ascii_case(k.name().as_bytes())
            })
            .map(|f| self.bytes(&f.value))
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

    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (self.bytes(&f.name), self.bytes(&f.value)))
    }
}

/// Space, or one of `\t \n \x0b \x0c \r` (9 to 13): what [`trim`] strips.
fn is_white(b: u8) -> bool {
    b == b' ' || b.wrapping_sub(b'\t') < 5
}

/// Strips white space (space, and tab to carriage return) from both ends.
pub fn trim(s: &[u8]) -> &[u8] {
    let Some(start) = s.iter().position(|&b| !is_white(b)) else {
        return &s[s.len()..];
    };
    let end = s
        .iter()
        .rposition(|&b| !is_white(b))
        .map_or(start, |e| e + 1);
    &s[start..end]
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
        let mut from = pos;
        while let Some(at) = find_line_break(buf, from) {
            from = at + 1;
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

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;

/// A word with the high bit set in each byte of `w` equal to `b`. Bits above the first
/// match can be set wrongly, so only the lowest set bit is meaningful (and whether any
/// is set).
#[inline(always)]
pub(crate) fn bytes_equal(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

/// The first byte at or after `from` for which `hit` finds a match, eight at a time:
/// head lines are short, too short for a vector search to pay for its setup.
#[inline(always)]
fn find_by_word(
    buf: &[u8],
    from: usize,
    hit: impl Fn(u64) -> u64,
    is: impl Fn(u8) -> bool,
) -> Option<usize> {
    let (words, rest) = buf.get(from..)?.as_chunks::<8>();
    for (k, word) in words.iter().enumerate() {
        let m = hit(u64::from_le_bytes(*word));
        if m != 0 {
            return Some(from + k * 8 + (m.trailing_zeros() / 8) as usize);
        }
    }
    let at = from + words.len() * 8;
    rest.iter().position(|&b| is(b)).map(|k| at + k)
}

/// The first CR or LF at or after `from`.
fn find_line_break(buf: &[u8], from: usize) -> Option<usize> {
    find_by_word(
        buf,
        from,
        |w| bytes_equal(w, b'\r') | bytes_equal(w, b'\n'),
        |b| b == b'\r' || b == b'\n',
    )
}

/// The first space or tab at or after `from`.
fn find_space(buf: &[u8], from: usize) -> Option<usize> {
    find_by_word(
        buf,
        from,
        |w| bytes_equal(w, b' ') | bytes_equal(w, b'\t'),
        is_space,
    )
}

/// The first colon of a line.
fn find_colon(line: &[u8]) -> Option<usize> {
    find_by_word(line, 0, |w| bytes_equal(w, b':'), |b| b == b':')
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
        pos = find_space(&buf[..line.end], pos).unwrap_or(line.end);
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
    let Some(colon) = find_colon(line) else {
        return false;
    };
    matches!(
        Known::of(trim(&line[..colon])),
        Some(Known::TransferEncoding | Known::ContentLength | Known::ContentEncoding)
    )
}

pub struct HeadLimits {
    pub max_fields: usize,
}

/// The method, target and version (or version, status and reason) of a start line.
fn start_line(buf: &[u8], first: Range<usize>) -> [Range<u32>; 3] {
    let parts = split_start(buf, first);
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
    start
}

/// The line starting at `from` when it ends in CRLF (without it); `None` for a bare CR
/// or LF, or no line end.
fn crlf_line(buf: &[u8], from: usize) -> Option<Range<usize>> {
    let at = find_line_break(buf, from)?;
    (buf[at] == b'\r' && buf.get(at + 1) == Some(&b'\n')).then_some(from..at)
}

/// Reads the header fields from `from` to the empty line when the head has the form
/// nearly every message has: CRLF line ends, a colon in every line, no white space
/// around names, no folded lines, no more than `max_fields`. The result is what the
/// lenient parser makes of such a head, without its per-line checks. Returns false at
/// anything else; the lenient parser then reads the head (and flags what it finds).
fn clean_fields(buf: &[u8], mut from: usize, max_fields: usize, fields: &mut Vec<Field>) -> bool {
    loop {
        let Some(line) = crlf_line(buf, from) else {
            return false;
        };
        if line.is_empty() {
            return true;
        }
        let text = &buf[line.clone()];
        let Some(colon) = find_colon(text) else {
            return false;
        };
        if colon == 0
            || is_white(text[0])
            || is_white(text[colon - 1])
            || fields.len() >= max_fields
        {
            return false;
        }
        fields.push(Field {
            name: line.start as u32..(line.start + colon) as u32,
            value: trim_range(buf, line.start + colon + 1..line.end),
        });
        from = line.end + 2;
    }
}

/// Parses a complete head. `buf` holds the start line, the header lines and the empty
/// line that ends them (absent for HTTP/0.9 requests).
pub fn parse(buf: Vec<u8>, limits: &HeadLimits, anomalies: &mut Anomaly) -> Head {
    let mut fields: Vec<Field> = Vec::with_capacity(16);
    if let Some(first) = crlf_line(&buf, 0)
        && clean_fields(&buf, first.end + 2, limits.max_fields, &mut fields)
    {
        let start = start_line(&buf, first);
        return Head::new(buf, start, fields);
    }
    parse_lenient(buf, limits, anomalies)
}

/// Parses any head, however malformed, the way lenient servers read it; each deviation
/// is flagged.
pub(crate) fn parse_lenient(
    mut buf: Vec<u8>,
    limits: &HeadLimits,
    anomalies: &mut Anomaly,
) -> Head {
    let mut fields: Vec<Field> = Vec::with_capacity(16);
    let mut it = lines(&buf);
    let first = it.next().unwrap_or(0..0);
    let start = start_line(&buf, first);
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
        match find_colon(l) {
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
    Head::new(buf, start, fields)
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

    const KNOWN: [Known; Known::COUNT] = [
        Known::Host,
        Known::UserAgent,
        Known::ContentType,
        Known::ContentLength,
        Known::TransferEncoding,
        Known::ContentEncoding,
        Known::Referer,
        Known::Location,
        Known::Cookie,
        Known::Authorization,
        Known::XForwardedFor,
        Known::Forwarded,
        Known::Expect,
    ];

    proptest::proptest! {
        #[test]
        fn known_names_are_matched_exactly_ignoring_case(
            which in 0..Known::COUNT,
            flips in proptest::prelude::any::<u32>(),
            change in proptest::option::of((0usize..17, proptest::prelude::any::<u8>())),
        ) {
            let k = KNOWN[which];
            // The name in mixed case, maybe with one byte changed to anything.
            let mut name: Vec<u8> = k
                .name()
                .bytes()
                .enumerate()
                .map(|(i, b)| if flips >> (i % 32) & 1 == 1 { b.to_ascii_uppercase() } else { b })
                .collect();
            if let Some((at, b)) = change {
                let at = at % name.len();
                name[at] = b;
            }
            let want = KNOWN.iter().copied().find(|k| name.eq_ignore_ascii_case(k.name().as_bytes()));
            proptest::prop_assert_eq!(Known::of(&name), want);
            for k in KNOWN {
                proptest::prop_assert_eq!(
                    eq_lowercase(&name, k.name().as_bytes()),
                    name.eq_ignore_ascii_case(k.name().as_bytes())
                );
            }
        }

        #[test]
        fn word_comparison_is_ascii_case_insensitive_equality(
            lower in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            flips in proptest::collection::vec(proptest::prelude::any::<bool>(), 24),
            change in proptest::option::of((0usize..24, proptest::prelude::any::<u8>())),
        ) {
            let lower = lower.to_ascii_lowercase();
            let mut name: Vec<u8> = lower
                .iter()
                .zip(&flips)
                .map(|(&b, &up)| if up { b.to_ascii_uppercase() } else { b })
                .collect();
            if let Some((at, b)) = change
                && !name.is_empty()
            {
                let at = at % name.len();
                name[at] = b;
            }
            proptest::prop_assert_eq!(eq_lowercase(&name, &lower), name.eq_ignore_ascii_case(&lower));
        }

        #[test]
        fn lookups_agree_with_a_scan(names in proptest::collection::vec(0..Known::COUNT + 2, 0..12)) {
            // Heads made of known names (some repeated) and unknown ones.
            let mut text = String::from("GET / HTTP/1.1\r\n");
            for (i, n) in names.iter().enumerate() {
                let name = KNOWN.get(*n).map_or("X-Other", |k| k.name());
                text.push_str(&format!("{}: v{i}\r\n", name.to_uppercase()));
            }
            text.push_str("\r\n");
            let (h, _) = p(&text);
            for k in KNOWN {
                let scan: Vec<&[u8]> = h
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(k.name().as_bytes()))
                    .map(|(_, v)| v)
                    .collect();
                proptest::prop_assert_eq!(h.get_all(k).collect::<Vec<_>>(), scan.clone());
                proptest::prop_assert_eq!(h.get(k), scan.first().copied());
            }
        }
    }

    /// Lines of every form the lenient parser handles, clean ones most often.
    fn head_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => "[A-Za-z-]{1,12}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..6),
            1 => proptest::sample::select(vec![
                &b" "[..], b"\t", b":", b"\r", b"\n", b"\r\n", b"\x0b", b"", b"Content-Length",
                b"transfer-encoding", b"chunked", b"HTTP/1.1",
            ]).prop_map(<[u8]>::to_vec),
        ];
        proptest::collection::vec(piece, 1..6).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #[test]
        fn clean_heads_parse_as_the_lenient_parser_reads_them(
            start in head_line(),
            lines in proptest::collection::vec(
                (head_line(), proptest::sample::select(vec![&b": "[..], b":", b" : ", b"", b":\t"]), head_line(),
                 proptest::sample::select(vec![&b"\r\n"[..], b"\r\n", b"\r\n", b"\n", b"\r", b""])),
                0..8,
            ),
            end in proptest::sample::select(vec![&b"\r\n"[..], b"\n", b"", b"\r\nrest"]),
            max_fields in 1usize..10,
        ) {
            let mut buf = start;
            buf.extend_from_slice(b"\r\n");
            for (name, sep, value, eol) in lines {
                buf.extend_from_slice(&name);
                buf.extend_from_slice(sep);
                buf.extend_from_slice(&value);
                buf.extend_from_slice(eol);
            }
            buf.extend_from_slice(end);
            let limits = HeadLimits { max_fields };
            let (mut a, mut b) = (Anomaly::empty(), Anomaly::empty());
            let fast = parse(buf.clone(), &limits, &mut a);
            let lenient = parse_lenient(buf, &limits, &mut b);
            proptest::prop_assert_eq!(fast, lenient);
            proptest::prop_assert_eq!(a, b);
        }
    }

    proptest::proptest! {
        #[test]
        fn well_formed_heads_take_the_fast_path(
            fields in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}"), 0..12),
        ) {
            let mut text = String::from("GET /a?b HTTP/1.1\r\n");
            for (n, v) in &fields {
                text.push_str(&format!("{n}: {v}\r\n"));
            }
            text.push_str("\r\n");
            let buf = text.into_bytes();
            let mut found = Vec::new();
            proptest::prop_assert!(clean_fields(&buf, 19, 64, &mut found));
            let (mut a, mut b) = (Anomaly::empty(), Anomaly::empty());
            let limits = HeadLimits { max_fields: 64 };
            proptest::prop_assert_eq!(parse(buf.clone(), &limits, &mut a), parse_lenient(buf, &limits, &mut b));
            proptest::prop_assert_eq!(a, b);
        }
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

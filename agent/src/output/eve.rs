//! The HTTP transaction log in Suricata's EVE form, plus Zeek's body lengths and the
//! anomalies Tapline flags. Field meanings follow `shared/corpus/SOURCE.md`; the format
//! is documented in `docs/http-log.md`.

use std::borrow::Cow;
use std::io::Write;

use base64::Engine;

use crate::decode::Micros;
use crate::extract::redact::Redactor;
use crate::http::head::{Known, ONES, bytes_equal};
use crate::http::{Head, Transaction, head};
use crate::reassembly::FlowMeta;

/// Options of the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct EveOptions<'a> {
    /// Add the captured (decoded, bounded) bodies, base64-encoded.
    pub bodies: bool,
    /// Replace credentials (authorization, cookies, API keys, secret query parameters)
    /// by their fingerprints.
    pub redact: Option<&'a Redactor>,
}

/// Formats a timestamp as EVE does: `2024-01-31T12:00:00.123456+0000`.
pub fn format_ts(ts: Micros, out: &mut Vec<u8>) {
    thread_local! {
        /// The date and time of the last second formatted: consecutive transactions
        /// mostly share it, and only the microseconds need formatting.
        static LAST_SECOND: std::cell::Cell<(i64, [u8; 19])> =
            const { std::cell::Cell::new((i64::MIN, [0; 19])) };
    }
    let secs = ts.div_euclid(1_000_000);
    let micros = ts.rem_euclid(1_000_000);
    let (cached, mut date) = LAST_SECOND.get();
    if cached != secs {
        match civil(secs) {
            Some(d) => {
                date = d;
                LAST_SECOND.set((secs, d));
            }
            None => {
                let _ = write!(out, "{}.{micros:06}+0000", civil_any(secs));
                return;
            }
        }
    }
    let mut b = *b"0000-00-00T00:00:00.000000+0000";
    b[..19].copy_from_slice(&date);
    let mut v = micros;
    for digit in b[20..26].iter_mut().rev() {
        *digit = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&b);
}

/// Year, month, day and time of day of a Unix time in seconds.
fn civil_parts(secs: i64) -> [i64; 6] {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    [y, m, d, sod / 3600, sod / 60 % 60, sod % 60]
}

/// `YYYY-MM-DDTHH:MM:SS` for years 0 to 9999.
fn civil(secs: i64) -> Option<[u8; 19]> {
    let [y, m, d, hh, mm, ss] = civil_parts(secs);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, hh);
    put(14, 2, mm);
    put(17, 2, ss);
    Some(b)
}

/// The same for any year (a garbage capture timestamp), through the formatter.
fn civil_any(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = civil_parts(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
}

/// `"name":` as a literal, so writing a key is a fixed-size copy.
macro_rules! key {
    ($k:literal) => {
        concat!("\"", $k, "\":").as_bytes()
    };
}

/// Writes JSON with the separators handled. Keys are pre-quoted literals (`key!`).
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }
    #[inline(always)]
    fn key(&mut self, k: &'static [u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(k);
    }
    #[inline(always)]
    fn str(&mut self, k: &'static [u8], v: &[u8]) {
        self.key(k);
        write_str(self.out, v);
    }
    #[inline(always)]
    fn num(&mut self, k: &'static [u8], v: u64) {
        self.key(k);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    fn ip(&mut self, k: &'static [u8], ip: std::net::IpAddr) {
        self.key(k);
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut b = [0u8; 17];
                b[0] = b'"';
                let mut n = 1;
                for (i, o) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        b[n] = b'.';
                        n += 1;
                    }
                    if o >= 100 {
                        b[n] = b'0' + o / 100;
                        n += 1;
                    }
                    if o >= 10 {
                        b[n] = b'0' + o / 10 % 10;
                        n += 1;
                    }
                    b[n] = b'0' + o % 10;
                    n += 1;
                }
                b[n] = b'"';
                self.out.extend_from_slice(&b[..=n]);
            }
            std::net::IpAddr::V6(_) => {
                let _ = write!(self.out, "\"{ip}\"");
            }
        }
    }
    fn close(self) {
        self.out.push(b'}');
    }
}

/// How each ASCII byte is written in a JSON string: 0 as is, else the escape letter
/// (`u` for `\u00XX`).
static ESCAPE: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HIGH: u64 = ONES << 7;

/// Whether any of 8 bytes needs escaping: a control byte, `"` or `\\` (SWAR test).
fn word_needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space | bytes_equal(w, b'"') | bytes_equal(w, b'\\')) != 0
}

/// Escapes valid UTF-8 (or ASCII) text into `out`.
fn escape_into(out: &mut Vec<u8>, v: &[u8]) {
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        let e = if b < 0x80 { ESCAPE[b as usize] } else { 0 };
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&v[start..i]);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&v[start..]);
}

/// A JSON string from bytes that may not be UTF-8 (invalid sequences become U+FFFD).
fn write_str(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    write_str_body(out, v);
    out.push(b'"');
}

/// The inside of a JSON string. Header values nearly always need no escaping, so the
/// bytes are copied a word at a time while being checked (no separate scan, no call to
/// `memcpy` for short strings) and rewritten with escapes in the rare case they need it.
#[inline]
fn write_str_body(out: &mut Vec<u8>, v: &[u8]) {
    let needs_escape = |w: u64| w & HIGH != 0 || word_needs_escape(w);
    let start = out.len();
    let n = v.len();
    let word = |at: usize| u64::from_le_bytes(v[at..at + 8].try_into().unwrap_or([0xff; 8]));
    let mut bad = false;
    if n >= 8 {
        out.reserve(n);
        let mut at = 0;
        while at + 8 <= n {
            let w = word(at);
            bad |= needs_escape(w);
            out.extend_from_slice(&w.to_le_bytes());
            at += 8;
        }
        if at < n {
            // The last word overlaps bytes already written.
            let w = word(n - 8);
            bad |= needs_escape(w);
            out.truncate(start + n - 8);
            out.extend_from_slice(&w.to_le_bytes());
        }
    } else {
        // Padded with a byte that needs no escape.
        let mut w = u64::from_le_bytes([b'a'; 8]);
        for (i, &b) in v.iter().enumerate() {
            w = w & !(0xff << (8 * i)) | u64::from(b) << (8 * i);
        }
        bad = needs_escape(w);
        out.extend_from_slice(&w.to_le_bytes());
        out.truncate(start + n);
    }
    if bad {
        out.truncate(start);
        write_escaped(out, v);
    }
}

/// The slow path of [`write_str_body`]: escapes, and U+FFFD for invalid UTF-8.
#[cold]
fn write_escaped(out: &mut Vec<u8>, v: &[u8]) {
    for chunk in v.utf8_chunks() {
        escape_into(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
}

fn headers(out: &mut Vec<u8>, h: &Head, redact: Option<&Redactor>) {
    out.push(b'[');
    for (i, (n, v)) in h.iter().enumerate() {
        out.extend_from_slice(if i > 0 {
            b",{\"name\":\""
        } else {
            b"{\"name\":\""
        });
        write_str_body(out, n);
        out.extend_from_slice(b"\",\"value\":\"");
        match redact.and_then(|r| r.classify(n).map(|k| (r, k))) {
            Some((r, kind)) => r.write_value(kind, v, out, write_str_body),
            None => write_str_body(out, v),
        }
        out.extend_from_slice(b"\"}");
    }
    out.push(b']');
}

/// Host and port of a request: from an absolute URI, else the Host header.
pub fn host_port(req: &Head) -> Option<(Cow<'_, [u8]>, Option<u16>)> {
    let uri = req.part(1);
    let authority = if let Some(rest) = uri
        .strip_prefix(b"http://")
        .or_else(|| uri.strip_prefix(b"https://"))
    {
        let end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?' || b == b'#')
            .unwrap_or(rest.len());
        Some(&rest[..end])
    } else {
        None
    };
    let authority = match authority {
        Some(a) if !a.is_empty() => a,
        _ => head::trim(req.get(Known::Host)?),
    };
    let authority = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = if authority.first() == Some(&b'[') {
        match authority.iter().position(|&b| b == b']') {
            // Suricata keeps the brackets of an IPv6 literal.
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(b":");
                (&authority[..=end], port)
            }
            None => (authority, None),
        }
    } else {
        match authority.iter().rposition(|&b| b == b':') {
            Some(c) => (&authority[..c], Some(&authority[c + 1..])),
            None => (authority, None),
        }
    };
    let port = port.and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
    let mut host = host;
    while let [rest @ .., b'.'] = host {
        host = rest;
    }
    let host = if host.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((host, port))
}

/// Appends one EVE `http` line (with its newline) for `tx` to `out`.
pub fn write_transaction(out: &mut Vec<u8>, meta: &FlowMeta, tx: &Transaction, opts: &EveOptions) {
    let ts = tx.request_ts.or(tx.response_ts).unwrap_or(meta.first_ts);
    // Room for the line at once: a head's bytes, its JSON punctuation and the fixed keys.
    let head_len = |h: &Option<Head>| h.as_ref().map_or(0, |h| h.buf.len() + 24 * h.field_count());
    out.reserve(512 + head_len(&tx.request) + head_len(&tx.response));
    let mut o = Obj::open(out);
    o.key(key!("timestamp"));
    o.out.push(b'"');
    format_ts(ts, o.out);
    o.out.push(b'"');
    o.num(key!("flow_id"), meta.flow_id);
    if !meta.vlan.is_empty() {
        o.key(key!("vlan"));
        let _ = serde_json::to_writer(&mut *o.out, meta.vlan.as_slice());
    }
    o.str(key!("event_type"), b"http");
    o.ip(key!("src_ip"), meta.client.0);
    o.num(key!("src_port"), u64::from(meta.client.1));
    o.ip(key!("dest_ip"), meta.server.0);
    o.num(key!("dest_port"), u64::from(meta.server.1));
    o.str(key!("proto"), b"TCP");
    o.num(key!("tx_id"), tx.tx_id);
    o.key(key!("http"));
    let mut h = Obj::open(o.out);
    if let Some(req) = &tx.request {
        if let Some((host, port)) = host_port(req) {
            h.str(key!("hostname"), &host);
            if let Some(p) = port {
                h.num(key!("http_port"), u64::from(p));
            }
        }
        match opts.redact.and_then(|r| r.target(req.part(1))) {
            Some(t) => h.str(key!("url"), &t),
            None => h.str(key!("url"), req.part(1)),
        }
        if let Some(ua) = req.get(Known::UserAgent) {
            h.str(key!("http_user_agent"), ua);
        }
    }
    if let Some(resp) = &tx.response
        && let Some(ct) = resp.get(Known::ContentType)
    {
        // Suricata logs the media type without parameters.
        let mt = ct.split(|&b| b == b';').next().unwrap_or(ct);
        h.str(key!("http_content_type"), head::trim(mt));
    }
    if let Some(req) = &tx.request
        && let Some(r) = req.get(Known::Referer)
    {
        h.str(key!("http_refer"), r);
    }
    if let Some(resp) = &tx.response
        && let Some(loc) = resp.get(Known::Location)
    {
        h.str(key!("redirect"), loc);
    }
    if let Some(req) = &tx.request {
        h.str(key!("http_method"), req.part(0));
        if !req.part(2).is_empty() {
            h.str(key!("protocol"), req.part(2));
        }
    }
    if let Some(resp) = &tx.response {
        match tx.status() {
            Some(s) => h.num(key!("status"), u64::from(s)),
            None if !resp.part(1).is_empty() => h.str(key!("status_string"), resp.part(1)),
            None => {}
        }
    }
    h.num(key!("length"), tx.response_body.transferred);
    if let Some(resp) = &tx.response {
        h.str(key!("response_protocol"), resp.part(0));
        h.str(key!("status_msg"), resp.part(2));
    }
    if let Some((code, msg)) = &tx.interim {
        h.num(key!("info_code"), u64::from(*code));
        h.str(key!("info_msg"), msg);
    }
    h.num(key!("request_body_len"), tx.request_body.decoded);
    h.num(key!("response_body_len"), tx.response_body.decoded);
    if tx.request_body.gap_bytes > 0 {
        h.num(key!("request_body_gap_bytes"), tx.request_body.gap_bytes);
    }
    if tx.response_body.gap_bytes > 0 {
        h.num(key!("response_body_gap_bytes"), tx.response_body.gap_bytes);
    }
    if let Some(req) = &tx.request {
        h.key(key!("request_headers"));
        headers(h.out, req, opts.redact);
    }
    if let Some(resp) = &tx.response {
        h.key(key!("response_headers"));
        headers(h.out, resp, opts.redact);
    }
    if opts.bodies {
        let b64 = base64::engine::general_purpose::STANDARD;
        if !tx.request_body.captured.is_empty() {
            h.str(
                key!("http_request_body"),
                b64.encode(&tx.request_body.captured).as_bytes(),
            );
        }
        if !tx.response_body.captured.is_empty() {
            h.str(
                key!("http_response_body"),
                b64.encode(&tx.response_body.captured).as_bytes(),
            );
        }
    }
    h.key(key!("anomalies"));
    h.out.push(b'[');
    for (i, n) in tx.anomalies.names().enumerate() {
        if i > 0 {
            h.out.push(b',');
        }
        h.out.push(b'"');
        h.out.extend_from_slice(n.as_bytes());
        h.out.push(b'"');
    }
    h.out.push(b']');
    h.close();
    o.close();
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn strings_are_escaped_as_serde_json_does(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut got = Vec::new();
            write_str(&mut got, &v);
            let want = serde_json::to_vec(String::from_utf8_lossy(&v).as_ref()).unwrap();
            proptest::prop_assert_eq!(got, want);
        }
    }

    proptest::proptest! {
        #[test]
        fn timestamps_match_the_uncached_formatter(ts in proptest::collection::vec(-100_000_000_000_000_000i64..400_000_000_000_000_000, 1..8)) {
            // Repeats and neighbours exercise the cached second.
            for t in ts.iter().flat_map(|&t| [t, t + 1, t + 1_000_000, t]) {
                let mut got = Vec::new();
                format_ts(t, &mut got);
                let want = format!("{}.{:06}+0000", civil_any(t.div_euclid(1_000_000)), t.rem_euclid(1_000_000));
                proptest::prop_assert_eq!(String::from_utf8(got).unwrap(), want);
            }
        }

        #[test]
        fn ipv4_is_written_as_std_displays_it(a in proptest::prelude::any::<u32>()) {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(a));
            let mut out = Vec::new();
            let mut o = Obj::open(&mut out);
            o.ip(key!("ip"), ip);
            o.close();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{{\"ip\":\"{ip}\"}}"));
        }
    }

    #[test]
    fn timestamps() {
        let mut v = Vec::new();
        format_ts(1_259_098_280_123_456, &mut v);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "2009-11-24T21:31:20.123456+0000"
        );
        let mut v = Vec::new();
        format_ts(0, &mut v);
        assert_eq!(
            String::from_utf8(v).unwrap(),
            "1970-01-01T00:00:00.000000+0000"
        );
    }

    #[test]
    fn host_from_header_and_absolute_uri() {
        let mut a = crate::http::Anomaly::empty();
        let lim = head::HeadLimits { max_fields: 10 };
        let h = head::parse(
            b"GET / HTTP/1.1\r\nHost: WWW.Example.com:8080\r\n\r\n".to_vec(),
            &lim,
            &mut a,
        );
        assert_eq!(
            host_port(&h),
            Some((Cow::Borrowed(&b"www.example.com"[..]), Some(8080)))
        );
        let h = head::parse(
            b"GET http://a.b/x HTTP/1.1\r\nHost: other\r\n\r\n".to_vec(),
            &lim,
            &mut a,
        );
        assert_eq!(host_port(&h), Some((Cow::Borrowed(&b"a.b"[..]), None)));
        let h = head::parse(
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n".to_vec(),
            &lim,
            &mut a,
        );
        assert_eq!(
            host_port(&h),
            Some((Cow::Borrowed(&b"[::1]"[..]), Some(80)))
        );
    }
}

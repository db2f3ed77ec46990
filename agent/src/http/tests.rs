//! The connection parser fed real message sequences at every split point: the result
//! must not depend on how TCP cut the bytes.

use super::*;

const REQUESTS: &[u8] = b"GET /v1/invoices/42?x=1 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: t/1\r\n\r\n\
POST /v1/charges HTTP/1.1\r\nHost: api.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n\
PUT /v1/customers/cus_1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nbody";

const RESPONSES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX: y\r\n\r\n";

type Summary = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<u16>,
    u64,
    u64,
    Option<u16>,
);

fn summarize(txs: &[Transaction]) -> Vec<Summary> {
    txs.iter()
        .map(|t| {
            (
                t.method().map(<[u8]>::to_vec),
                t.uri().map(<[u8]>::to_vec),
                t.status(),
                t.request_body.decoded,
                t.response_body.decoded,
                t.interim.as_ref().map(|i| i.0),
            )
        })
        .collect()
}

fn run(split_req: usize, split_resp: usize) -> Vec<Transaction> {
    let mut c = HttpConnection::new(HttpConfig::default());
    let mut out = Vec::new();
    c.data(Side::Client, &REQUESTS[..split_req], 1, &mut out);
    c.data(Side::Client, &REQUESTS[split_req..], 2, &mut out);
    c.data(Side::Server, &RESPONSES[..split_resp], 3, &mut out);
    c.data(Side::Server, &RESPONSES[split_resp..], 4, &mut out);
    c.finish(5, &mut out);
    out
}

#[test]
fn every_split_point_gives_the_same_transactions() {
    let reference = summarize(&run(REQUESTS.len(), RESPONSES.len()));
    assert_eq!(reference.len(), 3);
    assert_eq!(reference[0].2, Some(200));
    assert_eq!(reference[1].3, 5);
    assert_eq!(reference[1].4, 3);
    assert_eq!(reference[2].2, Some(204));
    assert_eq!(reference[2].5, Some(100));
    for i in 0..=REQUESTS.len() {
        assert_eq!(
            summarize(&run(i, RESPONSES.len())),
            reference,
            "request split at {i}"
        );
    }
    for j in 0..=RESPONSES.len() {
        assert_eq!(
            summarize(&run(REQUESTS.len(), j)),
            reference,
            "response split at {j}"
        );
    }
}

#[test]
fn gap_in_body_keeps_the_connection() {
    let mut c = HttpConnection::new(HttpConfig::default());
    let mut out = Vec::new();
    c.data(Side::Client, b"GET /a HTTP/1.1\r\n\r\n", 1, &mut out);
    c.data(
        Side::Server,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
        2,
        &mut out,
    );
    c.gap(Side::Server, 8, 3, &mut out);
    c.data(Side::Client, b"GET /b HTTP/1.1\r\n\r\n", 4, &mut out);
    c.data(
        Side::Server,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        5,
        &mut out,
    );
    c.finish(6, &mut out);
    assert_eq!(out.len(), 2);
    assert!(out[0].anomalies.contains(Anomaly::BODY_GAP));
    assert_eq!(out[1].status(), Some(404));
}

#[test]
fn tls_is_not_http() {
    let mut c = HttpConnection::new(HttpConfig::default());
    let mut out = Vec::new();
    c.data(
        Side::Client,
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, b'\n'],
        1,
        &mut out,
    );
    c.finish(2, &mut out);
    assert!(out.is_empty());
    assert!(c.stats.not_http);
}

#[test]
fn hostile_heads_are_bounded() {
    let cfg = HttpConfig {
        max_head_bytes: 4096,
        ..HttpConfig::default()
    };
    let mut c = HttpConnection::new(cfg);
    let mut out = Vec::new();
    c.data(Side::Client, b"GET / HTTP/1.1\r\n", 1, &mut out);
    let junk = vec![b'a'; 1 << 20];
    c.data(Side::Client, &junk, 2, &mut out);
    c.finish(3, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].anomalies.contains(Anomaly::HEAD_TOO_LONG));
    assert!(out[0].request.as_ref().is_some_and(|h| h.buf.len() <= 4096));
}

fn exchange(req: &[u8], resp: &[u8]) -> (Vec<Transaction>, HttpStats) {
    let mut c = HttpConnection::new(HttpConfig::default());
    let mut out = Vec::new();
    c.data(Side::Client, req, 1, &mut out);
    c.data(Side::Server, resp, 2, &mut out);
    c.finish(3, &mut out);
    (out, c.stats)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn declared_body_after_204_and_100_is_read() {
    let (out, _) = exchange(
        b"GET /a HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 204 ok\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response_body.captured, b"hello");
    assert!(out[0].anomalies.contains(Anomaly::UNEXPECTED_RESPONSE_BODY));
    let (out, _) = exchange(
        b"GET /a HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 100 ok\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status(), Some(100));
    assert_eq!(out[0].response_body.captured, b"hello");
    // 304 never has a body, whatever its Content-Length says.
    let (out, _) = exchange(
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].status(), Some(200));
}

#[test]
fn bare_cr_ends_head_lines() {
    let (out, _) = exchange(
        b"GET /a HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 ok\rContent-Type: text/plain\rContent-Length: 2\r\n\nhi",
    );
    assert_eq!(out.len(), 1);
    let resp = out[0].response.as_ref().unwrap();
    assert_eq!(resp.part(2), b"ok");
    assert_eq!(resp.header("content-type"), Some(&b"text/plain"[..]));
    assert_eq!(out[0].response_body.captured, b"hi");
    assert!(out[0].anomalies.contains(Anomaly::BARE_CR_LINE_END));
}

#[test]
fn a_coding_label_without_encoding_passes_through() {
    // Two gzip labels, one gzip layer: the inner label is false.
    let body = gzip(b"plain text");
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    let (out, _) = exchange(b"GET /a HTTP/1.1\r\n\r\n", &resp);
    assert_eq!(out[0].response_body.captured, b"plain text");
    assert!(out[0].anomalies.contains(Anomaly::ENCODING_PASSTHROUGH));
    // A body that breaks after decoding started is a failure, not a pass-through.
    let mut broken = gzip(&[b'x'; 4000]);
    let n = broken.len();
    broken[n / 2..].iter_mut().for_each(|b| *b ^= 0x5a);
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        broken.len()
    )
    .into_bytes();
    resp.extend_from_slice(&broken);
    let (out, _) = exchange(b"GET /a HTTP/1.1\r\n\r\n", &resp);
    assert!(!out[0].anomalies.contains(Anomaly::ENCODING_PASSTHROUGH));
}

#[test]
fn garbled_request_line_is_http_when_the_server_answers_with_status() {
    let (out, stats) = exchange(
        b"\xc3\x83 / HTTP/1.\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(!stats.not_http);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status(), Some(400));
    assert!(out[0].anomalies.contains(Anomaly::INVALID_REQUEST_LINE));
    // Unanswered, the same bytes are not taken for HTTP.
    let (out, stats) = exchange(b"\xc3\x83 / HTTP/1.\r\nHost: x\r\n\r\n", b"");
    assert!(stats.not_http);
    assert!(out.is_empty());
}

#[test]
fn plain_http_through_an_established_connect_is_parsed() {
    let (out, _) = exchange(
        b"CONNECT api:80 HTTP/1.1\r\n\r\nGET /in HTTP/1.1\r\nHost: api\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].method(), Some(&b"CONNECT"[..]));
    assert_eq!(out[1].method(), Some(&b"GET"[..]));
    assert_eq!(out[1].tx_id, 0);
    assert_eq!(out[1].response_body.captured, b"ok");
    // TLS through the tunnel stays opaque.
    let (out, stats) = exchange(
        b"CONNECT api:443 HTTP/1.1\r\n\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\n",
        b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03\x00\x10",
    );
    assert_eq!(out.len(), 1);
    assert!(stats.not_http);
}

#[test]
fn chunked_anywhere_in_transfer_encoding_frames_the_request() {
    let (out, _) = exchange(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        b"",
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].uri(), Some(&b"/next"[..]));
    assert!(
        out[0]
            .anomalies
            .contains(Anomaly::ABNORMAL_TRANSFER_ENCODING)
    );
}

#[test]
fn resync_after_a_gap_finds_any_request_line_and_flags_the_skip() {
    let mut c = HttpConnection::new(HttpConfig::default());
    let mut out = Vec::new();
    c.data(Side::Client, b"GET /a HTTP/1.1\r\nHost: x\r\n", 1, &mut out);
    c.gap(Side::Client, 100, 2, &mut out);
    c.data(
        Side::Client,
        b"tail of something\r\nPURGE /cache/1 HTTP/1.1\r\n\r\n",
        3,
        &mut out,
    );
    c.finish(4, &mut out);
    let purge = out
        .iter()
        .find(|t| t.method() == Some(&b"PURGE"[..]))
        .expect("request after the gap");
    assert!(purge.anomalies.contains(Anomaly::DATA_SKIPPED));
    assert_eq!(c.stats.parse_errors, 1);
    assert_eq!(c.ignored_bytes(), 19);
}

#[test]
fn obfuscated_framing_headers_still_frame_the_body() {
    let chunked = b"4\r\nabcd\r\n0\r\n\r\n";
    for te in [
        &b"Transfer-Encoding: xchunked\r\n"[..],
        b"Transfer-Encoding: chu\x00nked\r\n",
        b"Connection: close\r\n Transfer-Encoding: chunked\r\n",
    ] {
        let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
        resp.extend_from_slice(te);
        resp.extend_from_slice(b"\r\n");
        resp.extend_from_slice(chunked);
        let (out, _) = exchange(b"GET / HTTP/1.1\r\n\r\n", &resp);
        assert_eq!(out[0].response_body.captured, b"abcd", "{te:?}");
    }
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Encoding: gz\x00ip\r\nContent-Length: ".to_vec();
    let body = gzip(b"hidden");
    resp.extend_from_slice(format!("{}\r\n\r\n", body.len()).as_bytes());
    resp.extend_from_slice(&body);
    let (out, _) = exchange(b"GET / HTTP/1.1\r\n\r\n", &resp);
    assert_eq!(out[0].response_body.captured, b"hidden");
}

#[test]
fn a_reply_without_status_line_ended_by_close_is_a_body() {
    let (out, _) = exchange(b"GET /f HTTP/1.1\r\n\r\n", b"raw bytes with no line end");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response_body.captured, b"raw bytes with no line end");
    assert!(out[0].anomalies.contains(Anomaly::RESPONSE_NOT_STATUS_LINE));
}

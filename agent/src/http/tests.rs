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

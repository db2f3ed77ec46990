//! HTTP/1.x over a reassembled TCP connection: bytes and gaps in, transactions out.
//!
//! [`HttpConnection`] keeps one parser per direction and pairs responses with requests
//! in order (pipelining). It never does I/O: the caller feeds it what reassembly
//! delivers and collects finished [`Transaction`]s.

pub mod body;
pub mod head;

use std::collections::VecDeque;

use bitflags::bitflags;

use crate::decode::Micros;
pub use crate::reassembly::Side;
pub use body::{BodyInfo, BodyLimits, BodyReader, Coding, Framing};
pub use head::{Head, Known};

bitflags! {
    /// Protocol anomalies seen in a transaction. Each is logged by name.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Anomaly: u64 {
        const DUPLICATE_CONTENT_LENGTH = 1 << 0;
        const CONFLICTING_CONTENT_LENGTH = 1 << 1;
        const INVALID_CONTENT_LENGTH = 1 << 2;
        const CONTENT_LENGTH_LEADING_ZEROS = 1 << 3;
        const CHUNKED_WITH_CONTENT_LENGTH = 1 << 4;
        const INVALID_CHUNK_SIZE = 1 << 5;
        const CHUNK_SIZE_OVERFLOW = 1 << 6;
        const CHUNK_EXTENSION = 1 << 7;
        const CHUNK_MISSING_CRLF = 1 << 8;
        const ABNORMAL_TRANSFER_ENCODING = 1 << 9;
        const OBSOLETE_LINE_FOLDING = 1 << 10;
        const HEADER_WITHOUT_COLON = 1 << 11;
        const HEADER_NAME_WHITESPACE = 1 << 12;
        const TOO_MANY_HEADERS = 1 << 13;
        const HEAD_TOO_LONG = 1 << 14;
        const BODY_GAP = 1 << 15;
        const RESPONSE_WITHOUT_REQUEST = 1 << 16;
        const REQUEST_WITHOUT_RESPONSE = 1 << 17;
        const UNKNOWN_CONTENT_ENCODING = 1 << 18;
        const TOO_MANY_ENCODINGS = 1 << 19;
        const DECOMPRESSION_FAILED = 1 << 20;
        const DECODED_SIZE_LIMIT = 1 << 21;
        const EXPECT_WITH_CONTENT_LENGTH_ZERO = 1 << 22;
        const INVALID_STATUS = 1 << 23;
        const HTTP09 = 1 << 24;
        /// Bytes that start no message were skipped before this one (after a gap).
        const DATA_SKIPPED = 1 << 25;
        const INCOMPLETE_HEAD = 1 << 26;
        const TRUNCATED_BODY = 1 << 27;
        const MULTIPLE_INTERIM_RESPONSES = 1 << 28;
        const RESPONSE_NOT_STATUS_LINE = 1 << 29;
        const TX_EVICTED = 1 << 30;
        const INVALID_REQUEST_LINE = 1 << 31;
        /// A 1xx or 204 response declared a body (Content-Length or chunked) and it is
        /// read as one, as browsers do; an evasion otherwise.
        const UNEXPECTED_RESPONSE_BODY = 1 << 32;
        /// A head line ended in a bare CR, read as a line end.
        const BARE_CR_LINE_END = 1 << 33;
        /// A declared content coding did not decode and the bytes passed through as they
        /// are (a server that labels a body it never encoded).
        const ENCODING_PASSTHROUGH = 1 << 34;
    }
}

impl Anomaly {
    /// Snake-case names of the set flags, for logs.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        static NAMES: std::sync::LazyLock<Vec<(Anomaly, String)>> =
            std::sync::LazyLock::new(|| {
                Anomaly::all()
                    .iter_names()
                    .map(|(n, f)| (f, n.to_ascii_lowercase()))
                    .collect()
            });
        NAMES
            .iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n.as_str())
    }
}

/// Limits and options of the HTTP stage.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    /// Bytes of a message head (start line and fields) before it is cut.
    pub max_head_bytes: usize,
    pub max_fields: usize,
    pub body: BodyLimits,
    pub max_encoding_layers: usize,
    /// Transactions waiting for a response on one connection (pipelining depth).
    pub max_open_transactions: usize,
    /// Client bytes held after a CONNECT request until the proxy answers.
    pub max_connect_hold: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_head_bytes: 64 << 10,
            max_fields: 256,
            body: BodyLimits {
                capture_limit: 64 << 10,
                max_decoded: 64 << 20,
            },
            max_encoding_layers: 3,
            max_open_transactions: 64,
            max_connect_hold: 64 << 10,
        }
    }
}

/// One request and its response.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// 0-based position in the connection.
    pub tx_id: u64,
    pub request: Option<Head>,
    pub response: Option<Head>,
    /// The last interim (1xx) response: status code and reason.
    pub interim: Option<(u16, Vec<u8>)>,
    pub request_body: BodyInfo,
    pub response_body: BodyInfo,
    pub request_complete: bool,
    pub response_complete: bool,
    pub anomalies: Anomaly,
    pub request_ts: Option<Micros>,
    pub response_ts: Option<Micros>,
    pub last_ts: Micros,
}

impl Transaction {
    pub fn method(&self) -> Option<&[u8]> {
        self.request.as_ref().map(|h| h.part(0))
    }
    pub fn uri(&self) -> Option<&[u8]> {
        self.request.as_ref().map(|h| h.part(1))
    }
    pub fn request_protocol(&self) -> Option<&[u8]> {
        self.request.as_ref().map(|h| h.part(2))
    }
    /// The numeric status code, when the status line has one.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().and_then(|h| parse_status(h.part(1)))
    }
}

fn parse_status(s: &[u8]) -> Option<u16> {
    match *s {
        [a, b, c] if s.iter().all(u8::is_ascii_digit) => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

enum State {
    /// Reading a head; `lines` counts completed lines, `line_start` indexes `head_buf`.
    Head {
        lines: u32,
        line_start: usize,
    },
    Body(Box<BodyReader>),
    /// Client side after CONNECT: held until the proxy's answer decides.
    AwaitConnect(Vec<u8>),
    /// After a gap outside a body: skip until something that starts a message.
    Resync,
    /// Upgraded or tunnelled: not HTTP any more.
    Tunnel,
}

struct Direction {
    state: State,
    head_buf: Vec<u8>,
    /// Index into `txs` of the transaction whose message this direction is reading.
    current: Option<u64>,
    ignored_bytes: u64,
    /// Bytes were skipped since the last message head (resynchronisation).
    skipped: bool,
    /// Resynchronisation is skipping the rest of an overlong line.
    resync_discard: bool,
}

impl Direction {
    fn new() -> Self {
        Direction {
            state: State::Head {
                lines: 0,
                line_start: 0,
            },
            head_buf: Vec::new(),
            current: None,
            ignored_bytes: 0,
            skipped: false,
            resync_discard: false,
        }
    }

    fn reset_head(&mut self) {
        self.head_buf.clear();
        self.state = State::Head {
            lines: 0,
            line_start: 0,
        };
    }
}

/// Counters of one connection's HTTP stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStats {
    pub transactions: u64,
    pub parse_errors: u64,
    pub evicted_transactions: u64,
    pub tunnelled_bytes: u64,
    /// The connection turned out not to be HTTP (TLS, another protocol).
    pub not_http: bool,
}

/// [`HttpStats`] summed over connections, with the count of those that were not HTTP.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpTotals {
    pub transactions: u64,
    pub parse_errors: u64,
    pub evicted_transactions: u64,
    pub tunnelled_bytes: u64,
    pub skipped_bytes: u64,
    pub not_http_flows: u64,
}

impl HttpTotals {
    pub fn add(&mut self, c: &HttpConnection) {
        self.transactions += c.stats.transactions;
        self.parse_errors += c.stats.parse_errors;
        self.evicted_transactions += c.stats.evicted_transactions;
        self.tunnelled_bytes += c.stats.tunnelled_bytes;
        self.skipped_bytes += c.ignored_bytes();
        self.not_http_flows += u64::from(c.stats.not_http);
    }
}

pub struct HttpConnection {
    config: HttpConfig,
    dirs: [Direction; 2],
    txs: VecDeque<Transaction>,
    next_tx_id: u64,
    /// Transactions before this id have their response (or never will).
    next_response_tx: u64,
    /// The connection has been recognised as HTTP (a request or status line seen).
    detected: bool,
    /// The client's first line was not a request line; the server has not answered yet.
    /// Transactions read meanwhile are dropped unless a status line follows.
    doubtful: bool,
    /// The server side has sent bytes.
    server_seen: bool,
    pub stats: HttpStats,
}

/// Whether a complete line starts a message on `side`: a request line (a known method,
/// or any method token with a target and a version) or a status line.
fn starts_message(side: Side, line: &[u8]) -> bool {
    match side {
        Side::Client => {
            METHODS.iter().any(|m| line.starts_with(m)) || head::looks_like_request_line(line)
        }
        Side::Server => line.starts_with(b"HTTP/1.") || line.starts_with(b"HTTP/0.9"),
    }
}

/// The end of a head: a line end followed by an empty CRLF line, or by a bare LF.
static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\r\n"));
static BARE_HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));

/// Bytes looked at to recognise HTTP when the first line has no end yet.
const DETECT_WINDOW: usize = 1024;

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PROPFIND ",
    b"QUERY ",
];

impl HttpConnection {
    pub fn new(config: HttpConfig) -> Self {
        HttpConnection {
            config,
            dirs: [Direction::new(), Direction::new()],
            txs: VecDeque::new(),
            next_tx_id: 0,
            next_response_tx: 0,
            detected: false,
            doubtful: false,
            server_seen: false,
            stats: HttpStats::default(),
        }
    }

    /// Whether both directions stopped being HTTP (upgrade or CONNECT tunnel).
    pub fn is_tunnel(&self) -> bool {
        matches!(self.dirs[0].state, State::Tunnel) && matches!(self.dirs[1].state, State::Tunnel)
    }

    fn tx_mut(&mut self, id: u64) -> Option<&mut Transaction> {
        let front = self.txs.front()?.tx_id;
        let idx = id.checked_sub(front)? as usize;
        self.txs.get_mut(idx)
    }

    fn new_tx(&mut self, ts: Micros, out: &mut Vec<Transaction>) -> u64 {
        // Finished transactions leave first, so the bound counts only open ones (and
        // does not depend on how the bytes were cut).
        self.emit_done(out);
        if self.txs.len() >= self.config.max_open_transactions
            && let Some(mut old) = self.txs.pop_front()
        {
            old.anomalies |= Anomaly::TX_EVICTED;
            self.stats.evicted_transactions += 1;
            self.next_response_tx = self.next_response_tx.max(old.tx_id + 1);
            self.emit(old, out);
        }
        let id = self.next_tx_id;
        self.next_tx_id += 1;
        self.txs.push_back(Transaction {
            tx_id: id,
            last_ts: ts,
            ..Default::default()
        });
        id
    }

    fn emit(&mut self, tx: Transaction, out: &mut Vec<Transaction>) {
        self.stats.transactions += 1;
        out.push(tx);
    }

    /// Emits finished transactions from the front, keeping connection order.
    fn emit_done(&mut self, out: &mut Vec<Transaction>) {
        while let Some(front) = self.txs.front() {
            let req_done = front.request_complete || front.request.is_none();
            let busy = self.dirs[0].current == Some(front.tx_id)
                || self.dirs[1].current == Some(front.tx_id);
            if req_done && front.response_complete && !busy {
                let tx = self.txs.pop_front().expect("front exists");
                self.emit(tx, out);
            } else {
                break;
            }
        }
    }

    /// Bytes from one side, in stream order.
    pub fn data(&mut self, side: Side, mut data: &[u8], ts: Micros, out: &mut Vec<Transaction>) {
        let d = side as usize;
        if data.is_empty() {
            return;
        }
        while !data.is_empty() {
            // Set for each piece: an established CONNECT tunnel starts parsing afresh
            // (and forgets the server spoke) in the middle of a call, and what follows
            // in the same call must count as the server's, as it would in the next call.
            if side == Side::Server {
                self.server_seen = true;
            }
            let used = match &mut self.dirs[d].state {
                State::Tunnel => {
                    self.stats.tunnelled_bytes += data.len() as u64;
                    data.len()
                }
                State::AwaitConnect(held) => {
                    let room = self.config.max_connect_hold.saturating_sub(held.len());
                    let n = room.min(data.len());
                    held.extend_from_slice(&data[..n]);
                    if n < data.len() {
                        // The proxy never answered in time: treat as a tunnel.
                        self.dirs[d].state = State::Tunnel;
                    }
                    n
                }
                State::Resync => self.resync(side, data),
                State::Body(_) => self.body_data(side, data, ts, out),
                State::Head { lines, .. } => {
                    // A response starting while the client's head has no end yet answers
                    // it (wherever TCP cut the bytes, and however resync found it).
                    if side == Side::Server && *lines == 0 {
                        self.complete_waiting_request(ts, out);
                    }
                    self.head_data(side, data, ts, out)
                }
            };
            data = &data[used..];
        }
        self.emit_done(out);
    }

    /// Stops parsing: the bytes are some other protocol.
    fn not_http(&mut self) {
        self.stats.not_http = true;
        self.doubtful = false;
        self.txs.clear();
        for d in &mut self.dirs {
            d.head_buf.clear();
            d.state = State::Tunnel;
        }
    }

    /// The server answers while the client's head has no terminating empty line yet
    /// (an HTTP/0.9 request, or a client that never sends one): the request is whatever
    /// complete lines it has.
    fn complete_waiting_request(&mut self, ts: Micros, out: &mut Vec<Transaction>) {
        let c = &self.dirs[Side::Client as usize];
        if let State::Head { lines, line_start } = c.state
            && lines > 0
            && line_start == c.head_buf.len()
        {
            self.head_complete(Side::Client, ts, Anomaly::INCOMPLETE_HEAD, out);
        }
    }

    /// After a gap or an oversized head: skips whole lines until one starts a message.
    /// The current line is buffered (up to the head limit) so that the decision never
    /// depends on where TCP cut the bytes.
    fn resync(&mut self, side: Side, data: &[u8]) -> usize {
        let max = self.config.max_head_bytes;
        let dir = &mut self.dirs[side as usize];
        let Some(i) = memchr::memchr(b'\n', data) else {
            if dir.resync_discard || dir.head_buf.len() + data.len() > max {
                // Longer than any head: not a message start; skip to its end.
                dir.ignored_bytes += (dir.head_buf.len() + data.len()) as u64;
                dir.head_buf.clear();
                dir.resync_discard = true;
                dir.skipped = true;
            } else {
                dir.head_buf.extend_from_slice(data);
            }
            return data.len();
        };
        let prefix = dir.head_buf.len();
        let line_len = prefix + i + 1;
        let starts = !dir.resync_discard && line_len <= max && {
            dir.head_buf.extend_from_slice(&data[..=i]);
            let found = starts_message(side, &dir.head_buf);
            dir.head_buf.truncate(prefix);
            found
        };
        dir.resync_discard = false;
        if starts {
            // The buffered start of the line stays; head parsing reads the rest. Line
            // ends before it are dropped, as head parsing drops them at a message start.
            let lead = dir
                .head_buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            dir.head_buf.drain(..lead);
            dir.state = State::Head {
                lines: 0,
                line_start: 0,
            };
            return 0;
        }
        dir.ignored_bytes += line_len as u64;
        dir.skipped = true;
        dir.head_buf.clear();
        i + 1
    }

    fn head_data(
        &mut self,
        side: Side,
        data: &[u8],
        ts: Micros,
        out: &mut Vec<Transaction>,
    ) -> usize {
        let d = side as usize;
        let max = self.config.max_head_bytes;
        let mut pos = 0;
        // Empty lines between messages are skipped (keep-alive clients send extra CRLFs).
        if self.dirs[d].head_buf.is_empty() {
            while pos < data.len() && (data[pos] == b'\r' || data[pos] == b'\n') {
                pos += 1;
            }
            if pos == data.len() {
                return pos;
            }
        }
        loop {
            let dir = &mut self.dirs[d];
            let State::Head { lines, line_start } = &mut dir.state else {
                return pos;
            };
            // Fast path for the header lines: the rest of the head, up to its empty line
            // (LF CRLF, or LF LF), is all here.
            if *lines >= 1
                && *line_start == dir.head_buf.len()
                && let Some(k) = HEAD_END.find(&data[pos..])
                && k + 3 <= max.saturating_sub(dir.head_buf.len())
                && !data[pos..].starts_with(b"\r\n")
                && !data[pos..].starts_with(b"\n")
                && BARE_HEAD_END.find(&data[pos..pos + k + 1]).is_none()
            {
                let end = pos + k + 3;
                self.head_complete_with(side, ts, Anomaly::empty(), &data[pos..end], out);
                return end;
            }
            let nl = memchr::memchr(b'\n', &data[pos..]);
            let end = nl.map_or(data.len(), |i| pos + i + 1);
            let room = max.saturating_sub(dir.head_buf.len());
            if end - pos > room {
                // The head is longer than allowed: parse what fits and skip the rest.
                dir.head_buf.extend_from_slice(&data[pos..pos + room]);
                let consumed = pos + room;
                let first_line = *lines == 0;
                if first_line && !self.detected && !self.first_line_plausible(side) {
                    // The same decision as for a long first line cut anywhere else.
                    if side == Side::Client && !self.server_seen {
                        self.doubtful = true;
                    } else {
                        self.not_http();
                        return data.len();
                    }
                }
                self.head_complete(side, ts, Anomaly::HEAD_TOO_LONG, out);
                self.dirs[d].state = State::Resync;
                return consumed;
            }
            dir.head_buf.extend_from_slice(&data[pos..end]);
            pos = end;
            if nl.is_none() {
                if !self.detected
                    && self.dirs[d].head_buf.len() >= DETECT_WINDOW
                    && !self.first_line_plausible(side)
                {
                    if side == Side::Client && !self.server_seen {
                        self.doubtful = true;
                    } else {
                        self.not_http();
                    }
                }
                return pos;
            }
            let prev_len = *line_start;
            let line = &dir.head_buf[*line_start..];
            let is_empty = line == b"\n" || line == b"\r\n";
            let first = *lines == 0;
            *lines += 1;
            *line_start = dir.head_buf.len();
            if first && !self.detected {
                let line = &self.dirs[d].head_buf[prev_len..];
                let plausible = match side {
                    Side::Client => head::plausible_request_line(line),
                    Side::Server => {
                        head::looks_like_status_line(line)
                            || (self.next_tx_id > 0 && !self.doubtful)
                    }
                };
                if plausible {
                    self.detected = true;
                    self.doubtful = false;
                } else if side == Side::Client && !self.server_seen {
                    // A garbled request line: the server's answer decides (a status
                    // line makes this HTTP, with a request it could not read).
                    self.doubtful = true;
                } else {
                    self.not_http();
                    return data.len();
                }
            }
            let State::Head { .. } = &self.dirs[d].state else {
                return pos;
            };
            let dir = &mut self.dirs[d];
            let line = &dir.head_buf[prev_len..];
            if first {
                match side {
                    Side::Client => {}
                    Side::Server => {
                        if !head::looks_like_status_line(line) || self.expects_http09_response() {
                            let line = std::mem::take(&mut self.dirs[d].head_buf);
                            self.response_without_status_line(ts, &line, out);
                            return pos;
                        }
                    }
                }
            } else if is_empty {
                self.head_complete(side, ts, Anomaly::empty(), out);
                return pos;
            }
        }
    }

    /// Whether the first line buffered so far (complete or not) could start HTTP.
    fn first_line_plausible(&self, side: Side) -> bool {
        let buf = &self.dirs[side as usize].head_buf;
        match side {
            Side::Client => head::plausible_request_line(buf),
            Side::Server => head::looks_like_status_line(buf),
        }
    }

    /// Whether the request the next response answers had no version: HTTP/0.9 servers
    /// answer with a bare body.
    fn expects_http09_response(&self) -> bool {
        let front = self.txs.front().map_or(self.next_tx_id, |t| t.tx_id);
        let id = self.next_response_tx.max(front);
        let idx = (id - front) as usize;
        self.txs
            .get(idx)
            .and_then(|t| t.request.as_ref())
            .is_some_and(|r| r.part(2).is_empty())
    }

    /// A response that does not start with a status line: the whole rest of the stream
    /// is its body, as HTTP/0.9 servers send it.
    fn response_without_status_line(
        &mut self,
        ts: Micros,
        first: &[u8],
        out: &mut Vec<Transaction>,
    ) {
        let id = self.response_tx(ts, out);
        let reader = BodyReader::new(Framing::UntilClose, &[], self.config.body);
        if let Some(tx) = self.tx_mut(id) {
            tx.anomalies |= Anomaly::RESPONSE_NOT_STATUS_LINE;
            tx.response_ts = Some(ts);
        }
        let dir = &mut self.dirs[Side::Server as usize];
        dir.current = Some(id);
        dir.head_buf.clear();
        dir.state = State::Body(Box::new(reader));
        self.body_data(Side::Server, first, ts, out);
    }

    /// The transaction the next response belongs to, creating one if no request waits.
    fn response_tx(&mut self, ts: Micros, out: &mut Vec<Transaction>) -> u64 {
        let front = self.txs.front().map_or(self.next_tx_id, |t| t.tx_id);
        let id = self.next_response_tx.max(front);
        if id < self.next_tx_id {
            self.next_response_tx = id + 1;
            return id;
        }
        let id = self.new_tx(ts, out);
        if let Some(tx) = self.tx_mut(id) {
            tx.anomalies |= Anomaly::RESPONSE_WITHOUT_REQUEST;
            tx.request_complete = true;
        }
        self.next_response_tx = id + 1;
        id
    }

    fn head_complete(
        &mut self,
        side: Side,
        ts: Micros,
        flags: Anomaly,
        out: &mut Vec<Transaction>,
    ) {
        self.head_complete_with(side, ts, flags, &[], out);
    }

    /// The head is what the line buffer holds followed by `rest` (the rest of a head
    /// found whole in one segment, not copied into the line buffer first).
    fn head_complete_with(
        &mut self,
        side: Side,
        ts: Micros,
        flags: Anomaly,
        rest: &[u8],
        out: &mut Vec<Transaction>,
    ) {
        let d = side as usize;
        // The head gets an exact-size copy; the line buffer keeps its capacity for the
        // next message (unless a huge head grew it).
        let dir = &mut self.dirs[d];
        let mut buf = Vec::with_capacity(dir.head_buf.len() + rest.len());
        buf.extend_from_slice(&dir.head_buf);
        buf.extend_from_slice(rest);
        dir.head_buf.clear();
        if dir.head_buf.capacity() > 16 << 10 {
            dir.head_buf = Vec::new();
        }
        let mut anomalies = flags;
        if std::mem::take(&mut self.dirs[d].skipped) {
            anomalies |= Anomaly::DATA_SKIPPED;
        }
        let limits = head::HeadLimits {
            max_fields: self.config.max_fields,
        };
        let head = head::parse(buf, &limits, &mut anomalies);
        self.dirs[d].reset_head();
        match side {
            Side::Client => self.request_head(head, anomalies, ts, out),
            Side::Server => self.response_head(head, anomalies, ts, out),
        }
    }

    fn content_length(head: &Head, anomalies: &mut Anomaly) -> Option<u64> {
        let mut result: Option<u64> = None;
        let mut invalid = false;
        for v in head.get_all(Known::ContentLength) {
            // Repeated values folded into one field ("10, 10") count as repeats.
            for part in v.split(|&b| b == b',') {
                let t = head::trim(part);
                let parsed = if !t.is_empty() && t.iter().all(u8::is_ascii_digit) {
                    if t.len() > 1 && t[0] == b'0' {
                        *anomalies |= Anomaly::CONTENT_LENGTH_LEADING_ZEROS;
                    }
                    // Lengths past i64::MAX are refused, as servers do.
                    t.iter()
                        .try_fold(0u64, |n, &d| {
                            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                        })
                        .filter(|n| *n <= i64::MAX as u64)
                } else {
                    None
                };
                match (parsed, result) {
                    (None, _) => invalid = true,
                    (Some(n), None) => result = Some(n),
                    (Some(n), Some(prev)) => {
                        *anomalies |= if n == prev {
                            Anomaly::DUPLICATE_CONTENT_LENGTH
                        } else {
                            Anomaly::CONFLICTING_CONTENT_LENGTH
                        };
                    }
                }
            }
        }
        if invalid {
            *anomalies |= Anomaly::INVALID_CONTENT_LENGTH;
        }
        result
    }

    /// Whether a head announces a body: a non-zero Content-Length or a Transfer-Encoding.
    /// libhtp reads such bodies even after 1xx and 204 answers, as browsers do, so an
    /// evader cannot hide content behind them.
    fn declares_body(head: &Head) -> bool {
        head.get_all(Known::TransferEncoding).next().is_some()
            || head
                .get_all(Known::ContentLength)
                .any(|v| head::trim(v).iter().any(|&b| (b'1'..=b'9').contains(&b)))
    }

    /// Whether Transfer-Encoding asks for chunked framing; odd spellings are flagged.
    fn is_chunked(head: &Head, anomalies: &mut Anomaly) -> bool {
        let mut chunked = false;
        // "chunked" anywhere in the list frames the body, as libhtp and Zeek read it:
        // "chunked, identity" is a smuggling attempt, and reading the chunks keeps the
        // request that follows them a request.
        for v in head.get_all(Known::TransferEncoding) {
            // NUL bytes are ignored and "chunked" counts inside a longer token, as libhtp
            // reads it: "chu\0nked" and "xchunked" are evasions of a chunked body.
            let has = head::trim(v).eq_ignore_ascii_case(b"chunked") || {
                let clean: Vec<u8> = v
                    .iter()
                    .filter(|&&b| b != 0)
                    .map(u8::to_ascii_lowercase)
                    .collect();
                memchr::memmem::find(&clean, b"chunked").is_some()
            };
            chunked |= has;
            if !has || head::trim(v).len() != 7 {
                *anomalies |= Anomaly::ABNORMAL_TRANSFER_ENCODING;
            }
        }
        chunked
    }

    fn request_head(
        &mut self,
        head: Head,
        mut anomalies: Anomaly,
        ts: Micros,
        out: &mut Vec<Transaction>,
    ) {
        let id = self.new_tx(ts, out);
        if head.part(2).is_empty() {
            anomalies |= Anomaly::HTTP09;
        }
        if !head::is_valid_request_line(&head) {
            self.stats.parse_errors += 1;
            // Not a request at all: the transaction keeps no request fields, and the
            // response, if any, is logged on its own.
            if let Some(tx) = self.tx_mut(id) {
                tx.anomalies |= anomalies | Anomaly::INVALID_REQUEST_LINE;
                tx.request_complete = true;
                tx.request_ts = Some(ts);
            }
            return;
        }
        let chunked = Self::is_chunked(&head, &mut anomalies);
        let cl = Self::content_length(&head, &mut anomalies);
        let framing = if chunked {
            if cl.is_some() {
                anomalies |= Anomaly::CHUNKED_WITH_CONTENT_LENGTH;
            }
            Framing::Chunked
        } else {
            match cl {
                Some(0) | None => Framing::None,
                Some(n) => Framing::Length(n),
            }
        };
        if cl == Some(0)
            && head
                .get(Known::Expect)
                .is_some_and(|e| head::trim(e).eq_ignore_ascii_case(b"100-continue"))
        {
            anomalies |= Anomaly::EXPECT_WITH_CONTENT_LENGTH_ZERO;
        }
        let connect = head.part(0).eq_ignore_ascii_case(b"CONNECT");
        let codings = if framing == Framing::None {
            Vec::new()
        } else {
            Coding::parse_list(
                head.get_all(Known::ContentEncoding),
                self.config.max_encoding_layers,
                &mut anomalies,
            )
        };
        let dir = &mut self.dirs[Side::Client as usize];
        if let Some(tx) = {
            let front = self.txs.front().map_or(0, |t| t.tx_id);
            self.txs.get_mut((id - front) as usize)
        } {
            tx.request = Some(head);
            tx.anomalies |= anomalies;
            tx.request_ts = Some(ts);
            tx.last_ts = ts;
        }
        if framing == Framing::None {
            self.finish_request(id, None);
            if connect {
                self.dirs[Side::Client as usize].state = State::AwaitConnect(Vec::new());
            }
        } else {
            dir.current = Some(id);
            let mut reader = BodyReader::new(framing, &codings, self.config.body);
            // A request whose chunk framing breaks ends there; what follows is read as
            // the next request (servers do, and that is how smuggling is seen).
            reader.end_on_invalid_chunk = true;
            dir.state = State::Body(Box::new(reader));
        }
    }

    fn finish_request(&mut self, id: u64, body: Option<(BodyInfo, Anomaly)>) {
        if let Some(tx) = self.tx_mut(id) {
            tx.request_complete = true;
            if let Some((info, a)) = body {
                if !info.complete {
                    tx.anomalies |= Anomaly::TRUNCATED_BODY;
                }
                tx.request_body = info;
                tx.anomalies |= a;
            }
        }
        self.dirs[Side::Client as usize].current = None;
    }

    fn response_head(
        &mut self,
        head: Head,
        mut anomalies: Anomaly,
        ts: Micros,
        out: &mut Vec<Transaction>,
    ) {
        let status = parse_status(head.part(1));
        if status.is_none() {
            anomalies |= Anomaly::INVALID_STATUS;
            self.stats.parse_errors += 1;
        }
        // Interim responses (100 Continue, 102, 103) precede the final one.
        let declares_body = Self::declares_body(&head);
        if let Some(code @ 100..=199) = status
            && code != 101
            && !declares_body
        {
            let front = self.txs.front().map_or(self.next_tx_id, |t| t.tx_id);
            let id = self.next_response_tx.max(front);
            let id = if id < self.next_tx_id {
                id
            } else {
                let id = self.new_tx(ts, out);
                if let Some(tx) = self.tx_mut(id) {
                    tx.anomalies |= Anomaly::RESPONSE_WITHOUT_REQUEST;
                    tx.request_complete = true;
                }
                id
            };
            if let Some(tx) = self.tx_mut(id) {
                if tx.interim.is_some() {
                    tx.anomalies |= Anomaly::MULTIPLE_INTERIM_RESPONSES;
                }
                tx.interim = Some((code, head.part(2).to_vec()));
                tx.anomalies |= anomalies;
                tx.last_ts = ts;
            }
            return;
        }
        let id = self.response_tx(ts, out);
        let (method_head, method_connect) = match self.tx_mut(id).and_then(|t| t.method()) {
            Some(m) => (
                m.eq_ignore_ascii_case(b"HEAD"),
                m.eq_ignore_ascii_case(b"CONNECT"),
            ),
            None => (false, false),
        };
        let mut tunnel = false;
        let framing = match status {
            Some(101) => {
                tunnel = true;
                Framing::None
            }
            Some(200..=299) if method_connect => {
                tunnel = true;
                Framing::None
            }
            Some(304) => Framing::None,
            Some(204) if !declares_body => Framing::None,
            _ if method_head => Framing::None,
            _ => {
                if matches!(status, Some(100..=199 | 204)) {
                    anomalies |= Anomaly::UNEXPECTED_RESPONSE_BODY;
                }
                let chunked = Self::is_chunked(&head, &mut anomalies);
                let cl = Self::content_length(&head, &mut anomalies);
                if chunked {
                    if cl.is_some() {
                        anomalies |= Anomaly::CHUNKED_WITH_CONTENT_LENGTH;
                    }
                    Framing::Chunked
                } else {
                    match cl {
                        Some(0) => Framing::None,
                        Some(n) => Framing::Length(n),
                        None => Framing::UntilClose,
                    }
                }
            }
        };
        let codings = if framing == Framing::None {
            Vec::new()
        } else {
            Coding::parse_list(
                head.get_all(Known::ContentEncoding),
                self.config.max_encoding_layers,
                &mut anomalies,
            )
        };
        if let Some(tx) = self.tx_mut(id) {
            tx.response = Some(head);
            tx.anomalies |= anomalies;
            tx.response_ts = Some(ts);
            tx.last_ts = ts;
        }
        if method_connect {
            // The client's held bytes are a tunnel on success, more requests otherwise.
            let held = match std::mem::replace(
                &mut self.dirs[Side::Client as usize].state,
                State::Head {
                    lines: 0,
                    line_start: 0,
                },
            ) {
                State::AwaitConnect(h) => Some(h),
                other => {
                    self.dirs[Side::Client as usize].state = other;
                    None
                }
            };
            if !tunnel && let Some(h) = held {
                // Refused: the held bytes are more requests, read after this answer.
                self.response_framing(id, framing, &codings);
                self.data(Side::Client, &h, ts, out);
                return;
            }
            if tunnel {
                // Established: what flows next is whatever the client tunnels. Plain
                // HTTP through a proxy is parsed afresh (as Suricata does, transaction
                // ids restart); anything else (TLS) fails detection and is tunnelled.
                self.finish_response(id, None);
                self.emit_done(out);
                if self.txs.is_empty() {
                    self.next_tx_id = 0;
                    self.next_response_tx = 0;
                    self.detected = false;
                    self.doubtful = false;
                    self.server_seen = false;
                    self.dirs[0].reset_head();
                    self.dirs[1].reset_head();
                    if let Some(h) = held {
                        self.data(Side::Client, &h, ts, out);
                    }
                } else {
                    self.dirs[0].state = State::Tunnel;
                    self.dirs[1].state = State::Tunnel;
                }
                return;
            }
        }
        if tunnel {
            self.finish_response(id, None);
            self.dirs[0].state = State::Tunnel;
            self.dirs[1].state = State::Tunnel;
            return;
        }
        self.response_framing(id, framing, &codings);
    }

    fn response_framing(&mut self, id: u64, framing: Framing, codings: &[Coding]) {
        if framing == Framing::None {
            self.finish_response(id, None);
        } else {
            let dir = &mut self.dirs[Side::Server as usize];
            dir.current = Some(id);
            dir.state = State::Body(Box::new(BodyReader::new(
                framing,
                codings,
                self.config.body,
            )));
        }
    }

    fn finish_response(&mut self, id: u64, body: Option<(BodyInfo, Anomaly)>) {
        if let Some(tx) = self.tx_mut(id) {
            tx.response_complete = true;
            if let Some((info, a)) = body {
                if !info.complete {
                    tx.anomalies |= Anomaly::TRUNCATED_BODY;
                }
                tx.response_body = info;
                tx.anomalies |= a;
            }
        }
        self.dirs[Side::Server as usize].current = None;
    }

    fn body_data(
        &mut self,
        side: Side,
        data: &[u8],
        ts: Micros,
        _out: &mut Vec<Transaction>,
    ) -> usize {
        let d = side as usize;
        let State::Body(reader) = &mut self.dirs[d].state else {
            return 0;
        };
        let used = reader.feed(data);
        if reader.is_done() || reader.is_failed() {
            self.end_body(side, false, ts);
        } else if let Some(id) = self.dirs[d].current
            && let Some(tx) = self.tx_mut(id)
        {
            tx.last_ts = ts;
        }
        used
    }

    /// Ends the body a direction is reading.
    fn end_body(&mut self, side: Side, closed: bool, ts: Micros) {
        let d = side as usize;
        let state = std::mem::replace(
            &mut self.dirs[d].state,
            State::Head {
                lines: 0,
                line_start: 0,
            },
        );
        let State::Body(mut reader) = state else {
            self.dirs[d].state = state;
            return;
        };
        let info = reader.finish(closed);
        let anomalies = reader.anomalies;
        let Some(id) = self.dirs[d].current else {
            return;
        };
        if let Some(tx) = self.tx_mut(id) {
            tx.last_ts = ts;
        }
        match side {
            Side::Client => self.finish_request(id, Some((info, anomalies))),
            Side::Server => self.finish_response(id, Some((info, anomalies))),
        }
    }

    /// `n` bytes from one side were never seen.
    pub fn gap(&mut self, side: Side, n: u64, ts: Micros, out: &mut Vec<Transaction>) {
        let d = side as usize;
        match &mut self.dirs[d].state {
            State::Body(reader) => {
                reader.gap(n);
                if reader.is_done() {
                    self.end_body(side, false, ts);
                }
            }
            State::Head { .. } => {
                if !self.dirs[d].head_buf.is_empty() {
                    self.stats.parse_errors += 1;
                }
                self.dirs[d].head_buf.clear();
                self.dirs[d].resync_discard = false;
                self.dirs[d].state = State::Resync;
            }
            State::Resync => {
                // The line being looked at is cut: it cannot start a message.
                self.dirs[d].ignored_bytes += self.dirs[d].head_buf.len() as u64;
                self.dirs[d].head_buf.clear();
                self.dirs[d].resync_discard = true;
            }
            State::Tunnel | State::AwaitConnect(_) => {}
        }
        self.emit_done(out);
    }

    /// One side closed (FIN, RST or end of capture): finishes what it was reading.
    pub fn close(&mut self, side: Side, ts: Micros, out: &mut Vec<Transaction>) {
        let d = side as usize;
        if self.doubtful && side == Side::Server {
            // The server is done and never answered a garbled request with a status.
            self.not_http();
            return;
        }
        match &self.dirs[d].state {
            State::Body(_) => self.end_body(side, true, ts),
            State::Head { lines, .. } if !self.dirs[d].head_buf.is_empty() => {
                let first_line_only = *lines == 0;
                let buf = &self.dirs[d].head_buf;
                let blank = buf.iter().all(|b| b.is_ascii_whitespace());
                if blank {
                    self.dirs[d].reset_head();
                } else if side == Side::Server
                    && first_line_only
                    && !head::looks_like_status_line(buf)
                {
                    // A reply that never had a status line, ended by the close: it is
                    // all body (HTTP/0.9 style).
                    let first = std::mem::take(&mut self.dirs[d].head_buf);
                    self.response_without_status_line(ts, &first, out);
                    self.end_body(side, true, ts);
                } else {
                    self.head_complete(side, ts, Anomaly::INCOMPLETE_HEAD, out);
                    // A body that framing expects after an incomplete head cannot come.
                    if matches!(self.dirs[d].state, State::Body(_)) {
                        self.end_body(side, true, ts);
                    }
                }
            }
            _ => {}
        }
        self.emit_done(out);
    }

    /// The connection is over: every open transaction is emitted as it stands.
    pub fn finish(&mut self, ts: Micros, out: &mut Vec<Transaction>) {
        if self.doubtful {
            // Nothing ever confirmed that the client spoke HTTP.
            self.not_http();
        }
        self.close(Side::Client, ts, out);
        self.close(Side::Server, ts, out);
        self.dirs[0].current = None;
        self.dirs[1].current = None;
        while let Some(mut tx) = self.txs.pop_front() {
            if tx.request.is_some() && tx.response.is_none() {
                tx.anomalies |= Anomaly::REQUEST_WITHOUT_RESPONSE;
            }
            self.emit(tx, out);
        }
    }

    /// Bytes skipped while resynchronising, per side.
    pub fn ignored_bytes(&self) -> u64 {
        self.dirs[0].ignored_bytes + self.dirs[1].ignored_bytes
    }
}

#[cfg(test)]
mod tests;

//! Message bodies: framing (length, chunked, until close), content decoding (gzip,
//! deflate, brotli, stacked) and the bounded capture that later stages read.
//!
//! Sizes are always counted in full; only the first `capture_limit` decoded bytes are
//! kept, and decoding stops after `max_decoded` bytes so that a decompression bomb costs
//! a bounded amount of work and no memory.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;

use super::Anomaly;

/// How the end of a body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailer,
}

/// Counters and the captured prefix of one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyInfo {
    /// Message-body bytes as transferred: de-chunked, still content-encoded.
    pub transferred: u64,
    /// Entity bytes after content decoding.
    pub decoded: u64,
    /// The first bytes of the decoded entity.
    pub captured: Vec<u8>,
    /// Bytes lost in gaps inside the body.
    pub gap_bytes: u64,
    /// The body ended as its framing said (not cut by a gap, close or limit).
    pub complete: bool,
}

/// Shared sink at the end of a decoder chain.
struct Sink {
    decoded: u64,
    captured: Vec<u8>,
    capture_limit: usize,
    max_decoded: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.decoded >= self.max_decoded {
            return Err(io::Error::other("decoded size limit"));
        }
        self.decoded += buf.len() as u64;
        let room = self.capture_limit.saturating_sub(self.captured.len());
        self.captured.extend_from_slice(&buf[..room.min(buf.len())]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A content coding named in `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    fn from_token(t: &[u8]) -> Option<Option<Coding>> {
        // NUL bytes inside a token are ignored, as libhtp does ("gz\0ip" is gzip).
        let owned: Vec<u8>;
        let t = if t.contains(&0) {
            owned = t.iter().copied().filter(|&b| b != 0).collect();
            &owned
        } else {
            t
        };
        let t = super::head::trim(t);
        if t.eq_ignore_ascii_case(b"gzip") || t.eq_ignore_ascii_case(b"x-gzip") {
            Some(Some(Coding::Gzip))
        } else if t.eq_ignore_ascii_case(b"deflate") || t.eq_ignore_ascii_case(b"x-deflate") {
            Some(Some(Coding::Deflate))
        } else if t.eq_ignore_ascii_case(b"br") {
            Some(Some(Coding::Brotli))
        } else if t.eq_ignore_ascii_case(b"identity") || t.is_empty() {
            Some(None)
        } else {
            None
        }
    }

    /// Parses every `Content-Encoding` value into the codings applied, in the order
    /// they were applied. An unknown coding disables decoding (the body is kept as is).
    pub fn parse_list<'a>(
        values: impl Iterator<Item = &'a [u8]>,
        max_layers: usize,
        anomalies: &mut Anomaly,
    ) -> Vec<Coding> {
        let mut out = Vec::new();
        for v in values {
            for tok in v.split(|&b| b == b',') {
                match Coding::from_token(tok) {
                    Some(Some(c)) => out.push(c),
                    Some(None) => {}
                    None => {
                        *anomalies |= Anomaly::UNKNOWN_CONTENT_ENCODING;
                        return Vec::new();
                    }
                }
            }
        }
        if out.len() > max_layers {
            *anomalies |= Anomaly::TOO_MANY_ENCODINGS;
            out.truncate(max_layers);
        }
        out
    }
}

/// Deflate as servers send it: usually zlib-wrapped, sometimes raw. The first bytes
/// decide, as browsers do.
struct AutoDeflate<W: Write> {
    inner: Option<W>,
    dec: Option<Box<dyn Write>>,
    head: Vec<u8>,
}

impl<W: Write + 'static> Write for AutoDeflate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(d) = &mut self.dec {
            d.write_all(buf)?;
            return Ok(buf.len());
        }
        self.head.extend_from_slice(buf);
        if self.head.len() < 2 {
            return Ok(buf.len());
        }
        let (cmf, flg) = (self.head[0], self.head[1]);
        let zlib = cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
        let inner = self.inner.take().ok_or_else(|| io::Error::other("state"))?;
        let mut dec: Box<dyn Write> = if zlib {
            Box::new(flate2::write::ZlibDecoder::new(inner))
        } else {
            Box::new(flate2::write::DeflateDecoder::new(inner))
        };
        dec.write_all(&std::mem::take(&mut self.head))?;
        self.dec = Some(dec);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.dec.as_mut().map_or(Ok(()), |d| d.flush())
    }
}

/// Writes into a shared sink so the chain's end can be read after every write.
struct SharedSink(Rc<RefCell<Sink>>);

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One content-decoding layer. A gzip layer whose input does not start with the gzip
/// magic was never gzip-encoded (a false or doubled `Content-Encoding` label): its bytes
/// pass through unchanged, as libhtp does, so a false label cannot hide a body. The
/// decision rests on the first input bytes only, never on how TCP cut them.
struct Layer {
    dec: Option<Box<dyn Write>>,
    inner: Rc<RefCell<Box<dyn Write>>>,
    /// The signature the input must start with; `None` once decided (or for codings
    /// without one).
    magic: Option<&'static [u8]>,
    head: Vec<u8>,
    passthrough: Rc<Cell<bool>>,
}

impl Write for Layer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if let Some(magic) = self.magic {
            let take = (magic.len() - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.head.len() < magic.len() {
                return Ok(buf.len());
            }
            self.magic = None;
            let head = std::mem::take(&mut self.head);
            if head != magic {
                self.dec = None;
                self.passthrough.set(true);
            }
            self.forward(&head)?;
        }
        self.forward(rest)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.magic.is_some() && !self.head.is_empty() {
            // Fewer bytes than the signature: they are not the coding either.
            self.magic = None;
            self.dec = None;
            self.passthrough.set(true);
            let head = std::mem::take(&mut self.head);
            self.forward(&head)?;
        }
        match &mut self.dec {
            Some(d) => d.flush(),
            None => Ok(()),
        }
    }
}

impl Layer {
    fn forward(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.dec {
            Some(d) => d.write_all(data),
            None => self.inner.borrow_mut().write_all(data),
        }
    }
}

/// A writer shared by a layer and the decoder under it.
struct Shared(Rc<RefCell<Box<dyn Write>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// The decoding layers of one body and the sink at their end.
struct DecoderChain {
    chain: Box<dyn Write>,
    sink: Rc<RefCell<Sink>>,
    /// Set by a layer whose coding was never applied (its bytes passed through).
    passthrough: Rc<Cell<bool>>,
}

/// Body limits from the HTTP configuration.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub capture_limit: usize,
    pub max_decoded: u64,
}

/// Reads one body off the wire.
pub struct BodyReader {
    framing: Framing,
    chunk: ChunkState,
    /// Partial chunk-size or trailer line.
    line: Vec<u8>,
    remaining: u64,
    /// Content decoding, when the body has a coding; otherwise bytes go to `sink`.
    decoder: Option<DecoderChain>,
    sink: Sink,
    decode_failed: bool,
    /// End the body at a bad chunk-size line instead of reading on until close.
    pub end_on_invalid_chunk: bool,
    failed: bool,
    pub info: BodyInfo,
    pub anomalies: Anomaly,
}

const MAX_CHUNK_LINE: usize = 1024;

impl BodyReader {
    pub fn new(framing: Framing, codings: &[Coding], limits: BodyLimits) -> Self {
        let sink = Sink {
            decoded: 0,
            captured: Vec::new(),
            capture_limit: limits.capture_limit,
            max_decoded: limits.max_decoded,
        };
        let mut decoder = None;
        if !codings.is_empty() {
            let shared = Rc::new(RefCell::new(Sink {
                captured: Vec::new(),
                ..sink
            }));
            let passthrough = Rc::new(Cell::new(false));
            let mut chain: Box<dyn Write> = Box::new(SharedSink(shared.clone()));
            // The last coding applied is undone first, so it wraps the outermost writer.
            for c in codings {
                let inner = Rc::new(RefCell::new(chain));
                let shared = Shared(inner.clone());
                let dec: Box<dyn Write> = match c {
                    Coding::Gzip => Box::new(flate2::write::MultiGzDecoder::new(shared)),
                    Coding::Deflate => Box::new(AutoDeflate {
                        inner: Some(shared),
                        dec: None,
                        head: Vec::new(),
                    }),
                    Coding::Brotli => {
                        Box::new(brotli_decompressor::DecompressorWriter::new(shared, 4096))
                    }
                };
                chain = Box::new(Layer {
                    dec: Some(dec),
                    inner,
                    magic: (*c == Coding::Gzip).then_some(&b"\x1f\x8b"[..]),
                    head: Vec::new(),
                    passthrough: passthrough.clone(),
                });
            }
            decoder = Some(DecoderChain {
                chain,
                sink: shared,
                passthrough,
            });
        }
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        BodyReader {
            framing,
            chunk: ChunkState::Size,
            line: Vec::new(),
            remaining,
            decoder,
            sink,
            decode_failed: false,
            end_on_invalid_chunk: false,
            failed: false,
            info: BodyInfo::default(),
            anomalies: Anomaly::empty(),
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn is_done(&self) -> bool {
        self.info.complete
    }

    /// The framing broke and the body ended early (see `end_on_invalid_chunk`).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    fn entity(&mut self, data: &[u8]) {
        self.info.transferred += data.len() as u64;
        match &mut self.decoder {
            None => {
                let _ = self.sink.write(data);
            }
            Some(d) if !self.decode_failed => {
                if let Err(e) = d.chain.write_all(data) {
                    self.decode_failed = true;
                    self.anomalies |= if e.to_string() == "decoded size limit" {
                        Anomaly::DECODED_SIZE_LIMIT
                    } else {
                        Anomaly::DECOMPRESSION_FAILED
                    };
                }
            }
            Some(_) => {}
        }
    }

    /// Consumes body bytes from `data`; returns how many were used. The body is done
    /// when [`Self::is_done`] turns true; unused bytes belong to the next message.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        match self.framing {
            Framing::None => {
                self.info.complete = true;
                0
            }
            Framing::Length(_) => {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.entity(&data[..n]);
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.info.complete = true;
                }
                n
            }
            Framing::UntilClose => {
                self.entity(data);
                data.len()
            }
            Framing::Chunked => self.feed_chunked(data),
        }
    }

    fn feed_chunked(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() && !self.info.complete && !self.failed {
            match self.chunk {
                ChunkState::Data(left) => {
                    let n = (left.min((data.len() - pos) as u64)) as usize;
                    self.entity(&data[pos..pos + n]);
                    pos += n;
                    self.chunk = if left == n as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n as u64)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let rest = &data[pos..];
                    let (line_end, complete) = match memchr::memchr(b'\n', rest) {
                        Some(i) => (i + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() < MAX_CHUNK_LINE {
                        let room = MAX_CHUNK_LINE - self.line.len();
                        self.line.extend_from_slice(&rest[..line_end.min(room)]);
                    }
                    pos += line_end;
                    if !complete {
                        break;
                    }
                    let line = std::mem::take(&mut self.line);
                    self.chunk_line(&line);
                    if self.framing == Framing::UntilClose {
                        // Framing gave up: the rest is body, whatever it looks like.
                        self.entity(&data[pos..]);
                        return data.len();
                    }
                }
            }
        }
        pos
    }

    fn chunk_line(&mut self, line: &[u8]) {
        let t = super::head::trim(line);
        match self.chunk {
            ChunkState::DataEnd => {
                if !t.is_empty() {
                    self.anomalies |= Anomaly::CHUNK_MISSING_CRLF;
                    // Lenient: the line is the next chunk size.
                    self.chunk = ChunkState::Size;
                    self.chunk_line(line);
                    return;
                }
                self.chunk = ChunkState::Size;
            }
            ChunkState::Size => {
                if t.is_empty() {
                    // Blank lines before a size line are tolerated.
                    return;
                }
                match parse_chunk_size(t) {
                    Ok((0, ext)) => {
                        if ext {
                            self.anomalies |= Anomaly::CHUNK_EXTENSION;
                        }
                        self.chunk = ChunkState::Trailer;
                    }
                    Ok((n, ext)) => {
                        if ext {
                            self.anomalies |= Anomaly::CHUNK_EXTENSION;
                        }
                        self.chunk = ChunkState::Data(n);
                    }
                    Err(overflow) => {
                        self.anomalies |= if overflow {
                            Anomaly::CHUNK_SIZE_OVERFLOW
                        } else {
                            Anomaly::INVALID_CHUNK_SIZE
                        };
                        if self.end_on_invalid_chunk {
                            self.failed = true;
                        } else {
                            // Give up on framing: the rest of the connection is this body.
                            self.framing = Framing::UntilClose;
                            self.entity(line);
                        }
                    }
                }
            }
            ChunkState::Trailer => {
                if t.is_empty() {
                    self.info.complete = true;
                }
            }
            ChunkState::Data(_) => {}
        }
    }

    /// A gap of `n` bytes inside the body.
    pub fn gap(&mut self, n: u64) {
        self.info.gap_bytes += n;
        self.anomalies |= Anomaly::BODY_GAP;
        self.decode_failed = true;
        match self.framing {
            Framing::Length(_) => {
                let used = self.remaining.min(n);
                self.remaining -= used;
                self.info.transferred += used;
                if self.remaining == 0 {
                    self.info.complete = true;
                }
            }
            Framing::Chunked => {
                if let ChunkState::Data(left) = self.chunk {
                    let used = left.min(n);
                    self.info.transferred += used;
                    self.chunk = if used == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - used)
                    };
                } else {
                    // Framing is lost; read the rest as opaque body.
                    self.framing = Framing::UntilClose;
                }
            }
            Framing::UntilClose => self.info.transferred += n,
            Framing::None => {}
        }
    }

    /// Ends the body (stream closed or message cut short); takes what was decoded.
    pub fn finish(&mut self, closed: bool) -> BodyInfo {
        if let Some(DecoderChain {
            mut chain,
            sink,
            passthrough,
        }) = self.decoder.take()
        {
            if !self.decode_failed {
                let _ = chain.flush();
            }
            // Dropping the chain finishes the decoders, which write their last bytes.
            drop(chain);
            if passthrough.get() {
                self.anomalies |= Anomaly::ENCODING_PASSTHROUGH;
            }
            let mut shared = sink.borrow_mut();
            self.sink.decoded = shared.decoded;
            self.sink.captured = std::mem::take(&mut shared.captured);
        }
        if closed && self.framing == Framing::UntilClose {
            self.info.complete = true;
        }
        self.info.decoded = self.sink.decoded;
        let mut info = std::mem::take(&mut self.info);
        info.captured = std::mem::take(&mut self.sink.captured);
        info
    }
}

/// Parses a chunk-size line: hex digits, optional extensions. `Err(true)` on overflow.
fn parse_chunk_size(t: &[u8]) -> Result<(u64, bool), bool> {
    let digits = t.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(false);
    }
    let mut n: u64 = 0;
    for &b in &t[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(d))
            .ok_or(true)?;
    }
    let rest = super::head::trim(&t[digits..]);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(false);
    }
    Ok((n, !rest.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        capture_limit: 1 << 20,
        max_decoded: 1 << 30,
    };

    fn read_all(
        framing: Framing,
        codings: &[Coding],
        wire: &[u8],
        step: usize,
    ) -> (BodyInfo, usize) {
        let mut r = BodyReader::new(framing, codings, LIMITS);
        let mut used = 0;
        for piece in wire.chunks(step) {
            let mut p = piece;
            while !p.is_empty() && !r.is_done() {
                let n = r.feed(p);
                used += n;
                p = &p[n..];
                if n == 0 {
                    break;
                }
            }
        }
        (r.finish(false), used)
    }

    #[test]
    fn chunked_with_extensions_and_trailers_any_split() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (info, used) = read_all(Framing::Chunked, &[], wire, step);
            assert_eq!(info.captured, b"Wikipedia", "step {step}");
            assert!(info.complete);
            assert_eq!(used, wire.len() - 4);
            assert_eq!(info.transferred, 9);
        }
    }

    #[test]
    fn gzip_then_deflate_stacked() {
        use flate2::write::{GzEncoder, ZlibEncoder};
        let plain = b"hello hello hello hello".repeat(50);
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&gz).unwrap();
        let wire = zl.finish().unwrap();
        for step in [1, 7, 4096] {
            let (info, _) = read_all(
                Framing::Length(wire.len() as u64),
                &[Coding::Gzip, Coding::Deflate],
                &wire,
                step,
            );
            assert_eq!(info.captured, plain);
            assert_eq!(info.decoded, plain.len() as u64);
            assert_eq!(info.transferred, wire.len() as u64);
        }
    }

    #[test]
    fn raw_deflate_is_accepted() {
        let plain = b"raw deflate body";
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(plain).unwrap();
        let wire = d.finish().unwrap();
        let (info, _) = read_all(Framing::UntilClose, &[Coding::Deflate], &wire, 3);
        assert_eq!(info.captured, plain);
    }

    #[test]
    fn decompression_bomb_is_bounded() {
        let plain = vec![0u8; 50 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&plain).unwrap();
        let wire = gz.finish().unwrap();
        let mut r = BodyReader::new(
            Framing::Length(wire.len() as u64),
            &[Coding::Gzip],
            BodyLimits {
                capture_limit: 1024,
                max_decoded: 1 << 20,
            },
        );
        r.feed(&wire);
        let info = r.finish(false);
        assert!(info.decoded <= 2 << 20);
        assert_eq!(info.captured.len(), 1024);
        assert!(r.anomalies.contains(Anomaly::DECODED_SIZE_LIMIT));
    }

    #[test]
    fn chunk_size_overflow_is_flagged() {
        let mut r = BodyReader::new(Framing::Chunked, &[], LIMITS);
        r.feed(b"10000000000000000\r\nabc");
        assert!(r.anomalies.contains(Anomaly::CHUNK_SIZE_OVERFLOW));
    }
}

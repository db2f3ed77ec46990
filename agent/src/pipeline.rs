//! The offline data path wired together: frame → decode → reassembly → http.
//! Sources push frames in; finished transactions come out with their connection.

use crate::decode::defrag::{DefragLimits, Defragmenter};
use crate::decode::{DecodeError, Decoded, Decoder, Micros, TcpSegment};
use crate::http::{HttpConfig, HttpConnection, HttpTotals, Transaction};
use crate::reassembly::{FlowLimits, FlowMeta, FlowTable, Side, StreamHandler};

impl StreamHandler for HttpConnection {
    type Output = Transaction;
    fn data(&mut self, side: Side, data: &[u8], ts: Micros, out: &mut Vec<Transaction>) {
        HttpConnection::data(self, side, data, ts, out)
    }
    fn gap(&mut self, side: Side, len: u64, ts: Micros, out: &mut Vec<Transaction>) {
        HttpConnection::gap(self, side, len, ts, out)
    }
    fn close(&mut self, side: Side, ts: Micros, out: &mut Vec<Transaction>) {
        HttpConnection::close(self, side, ts, out)
    }
    fn finish(&mut self, ts: Micros, out: &mut Vec<Transaction>) {
        HttpConnection::finish(self, ts, out)
    }
    fn is_done(&self) -> bool {
        self.is_tunnel()
    }
    type Totals = HttpTotals;
    fn retire(&self, totals: &mut HttpTotals) {
        totals.add(self);
    }
}

/// Settings of the whole data path.
#[derive(Debug, Clone, Copy, Default)]
pub struct PipelineConfig {
    pub decoder: Decoder,
    pub defrag: DefragLimits,
    pub flows: FlowLimits,
    pub http: HttpConfig,
}

/// End-of-run counters (`--stats`, metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct PipelineStats {
    pub packets: u64,
    pub bytes: u64,
    pub tcp_segments: u64,
    pub not_tcp: u64,
    pub undecodable: [u64; DecodeError::ALL.len()],
    pub fragments: u64,
    pub reassembled_datagrams: u64,
    pub dropped_fragments: u64,
    pub transactions: u64,
    /// Counters of the HTTP stage over connections that have ended.
    pub http: HttpTotals,
}

pub struct Pipeline {
    config: PipelineConfig,
    defrag: Defragmenter,
    flows: FlowTable<HttpConnection>,
    pending: Vec<(FlowMeta, Transaction)>,
    stats: PipelineStats,
}

impl Pipeline {
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            config,
            defrag: Defragmenter::new(config.defrag),
            flows: FlowTable::new(config.flows),
            pending: Vec::new(),
            stats: PipelineStats::default(),
        }
    }

    /// Takes one frame; finished transactions are passed to `sink`.
    pub fn frame(
        &mut self,
        linktype: u32,
        ts: Micros,
        data: &[u8],
        sink: &mut impl FnMut(&FlowMeta, Transaction),
    ) {
        self.stats.packets += 1;
        self.stats.bytes += data.len() as u64;
        let http = self.config.http;
        match self.config.decoder.decode(linktype, ts, data) {
            Ok(Decoded::Tcp(seg)) => {
                self.stats.tcp_segments += 1;
                self.flows
                    .segment(&seg, || HttpConnection::new(http), &mut self.pending);
            }
            Ok(Decoded::Fragment(frag)) => {
                if let Some(datagram) = self.defrag.push(ts, &frag) {
                    let k = frag.key;
                    match self
                        .config
                        .decoder
                        .decode_ip_payload(ts, k.vlan, k.protocol, k.src, k.dst, &datagram)
                    {
                        Ok(Decoded::Tcp(seg)) => {
                            self.stats.tcp_segments += 1;
                            self.flows.segment(
                                &seg,
                                || HttpConnection::new(http),
                                &mut self.pending,
                            );
                        }
                        Ok(_) => self.stats.not_tcp += 1,
                        Err(e) => self.stats.undecodable[e.index()] += 1,
                    }
                }
            }
            Ok(Decoded::NotTcp) => self.stats.not_tcp += 1,
            Err(e) => self.stats.undecodable[e.index()] += 1,
        }
        self.drain(sink);
    }

    /// Takes a TCP segment a source already decoded (the eBPF programs parse headers in
    /// the kernel; TLS plaintext arrives as synthetic segments).
    pub fn segment(&mut self, seg: &TcpSegment<'_>, sink: &mut impl FnMut(&FlowMeta, Transaction)) {
        self.stats.packets += 1;
        self.stats.bytes += seg.payload.len() as u64;
        self.stats.tcp_segments += 1;
        let http = self.config.http;
        self.flows
            .segment(seg, || HttpConnection::new(http), &mut self.pending);
        self.drain(sink);
    }

    fn drain(&mut self, sink: &mut impl FnMut(&FlowMeta, Transaction)) {
        for (meta, tx) in self.pending.drain(..) {
            self.stats.transactions += 1;
            sink(&meta, tx);
        }
    }

    /// Time passed without packets (live capture on a quiet link): connections idle past
    /// their timeout are ended.
    pub fn tick(&mut self, now: Micros, sink: &mut impl FnMut(&FlowMeta, Transaction)) {
        self.flows.expire(now, &mut self.pending);
        self.defrag.expire(now);
        self.drain(sink);
    }

    /// End of input: every open connection is ended.
    pub fn finish(&mut self, sink: &mut impl FnMut(&FlowMeta, Transaction)) {
        self.flows.finish(&mut self.pending);
        self.defrag.finish();
        self.drain(sink);
    }

    pub fn stats(&self) -> PipelineStats {
        let mut s = self.stats;
        s.fragments = self.defrag.stats.fragments;
        s.reassembled_datagrams = self.defrag.stats.reassembled;
        s.dropped_fragments = self.defrag.stats.dropped;
        s.http = self.flows.handler_totals;
        s
    }

    pub fn flow_stats(&self) -> crate::reassembly::FlowStats {
        self.flows.stats
    }
}

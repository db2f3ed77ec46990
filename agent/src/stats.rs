//! End-of-run counters, printed by `--stats` (and exported as metrics by live capture).

use std::fmt::Write;

use crate::decode::DecodeError;
use crate::pipeline::PipelineStats;
use crate::reassembly::FlowStats;

fn counter(s: &mut String, name: &str, value: u64) {
    let _ = writeln!(s, "{name:<40} {value}");
}

/// Renders the counters as `name value` lines, one per counter, stable names.
pub fn render(p: &PipelineStats, f: &FlowStats, file_truncated: u64) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: u64| counter(&mut s, k, v);
    line("packets", p.packets);
    line("bytes", p.bytes);
    line("tcp_segments", p.tcp_segments);
    line("not_tcp", p.not_tcp);
    for e in DecodeError::ALL {
        line(
            &format!("undecodable.{}", e.label()),
            p.undecodable[e.index()],
        );
    }
    line("ip_fragments", p.fragments);
    line("ip_datagrams_reassembled", p.reassembled_datagrams);
    line("ip_fragments_dropped", p.dropped_fragments);
    line("flows", f.flows);
    line("flows_midstream", f.midstream_flows);
    line("flows_evicted", f.evicted);
    line("flows_timed_out", f.timed_out);
    line("flows_ignored_midstream", f.ignored_midstream);
    line("stream_bytes", f.streams.bytes);
    line("stream_retransmitted_bytes", f.streams.retransmitted_bytes);
    line("stream_overlap_mismatches", f.streams.overlap_mismatches);
    line("stream_out_of_order_segments", f.streams.out_of_order);
    line("stream_gaps", f.streams.gaps);
    line("stream_gap_bytes", f.streams.gap_bytes);
    line("http_transactions", p.transactions);
    line("http_parse_errors", p.http.parse_errors);
    line("http_evicted_transactions", p.http.evicted_transactions);
    line("http_not_http_flows", p.http.not_http_flows);
    line("http_skipped_bytes", p.http.skipped_bytes);
    line("http_tunnelled_bytes", p.http.tunnelled_bytes);
    line("capture_files_truncated", file_truncated);
    s
}

/// The extraction stage's counters, as `name value` lines.
pub fn render_extract(x: &crate::extract::ExtractStats) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: u64| counter(&mut s, k, v);
    line("events", x.events);
    line("extract_jwt_verified", x.jwt_verified);
    line("extract_jwt_unverified", x.jwt_unverified);
    line("extract_jwt_bad_signature", x.jwt_bad_signature);
    line("extract_jwt_malformed", x.jwt_malformed);
    line("extract_json_truncated", x.json_truncated);
    line("extract_json_too_deep", x.json_too_deep);
    line("extract_json_malformed", x.json_malformed);
    line("extract_capped_events", x.capped);
    line("extract_template_overflow", x.template_overflow);
    s
}

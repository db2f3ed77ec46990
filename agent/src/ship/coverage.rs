//! The capture coverage an agent reports to its collector (status version 2), read from
//! the same counters `/metrics` shows, so the two can never disagree.

use std::collections::BTreeMap;

use tapline_wire::proto::{Coverage, MAX_DROP_CAUSES};

/// Sums the agent's counters in OpenMetrics text (as [`crate::live::Metrics::render`]
/// writes it) into a coverage snapshot: packets and bytes over every interface, drops
/// per cause over every interface.
pub fn from_metrics_text(text: &str, source: &str) -> Coverage {
    let mut c = Coverage {
        source: source.to_string(),
        ..Coverage::default()
    };
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let value = if value.is_finite() && value > 0.0 {
            value as u64
        } else {
            0
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "tapline_packets_total" => c.packets += value,
            "tapline_bytes_total" => c.bytes += value,
            "tapline_flows_total" => c.flows += value,
            "tapline_stream_gaps_total" => c.stream_gaps += value,
            "tapline_stream_gap_bytes_total" => c.stream_gap_bytes += value,
            "tapline_http_transactions_total" => c.http_transactions += value,
            "tapline_http_parse_errors_total" => c.http_parse_errors += value,
            "tapline_drops_total" => {
                let cause = label(labels, "cause").unwrap_or("unknown");
                *drops.entry(cause.to_string()).or_default() += value;
            }
            _ => {}
        }
    }
    c.drops = drops.into_iter().take(MAX_DROP_CAUSES).collect();
    c
}

/// The value of label `key` in `a="x",b="y"` (values without escapes, as ours are).
fn label<'t>(labels: &'t str, key: &str) -> Option<&'t str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_interfaces_and_drops_kept_per_cause() {
        let text = "# HELP tapline_packets_total Frames captured, per interface.\n\
            # TYPE tapline_packets_total counter\n\
            tapline_packets_total{iface=\"eth0\"} 10\n\
            tapline_packets_total{iface=\"eth1\"} 5\n\
            tapline_bytes_total{iface=\"eth0\"} 1500\n\
            tapline_drops_total{iface=\"eth0\",cause=\"kernel\"} 2\n\
            tapline_drops_total{iface=\"eth1\",cause=\"kernel\"} 1\n\
            tapline_drops_total{iface=\"eth1\",cause=\"queue_full\"} 4\n\
            tapline_flows_total 3\n\
            tapline_stream_gap_bytes_total 1460\n\
            tapline_http_parse_errors_total 1\n\
            tapline_ship_dropped_events_total 99\n\
            # EOF\n";
        let c = from_metrics_text(text, "pcap");
        assert_eq!(c.source, "pcap");
        assert_eq!((c.packets, c.bytes, c.flows), (15, 1500, 3));
        assert_eq!(
            c.drops,
            vec![("kernel".to_string(), 3), ("queue_full".to_string(), 4)]
        );
        assert_eq!((c.stream_gap_bytes, c.http_parse_errors), (1460, 1));
    }

    #[test]
    fn the_agents_own_metrics_render_into_coverage() {
        let m = crate::live::Metrics::new();
        let c = m.coverage("pcap");
        assert_eq!(c.packets, 0);
        assert_eq!(c.source, "pcap");
    }
}

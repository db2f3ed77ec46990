//! Detection quality, end to end: a labelled scenario (attacks of all eight types and
//! benign traps) through the real agent, mutual TLS and the collector's detectors,
//! scored against the labels. The floors are those recorded in docs/detection.md for
//! this scenario; a change that lowers them fails here.

use tapline_e2e::{Scratch, bin};
use tapline_traffic::eval::{ATTACK_TYPES, EvalOptions, evaluate};

/// Recall of every attack type, precision, and false alerts per 1000 actor-days.
const MIN_RECALL: f64 = 1.0;
const MIN_PRECISION: f64 = 0.9;
const MAX_FALSE_PER_1000_ACTOR_DAYS: f64 = 5.0;

#[test]
fn detectors_find_every_attack_type_and_spare_the_benign_traps() {
    let scratch = Scratch::new("detect-eval");
    let bin_dir = bin("tapline-collector")
        .parent()
        .expect("binaries live in a directory")
        .to_path_buf();
    let report = evaluate(&EvalOptions {
        bin_dir,
        work: scratch.path("eval"),
        seed: 7,
        days: 4,
        scale: 1.0,
        rescore: false,
    })
    .expect("the evaluation runs");
    eprintln!("{}", report.table());
    for t in ATTACK_TYPES {
        let s = &report.per_type[t];
        assert!(s.attacks > 0, "the scenario has no {t} attack");
        assert!(
            report.recall(t) >= MIN_RECALL,
            "{t}: recall {:.2} below {MIN_RECALL}; missed {:?}",
            report.recall(t),
            s.missed
        );
    }
    assert!(
        report.precision() >= MIN_PRECISION,
        "precision {:.3}; false alerts: {:#?}",
        report.precision(),
        report.false_alerts
    );
    assert!(
        report.false_per_1000_actor_days() <= MAX_FALSE_PER_1000_ACTOR_DAYS,
        "{:.2} false alerts per 1000 actor-days",
        report.false_per_1000_actor_days()
    );
    assert!(
        report.trap_high.is_empty(),
        "high-severity alerts on benign traps: {:#?}",
        report.trap_high
    );
    // Rate, travel and sharing are found within a minute of event time.
    for t in ["rate_spike", "impossible_travel", "token_sharing"] {
        let worst = report.per_type[t]
            .latencies_s
            .iter()
            .copied()
            .fold(0.0, f64::max);
        assert!(
            worst <= 60.0,
            "{t}: found {worst:.0} s after the attack began"
        );
    }
}

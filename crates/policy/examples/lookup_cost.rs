//! Nanoseconds per id lookup in a translation table like the bench's (eight `map` rules), for
//! docs/benchmarks.md: `cargo run --release -p virtiofsd-policy --example lookup_cost`.

use std::hint::black_box;
use std::time::Instant;

use virtiofsd_policy::{IdMapping, IdRule, IdRuleKind};

fn main() {
    let rules = |offset: u32| -> Vec<IdRule> {
        (0..8)
            .map(|i| IdRule {
                first: 100_000 + i * 10_000 + offset,
                count: 1000,
                kind: IdRuleKind::Range,
                target: 1_100_000 + i * 10_000 - offset,
            })
            .collect()
    };
    let mapping = IdMapping::new(rules(0), rules(1_000_000)).unwrap();
    let identity = IdMapping::default();
    const N: u32 = 50_000_000;
    for (name, m) in [("identity", &identity), ("eight rules", &mapping)] {
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..N {
            // Ids both inside and outside the rules, as requests and replies carry them.
            let id = black_box(if i % 2 == 0 {
                0
            } else {
                100_000 + (i % 80_000)
            });
            sum += u64::from(m.to_host(id).unwrap_or(0)) + u64::from(m.to_guest(id));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N) / 2.0;
        println!(
            "{name}: {ns:.2} ns per lookup (checksum {})",
            black_box(sum) % 7
        );
    }
}

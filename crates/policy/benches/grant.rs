//! `PolicyBundle::decide` with 1, 100 and 10,000 policies, and the 10,000 again without candidate
//! selection, so the gain of the index is measured, not assumed.
//!
//! Run: `cargo bench -p lanyard-policy --bench grant -- --warm-up-time 1 --measurement-time 3`.
//! `docs/policy.md` records the figures. The policies spread over 10 operations × 10 tools, so
//! about 1% of them are candidates for the request (one operation on one tool); each has a
//! condition on the context and the principal, as real policies do.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup")]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use lanyard_core::{Selector, SelectorSet, SpiffeId};
use lanyard_policy::{GrantRequest, PolicyBundle};

/// `count` policies in files of at most 1,000 (a file holds at most 1 MiB).
fn files(count: usize) -> Vec<(String, String)> {
    (0..count.div_ceil(1000))
        .map(|f| {
            let text = (f * 1000..count.min((f + 1) * 1000)).map(policy).collect();
            (format!("bench{f}.cedar"), text)
        })
        .collect()
}

fn policy(i: usize) -> String {
    let (op, tool) = (i % 10, (i / 10) % 10);
    let effect = if i.is_multiple_of(17) {
        "forbid"
    } else {
        "permit"
    };
    format!(
        "{effect}(principal, action == Action::\"op{op}\", resource == Tool::\"tool{tool}\")\n  \
                 when {{ context.ttl_seconds <= {ttl} && principal.selectors.contains(\"k8s:ns:team{team}\") }};\n",
        ttl = 60 + i,
        team = i % 50,
    )
}

fn request() -> GrantRequest {
    GrantRequest {
        principal: SpiffeId::parse("spiffe://example.org/ns/team7/sa/agent").unwrap(),
        selectors: SelectorSet::from_iter([
            "k8s:ns:team7".parse::<Selector>().unwrap(),
            "unix:uid:1000".parse().unwrap(),
        ]),
        audience: "tool0".into(),
        operations: vec!["op0".into()],
        ttl_seconds: 300,
        purpose: "benchmark".into(),
        on_behalf_of: String::new(),
        on_behalf_of_verified: false,
        on_behalf_of_issuer: String::new(),
        delegation_depth: 0,
        root_principal: String::new(),
        parent_workload: String::new(),
        now: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

fn decide(c: &mut Criterion) {
    let request = request();
    let mut group = c.benchmark_group("grant_decide");
    for count in [1, 100, 10_000] {
        let bundle = PolicyBundle::load(&files(count)).unwrap();
        assert_eq!(
            bundle.decide(&request).unwrap(),
            bundle.decide_exhaustive(&request).unwrap()
        );
        group.bench_function(format!("{count}_policies"), |b| {
            b.iter(|| bundle.decide(black_box(&request)).unwrap());
        });
        if count == 10_000 {
            group.bench_function(format!("{count}_policies_exhaustive"), |b| {
                b.iter(|| bundle.decide_exhaustive(black_box(&request)).unwrap());
            });
        }
    }
    group.finish();
}

/// Parsing, validating and indexing: what a reload of `policy_dir` costs.
fn load(c: &mut Criterion) {
    let files = files(10_000);
    let mut group = c.benchmark_group("grant_load");
    group.sample_size(10);
    group.bench_function("10000_policies", |b| {
        b.iter(|| PolicyBundle::load(black_box(&files)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, decide, load);
criterion_main!(benches);

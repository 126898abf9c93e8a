//! Candidate selection must not change a decision: over generated sets of mixed policies, `decide`
//! and `decide_exhaustive` agree on every request, reasons and errors included.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::HashSet;
use std::time::Duration;

use super::*;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ACTIONS: &[&str] = &["read", "write", "delete", "list", "exec"];
const TOOLS: &[&str] = &["tickets", "payroll", "wiki", "mail"];
const CONDITIONS: &[&str] = &[
    "context.ttl_seconds <= 600",
    "context.delegation_depth < 2",
    "context.time >= 1800000000",
    "context.time < 1800000000",
    "context.purpose like \"*tickets*\"",
    "context.on_behalf_of == \"\"",
    "principal.selectors.contains(\"k8s:ns:prod\")",
    "principal.selectors.contains(\"k8s:ns:dev\")",
    "principal.path like \"/ns/prod/*\"",
    "principal.trust_domain == \"example.org\"",
    "resource == Tool::\"wiki\"",
    "action == Action::\"read\"",
    // An evaluation error (overflow) whenever the TTL is positive.
    "context.ttl_seconds * 9223372036854775807 > 0",
];

fn policy(rng: &mut Rng) -> String {
    let effect = if rng.below(5) == 0 {
        "forbid"
    } else {
        "permit"
    };
    let principal = match rng.below(6) {
        0 => format!("principal == Workload::\"{AGENT}\""),
        1 => "principal == Workload::\"spiffe://example.org/other\"".to_owned(),
        _ => "principal".to_owned(),
    };
    let action = match rng.below(6) {
        0 => "action".to_owned(),
        1 => format!(
            "action in [Action::\"{}\", Action::\"{}\"]",
            rng.pick(ACTIONS),
            rng.pick(ACTIONS)
        ),
        _ => format!("action == Action::\"{}\"", rng.pick(ACTIONS)),
    };
    let resource = match rng.below(6) {
        0 => "resource".to_owned(),
        1 => "resource is Tool".to_owned(),
        _ => format!("resource == Tool::\"{}\"", rng.pick(TOOLS)),
    };
    let mut text = format!("{effect}({principal}, {action}, {resource})");
    for _ in 0..rng.below(3) {
        let clause = if rng.below(3) == 0 { "unless" } else { "when" };
        // Rare errors, so that most requests still reach a permit or a forbid.
        let condition = loop {
            let c = rng.pick(CONDITIONS);
            if !c.contains("9223372036854775807") || rng.below(2) == 0 {
                break c;
            }
        };
        text.push_str(&format!(" {clause} {{ {condition} }}"));
    }
    text.push_str(";\n");
    text
}

fn requests() -> Vec<GrantRequest> {
    let mut all = Vec::new();
    for tool in TOOLS.iter().chain(&["unknown-tool"]) {
        for op in ACTIONS.iter().chain(&["unknown-op"]) {
            let base = request(tool, &[op]);
            all.push(base.clone());
            let mut r = base.clone();
            r.ttl_seconds = 0;
            r.delegation_depth = 5;
            r.on_behalf_of = String::new();
            r.now -= Duration::from_secs(60);
            r.selectors = SelectorSet::from_iter([Selector::new("k8s", "ns:dev").unwrap()]);
            all.push(r);
            let mut r = base;
            r.principal = SpiffeId::parse("spiffe://example.org/other").unwrap();
            r.purpose = "tickets triage".into();
            all.push(r);
        }
    }
    all
}

#[test]
fn candidate_selection_matches_exhaustive_evaluation() {
    let mut outcomes = HashSet::new();
    for (seed, count) in [(1_u64, 8), (2, 30), (3, 30), (4, 100), (5, 1000)] {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let text: String = (0..count).map(|_| policy(&mut rng)).collect();
        let bundle = bundle(&text);
        assert_eq!(bundle.len(), count);
        for r in requests() {
            let selected = bundle.decide(&r).unwrap();
            let full = bundle.decide_exhaustive(&r).unwrap();
            assert_eq!(selected, full, "seed {seed}, {r:?}");
            outcomes.insert(selected.operations[0].outcome);
        }
    }
    // The generated sets exercise every way a decision can go.
    for outcome in [
        Outcome::Allowed,
        Outcome::Forbidden,
        Outcome::NoPermit,
        Outcome::EvaluationFailed,
    ] {
        assert!(
            outcomes.contains(&outcome),
            "{outcome:?} never happened: {outcomes:?}"
        );
    }
}

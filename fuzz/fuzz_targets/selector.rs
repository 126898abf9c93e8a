//! `Selector` and `SelectorSet` parsing (crates/core/src/selector.rs).
//!
//! The input is read as lines, each a candidate selector. Properties:
//! - parsing never panics;
//! - a parsed selector prints as exactly the input line, re-parses to an equal value, is rebuilt
//!   equal by `Selector::new(kind, value)`, and survives serde;
//! - `Selector::new` with the line split at any `:` agrees with parsing when the split is the
//!   first `:` (the type has no `:`), and refuses a type containing `:`;
//! - the set of the parsed lines survives serde (as a JSON array) and its printed selectors
//!   re-parse into an equal set; the subset and intersection tests agree with their definitions.

#![no_main]

use lanyard_core::{Selector, SelectorSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    let mut set = SelectorSet::new();
    for line in input.split('\n') {
        let parsed = line.parse::<Selector>();
        for (i, _) in line.match_indices(':') {
            let built = Selector::new(&line[..i], &line[i + 1..]);
            if line[..i].contains(':') {
                assert!(built.is_err(), "a type with `:` was accepted: {line:?}");
            } else {
                assert_eq!(built, parsed, "new and parse disagree on {line:?}");
            }
        }
        let Ok(selector) = parsed else {
            continue;
        };
        let printed = selector.to_string();
        assert_eq!(printed, line);
        assert_eq!(printed.parse::<Selector>().as_ref(), Ok(&selector));
        assert_eq!(
            Selector::new(selector.kind(), selector.value()).as_ref(),
            Ok(&selector)
        );
        let json = serde_json::to_string(&selector).expect("a selector serializes");
        assert_eq!(
            serde_json::from_str::<Selector>(&json).ok().as_ref(),
            Some(&selector)
        );
        set.insert(selector);
    }

    let json = serde_json::to_string(&set).expect("a set serializes");
    let back: SelectorSet = serde_json::from_str(&json).expect("a written set reads back");
    assert_eq!(back, set);
    let reparsed: SelectorSet = set
        .iter()
        .map(|s| {
            s.to_string()
                .parse::<Selector>()
                .expect("printed selectors parse")
        })
        .collect();
    assert_eq!(reparsed, set);

    // Subset and intersection against one half of the set.
    let half: SelectorSet = set.iter().step_by(2).cloned().collect();
    assert!(half.is_subset(&set));
    assert_eq!(set.is_subset(&half), half.len() == set.len());
    assert_eq!(half.intersects(&set), !half.is_empty());
    assert!(half.iter().all(|s| set.contains(s)));
});

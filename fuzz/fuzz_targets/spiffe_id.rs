//! `SpiffeId` and `TrustDomain` parsing (crates/core/src/id.rs).
//!
//! Properties, for any UTF-8 input:
//! - parsing never panics;
//! - a parsed ID prints as exactly the input, re-parses to an equal value, survives serde, is at
//!   most 2048 bytes, and is rebuilt equal from its trust domain and path, and from its trust
//!   domain and segments;
//! - a parsed trust domain prints as a string that re-parses to an equal value, and so does its
//!   own ID `spiffe://<td>`;
//! - building an ID from the valid trust domain and the input as a path or a segment agrees with
//!   parsing the concatenated string.

#![no_main]

use lanyard_core::{SpiffeId, TrustDomain};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(id) = input.parse::<SpiffeId>() {
        check_id(&id);
        assert_eq!(id.as_str(), input, "an ID prints as it was given");
    }

    if let Ok(td) = input.parse::<TrustDomain>() {
        let printed = td.to_string();
        assert_eq!(printed.parse::<TrustDomain>().as_ref(), Ok(&td));
        assert_eq!(TrustDomain::new(&printed).as_ref(), Ok(&td));
        let root = td.id();
        assert!(root.is_trust_domain_id());
        assert_eq!(root.to_string().parse::<TrustDomain>().as_ref(), Ok(&td));
        check_id(&root);
    }
    if let Ok(td) = TrustDomain::new(input) {
        assert_eq!(td.as_str(), input);
        assert_eq!(input.parse::<TrustDomain>().as_ref(), Ok(&td));
    }

    // The input as a path, and as one segment, under a valid trust domain.
    let td = lanyard_fuzz::trust_domain();
    let with_path = td.id_with_path(input);
    let parsed = format!("spiffe://{td}{input}").parse::<SpiffeId>();
    if input.is_empty() || input.starts_with('/') {
        assert_eq!(
            with_path.as_ref().ok(),
            parsed.as_ref().ok(),
            "id_with_path({input:?}) and parse disagree"
        );
    }
    if let Ok(id) = &with_path {
        check_id(id);
        assert_eq!(id.path(), input);
    }
    if let Ok(id) = td.id().join(input) {
        check_id(&id);
        assert_eq!(id.segments().collect::<Vec<_>>(), [input]);
        assert_eq!(format!("spiffe://{td}/{input}").parse::<SpiffeId>(), Ok(id));
    }
});

fn check_id(id: &SpiffeId) {
    let printed = id.to_string();
    assert!(printed.len() <= lanyard_core::id::MAX_ID_LEN);
    assert_eq!(printed.parse::<SpiffeId>().as_ref(), Ok(id), "{printed:?}");

    let json = serde_json::to_string(id).expect("an ID serializes");
    assert_eq!(
        serde_json::from_str::<SpiffeId>(&json).ok().as_ref(),
        Some(id)
    );

    let td = id.trust_domain();
    assert!(id.is_member_of(&td));
    assert_eq!(td.as_str(), id.trust_domain_name());
    assert_eq!(td.id_with_path(id.path()).as_ref(), Ok(id));
    let segments: Vec<&str> = id.segments().collect();
    assert_eq!(segments.is_empty(), id.is_trust_domain_id());
    assert_eq!(td.id_from_segments(&segments).as_ref(), Ok(id));
}

//! The cases of the suite; each takes a fresh store and runs unchanged on every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_core::entry::{DEFAULT_JWT_SVID_TTL, DEFAULT_X509_SVID_TTL};
use lanyard_core::{
    Clock, DnsName, EntryId, EntrySpec, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain,
};
use lanyard_store::{
    AgentFilter, AgentInfo, AgentRenewal, BundleWrite, EntryChange, EntryFilter, Error,
    PageRequest, SelectorFilter, SelectorMatch,
};
use serde_json::json;

use crate::Ctx;

// --- helpers ---

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn selectors(list: &[&str]) -> SelectorSet {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn entry(entry_id: &str, spiffe_id: &str, parent_id: &str, sels: &[&str]) -> RegistrationEntry {
    RegistrationEntry::new(EntrySpec {
        id: EntryId::new(entry_id).unwrap(),
        spiffe_id: id(spiffe_id),
        parent_id: id(parent_id),
        selectors: selectors(sels),
        x509_svid_ttl: DEFAULT_X509_SVID_TTL,
        jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 0,
    })
    .unwrap()
}

const PARENT: &str = "spiffe://example.org/lanyard/agent/join_token/n1";

/// A simple entry `e<n>` for `spiffe://example.org/w<n>` with selector `unix:uid:<n>`.
fn numbered(n: usize) -> RegistrationEntry {
    entry(
        &format!("e{n:05}"),
        &format!("spiffe://example.org/w{n}"),
        PARENT,
        &[&format!("unix:uid:{n}")],
    )
}

fn all() -> PageRequest {
    PageRequest::default()
}

fn ids_of(entries: &[RegistrationEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.id().as_str()).collect()
}

async fn create_ok(ctx: &Ctx, e: RegistrationEntry) -> RegistrationEntry {
    ctx.store.create_entry(e).await.unwrap()
}

async fn list_ids(ctx: &Ctx, filter: &EntryFilter) -> Vec<String> {
    let page = ctx.store.list_entries(filter, &all()).await.unwrap();
    assert_eq!(page.next_token, None);
    page.items.iter().map(|e| e.id().to_string()).collect()
}

fn agent(n: usize, kind: &str, expires_at: SystemTime) -> AgentInfo {
    AgentInfo {
        spiffe_id: id(&format!(
            "spiffe://example.org/lanyard/agent/{kind}/n{n:03}"
        )),
        attestation_type: kind.to_owned(),
        serial: format!("{n:x}"),
        expires_at,
        selectors: selectors(&[&format!("{kind}:node:n{n}")]),
    }
}

// --- cases ---

pub(crate) async fn ping_and_backend(ctx: Ctx) {
    ctx.store.ping().await.unwrap();
    let expected = if ctx.url.starts_with("sqlite:") {
        lanyard_store::Backend::Sqlite
    } else {
        lanyard_store::Backend::Postgres
    };
    assert_eq!(ctx.store.backend(), expected);
    assert_eq!(ctx.store.current_revision().await.unwrap(), 0);
    assert_eq!(ctx.store.count_entries().await.unwrap(), 0);
}

pub(crate) async fn entry_crud(ctx: Ctx) {
    let created = create_ok(
        &ctx,
        entry(
            "web",
            "spiffe://example.org/web",
            PARENT,
            &["unix:uid:1000"],
        ),
    )
    .await;
    assert_eq!(created.revision(), 1);
    let got = ctx
        .store
        .get_entry(created.id())
        .await
        .unwrap()
        .expect("entry is there");
    assert_eq!(got, created);
    assert_eq!(ctx.store.count_entries().await.unwrap(), 1);

    // Update replaces every field and bumps the revision.
    let mut spec = got.into_spec();
    spec.spiffe_id = id("spiffe://example.org/web2");
    spec.selectors = selectors(&["unix:uid:1000", "unix:gid:50"]);
    spec.hint = "web".to_owned();
    spec.revision = 999; // ignored
    let updated = ctx
        .store
        .update_entry(RegistrationEntry::new(spec).unwrap())
        .await
        .unwrap();
    assert_eq!(updated.revision(), 2);
    assert_eq!(updated.spiffe_id(), &id("spiffe://example.org/web2"));
    assert_eq!(updated.selectors().len(), 2);
    assert_eq!(
        ctx.store.get_entry(updated.id()).await.unwrap(),
        Some(updated.clone())
    );
    // The selector index follows the update.
    let filter = EntryFilter {
        selectors: Some(SelectorFilter {
            selectors: selectors(&["unix:gid:50"]),
            mode: SelectorMatch::Any,
        }),
        ..EntryFilter::default()
    };
    assert_eq!(list_ids(&ctx, &filter).await, ["web"]);

    // Update and delete of unknown ids.
    let missing = entry("nope", "spiffe://example.org/x", PARENT, &["a:b"]);
    assert!(matches!(
        ctx.store.update_entry(missing).await,
        Err(Error::NotFound { kind: "entry", ref key }) if key == "nope"
    ));
    let results = ctx
        .store
        .delete_entries(&[EntryId::new("web").unwrap(), EntryId::new("nope").unwrap()])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(Error::NotFound { .. })));
    assert_eq!(ctx.store.get_entry(updated.id()).await.unwrap(), None);
    assert_eq!(ctx.store.count_entries().await.unwrap(), 0);
    assert_eq!(list_ids(&ctx, &filter).await, Vec::<String>::new());
    assert_eq!(ctx.store.current_revision().await.unwrap(), 3);
}

pub(crate) async fn entry_fields_round_trip(ctx: Ctx) {
    let spec = EntrySpec {
        id: EntryId::new("full_entry-1").unwrap(),
        spiffe_id: id("spiffe://example.org/ns/prod/sa/api"),
        parent_id: id("spiffe://example.org/lanyard/server"),
        selectors: selectors(&["unix:uid:1000", "systemd:unit:api.service", "k8s:ns:a:b:c"]),
        x509_svid_ttl: Duration::from_millis(90_500),
        jwt_svid_ttl: Duration::from_secs(45),
        dns_names: vec![
            DnsName::new("api.example.org").unwrap(),
            DnsName::new("*.api.example.org").unwrap(),
        ],
        federates_with: vec![
            TrustDomain::new("partner.example").unwrap(),
            TrustDomain::new("other.example").unwrap(),
        ],
        admin: true,
        downstream: true,
        hint: "the API, ünïcode ok".to_owned(),
        expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_micros(1_900_000_000_123_456)),
        revision: 0,
    };
    let original = RegistrationEntry::new(spec).unwrap();
    let stored = create_ok(&ctx, original.clone()).await;
    assert_eq!(stored, original.clone().with_revision(1));
    assert_eq!(
        ctx.store.get_entry(original.id()).await.unwrap(),
        Some(stored)
    );

    // Sub-microsecond parts are dropped, and what create returns is what get returns.
    let mut spec = numbered(7).into_spec();
    spec.expires_at =
        Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_800_000_000_000_000_999));
    let stored = create_ok(&ctx, RegistrationEntry::new(spec).unwrap()).await;
    assert_eq!(
        stored.expires_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_000))
    );
    assert_eq!(
        ctx.store.get_entry(stored.id()).await.unwrap(),
        Some(stored)
    );
}

pub(crate) async fn entry_batch_per_item_results(ctx: Ctx) {
    create_ok(&ctx, numbered(1)).await;
    let batch = vec![
        numbered(2),
        numbered(1), // id and identity taken by a stored entry
        entry("e00002", "spiffe://example.org/other", PARENT, &["x:y"]), // id taken earlier in batch
        entry("dup3", "spiffe://example.org/w2", PARENT, &["unix:uid:2"]), // identity of item 0
        numbered(3),
    ];
    let results = ctx.store.create_entries(batch).await.unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap().revision(), 2);
    assert!(matches!(&results[1], Err(Error::AlreadyExists { key, .. }) if key == "e00001"));
    assert!(matches!(&results[2], Err(Error::AlreadyExists { key, .. }) if key == "e00002"));
    assert!(matches!(&results[3], Err(Error::AlreadyExists { key, .. }) if key == "e00002"));
    assert_eq!(results[4].as_ref().unwrap().revision(), 3);
    // Revisions are handed out only to items that were written.
    assert_eq!(ctx.store.current_revision().await.unwrap(), 3);
    assert_eq!(
        list_ids(&ctx, &EntryFilter::default()).await,
        ["e00001", "e00002", "e00003"]
    );
    assert!(
        ctx.store
            .create_entries(Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn entry_duplicates_refused(ctx: Ctx) {
    let first = create_ok(
        &ctx,
        entry(
            "a",
            "spiffe://example.org/db",
            PARENT,
            &["unix:uid:5", "unix:gid:5"],
        ),
    )
    .await;
    // Same (spiffe_id, parent_id, selectors) under another id.
    let again = entry(
        "b",
        "spiffe://example.org/db",
        PARENT,
        &["unix:gid:5", "unix:uid:5"],
    );
    assert!(matches!(
        ctx.store.create_entry(again).await,
        Err(Error::AlreadyExists { kind: "entry", ref key }) if key == first.id().as_str()
    ));
    // Differing in any one part is a different entry.
    for (n, e) in [
        entry(
            "c",
            "spiffe://example.org/db2",
            PARENT,
            &["unix:uid:5", "unix:gid:5"],
        ),
        entry(
            "d",
            "spiffe://example.org/db",
            "spiffe://example.org/p2",
            &["unix:uid:5", "unix:gid:5"],
        ),
        entry("e", "spiffe://example.org/db", PARENT, &["unix:uid:5"]),
    ]
    .into_iter()
    .enumerate()
    {
        assert!(ctx.store.create_entry(e).await.is_ok(), "variant {n}");
    }
    // An update may not turn an entry into a duplicate of another.
    let clash = entry(
        "e",
        "spiffe://example.org/db",
        PARENT,
        &["unix:uid:5", "unix:gid:5"],
    );
    assert!(matches!(
        ctx.store.update_entry(clash).await,
        Err(Error::AlreadyExists { ref key, .. }) if key == "a"
    ));
    // The same id is refused whatever the content.
    let same_id = entry("a", "spiffe://example.org/zzz", PARENT, &["q:r"]);
    assert!(matches!(
        ctx.store.create_entry(same_id).await,
        Err(Error::AlreadyExists { ref key, .. }) if key == "a"
    ));
    assert_eq!(ctx.store.count_entries().await.unwrap(), 4);
}

pub(crate) async fn entry_filter_by_ids(ctx: Ctx) {
    let p1 = "spiffe://example.org/node/1";
    let p2 = "spiffe://example.org/node/2";
    for e in [
        entry("a", "spiffe://example.org/web", p1, &["unix:uid:1"]),
        entry("b", "spiffe://example.org/web", p2, &["unix:uid:1"]),
        entry("c", "spiffe://example.org/db", p1, &["unix:uid:2"]),
    ] {
        create_ok(&ctx, e).await;
    }
    let by_spiffe = EntryFilter {
        spiffe_id: Some(id("spiffe://example.org/web")),
        ..EntryFilter::default()
    };
    assert_eq!(list_ids(&ctx, &by_spiffe).await, ["a", "b"]);
    let by_parent = EntryFilter {
        parent_id: Some(id(p1)),
        ..EntryFilter::default()
    };
    assert_eq!(list_ids(&ctx, &by_parent).await, ["a", "c"]);
    let both = EntryFilter {
        spiffe_id: Some(id("spiffe://example.org/web")),
        parent_id: Some(id(p1)),
        selectors: Some(SelectorFilter {
            selectors: selectors(&["unix:uid:1"]),
            mode: SelectorMatch::Exact,
        }),
    };
    assert_eq!(list_ids(&ctx, &both).await, ["a"]);
    let none = EntryFilter {
        spiffe_id: Some(id("spiffe://example.org/nothing")),
        ..EntryFilter::default()
    };
    assert_eq!(list_ids(&ctx, &none).await, Vec::<String>::new());
}

pub(crate) async fn entry_filter_selector_modes(ctx: Ctx) {
    // Entries:  a {u1}   b {u1, g1}   c {u1, g1, x}   d {g1}   e {y}
    for (entry_id, sels) in [
        ("a", &["unix:uid:1"][..]),
        ("b", &["unix:uid:1", "unix:gid:1"][..]),
        ("c", &["unix:uid:1", "unix:gid:1", "k8s:ns:x"][..]),
        ("d", &["unix:gid:1"][..]),
        ("e", &["k8s:ns:y"][..]),
    ] {
        create_ok(
            &ctx,
            entry(
                entry_id,
                &format!("spiffe://example.org/{entry_id}"),
                PARENT,
                sels,
            ),
        )
        .await;
    }
    let query = |sels: &[&str], mode| EntryFilter {
        selectors: Some(SelectorFilter {
            selectors: selectors(sels),
            mode,
        }),
        ..EntryFilter::default()
    };
    let u1g1 = &["unix:uid:1", "unix:gid:1"][..];
    assert_eq!(
        list_ids(&ctx, &query(u1g1, SelectorMatch::Exact)).await,
        ["b"]
    );
    assert_eq!(
        list_ids(&ctx, &query(u1g1, SelectorMatch::Subset)).await,
        ["a", "b", "d"]
    );
    assert_eq!(
        list_ids(&ctx, &query(u1g1, SelectorMatch::Superset)).await,
        ["b", "c"]
    );
    assert_eq!(
        list_ids(&ctx, &query(u1g1, SelectorMatch::Any)).await,
        ["a", "b", "c", "d"]
    );
    // Single selector.
    assert_eq!(
        list_ids(&ctx, &query(&["unix:uid:1"], SelectorMatch::Exact)).await,
        ["a"]
    );
    assert_eq!(
        list_ids(&ctx, &query(&["unix:uid:1"], SelectorMatch::Superset)).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        list_ids(&ctx, &query(&["k8s:ns:y", "k8s:ns:x"], SelectorMatch::Any)).await,
        ["c", "e"]
    );
    // A caller with many selectors (the workload-matching case).
    let caller = &[
        "unix:uid:1",
        "unix:gid:1",
        "k8s:ns:x",
        "k8s:ns:y",
        "other:z",
    ][..];
    assert_eq!(
        list_ids(&ctx, &query(caller, SelectorMatch::Subset)).await,
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        list_ids(&ctx, &query(caller, SelectorMatch::Superset)).await,
        Vec::<String>::new()
    );
    // More selectors than the store enumerates subsets for: the other query plan, same answer.
    let pads: Vec<String> = (0..12).map(|i| format!("pad:p{i}")).collect();
    let mut big: Vec<&str> = caller.to_vec();
    big.extend(pads.iter().map(String::as_str));
    assert_eq!(
        list_ids(&ctx, &query(&big, SelectorMatch::Subset)).await,
        ["a", "b", "c", "d", "e"]
    );
    let mut big_without_y: Vec<&str> = big.clone();
    big_without_y.retain(|s| *s != "k8s:ns:y" && *s != "unix:gid:1");
    assert_eq!(
        list_ids(&ctx, &query(&big_without_y, SelectorMatch::Subset)).await,
        ["a"]
    );
    // Selectors nobody has.
    for mode in [
        SelectorMatch::Exact,
        SelectorMatch::Subset,
        SelectorMatch::Superset,
        SelectorMatch::Any,
    ] {
        assert_eq!(
            list_ids(&ctx, &query(&["none:here"], mode)).await,
            Vec::<String>::new(),
            "{mode:?}"
        );
    }
    // The empty set: every entry is a superset of it, and nothing else matches it.
    assert_eq!(
        list_ids(&ctx, &query(&[], SelectorMatch::Superset))
            .await
            .len(),
        5
    );
    for mode in [
        SelectorMatch::Exact,
        SelectorMatch::Subset,
        SelectorMatch::Any,
    ] {
        assert!(
            list_ids(&ctx, &query(&[], mode)).await.is_empty(),
            "{mode:?}"
        );
    }
    // A selector value that looks like SQL is only a value.
    assert!(
        list_ids(&ctx, &query(&["unix:x' OR '1'='1"], SelectorMatch::Any))
            .await
            .is_empty()
    );
}

pub(crate) async fn entry_paging(ctx: Ctx) {
    let entries: Vec<_> = (0..25).map(numbered).collect();
    for r in ctx.store.create_entries(entries).await.unwrap() {
        r.unwrap();
    }
    let mut seen = Vec::new();
    let mut page = PageRequest {
        token: None,
        size: 7,
    };
    let mut pages = 0;
    loop {
        let got = ctx
            .store
            .list_entries(&EntryFilter::default(), &page)
            .await
            .unwrap();
        pages += 1;
        assert!(got.items.len() <= 7);
        seen.extend(got.items.iter().map(|e| e.id().to_string()));
        match got.next_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    let expected: Vec<String> = (0..25).map(|n| format!("e{n:05}")).collect();
    assert_eq!(seen, expected);

    // An exact multiple of the page size ends without an empty page.
    let got = ctx
        .store
        .list_entries(
            &EntryFilter::default(),
            &PageRequest {
                token: Some("e00019".to_owned()),
                size: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(got.items.len(), 5);
    assert_eq!(got.next_token, None);

    // Paging with a filter; entries created between pages show up in order.
    let filter = EntryFilter {
        parent_id: Some(id(PARENT)),
        ..EntryFilter::default()
    };
    let first = ctx
        .store
        .list_entries(
            &filter,
            &PageRequest {
                token: None,
                size: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 10);
    create_ok(&ctx, numbered(99)).await;
    let rest = ctx
        .store
        .list_entries(
            &filter,
            &PageRequest {
                token: first.next_token,
                size: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 16);
    assert_eq!(rest.items.last().unwrap().id().as_str(), "e00099");

    // A token the store never issued.
    assert!(matches!(
        ctx.store
            .list_entries(
                &EntryFilter::default(),
                &PageRequest {
                    token: Some("not a token!".to_owned()),
                    size: 5,
                },
            )
            .await,
        Err(Error::InvalidArgument {
            field: "page_token",
            ..
        })
    ));
}

pub(crate) async fn entry_revision_monotonic(ctx: Ctx) {
    let mut last = ctx.store.current_revision().await.unwrap();
    let mut check = |rev: u64, now: u64| {
        assert!(rev > last, "{rev} after {last}");
        assert_eq!(rev, now);
        last = rev;
    };
    let a = create_ok(&ctx, numbered(1)).await;
    check(a.revision(), ctx.store.current_revision().await.unwrap());
    let b = create_ok(&ctx, numbered(2)).await;
    check(b.revision(), ctx.store.current_revision().await.unwrap());
    let a2 = ctx.store.update_entry(a.clone()).await.unwrap();
    check(a2.revision(), ctx.store.current_revision().await.unwrap());
    ctx.store
        .delete_entries(&[b.id().clone()])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    check(
        ctx.store.current_revision().await.unwrap(),
        ctx.store.current_revision().await.unwrap(),
    );
    // A batch hands out one revision per written item, in input order.
    let batch = ctx
        .store
        .create_entries((10..15).map(numbered).collect())
        .await
        .unwrap();
    let revisions: Vec<u64> = batch
        .iter()
        .map(|r| r.as_ref().unwrap().revision())
        .collect();
    assert_eq!(revisions, [5, 6, 7, 8, 9]);
    check(9, ctx.store.current_revision().await.unwrap());
    // Failed writes do not move the revision.
    assert!(ctx.store.create_entry(numbered(10)).await.is_err());
    assert!(
        ctx.store
            .delete_entries(&[EntryId::new("gone").unwrap()])
            .await
            .unwrap()[0]
            .is_err()
    );
    assert_eq!(ctx.store.current_revision().await.unwrap(), 9);
}

pub(crate) async fn entry_changes_since(ctx: Ctx) {
    let a = create_ok(&ctx, numbered(1)).await; // rev 1
    let b = create_ok(&ctx, numbered(2)).await; // rev 2
    let c = create_ok(&ctx, numbered(3)).await; // rev 3
    let a2 = ctx.store.update_entry(a.clone()).await.unwrap(); // rev 4
    let deleted = ctx.store.delete_entries(&[b.id().clone()]).await.unwrap(); // rev 5
    assert!(deleted[0].is_ok());

    let all = ctx.store.entry_changes_since(0, 0).await.unwrap();
    assert_eq!(all.current_revision, 5);
    assert_eq!(
        all.changes,
        vec![
            EntryChange::Put(c.clone()),
            EntryChange::Put(a2.clone()),
            EntryChange::Delete {
                id: b.id().clone(),
                revision: 5
            },
        ]
    );
    let since3 = ctx.store.entry_changes_since(3, 0).await.unwrap();
    assert_eq!(
        since3
            .changes
            .iter()
            .map(EntryChange::revision)
            .collect::<Vec<_>>(),
        [4, 5]
    );
    // A limit returns the oldest changes; continuing from the last one gets the rest.
    let first = ctx.store.entry_changes_since(0, 2).await.unwrap();
    assert_eq!(first.changes.len(), 2);
    let next = ctx
        .store
        .entry_changes_since(first.changes[1].revision(), 2)
        .await
        .unwrap();
    assert_eq!(next.changes.len(), 1);
    assert_eq!(next.changes[0].entry_id(), b.id());
    // Up to date: nothing.
    assert!(
        ctx.store
            .entry_changes_since(5, 0)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    // A revision the store never reached.
    assert!(matches!(
        ctx.store.entry_changes_since(6, 0).await,
        Err(Error::ChangesUnavailable {
            requested: 6,
            current: 5,
            ..
        })
    ));
    // A deleted id that is created again shows as a delete, then a put.
    let b2 = create_ok(&ctx, numbered(2)).await; // rev 6
    let since4 = ctx.store.entry_changes_since(4, 0).await.unwrap();
    assert_eq!(
        since4.changes,
        vec![
            EntryChange::Delete {
                id: b.id().clone(),
                revision: 5
            },
            EntryChange::Put(b2),
        ]
    );
}

pub(crate) async fn entry_tombstone_pruning(ctx: Ctx) {
    let batch = ctx
        .store
        .create_entries((0..4).map(numbered).collect())
        .await
        .unwrap(); // revs 1..=4
    let ids: Vec<EntryId> = batch
        .iter()
        .map(|r| r.as_ref().unwrap().id().clone())
        .collect();
    ctx.store.delete_entries(&ids[..2]).await.unwrap(); // revs 5, 6
    ctx.store.delete_entries(&ids[2..3]).await.unwrap(); // rev 7

    assert_eq!(ctx.store.prune_entry_tombstones(6).await.unwrap(), 2);
    assert!(matches!(
        ctx.store.entry_changes_since(5, 0).await,
        Err(Error::ChangesUnavailable {
            requested: 5,
            oldest: 6,
            current: 7
        })
    ));
    let since6 = ctx.store.entry_changes_since(6, 0).await.unwrap();
    assert_eq!(since6.changes.len(), 1);
    // Pruning beyond the current revision stops at it; pruning backwards changes nothing.
    assert_eq!(ctx.store.prune_entry_tombstones(100).await.unwrap(), 1);
    assert_eq!(ctx.store.prune_entry_tombstones(1).await.unwrap(), 0);
    assert!(ctx.store.entry_changes_since(6, 0).await.is_err());
    assert!(
        ctx.store
            .entry_changes_since(7, 0)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
}

pub(crate) async fn entry_concurrent_writers(ctx: Ctx) {
    // Eight writers at once: every write gets its own revision, and the revisions have no gaps,
    // which shows writers were serialized.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&ctx.store);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..10 {
                let e = store.create_entry(numbered(w * 100 + i)).await.unwrap();
                revisions.push(e.revision());
            }
            revisions
        }));
    }
    let mut revisions = BTreeSet::new();
    for task in tasks {
        for rev in task.await.unwrap() {
            assert!(revisions.insert(rev), "revision {rev} handed out twice");
        }
    }
    assert_eq!(revisions, (1..=80).collect());
    let changes = ctx.store.entry_changes_since(0, 0).await.unwrap();
    assert_eq!(changes.changes.len(), 80);
    assert_eq!(changes.current_revision, 80);
}

pub(crate) async fn entry_batch_of_1000(ctx: Ctx) {
    let entries: Vec<_> = (0..1000)
        .map(|n| {
            entry(
                &format!("bulk{n:04}"),
                &format!("spiffe://example.org/bulk/{n}"),
                PARENT,
                &[
                    &format!("unix:uid:{n}"),
                    "unix:gid:100",
                    "systemd:unit:bulk.service",
                ],
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let results = ctx.store.create_entries(entries).await.unwrap();
    // Reported for information; not asserted (timings vary with the machine).
    eprintln!(
        "created 1000 entries in one batch on {:?} in {:?}",
        ctx.store.backend(),
        started.elapsed()
    );
    assert_eq!(results.len(), 1000);
    for (n, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().unwrap().revision(), n as u64 + 1);
    }
    assert_eq!(ctx.store.count_entries().await.unwrap(), 1000);
    let superset = EntryFilter {
        selectors: Some(SelectorFilter {
            selectors: selectors(&["unix:gid:100", "unix:uid:500"]),
            mode: SelectorMatch::Superset,
        }),
        ..EntryFilter::default()
    };
    assert_eq!(list_ids(&ctx, &superset).await, ["bulk0500"]);
    // Deleting them all is one batch too.
    let ids: Vec<EntryId> = results
        .iter()
        .map(|r| r.as_ref().unwrap().id().clone())
        .collect();
    let deleted = ctx.store.delete_entries(&ids).await.unwrap();
    assert!(deleted.iter().all(Result::is_ok));
    assert_eq!(ctx.store.count_entries().await.unwrap(), 0);
    assert_eq!(ctx.store.current_revision().await.unwrap(), 2000);
}

pub(crate) async fn agent_lifecycle(ctx: Ctx) {
    let t0 = ctx.clock.now();
    let expires = t0 + Duration::from_secs(3600);
    let info = agent(1, "join_token", expires);
    let created = ctx.store.create_agent(&info).await.unwrap();
    assert_eq!(created.spiffe_id, info.spiffe_id);
    assert_eq!(created.attestation_type, "join_token");
    assert_eq!(created.serial, "1");
    assert_eq!(created.expires_at, expires);
    assert_eq!(created.selectors, info.selectors);
    assert!(!created.banned);
    assert_eq!(created.created_at, t0);
    assert_eq!(created.updated_at, t0);
    assert!(matches!(
        ctx.store.create_agent(&info).await,
        Err(Error::AlreadyExists { kind: "agent", .. })
    ));

    // Renewal: new serial and expiry; created_at stays.
    ctx.clock.advance(Duration::from_secs(1800));
    let renewed_info = AgentInfo {
        serial: "abc123".to_owned(),
        expires_at: expires + Duration::from_secs(1800),
        ..info.clone()
    };
    let renewed = ctx.store.update_agent(&renewed_info).await.unwrap();
    assert_eq!(renewed.serial, "abc123");
    assert_eq!(renewed.created_at, t0);
    assert_eq!(renewed.updated_at, t0 + Duration::from_secs(1800));
    assert_eq!(
        ctx.store.get_agent(&info.spiffe_id).await.unwrap(),
        Some(renewed)
    );

    // Ban: the record stays, banned, and a later update does not lift it.
    let banned = ctx.store.ban_agent(&info.spiffe_id).await.unwrap();
    assert!(banned.banned);
    let after = ctx.store.update_agent(&renewed_info).await.unwrap();
    assert!(after.banned);
    assert!(
        ctx.store
            .get_agent(&info.spiffe_id)
            .await
            .unwrap()
            .unwrap()
            .banned
    );

    // Evict: the record goes; the agent may attest again, not banned.
    ctx.store.delete_agent(&info.spiffe_id).await.unwrap();
    assert_eq!(ctx.store.get_agent(&info.spiffe_id).await.unwrap(), None);
    assert!(matches!(
        ctx.store.delete_agent(&info.spiffe_id).await,
        Err(Error::NotFound { kind: "agent", .. })
    ));
    assert!(matches!(
        ctx.store.ban_agent(&info.spiffe_id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ctx.store.update_agent(&info).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!ctx.store.create_agent(&info).await.unwrap().banned);
}

pub(crate) async fn agent_serial_rotation(ctx: Ctx) {
    let expires = ctx.clock.now() + Duration::from_secs(3600);
    let info = agent(1, "join_token", expires);
    let id = info.spiffe_id.clone();
    assert_eq!(
        ctx.store.create_agent(&info).await.unwrap().new_serial,
        None
    );
    let renewal = AgentRenewal {
        spiffe_id: id.clone(),
        presented_serial: "1".to_owned(),
        new_serial: "2".to_owned(),
        expires_at: expires + Duration::from_secs(60),
    };

    // A renewal keeps the current serial and records the new one as pending.
    let renewed = ctx.store.renew_agent(&renewal).await.unwrap();
    assert_eq!(renewed.serial, "1");
    assert_eq!(renewed.new_serial.as_deref(), Some("2"));
    assert_eq!(renewed.expires_at, expires + Duration::from_secs(60));

    // Renewing again from the current serial (the answer was lost) replaces the pending one.
    let again = AgentRenewal {
        new_serial: "3".to_owned(),
        ..renewal.clone()
    };
    assert_eq!(
        ctx.store
            .renew_agent(&again)
            .await
            .unwrap()
            .new_serial
            .as_deref(),
        Some("3")
    );
    // Only the pending serial is promoted, once.
    assert!(!ctx.store.promote_agent_serial(&id, "2").await.unwrap());
    assert!(ctx.store.promote_agent_serial(&id, "3").await.unwrap());
    assert!(!ctx.store.promote_agent_serial(&id, "3").await.unwrap());
    let promoted = ctx.store.get_agent(&id).await.unwrap().unwrap();
    assert_eq!(promoted.serial, "3");
    assert_eq!(promoted.new_serial, None);

    // A renewal from a retired serial is refused and changes nothing.
    assert!(matches!(
        ctx.store.renew_agent(&renewal).await,
        Err(Error::Conflict { kind: "agent", .. })
    ));
    assert_eq!(ctx.store.get_agent(&id).await.unwrap().unwrap(), promoted);

    // Attesting again replaces the serial and forgets a pending one.
    let pending = AgentRenewal {
        presented_serial: "3".to_owned(),
        new_serial: "4".to_owned(),
        ..renewal.clone()
    };
    ctx.store.renew_agent(&pending).await.unwrap();
    let reattested = ctx
        .store
        .update_agent(&AgentInfo {
            serial: "5".to_owned(),
            ..info.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        (reattested.serial.as_str(), reattested.new_serial),
        ("5", None)
    );
    assert!(!ctx.store.promote_agent_serial(&id, "4").await.unwrap());

    // A banned agent cannot renew.
    ctx.store.ban_agent(&id).await.unwrap();
    let banned = AgentRenewal {
        presented_serial: "5".to_owned(),
        ..renewal
    };
    assert!(matches!(
        ctx.store.renew_agent(&banned).await,
        Err(Error::Conflict { .. })
    ));
}

pub(crate) async fn agent_listing(ctx: Ctx) {
    let now = ctx.clock.now();
    for n in 0..12 {
        let kind = if n % 2 == 0 { "join_token" } else { "x509pop" };
        let expires = now + Duration::from_secs(60 * (n as u64 + 1));
        ctx.store
            .create_agent(&agent(n, kind, expires))
            .await
            .unwrap();
    }
    for n in [3, 4] {
        let kind = if n % 2 == 0 { "join_token" } else { "x509pop" };
        ctx.store
            .ban_agent(&agent(n, kind, now).spiffe_id)
            .await
            .unwrap();
    }
    assert_eq!(ctx.store.count_agents().await.unwrap(), 12);

    // Pages of 5 cover all twelve, in SPIFFE ID order.
    let mut seen = Vec::new();
    let mut page = PageRequest {
        token: None,
        size: 5,
    };
    loop {
        let got = ctx
            .store
            .list_agents(&AgentFilter::default(), &page)
            .await
            .unwrap();
        seen.extend(got.items.into_iter().map(|a| a.spiffe_id.to_string()));
        match got.next_token {
            Some(t) => page.token = Some(t),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 12);

    let list = |filter: AgentFilter| {
        let store = Arc::clone(&ctx.store);
        async move {
            store
                .list_agents(&filter, &PageRequest::default())
                .await
                .unwrap()
                .items
        }
    };
    let banned = list(AgentFilter {
        banned: Some(true),
        ..AgentFilter::default()
    })
    .await;
    assert_eq!(banned.len(), 2);
    assert!(banned.iter().all(|a| a.banned));
    assert_eq!(
        list(AgentFilter {
            banned: Some(false),
            ..AgentFilter::default()
        })
        .await
        .len(),
        10
    );
    let x509 = list(AgentFilter {
        attestation_type: Some("x509pop".to_owned()),
        ..AgentFilter::default()
    })
    .await;
    assert_eq!(x509.len(), 6);
    assert!(x509.iter().all(|a| a.attestation_type == "x509pop"));
    // Expiring within 3 minutes (strictly before): agents 0 and 1.
    let soon = list(AgentFilter {
        expires_before: Some(now + Duration::from_secs(180)),
        ..AgentFilter::default()
    })
    .await;
    assert_eq!(soon.len(), 2);
    assert!(matches!(
        ctx.store
            .list_agents(
                &AgentFilter::default(),
                &PageRequest {
                    token: Some("garbage".to_owned()),
                    size: 1
                }
            )
            .await,
        Err(Error::InvalidArgument { .. })
    ));
}

pub(crate) async fn join_token_single_use_under_concurrency(ctx: Ctx) {
    let expires = ctx.clock.now() + Duration::from_secs(600);
    let node = id("spiffe://example.org/lanyard/agent/join_token/n1");
    ctx.store
        .create_join_token("race-token-0123456789", Some(&node), expires)
        .await
        .unwrap();

    let start = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&ctx.store);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store.consume_join_token("race-token-0123456789").await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(grant) => {
                wins += 1;
                assert_eq!(grant.spiffe_id.as_ref(), Some(&node));
                assert_eq!(grant.expires_at, expires);
            }
            Err(Error::JoinTokenUsed) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(wins, 1);
    assert!(matches!(
        ctx.store.consume_join_token("race-token-0123456789").await,
        Err(Error::JoinTokenUsed)
    ));
}

pub(crate) async fn join_token_expiry_and_pruning(ctx: Ctx) {
    let now = ctx.clock.now();
    ctx.store
        .create_join_token("short", None, now + Duration::from_secs(10))
        .await
        .unwrap();
    ctx.store
        .create_join_token("long", None, now + Duration::from_secs(600))
        .await
        .unwrap();
    ctx.store
        .create_join_token("used", None, now + Duration::from_secs(20))
        .await
        .unwrap();
    assert!(matches!(
        ctx.store
            .create_join_token("long", None, now + Duration::from_secs(1))
            .await,
        Err(Error::AlreadyExists {
            kind: "join token",
            ..
        })
    ));
    assert!(matches!(
        ctx.store.create_join_token("", None, now).await,
        Err(Error::InvalidArgument { .. })
    ));
    let grant = ctx.store.consume_join_token("used").await.unwrap();
    assert_eq!(grant.spiffe_id, None);

    // At exactly the expiry time the token is expired.
    ctx.clock.advance(Duration::from_secs(10));
    assert!(matches!(
        ctx.store.consume_join_token("short").await,
        Err(Error::JoinTokenExpired)
    ));
    // Refusing an expired token does not use it up or change its answer.
    assert!(matches!(
        ctx.store.consume_join_token("short").await,
        Err(Error::JoinTokenExpired)
    ));
    assert!(matches!(
        ctx.store.consume_join_token("never-made").await,
        Err(Error::JoinTokenNotFound)
    ));

    // Pruning at t0+30s removes "short" and "used", keeps "long".
    ctx.clock.advance(Duration::from_secs(20));
    assert_eq!(ctx.store.prune_join_tokens(now).await.unwrap(), 2);
    assert!(matches!(
        ctx.store.consume_join_token("short").await,
        Err(Error::JoinTokenNotFound)
    ));
    assert!(ctx.store.consume_join_token("long").await.is_ok());
    // "long" is used but not expired: kept while its use is recent, pruned once it is older than
    // `used_before`.
    assert_eq!(ctx.store.prune_join_tokens(now).await.unwrap(), 0);
    assert!(matches!(
        ctx.store.consume_join_token("long").await,
        Err(Error::JoinTokenUsed)
    ));
    ctx.clock.advance(Duration::from_secs(1));
    assert_eq!(
        ctx.store.prune_join_tokens(ctx.clock.now()).await.unwrap(),
        1
    );
    assert!(matches!(
        ctx.store.consume_join_token("long").await,
        Err(Error::JoinTokenNotFound)
    ));
}

pub(crate) async fn join_token_stored_hashed(ctx: Ctx) {
    let token = "secret-join-token-value";
    ctx.store
        .create_join_token(token, None, ctx.clock.now() + Duration::from_secs(60))
        .await
        .unwrap();
    let stored = ctx.raw_text("SELECT token_hash FROM join_tokens").await;
    let expected: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, expected);
    assert!(!stored.contains(token));
}

pub(crate) async fn bundle_sequence(ctx: Ctx) {
    let td = TrustDomain::new("example.org").unwrap();
    let partner = TrustDomain::new("partner.example").unwrap();
    let doc = |n: u64| format!(r#"{{"keys":[],"spiffe_sequence":{n}}}"#);

    let b1 = ctx
        .store
        .set_bundle(&td, &doc(1), 1, BundleWrite::IfNewer)
        .await
        .unwrap();
    assert_eq!(b1.sequence, 1);
    assert_eq!(b1.document, doc(1));
    assert_eq!(b1.updated_at, ctx.clock.now());
    // Not newer: refused, stored bundle unchanged.
    for stale in [1, 0] {
        assert!(matches!(
            ctx.store
                .set_bundle(&td, &doc(stale), stale, BundleWrite::IfNewer)
                .await,
            Err(Error::Conflict { kind: "bundle", .. })
        ));
    }
    assert_eq!(ctx.store.get_bundle(&td).await.unwrap(), Some(b1));
    let b3 = ctx
        .store
        .set_bundle(&td, &doc(3), 3, BundleWrite::IfNewer)
        .await
        .unwrap();
    assert_eq!(b3.sequence, 3);
    // Unconditional writes replace whatever is there, also with a lower sequence.
    let b2 = ctx
        .store
        .set_bundle(&td, &doc(2), 2, BundleWrite::Unconditional)
        .await
        .unwrap();
    assert_eq!(ctx.store.get_bundle(&td).await.unwrap(), Some(b2));

    ctx.store
        .set_bundle(&partner, &doc(7), 7, BundleWrite::Unconditional)
        .await
        .unwrap();
    let listed: Vec<String> = ctx
        .store
        .list_bundles()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.trust_domain.to_string())
        .collect();
    assert_eq!(listed, ["example.org", "partner.example"]);

    ctx.store.delete_bundle(&partner).await.unwrap();
    assert_eq!(ctx.store.get_bundle(&partner).await.unwrap(), None);
    assert!(matches!(
        ctx.store.delete_bundle(&partner).await,
        Err(Error::NotFound { kind: "bundle", .. })
    ));
    assert!(matches!(
        ctx.store
            .set_bundle(&td, "{}", u64::MAX, BundleWrite::IfNewer)
            .await,
        Err(Error::InvalidArgument {
            field: "sequence",
            ..
        })
    ));
}

pub(crate) async fn ca_journal_optimistic_concurrency(ctx: Ctx) {
    assert!(ctx.store.get_ca_journal("s1").await.unwrap().is_none());
    assert_eq!(
        ctx.store.put_ca_journal("s1", b"v1", None).await.unwrap(),
        1
    );
    // Creating again: someone else was first.
    assert!(matches!(
        ctx.store.put_ca_journal("s1", b"other", None).await,
        Err(Error::Conflict {
            kind: "CA journal",
            ..
        })
    ));
    assert_eq!(
        ctx.store
            .put_ca_journal("s1", b"v2", Some(1))
            .await
            .unwrap(),
        2
    );
    // A writer that read version 1 loses.
    assert!(matches!(
        ctx.store.put_ca_journal("s1", b"stale", Some(1)).await,
        Err(Error::Conflict { .. })
    ));
    let journal = ctx.store.get_ca_journal("s1").await.unwrap().unwrap();
    assert_eq!(journal.data, b"v2");
    assert_eq!(journal.version, 2);
    assert_eq!(journal.server_id, "s1");
    // Journals are per server; expecting a version of one that does not exist is a conflict.
    assert!(matches!(
        ctx.store.put_ca_journal("s2", b"x", Some(1)).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(ctx.store.put_ca_journal("s2", b"", None).await.unwrap(), 1);

    // Concurrent writers that all read version 2: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = Arc::clone(&ctx.store);
        tasks.push(tokio::spawn(async move {
            store.put_ca_journal("s1", &[i], Some(2)).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(v) => {
                wins += 1;
                assert_eq!(v, 3);
            }
            Err(Error::Conflict { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(wins, 1);
    // Binary data survives as is.
    let blob: Vec<u8> = (0..=255).collect();
    ctx.store
        .put_ca_journal("s1", &blob, Some(3))
        .await
        .unwrap();
    assert_eq!(
        ctx.store.get_ca_journal("s1").await.unwrap().unwrap().data,
        blob
    );
}

pub(crate) async fn ca_journals_are_listed_per_server(ctx: Ctx) {
    assert!(ctx.store.list_ca_journals().await.unwrap().is_empty());
    ctx.store
        .put_ca_journal("server-b", b"b1", None)
        .await
        .unwrap();
    ctx.store
        .put_ca_journal("server-a", b"a1", None)
        .await
        .unwrap();
    ctx.store
        .put_ca_journal("server-b", b"b2", Some(1))
        .await
        .unwrap();
    let listed: Vec<(String, Vec<u8>, u64)> = ctx
        .store
        .list_ca_journals()
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.server_id, j.data, j.version))
        .collect();
    assert_eq!(
        listed,
        [
            ("server-a".to_owned(), b"a1".to_vec(), 1),
            ("server-b".to_owned(), b"b2".to_vec(), 2)
        ]
    );
}

pub(crate) async fn events_append_and_list(ctx: Ctx) {
    assert!(ctx.store.list_events(0, 0).await.unwrap().is_empty());
    assert_eq!(ctx.store.last_event_id().await.unwrap(), 0);
    let t0 = ctx.clock.now();
    let a = ctx
        .store
        .append_event(
            "agent.attested",
            &json!({"agent": "spiffe://example.org/a"}),
        )
        .await
        .unwrap();
    ctx.clock.advance(Duration::from_secs(1));
    let b = ctx
        .store
        .append_event("token.refused", &json!({"reason": "used", "n": [1, 2]}))
        .await
        .unwrap();
    let c = ctx.store.append_event("x", &json!(null)).await.unwrap();
    assert_eq!((a, b, c), (1, 2, 3));

    let events = ctx.store.list_events(0, 0).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].kind, "agent.attested");
    assert_eq!(
        events[0].payload,
        json!({"agent": "spiffe://example.org/a"})
    );
    assert_eq!(events[0].created_at, t0);
    assert_eq!(events[1].created_at, t0 + Duration::from_secs(1));
    assert_eq!(events[1].payload["n"], json!([1, 2]));
    let ids: Vec<u64> = ctx
        .store
        .list_events(1, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [2, 3]);
    let limited = ctx.store.list_events(0, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert!(ctx.store.list_events(3, 0).await.unwrap().is_empty());
    assert!(matches!(
        ctx.store.append_event("", &json!({})).await,
        Err(Error::InvalidArgument { .. })
    ));
}

pub(crate) async fn events_pruned_by_age(ctx: Ctx) {
    let t0 = ctx.clock.now();
    ctx.store.append_event("old", &json!(1)).await.unwrap();
    ctx.clock.advance(Duration::from_secs(10));
    ctx.store.append_event("new", &json!(2)).await.unwrap();
    assert_eq!(ctx.store.prune_events(t0).await.unwrap(), 0);
    assert_eq!(
        ctx.store
            .prune_events(t0 + Duration::from_secs(10))
            .await
            .unwrap(),
        1
    );
    let left = ctx.store.list_events(0, 0).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].id, left[0].kind.as_str()), (2, "new"));
    // Ids are never reused after a prune.
    assert_eq!(ctx.store.last_event_id().await.unwrap(), 2);
    assert_eq!(ctx.store.append_event("next", &json!(3)).await.unwrap(), 3);
    assert_eq!(ctx.store.last_event_id().await.unwrap(), 3);
}

pub(crate) async fn events_concurrent_appends(ctx: Ctx) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&ctx.store);
        tasks.push(tokio::spawn(async move {
            store
                .append_event("tick", &json!({ "i": i }))
                .await
                .unwrap()
        }));
    }
    let mut ids = BTreeSet::new();
    for task in tasks {
        assert!(ids.insert(task.await.unwrap()));
    }
    assert_eq!(ids, (1..=20).collect());
    let listed: Vec<u64> = ctx
        .store
        .list_events(0, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, (1..=20).collect::<Vec<_>>());
}

pub(crate) async fn corrupt_rows_are_invalid_data(ctx: Ctx) {
    create_ok(&ctx, numbered(1)).await;
    create_ok(&ctx, numbered(2)).await;
    ctx.raw_sql("UPDATE entries SET spiffe_id = 'not a spiffe id' WHERE id = 'e00002'")
        .await;
    // The healthy entry still reads; the corrupt one is refused, by get and by list.
    assert!(
        ctx.store
            .get_entry(&EntryId::new("e00001").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        ctx.store.get_entry(&EntryId::new("e00002").unwrap()).await,
        Err(Error::InvalidData { kind: "entry", ref key, .. }) if key == "e00002"
    ));
    assert!(matches!(
        ctx.store
            .list_entries(&EntryFilter::default(), &all())
            .await,
        Err(Error::InvalidData { .. })
    ));
    assert!(matches!(
        ctx.store.entry_changes_since(0, 0).await,
        Err(Error::InvalidData { .. })
    ));

    // Selectors that do not parse, and a rule lanyard-core enforces (a TTL out of range).
    ctx.raw_sql(
        "UPDATE entries SET spiffe_id = 'spiffe://example.org/w2', selectors = '[\"nocolon\"]' \
         WHERE id = 'e00002'",
    )
    .await;
    assert!(matches!(
        ctx.store.get_entry(&EntryId::new("e00002").unwrap()).await,
        Err(Error::InvalidData { .. })
    ));
    ctx.raw_sql("UPDATE entries SET x509_svid_ttl_us = 0 WHERE id = 'e00001'")
        .await;
    assert!(matches!(
        ctx.store.get_entry(&EntryId::new("e00001").unwrap()).await,
        Err(Error::InvalidData { .. })
    ));

    let info = agent(1, "join_token", ctx.clock.now());
    ctx.store.create_agent(&info).await.unwrap();
    ctx.raw_sql("UPDATE agents SET selectors = '{not json'")
        .await;
    assert!(matches!(
        ctx.store.get_agent(&info.spiffe_id).await,
        Err(Error::InvalidData { kind: "agent", .. })
    ));

    ctx.raw_sql(
        "INSERT INTO bundles (trust_domain, document, sequence, updated_at_us) \
         VALUES ('Not A Domain', '{}', 1, 0)",
    )
    .await;
    assert!(matches!(
        ctx.store.list_bundles().await,
        Err(Error::InvalidData { kind: "bundle", .. })
    ));

    ctx.store.append_event("ok", &json!({})).await.unwrap();
    ctx.raw_sql("UPDATE events SET payload = 'nope{'").await;
    assert!(matches!(
        ctx.store.list_events(0, 0).await,
        Err(Error::InvalidData { kind: "event", .. })
    ));

    // Error messages name the record, never SQL.
    let message = ctx
        .store
        .get_entry(&EntryId::new("e00001").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("e00001"), "{message}");
    assert!(!message.to_uppercase().contains("SELECT"), "{message}");
}

pub(crate) async fn reopen_keeps_everything(mut ctx: Ctx) {
    let results = ctx
        .store
        .create_entries((0..50).map(numbered).collect())
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    ctx.store
        .delete_entries(&[EntryId::new("e00007").unwrap()])
        .await
        .unwrap();
    let info = agent(1, "x509pop", ctx.clock.now() + Duration::from_secs(60));
    ctx.store.create_agent(&info).await.unwrap();
    ctx.store.ban_agent(&info.spiffe_id).await.unwrap();
    let expires = ctx.clock.now() + Duration::from_secs(600);
    ctx.store
        .create_join_token("persisted-token", None, expires)
        .await
        .unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    ctx.store
        .set_bundle(&td, "{\"keys\":[]}", 4, BundleWrite::IfNewer)
        .await
        .unwrap();
    ctx.store
        .put_ca_journal("s1", b"journal", None)
        .await
        .unwrap();
    ctx.store.append_event("e", &json!({"k": 1})).await.unwrap();

    let entries_before = ctx
        .store
        .list_entries(&EntryFilter::default(), &all())
        .await
        .unwrap();
    let changes_before = ctx.store.entry_changes_since(0, 0).await.unwrap();
    let agent_before = ctx.store.get_agent(&info.spiffe_id).await.unwrap();
    let bundles_before = ctx.store.list_bundles().await.unwrap();
    let journal_before = ctx.store.get_ca_journal("s1").await.unwrap();
    let events_before = ctx.store.list_events(0, 0).await.unwrap();

    ctx.reopen().await;

    assert_eq!(
        ctx.store
            .list_entries(&EntryFilter::default(), &all())
            .await
            .unwrap(),
        entries_before
    );
    assert_eq!(ids_of(&entries_before.items).len(), 49);
    assert_eq!(ctx.store.current_revision().await.unwrap(), 51);
    assert_eq!(
        ctx.store.entry_changes_since(0, 0).await.unwrap(),
        changes_before
    );
    assert_eq!(
        ctx.store.get_agent(&info.spiffe_id).await.unwrap(),
        agent_before
    );
    assert_eq!(ctx.store.list_bundles().await.unwrap(), bundles_before);
    assert_eq!(
        ctx.store.get_ca_journal("s1").await.unwrap(),
        journal_before
    );
    assert_eq!(ctx.store.list_events(0, 0).await.unwrap(), events_before);
    let grant = ctx
        .store
        .consume_join_token("persisted-token")
        .await
        .unwrap();
    assert_eq!(grant.expires_at, expires);
    // Writes go on where they left off.
    assert_eq!(create_ok(&ctx, numbered(500)).await.revision(), 52);
    assert_eq!(ctx.store.append_event("e", &json!(2)).await.unwrap(), 2);

    // And a second reopen (migrations already applied) works as well.
    ctx.reopen().await;
    assert_eq!(ctx.store.count_entries().await.unwrap(), 50);
}

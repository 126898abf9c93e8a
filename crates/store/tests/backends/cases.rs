//! The cases of the suite; each takes a fresh store and runs unchanged on every backend.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_core::entry::{DEFAULT_JWT_SVID_TTL, DEFAULT_X509_SVID_TTL};
use lanyard_core::{
    Clock, DnsName, EntryId, EntrySpec, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain,
};
use lanyard_store::{
    AgentFilter, AgentInfo, AgentRenewal, Approval, ApprovalState, AuditAppend, AuditFilter,
    BundleWrite, EntryChange, EntryFilter, Error, PageRequest, SelectorFilter, SelectorMatch,
    ServerInfo, StoredCheckpoint, TaskFilter, TaskRecord,
};

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

fn audit(kind: &str, actor: &str, subject: &str, details: &str) -> AuditAppend {
    AuditAppend {
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        subject: subject.to_owned(),
        details: details.to_owned(),
    }
}

async fn audit_seqs(ctx: &Ctx, filter: AuditFilter, limit: u32) -> Vec<u64> {
    ctx.store
        .list_audit(&filter, limit)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

/// Details that a re-serialization would change: non-ASCII, escaped quotes, odd spacing.
const TRICKY_DETAILS: &str =
    "{\"note\":\"say \\\"hi\\\" ünïcode ✓ 😀\\\\n\", \"b\":1,  \"a\":[1, 2.50]}";

pub(crate) async fn audit_append_and_list(ctx: Ctx) {
    assert!(
        ctx.store
            .list_audit(&AuditFilter::default(), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ctx.store.audit_size().await.unwrap(), 0);
    let t0 = ctx.clock.now();
    let admin = "admin:uid=0";
    let workload = "spiffe://example.org/a";
    let a = ctx
        .store
        .append_audit(&audit("entry.created", admin, "e1", "{}"))
        .await
        .unwrap();
    ctx.clock.advance(Duration::from_secs(1));
    let b = ctx
        .store
        .append_audit(&audit("task.granted", workload, "t1", TRICKY_DETAILS))
        .await
        .unwrap();
    let c = ctx
        .store
        .append_audit(&audit("entry.created", workload, "e1", "{\"k\":1}"))
        .await
        .unwrap();
    ctx.clock.advance(Duration::from_secs(1));
    let d = ctx
        .store
        .append_audit(&audit(
            "entry.deleted",
            admin,
            "e2",
            "{ \"spaced\" : true }",
        ))
        .await
        .unwrap();
    assert_eq!((a.seq, b.seq, c.seq, d.seq), (0, 1, 2, 3));
    assert_eq!(a.time, t0);
    assert_eq!(b.time, t0 + Duration::from_secs(1));
    assert_eq!(c.time, t0 + Duration::from_secs(1));
    assert_eq!(d.time, t0 + Duration::from_secs(2));
    assert_eq!(
        (a.kind.as_str(), a.actor.as_str(), a.subject.as_str()),
        ("entry.created", admin, "e1")
    );
    assert_eq!(ctx.store.audit_size().await.unwrap(), 4);

    // What is listed is what append returned, details byte for byte.
    let rows = ctx
        .store
        .list_audit(&AuditFilter::default(), 0)
        .await
        .unwrap();
    assert_eq!(rows, [a.clone(), b.clone(), c.clone(), d.clone()]);
    assert_eq!(rows[1].details.as_bytes(), TRICKY_DETAILS.as_bytes());
    assert_eq!(rows[3].details, "{ \"spaced\" : true }");

    // Each filter field, alone and together.
    let some = |s: &str| Some(s.to_owned());
    let cases: Vec<(AuditFilter, Vec<u64>)> = vec![
        (
            AuditFilter {
                from_seq: 2,
                ..AuditFilter::default()
            },
            vec![2, 3],
        ),
        (
            AuditFilter {
                kind: some("entry.created"),
                ..AuditFilter::default()
            },
            vec![0, 2],
        ),
        (
            AuditFilter {
                actor: some(admin),
                ..AuditFilter::default()
            },
            vec![0, 3],
        ),
        (
            AuditFilter {
                subject: some("e1"),
                ..AuditFilter::default()
            },
            vec![0, 2],
        ),
        (
            AuditFilter {
                since: Some(t0 + Duration::from_secs(1)),
                ..AuditFilter::default()
            },
            vec![1, 2, 3],
        ),
        (
            AuditFilter {
                since: Some(t0 + Duration::from_secs(2)),
                ..AuditFilter::default()
            },
            vec![3],
        ),
        (
            AuditFilter {
                kind: some("entry.created"),
                actor: some(workload),
                ..AuditFilter::default()
            },
            vec![2],
        ),
        (
            AuditFilter {
                from_seq: 1,
                subject: some("e1"),
                since: Some(t0 + Duration::from_secs(1)),
                ..AuditFilter::default()
            },
            vec![2],
        ),
        (
            AuditFilter {
                kind: some("nope"),
                ..AuditFilter::default()
            },
            vec![],
        ),
        (
            AuditFilter {
                from_seq: 4,
                ..AuditFilter::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            audit_seqs(&ctx, filter.clone(), 0).await,
            expected,
            "{filter:?}"
        );
    }

    // The limit.
    assert_eq!(audit_seqs(&ctx, AuditFilter::default(), 2).await, [0, 1]);
    let from_1 = AuditFilter {
        from_seq: 1,
        ..AuditFilter::default()
    };
    assert_eq!(audit_seqs(&ctx, from_1, 2).await, [1, 2]);
    let created = AuditFilter {
        kind: some("entry.created"),
        ..AuditFilter::default()
    };
    assert_eq!(audit_seqs(&ctx, created, 1).await, [0]);

    // Refused appends take no seq.
    assert!(matches!(
        ctx.store.append_audit(&audit("", admin, "x", "{}")).await,
        Err(Error::InvalidArgument { field: "kind", .. })
    ));
    let long = "x".repeat(2049);
    assert!(matches!(
        ctx.store.append_audit(&audit("k", &long, "x", "{}")).await,
        Err(Error::InvalidArgument { field: "actor", .. })
    ));
    assert_eq!(ctx.store.audit_size().await.unwrap(), 4);

    // The size is the counter, not the number of rows: a row deleted behind the store's back
    // leaves a gap in the listing and the size alone.
    ctx.raw_sql("DELETE FROM audit_log WHERE seq = 1").await;
    assert_eq!(ctx.store.audit_size().await.unwrap(), 4);
    assert_eq!(audit_seqs(&ctx, AuditFilter::default(), 0).await, [0, 2, 3]);
    let e = ctx
        .store
        .append_audit(&audit("k", admin, "x", "{}"))
        .await
        .unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(ctx.store.audit_size().await.unwrap(), 5);
}

pub(crate) async fn audit_concurrent_appends(ctx: Ctx) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 50;
    const TOTAL: u64 = WRITERS * EACH;

    // A reader follows the log while the writers run: each listing from `next` must continue
    // exactly where the previous one ended, and never be behind the size read before it.
    let reader = {
        let store = Arc::clone(&ctx.store);
        tokio::spawn(async move {
            let mut next = 0u64;
            let mut rounds = 0u64;
            while next < TOTAL {
                let size = store.audit_size().await.unwrap();
                let filter = AuditFilter {
                    from_seq: next,
                    ..AuditFilter::default()
                };
                let limit = if rounds.is_multiple_of(2) { 0 } else { 7 };
                let rows = store.list_audit(&filter, limit).await.unwrap();
                let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
                let expected: Vec<u64> = (next..next + seqs.len() as u64).collect();
                assert_eq!(seqs, expected, "a gap after {next}");
                if limit == 0 {
                    assert!(next + seqs.len() as u64 >= size, "rows behind the size");
                }
                next += seqs.len() as u64;
                rounds += 1;
                tokio::task::yield_now().await;
            }
            next
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&ctx.store);
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let record = audit(
                    "tick",
                    &format!("writer-{w}"),
                    &i.to_string(),
                    &format!("{{\"w\":{w},\"i\":{i}}}"),
                );
                seqs.push(store.append_audit(&record).await.unwrap().seq);
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for writer in writers {
        let seqs = writer.await.unwrap();
        // One writer's appends are in its own order.
        assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
        for seq in seqs {
            assert!(all.insert(seq), "seq {seq} handed out twice");
        }
    }
    assert_eq!(all, (0..TOTAL).collect());
    assert_eq!(reader.await.unwrap(), TOTAL);
    assert_eq!(ctx.store.audit_size().await.unwrap(), TOTAL);

    let rows = ctx
        .store
        .list_audit(&AuditFilter::default(), 0)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (0..TOTAL).collect::<Vec<_>>()
    );
    let writer_3 = AuditFilter {
        actor: Some("writer-3".to_owned()),
        ..AuditFilter::default()
    };
    let mine = ctx.store.list_audit(&writer_3, 0).await.unwrap();
    assert_eq!(
        mine.iter().map(|r| r.subject.clone()).collect::<Vec<_>>(),
        (0..EACH).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

fn checkpoint(signer: &str, size: u64, hashes: usize) -> StoredCheckpoint {
    StoredCheckpoint {
        size,
        signer: signer.to_owned(),
        note: format!("example.org/audit\n{size}\nroot\n\n— {signer} sig=="),
        leaf_hashes: (0..hashes * 32)
            .map(|i| u8::try_from((i * 37 + size as usize) % 256).unwrap())
            .collect(),
        // Ignored: the store sets it.
        created_at: SystemTime::UNIX_EPOCH,
    }
}

pub(crate) async fn audit_checkpoints(ctx: Ctx) {
    assert!(
        ctx.store
            .list_checkpoints(None, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(ctx.store.latest_checkpoint("a").await.unwrap(), None);

    let t0 = ctx.clock.now();
    let stored = |mut c: StoredCheckpoint, at: SystemTime| {
        c.created_at = at;
        c
    };
    let a2 = checkpoint("a", 2, 2);
    let b1 = checkpoint("b", 1, 1);
    let a5 = checkpoint("a", 5, 3);
    let b5 = checkpoint("b", 5, 4);
    ctx.store.append_checkpoint(&a2).await.unwrap();
    ctx.store.append_checkpoint(&b1).await.unwrap();
    ctx.clock.advance(Duration::from_secs(10));
    let t1 = ctx.clock.now();
    ctx.store.append_checkpoint(&a5).await.unwrap();
    ctx.store.append_checkpoint(&b5).await.unwrap();
    // The same (signer, size) again is ignored, whatever it carries.
    let mut again = checkpoint("a", 5, 0);
    again.note = "another note".to_owned();
    ctx.store.append_checkpoint(&again).await.unwrap();

    let (a2, b1, a5, b5) = (
        stored(a2, t0),
        stored(b1, t0),
        stored(a5, t1),
        stored(b5, t1),
    );
    // Ordered by size, then signer; every byte of the leaf hashes back.
    assert_eq!(
        ctx.store.list_checkpoints(None, None, 0).await.unwrap(),
        [b1.clone(), a2.clone(), a5.clone(), b5.clone()]
    );
    assert_eq!(
        ctx.store
            .list_checkpoints(Some("a"), None, 0)
            .await
            .unwrap(),
        [a2.clone(), a5.clone()]
    );
    assert_eq!(
        ctx.store
            .list_checkpoints(Some("b"), None, 0)
            .await
            .unwrap(),
        [b1.clone(), b5.clone()]
    );
    assert!(
        ctx.store
            .list_checkpoints(Some("c"), None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Pages: after a (size, signer), also between two signers of one size, and with a limit.
    assert_eq!(
        ctx.store
            .list_checkpoints(None, Some((2, "a")), 0)
            .await
            .unwrap(),
        [a5.clone(), b5.clone()]
    );
    assert_eq!(
        ctx.store
            .list_checkpoints(None, Some((5, "a")), 0)
            .await
            .unwrap(),
        std::slice::from_ref(&b5)
    );
    assert_eq!(
        ctx.store.list_checkpoints(None, None, 2).await.unwrap(),
        [b1.clone(), a2.clone()]
    );
    assert!(
        ctx.store
            .list_checkpoints(None, Some((5, "b")), 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ctx.store
            .list_checkpoints(Some("a"), Some((2, "a")), 1)
            .await
            .unwrap(),
        std::slice::from_ref(&a5)
    );
    assert_eq!(ctx.store.latest_checkpoint("a").await.unwrap(), Some(a5));
    assert_eq!(ctx.store.latest_checkpoint("b").await.unwrap(), Some(b5));
    assert_eq!(ctx.store.latest_checkpoint("c").await.unwrap(), None);

    // Refused: hashes that are not whole, more hashes than records, no signer.
    for bad in [
        StoredCheckpoint {
            leaf_hashes: vec![0; 31],
            ..checkpoint("a", 9, 0)
        },
        StoredCheckpoint {
            leaf_hashes: vec![0; 33],
            ..checkpoint("a", 9, 0)
        },
        checkpoint("a", 1, 2),
        checkpoint("", 9, 1),
    ] {
        assert!(
            matches!(
                ctx.store.append_checkpoint(&bad).await,
                Err(Error::InvalidArgument { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        ctx.store
            .list_checkpoints(None, None, 0)
            .await
            .unwrap()
            .len(),
        4
    );
    // A checkpoint that adds no record (an empty log) is fine.
    ctx.store
        .append_checkpoint(&checkpoint("c", 0, 0))
        .await
        .unwrap();
    assert_eq!(
        ctx.store.latest_checkpoint("c").await.unwrap(),
        Some(stored(checkpoint("c", 0, 0), t1))
    );
}

const WORKLOAD: &str = "spiffe://example.org/w";
const AGENT: &str = "spiffe://example.org/lanyard/agent/join_token/n1";

fn task(task_id: &str, spiffe_id: &str, audience: &str, issued_at: SystemTime) -> TaskRecord {
    TaskRecord {
        id: task_id.to_owned(),
        spiffe_id: id(spiffe_id),
        entry_id: EntryId::new("entry-1").unwrap(),
        agent_id: id(AGENT),
        audience: audience.to_owned(),
        operations: vec!["read".to_owned(), "write:ünï \"x\"".to_owned()],
        purpose: "nightly \"sync\"".to_owned(),
        on_behalf_of: "spiffe://example.org/user/alice".to_owned(),
        policy_ids: vec!["p1".to_owned(), "p2".to_owned()],
        token_id: format!("jti-{task_id}"),
        issued_at,
        expires_at: issued_at + Duration::from_secs(300),
        ended_at: None,
        parent_id: None,
        depth: 0,
    }
}

fn granted(t: &TaskRecord) -> AuditAppend {
    audit(
        "task.granted",
        t.agent_id.as_str(),
        &t.id,
        &format!("{{\"aud\":\"{}\"}}", t.audience),
    )
}

async fn task_ids(ctx: &Ctx, filter: &TaskFilter) -> Vec<String> {
    let page = ctx.store.list_tasks(filter, &all()).await.unwrap();
    assert_eq!(page.next_token, None);
    page.items.into_iter().map(|t| t.id).collect()
}

pub(crate) async fn tasks_create_get_list(ctx: Ctx) {
    let now = ctx.clock.now();
    let t1 = task("t1", WORKLOAD, "mcp://db", now);
    let row = ctx.store.create_task(&t1, &granted(&t1)).await.unwrap();
    assert_eq!((row.seq, row.time), (0, now));
    assert_eq!(
        (row.kind.as_str(), row.actor.as_str(), row.subject.as_str()),
        ("task.granted", AGENT, "t1")
    );
    assert_eq!(
        ctx.store
            .list_audit(&AuditFilter::default(), 0)
            .await
            .unwrap(),
        [row]
    );
    assert_eq!(ctx.store.get_task("t1").await.unwrap(), Some(t1.clone()));
    assert_eq!(ctx.store.get_task("nope").await.unwrap(), None);

    // Every field, with ended_at set, at microsecond precision.
    let mut ended = task(
        "t0-ended",
        WORKLOAD,
        "mcp://mail",
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_800_000_000_654_321),
    );
    ended.ended_at = Some(SystemTime::UNIX_EPOCH + Duration::from_micros(1_800_000_100_000_001));
    ended.operations = Vec::new();
    ended.policy_ids = vec!["only".to_owned()];
    ended.purpose = String::new();
    ended.on_behalf_of = String::new();
    let row = ctx
        .store
        .create_task(&ended, &granted(&ended))
        .await
        .unwrap();
    assert_eq!(row.seq, 1);
    assert_eq!(ctx.store.get_task("t0-ended").await.unwrap(), Some(ended));

    // Listing: by SPIFFE IDs (any of them), by audience, both; paged by id.
    let w = |n: u32| format!("spiffe://example.org/w{n}");
    for (task_id, workload, audience) in [
        ("t2", w(2), "mcp://db"),
        ("t3", w(1), "mcp://mail"),
        ("t4", w(3), "mcp://db"),
        ("t5", w(2), "mcp://mail"),
        ("t6", w(1), "mcp://db"),
    ] {
        let t = task(task_id, &workload, audience, now);
        ctx.store.create_task(&t, &granted(&t)).await.unwrap();
    }
    assert_eq!(ctx.store.audit_size().await.unwrap(), 7);
    let by = |ids: &[u32], audience: Option<&str>| TaskFilter {
        spiffe_ids: ids.iter().map(|n| id(&w(*n))).collect(),
        audience: audience.map(str::to_owned),
    };
    assert_eq!(
        task_ids(&ctx, &TaskFilter::default()).await,
        ["t0-ended", "t1", "t2", "t3", "t4", "t5", "t6"]
    );
    assert_eq!(task_ids(&ctx, &by(&[1], None)).await, ["t3", "t6"]);
    assert_eq!(task_ids(&ctx, &by(&[3, 1], None)).await, ["t3", "t4", "t6"]);
    assert_eq!(
        task_ids(&ctx, &by(&[], Some("mcp://db"))).await,
        ["t1", "t2", "t4", "t6"]
    );
    assert_eq!(task_ids(&ctx, &by(&[2], Some("mcp://mail"))).await, ["t5"]);
    assert!(task_ids(&ctx, &by(&[9], None)).await.is_empty());

    let mut seen = Vec::new();
    let mut request = PageRequest {
        token: None,
        size: 2,
    };
    let filter = by(&[1, 2], None);
    loop {
        let page = ctx.store.list_tasks(&filter, &request).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|t| t.id));
        match page.next_token {
            Some(token) => request.token = Some(token),
            None => break,
        }
    }
    assert_eq!(seen, ["t2", "t3", "t5", "t6"]);
    let first = ctx
        .store
        .list_tasks(
            &TaskFilter::default(),
            &PageRequest {
                token: None,
                size: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["t0-ended", "t1", "t2"]
    );
    let rest = ctx
        .store
        .list_tasks(
            &TaskFilter::default(),
            &PageRequest {
                token: first.next_token,
                size: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t3", "t4", "t5", "t6"]
    );
    assert_eq!(rest.next_token, None);

    // Bounded filters, and tokens this store did not issue.
    let many: Vec<u32> = (0..1000).collect();
    // w0 … w999 names all but t1 and t0-ended (granted to `…/w`).
    assert_eq!(
        task_ids(&ctx, &by(&many, None)).await,
        ["t2", "t3", "t4", "t5", "t6"]
    );
    let too_many: Vec<u32> = (0..1001).collect();
    assert!(matches!(
        ctx.store.list_tasks(&by(&too_many, None), &all()).await,
        Err(Error::InvalidArgument {
            field: "spiffe_ids",
            ..
        })
    ));
    assert!(matches!(
        ctx.store
            .list_tasks(
                &TaskFilter::default(),
                &PageRequest {
                    token: Some(String::new()),
                    size: 1,
                },
            )
            .await,
        Err(Error::InvalidArgument {
            field: "page_token",
            ..
        })
    ));
}

pub(crate) async fn task_conflict_appends_no_audit_record(ctx: Ctx) {
    let now = ctx.clock.now();
    let t1 = task("t1", WORKLOAD, "mcp://db", now);
    ctx.store.create_task(&t1, &granted(&t1)).await.unwrap();
    let size = ctx.store.audit_size().await.unwrap();
    assert_eq!(size, 1);
    let listed = |ctx: &Ctx| {
        let store = Arc::clone(&ctx.store);
        async move {
            store
                .list_audit(&AuditFilter::default(), 0)
                .await
                .unwrap()
                .len()
        }
    };

    // The same id, with another token: refused, and the audit record rolled back with it.
    let mut same_id = task("t1", "spiffe://example.org/other", "mcp://mail", now);
    same_id.token_id = "jti-fresh".to_owned();
    assert!(matches!(
        ctx.store.create_task(&same_id, &granted(&same_id)).await,
        Err(Error::AlreadyExists { kind: "task", ref key }) if key == "t1"
    ));
    // Another id with a token id already used: refused the same way.
    let mut same_token = task("t2", WORKLOAD, "mcp://db", now);
    same_token.token_id = t1.token_id.clone();
    assert!(matches!(
        ctx.store.create_task(&same_token, &granted(&same_token)).await,
        Err(Error::AlreadyExists { ref key, .. }) if key == "jti-t1"
    ));
    // Invalid input: neither the task nor a record is written.
    let mut no_id = task("t3", WORKLOAD, "mcp://db", now);
    no_id.id = String::new();
    assert!(matches!(
        ctx.store.create_task(&no_id, &granted(&no_id)).await,
        Err(Error::InvalidArgument { field: "id", .. })
    ));
    let t4 = task("t4", WORKLOAD, "mcp://db", now);
    assert!(matches!(
        ctx.store
            .create_task(&t4, &audit("", AGENT, "t4", "{}"))
            .await,
        Err(Error::InvalidArgument { field: "kind", .. })
    ));

    assert_eq!(ctx.store.audit_size().await.unwrap(), 1);
    assert_eq!(listed(&ctx).await, 1);
    assert_eq!(ctx.store.get_task("t1").await.unwrap(), Some(t1));
    assert_eq!(ctx.store.get_task("t2").await.unwrap(), None);
    assert_eq!(ctx.store.get_task("t4").await.unwrap(), None);

    // The next grant takes the next seq: no gap was left by the refusals.
    let t5 = task("t5", WORKLOAD, "mcp://db", now);
    assert_eq!(
        ctx.store.create_task(&t5, &granted(&t5)).await.unwrap().seq,
        1
    );
    assert_eq!(listed(&ctx).await, 2);
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

    // Tasks are parsed: a SPIFFE ID, an entry id or a JSON list that does not parse is refused.
    let t = task("t1", WORKLOAD, "mcp://db", ctx.clock.now());
    ctx.store.create_task(&t, &granted(&t)).await.unwrap();
    for corrupt in [
        "UPDATE tasks SET spiffe_id = 'not a spiffe id'",
        "UPDATE tasks SET spiffe_id = 'spiffe://example.org/w', agent_id = 'x'",
        "UPDATE tasks SET agent_id = 'spiffe://example.org/a', entry_id = 'no spaces'",
        "UPDATE tasks SET entry_id = 'e1', operations = '{not json'",
        "UPDATE tasks SET operations = '[]', policy_ids = '[1, 2]'",
    ] {
        ctx.raw_sql(corrupt).await;
        assert!(
            matches!(
                ctx.store.get_task("t1").await,
                Err(Error::InvalidData { kind: "task", ref key, .. }) if key == "t1"
            ),
            "{corrupt}"
        );
        assert!(
            matches!(
                ctx.store.list_tasks(&TaskFilter::default(), &all()).await,
                Err(Error::InvalidData { .. })
            ),
            "{corrupt}"
        );
    }
    ctx.raw_sql("UPDATE tasks SET policy_ids = '[]'").await;
    assert!(ctx.store.get_task("t1").await.unwrap().is_some());

    // Audit records are returned verbatim (the verifier judges them), but a seq must be one.
    ctx.raw_sql("UPDATE audit_log SET kind = '', details = 'not json {' WHERE seq = 0")
        .await;
    let rows = ctx
        .store
        .list_audit(&AuditFilter::default(), 0)
        .await
        .unwrap();
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].details.as_str()),
        ("", "not json {")
    );
    ctx.raw_sql(
        "INSERT INTO audit_log (seq, time_us, kind, actor, subject, details) \
         VALUES (-5, 0, 'k', 'a', 's', '{}')",
    )
    .await;
    assert!(matches!(
        ctx.store.list_audit(&AuditFilter::default(), 0).await,
        Err(Error::InvalidData { kind: "audit record", ref key, .. }) if key == "-5"
    ));

    // Checkpoints: a size that is not one, leaf hashes that are not whole.
    ctx.store
        .append_checkpoint(&checkpoint("s", 3, 2))
        .await
        .unwrap();
    ctx.raw_sql("UPDATE audit_checkpoints SET leaf_hashes = substr(leaf_hashes, 2)")
        .await;
    assert!(matches!(
        ctx.store.latest_checkpoint("s").await,
        Err(Error::InvalidData {
            kind: "audit checkpoint",
            ..
        })
    ));
    ctx.raw_sql("DELETE FROM audit_checkpoints").await;
    ctx.store
        .append_checkpoint(&checkpoint("s", 3, 2))
        .await
        .unwrap();
    ctx.raw_sql("UPDATE audit_checkpoints SET size = -1").await;
    assert!(matches!(
        ctx.store.list_checkpoints(None, None, 0).await,
        Err(Error::InvalidData {
            kind: "audit checkpoint",
            ..
        })
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
    let t = task("t1", WORKLOAD, "mcp://db", ctx.clock.now());
    ctx.store.create_task(&t, &granted(&t)).await.unwrap();
    ctx.store
        .append_audit(&audit(
            "entry.deleted",
            "admin:uid=0",
            "e00007",
            TRICKY_DETAILS,
        ))
        .await
        .unwrap();
    ctx.store
        .append_checkpoint(&checkpoint("s1", 2, 2))
        .await
        .unwrap();

    let entries_before = ctx
        .store
        .list_entries(&EntryFilter::default(), &all())
        .await
        .unwrap();
    let changes_before = ctx.store.entry_changes_since(0, 0).await.unwrap();
    let agent_before = ctx.store.get_agent(&info.spiffe_id).await.unwrap();
    let bundles_before = ctx.store.list_bundles().await.unwrap();
    let journal_before = ctx.store.get_ca_journal("s1").await.unwrap();
    let audit_before = ctx
        .store
        .list_audit(&AuditFilter::default(), 0)
        .await
        .unwrap();
    let checkpoints_before = ctx.store.list_checkpoints(None, None, 0).await.unwrap();

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
    assert_eq!(
        ctx.store
            .list_audit(&AuditFilter::default(), 0)
            .await
            .unwrap(),
        audit_before
    );
    assert_eq!(audit_before.len(), 2);
    assert_eq!(ctx.store.audit_size().await.unwrap(), 2);
    assert_eq!(
        ctx.store.list_checkpoints(None, None, 0).await.unwrap(),
        checkpoints_before
    );
    assert_eq!(ctx.store.get_task("t1").await.unwrap(), Some(t));
    let grant = ctx
        .store
        .consume_join_token("persisted-token")
        .await
        .unwrap();
    assert_eq!(grant.expires_at, expires);
    // Writes go on where they left off.
    assert_eq!(create_ok(&ctx, numbered(500)).await.revision(), 52);
    let next = ctx
        .store
        .append_audit(&audit("k", "a", "s", "{}"))
        .await
        .unwrap();
    assert_eq!(next.seq, 2);

    // And a second reopen (migrations already applied) works as well.
    ctx.reopen().await;
    assert_eq!(ctx.store.count_entries().await.unwrap(), 50);
    assert_eq!(ctx.store.audit_size().await.unwrap(), 3);
}

/// A database written by a lanyard with the event log (migrations 1 and 2), events and all,
/// migrates to the audit log: the events and their counter go, everything else stays.
pub(crate) async fn audit_log_replaces_event_log(mut ctx: Ctx) {
    ctx.store.close().await;
    ctx.recreate_at_schema_2().await;
    ctx.raw_sql(
        "INSERT INTO events (id, kind, payload, created_at_us) \
         VALUES (1, 'agent.attested', '{\"a\":1}', 10), (2, 'x', 'null', 20); \
         UPDATE counters SET value = 2 WHERE name = 'event_id'; \
         INSERT INTO agents (spiffe_id, attestation_type, serial, expires_at_us, banned, \
         selectors, created_at_us, updated_at_us, new_serial) VALUES \
         ('spiffe://example.org/lanyard/agent/join_token/old', 'join_token', 'ab', 0, FALSE, \
         '[\"join_token:node:old\"]', 0, 0, NULL)",
    )
    .await;

    ctx.reopen().await;
    let old_agent = id("spiffe://example.org/lanyard/agent/join_token/old");
    let agent = ctx.store.get_agent(&old_agent).await.unwrap().unwrap();
    assert_eq!(agent.serial, "ab");
    // The audit log starts empty at seq 0; the events are gone, with their index and counter.
    assert_eq!(ctx.store.audit_size().await.unwrap(), 0);
    assert!(
        ctx.store
            .list_audit(&AuditFilter::default(), 0)
            .await
            .unwrap()
            .is_empty()
    );
    let leftovers = match ctx.store.backend() {
        lanyard_store::Backend::Sqlite => {
            ctx.raw_text(
                "SELECT CAST(COUNT(*) AS TEXT) FROM sqlite_master \
                 WHERE name IN ('events', 'events_created_at')",
            )
            .await
        }
        lanyard_store::Backend::Postgres => {
            ctx.raw_text(
                "SELECT CAST(COUNT(*) AS TEXT) FROM pg_class \
                 WHERE relname IN ('events', 'events_created_at')",
            )
            .await
        }
    };
    assert_eq!(leftovers, "0");
    assert_eq!(
        ctx.raw_text("SELECT CAST(COUNT(*) AS TEXT) FROM counters WHERE name = 'event_id'")
            .await,
        "0"
    );
    let row = ctx
        .store
        .append_audit(&audit(
            "agent.attested",
            "server:s1",
            old_agent.as_str(),
            "{}",
        ))
        .await
        .unwrap();
    assert_eq!(row.seq, 0);
    let t = task("t1", WORKLOAD, "mcp://db", ctx.clock.now());
    assert_eq!(
        ctx.store.create_task(&t, &granted(&t)).await.unwrap().seq,
        1
    );

    // Opening again applies nothing more and keeps it all.
    ctx.reopen().await;
    assert_eq!(ctx.store.audit_size().await.unwrap(), 2);
    assert_eq!(ctx.store.get_task("t1").await.unwrap(), Some(t));
    assert!(ctx.store.get_agent(&old_agent).await.unwrap().is_some());
}

pub(crate) async fn audit_batch_append(ctx: Ctx) {
    let before = ctx.store.audit_size().await.unwrap();
    let records: Vec<AuditAppend> = (0..5)
        .map(|i| audit("entry.created", "admin:uid=0", &format!("e{i}"), "{}"))
        .collect();
    let rows = ctx.store.append_audits(&records).await.unwrap();
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (before..before + 5).collect::<Vec<_>>());
    assert_eq!(ctx.store.audit_size().await.unwrap(), before + 5);
    // One bad record refuses the whole batch: nothing is appended.
    let mut bad = records.clone();
    bad.push(audit("", "admin:uid=0", "x", "{}"));
    assert!(matches!(
        ctx.store.append_audits(&bad).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(ctx.store.audit_size().await.unwrap(), before + 5);
    assert!(ctx.store.append_audits(&[]).await.unwrap().is_empty());
}

pub(crate) async fn tasks_end_and_revoked_tokens(ctx: Ctx) {
    let now = ctx.clock.now();
    let t1 = task("t1", WORKLOAD, "mcp://db", now);
    let t2 = task("t2", WORKLOAD, "mcp://db", now);
    ctx.store.create_task(&t1, &granted(&t1)).await.unwrap();
    ctx.store.create_task(&t2, &granted(&t2)).await.unwrap();
    assert!(ctx.store.revoked_tokens(now).await.unwrap().is_empty());

    ctx.clock.advance(Duration::from_secs(10));
    let ended_at = ctx.clock.now();
    let record = audit("task.ended", WORKLOAD, "t1", "{}");
    let (ended, rows) = ctx.store.end_task("t1", &record).await.unwrap();
    assert_eq!(ended.ended_at, Some(ended_at));
    assert_eq!(rows.len(), 1, "the first end is recorded");
    assert_eq!(
        (rows[0].kind.as_str(), rows[0].subject.as_str()),
        ("task.ended", "t1")
    );
    assert_eq!(ctx.store.get_task("t1").await.unwrap(), Some(ended));
    assert_eq!(
        ctx.store.revoked_tokens(ctx.clock.now()).await.unwrap(),
        [("jti-t1".to_owned(), t1.expires_at)]
    );

    // Ending it again changes nothing and records nothing.
    let size = ctx.store.audit_size().await.unwrap();
    ctx.clock.advance(Duration::from_secs(1));
    let (again, rows) = ctx.store.end_task("t1", &record).await.unwrap();
    assert_eq!((again.ended_at, rows), (Some(ended_at), Vec::new()));
    assert_eq!(ctx.store.audit_size().await.unwrap(), size);

    // Unknown: NotFound, nothing recorded. A bad record: refused before anything is written.
    assert!(matches!(
        ctx.store.end_task("nope", &record).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ctx.store
            .end_task("t2", &audit("", WORKLOAD, "t2", "{}"))
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(
        ctx.store.get_task("t2").await.unwrap().unwrap().ended_at,
        None
    );
    assert_eq!(ctx.store.audit_size().await.unwrap(), size);

    // Once the token has expired anyway, it no longer needs to be refused by id.
    assert!(
        ctx.store
            .revoked_tokens(t1.expires_at)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn ending_a_task_ends_every_task_delegated_from_it(ctx: Ctx) {
    let now = ctx.clock.now();
    let root = task("root", WORKLOAD, "mcp://db", now);
    let mut child = task("child", WORKLOAD, "mcp://db", now);
    child.parent_id = Some("root".to_owned());
    child.depth = 1;
    let mut grandchild = task("grandchild", WORKLOAD, "mcp://db", now);
    grandchild.parent_id = Some("child".to_owned());
    grandchild.depth = 2;
    let other = task("other", WORKLOAD, "mcp://db", now);
    for t in [&root, &child, &grandchild, &other] {
        ctx.store.create_task(t, &granted(t)).await.unwrap();
    }
    assert_eq!(
        ctx.store.get_task("grandchild").await.unwrap(),
        Some(grandchild.clone())
    );

    // Ending the child ends the grandchild, not the root.
    let record = audit("task.revoked", "admin:uid=0", "child", "{}");
    let (ended, rows) = ctx.store.end_task("child", &record).await.unwrap();
    assert_eq!(ended.id, "child");
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["child", "grandchild"]);
    assert!(
        ctx.store
            .get_task("root")
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );

    // Ending the root ends what is left of its family; the other task stays.
    let record = audit("task.ended", WORKLOAD, "root", "{}");
    let (_, rows) = ctx.store.end_task("root", &record).await.unwrap();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["root"]);
    let revoked: Vec<String> = ctx
        .store
        .revoked_tokens(now)
        .await
        .unwrap()
        .into_iter()
        .map(|(jti, _)| jti)
        .collect();
    assert_eq!(revoked, ["jti-child", "jti-grandchild", "jti-root"]);
    assert!(
        ctx.store
            .get_task("other")
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );
}

pub(crate) async fn approvals_move_from_pending_once(ctx: Ctx) {
    let now = ctx.clock.now();
    let approval = |id: &str| Approval {
        id: id.to_owned(),
        spiffe_id: SpiffeId::parse(WORKLOAD).unwrap(),
        request: r#"{"audience":"payroll","operations":["pay"]}"#.to_owned(),
        policy_ids: vec!["pay-needs-approval".to_owned()],
        state: ApprovalState::Pending,
        decided_by: String::new(),
        reason: String::new(),
        task_id: None,
        created_at: now,
        expires_at: now + Duration::from_secs(600),
        decided_at: None,
    };
    let record = |kind: &str, subject: &str| audit(kind, WORKLOAD, subject, "{}");
    let a1 = approval("a1");
    ctx.store
        .create_approval(&a1, &record("task.pending", "a1"))
        .await
        .unwrap();
    assert!(matches!(
        ctx.store
            .create_approval(&a1, &record("task.pending", "a1"))
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    ctx.store
        .create_approval(&approval("a2"), &record("task.pending", "a2"))
        .await
        .unwrap();
    assert_eq!(
        ctx.store.get_approval("a1").await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(ctx.store.get_approval("nope").await.unwrap(), None);
    let pending: Vec<String> = ctx
        .store
        .pending_approvals()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(pending, ["a1", "a2"]);

    ctx.clock.advance(Duration::from_secs(5));
    let approved = ctx
        .store
        .decide_approval(
            "a1",
            ApprovalState::Pending,
            ApprovalState::Approved,
            "admin:uid=0",
            "",
            None,
            &record("task.approved", "a1"),
        )
        .await
        .unwrap();
    assert_eq!(approved.state, ApprovalState::Approved);
    assert_eq!(approved.decided_by, "admin:uid=0");
    assert_eq!(approved.decided_at, Some(ctx.clock.now()));
    // A second decision loses: nothing changes, nothing is recorded.
    let size = ctx.store.audit_size().await.unwrap();
    assert!(matches!(
        ctx.store
            .decide_approval(
                "a1",
                ApprovalState::Pending,
                ApprovalState::Denied,
                "admin:uid=1",
                "no",
                None,
                &record("task.denied", "a1"),
            )
            .await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(ctx.store.audit_size().await.unwrap(), size);
    // Granted exactly once.
    let granted = ctx
        .store
        .decide_approval(
            "a1",
            ApprovalState::Approved,
            ApprovalState::Granted,
            "",
            "",
            Some("task-1"),
            &record("task.granted", "task-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            granted.state,
            granted.task_id.as_deref(),
            granted.decided_by.as_str()
        ),
        (ApprovalState::Granted, Some("task-1"), "admin:uid=0")
    );
    assert!(matches!(
        ctx.store
            .decide_approval(
                "a1",
                ApprovalState::Approved,
                ApprovalState::Granted,
                "",
                "",
                Some("task-2"),
                &record("task.granted", "task-2"),
            )
            .await,
        Err(Error::Conflict { .. })
    ));
    // Denied with a reason; unknown ids are NotFound.
    let denied = ctx
        .store
        .decide_approval(
            "a2",
            ApprovalState::Pending,
            ApprovalState::Denied,
            "admin:uid=0",
            "not this quarter",
            None,
            &record("task.approval_denied", "a2"),
        )
        .await
        .unwrap();
    assert_eq!(
        (denied.state, denied.reason.as_str()),
        (ApprovalState::Denied, "not this quarter")
    );
    assert!(ctx.store.pending_approvals().await.unwrap().is_empty());
    assert!(matches!(
        ctx.store
            .decide_approval(
                "nope",
                ApprovalState::Pending,
                ApprovalState::Approved,
                "x",
                "",
                None,
                &record("task.approved", "nope"),
            )
            .await,
        Err(Error::NotFound { .. })
    ));
}

pub(crate) async fn servers_beat_and_are_listed(ctx: Ctx) {
    assert!(ctx.store.list_servers().await.unwrap().is_empty());
    let start = ctx.clock.now();
    let info = |id: &str, signs_until: SystemTime| ServerInfo {
        server_id: id.to_owned(),
        node_address: "127.0.0.1:8081".to_owned(),
        health_address: Some("127.0.0.1:8080".to_owned()),
        version: "0.1.0".to_owned(),
        started_at: start,
        ca_expires_at: Some(start + Duration::from_secs(86_400)),
        signs_until,
    };
    let first = ctx
        .store
        .server_heartbeat(&info("b", start + Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(first.info, info("b", start + Duration::from_secs(3600)));
    assert_eq!(first.last_seen, start);

    // A later beat moves last_seen; signs_until never moves back.
    ctx.clock.advance(Duration::from_secs(5));
    let second = ctx
        .store
        .server_heartbeat(&info("b", start + Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(second.last_seen, start + Duration::from_secs(5));
    assert_eq!(second.info.signs_until, start + Duration::from_secs(3600));
    let mut without_health = info("a", start + Duration::from_secs(7200));
    without_health.health_address = None;
    without_health.ca_expires_at = None;
    ctx.store.server_heartbeat(&without_health).await.unwrap();

    let listed = ctx.store.list_servers().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.info.server_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(listed[0].info, without_health);
    assert_eq!(listed[1], second);

    // Empty or oversized fields are refused, and nothing is written.
    let mut empty = info("", start);
    assert!(matches!(
        ctx.store.server_heartbeat(&empty).await,
        Err(Error::InvalidArgument {
            field: "server_id",
            ..
        })
    ));
    empty.server_id = "c".to_owned();
    empty.node_address = "x".repeat(10_000);
    assert!(matches!(
        ctx.store.server_heartbeat(&empty).await,
        Err(Error::InvalidArgument {
            field: "node_address",
            ..
        })
    ));
    assert_eq!(ctx.store.list_servers().await.unwrap().len(), 2);
}

// --- change feed ---

/// The next notice, within a generous bound (a notice takes milliseconds).
async fn next_notice(feed: &mut lanyard_store::ChangeFeed) -> lanyard_store::Changes {
    tokio::time::timeout(Duration::from_secs(20), feed.recv())
        .await
        .expect("a change notice")
        .unwrap()
}

/// PostgreSQL: every write another server must act on is noticed, named by what to catch up;
/// other writes are not. SQLite: nothing is noticed (one server writes the file).
pub(crate) async fn change_feed_notices_writes(ctx: Ctx) {
    let mut feed = ctx.store.change_feed().await.unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    let doc = |n: u64| format!(r#"{{"keys":[],"spiffe_sequence":{n}}}"#);
    if ctx.store.backend() == lanyard_store::Backend::Sqlite {
        create_ok(&ctx, numbered(1)).await;
        ctx.store
            .set_bundle(&td, &doc(1), 1, BundleWrite::IfNewer)
            .await
            .unwrap();
        ctx.store
            .append_audit(&audit("agent.banned", "a", "s", "{}"))
            .await
            .unwrap();
        ctx.store.close().await;
        // Had anything been noticed, it would come before the end.
        assert!(matches!(feed.recv().await, Err(Error::Closed)));
        return;
    }

    let created = create_ok(&ctx, numbered(1)).await;
    let changes = next_notice(&mut feed).await;
    assert!(
        changes.entries && !changes.audit && !changes.bundles,
        "{changes:?}"
    );
    ctx.store.update_entry(created).await.unwrap();
    assert!(next_notice(&mut feed).await.entries);
    let deleted = ctx
        .store
        .delete_entries(&[EntryId::new("e00001").unwrap()])
        .await
        .unwrap();
    assert!(deleted[0].is_ok());
    assert!(next_notice(&mut feed).await.entries);

    ctx.store
        .set_bundle(&td, &doc(1), 1, BundleWrite::IfNewer)
        .await
        .unwrap();
    let changes = next_notice(&mut feed).await;
    assert!(
        changes.bundles && !changes.entries && !changes.audit,
        "{changes:?}"
    );

    for kind in lanyard_store::NOTIFIED_AUDIT_KINDS {
        ctx.store
            .append_audit(&audit(kind, "admin", "spiffe://example.org/x", "{}"))
            .await
            .unwrap();
        let changes = next_notice(&mut feed).await;
        assert!(
            changes.audit && !changes.entries && !changes.bundles,
            "{kind}: {changes:?}"
        );
    }

    // Records of other kinds, and a batch of 300 entries (one transaction: one notice), then a
    // bundle: the bundle's notice comes alone, so none came for the records or after the batch.
    ctx.store
        .append_audits(&[
            audit("svid.minted", "agent", "spiffe://example.org/x", "{}"),
            audit("task.granted", "agent", "t1", "{}"),
        ])
        .await
        .unwrap();
    ctx.store
        .set_bundle(&td, &doc(2), 2, BundleWrite::IfNewer)
        .await
        .unwrap();
    let changes = next_notice(&mut feed).await;
    assert!(changes.bundles && !changes.audit, "{changes:?}");
    let batch = ctx
        .store
        .create_entries((10..310).map(numbered).collect())
        .await
        .unwrap();
    assert!(batch.iter().all(Result::is_ok));
    assert!(next_notice(&mut feed).await.entries);
    ctx.store
        .set_bundle(&td, &doc(3), 3, BundleWrite::IfNewer)
        .await
        .unwrap();
    let changes = next_notice(&mut feed).await;
    assert!(changes.bundles && !changes.entries, "{changes:?}");
}

/// A feed whose connection drops says so once (`Listen`), then `Closed`; a new feed picks up.
/// Closing the store ends every feed, and no feed opens on a closed store.
pub(crate) async fn change_feed_ends_when_its_connection_or_the_store_closes(ctx: Ctx) {
    if ctx.store.backend() == lanyard_store::Backend::Postgres {
        let mut feed = ctx.store.change_feed().await.unwrap();
        ctx.raw_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'lanyard change feed'",
        )
        .await;
        let lost = tokio::time::timeout(Duration::from_secs(20), feed.recv())
            .await
            .expect("the feed must notice that its connection dropped");
        assert!(matches!(lost, Err(Error::Listen(_))), "{lost:?}");
        assert!(matches!(feed.recv().await, Err(Error::Closed)));

        let mut again = ctx.store.change_feed().await.unwrap();
        create_ok(&ctx, numbered(1)).await;
        assert!(next_notice(&mut again).await.entries);
    }
    let mut feed = ctx.store.change_feed().await.unwrap();
    ctx.store.close().await;
    let closed = tokio::time::timeout(Duration::from_secs(20), feed.recv())
        .await
        .expect("closing the store must end the feed");
    assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
    assert!(matches!(ctx.store.change_feed().await, Err(Error::Closed)));
}

/// PostgreSQL: a bulk write refreshes the planner statistics of the entry tables before it
/// returns (a fresh table has none, and the `Subset` filter is 100× slower without them); a small
/// write does not. SQLite keeps no such statistics: the writes must simply work.
pub(crate) async fn bulk_entry_writes_refresh_statistics(ctx: Ctx) {
    let batch = |from: usize, n: usize| -> Vec<RegistrationEntry> {
        (from..from + n)
            .map(|n| {
                entry(
                    &format!("st{n:05}"),
                    &format!("spiffe://example.org/stats/{n}"),
                    PARENT,
                    &[&format!("unix:uid:{n}")],
                )
            })
            .collect()
    };
    let analyzed = "SELECT COALESCE(last_analyze::TEXT, 'never') FROM pg_stat_user_tables \
                    WHERE relname = 'entries'";
    let small = ctx.store.create_entries(batch(0, 10)).await.unwrap();
    assert!(small.iter().all(Result::is_ok));
    if ctx.store.backend() == lanyard_store::Backend::Postgres {
        assert_eq!(
            ctx.raw_text(analyzed).await,
            "never",
            "10 rows are not a bulk write"
        );
    }
    let bulk = ctx.store.create_entries(batch(10, 1000)).await.unwrap();
    assert!(bulk.iter().all(Result::is_ok));
    if ctx.store.backend() == lanyard_store::Backend::Postgres {
        // The statistics view is updated asynchronously; the catalog's estimate is not.
        let rows = ctx
            .raw_text("SELECT reltuples::BIGINT::TEXT FROM pg_class WHERE relname = 'entries'")
            .await;
        assert_eq!(rows, "1010", "ANALYZE counted every row");
    }
}

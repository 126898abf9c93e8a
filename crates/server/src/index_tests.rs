//! Tests of the entry index against a real SQLite store in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lanyard_core::{DnsName, EntryId, EntrySpec, RegistrationEntry, SelectorSet, SpiffeId};
use lanyard_store::DataStore;

use super::*;

const SERVER: &str = "spiffe://example.org/lanyard/server";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn DataStore>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = lanyard_store::connect(&url).await.unwrap();
    Fixture { _dir: dir, store }
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn selectors(list: &[&str]) -> SelectorSet {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn spec(entry_id: &str, spiffe_id: &str, parent: &str, sels: &[&str]) -> EntrySpec {
    EntrySpec {
        id: EntryId::new(entry_id).unwrap(),
        spiffe_id: id(spiffe_id),
        parent_id: id(parent),
        selectors: selectors(sels),
        x509_svid_ttl: Duration::from_secs(3600),
        jwt_svid_ttl: Duration::from_secs(300),
        dns_names: Vec::new(),
        federates_with: Vec::new(),
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        revision: 0,
    }
}

fn entry(entry_id: &str, spiffe_id: &str, parent: &str) -> RegistrationEntry {
    RegistrationEntry::new(spec(entry_id, spiffe_id, parent, &["unix:uid:1000"])).unwrap()
}

async fn create(store: &dyn DataStore, entries: Vec<RegistrationEntry>) {
    for result in store.create_entries(entries).await.unwrap() {
        result.unwrap();
    }
}

async fn load(f: &Fixture, capacity: usize) -> EntryIndex {
    EntryIndex::load_with_capacity(&*f.store, id(SERVER), capacity)
        .await
        .unwrap()
}

fn subscribe(index: &EntryIndex, agent: &str, sels: &[&str]) -> (Subscription, AliasGrants) {
    index.subscribe(&id(agent), &selectors(sels), SystemTime::now())
}

/// The next delivery, which must already be queued.
fn next(sub: &mut Subscription) -> Delivery {
    let update = sub.rx.try_recv().expect("a delivery is queued");
    if sub.lagged.swap(false, Ordering::Acquire) {
        while sub.rx.try_recv().is_ok() {}
        return Delivery::Resync;
    }
    Delivery::Update(update)
}

fn nothing_queued(sub: &mut Subscription) -> bool {
    sub.rx.try_recv().is_err()
}

fn ids_under(index: &EntryIndex, parents: &[&str]) -> Vec<String> {
    let parents = parents.iter().map(|p| id(p)).collect();
    let mut ids = Vec::new();
    index.entries_under(&parents, |e| ids.push(e.id().to_string()));
    ids.sort();
    ids
}

#[tokio::test]
async fn round_trips_every_field_and_both_id_forms() {
    let f = fixture().await;
    let mut rare = spec(
        "imported_id-1",
        "spiffe://example.org/web",
        "spiffe://example.org/node",
        &["k8s:ns:prod", "unix:uid:1000"],
    );
    rare.dns_names = vec![DnsName::new("web.example.org").unwrap()];
    rare.federates_with = vec!["other.org".parse().unwrap()];
    rare.hint = "frontend".to_owned();
    rare.admin = true;
    rare.downstream = true;
    rare.x509_svid_ttl = Duration::from_millis(90_500);
    rare.expires_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000));
    let plain = entry(
        "0123456789abcdef0123456789abcdef",
        "spiffe://example.org/api",
        "spiffe://example.org/node",
    );
    let upper = entry(
        "0123456789ABCDEF0123456789ABCDEF",
        "spiffe://example.org/db",
        "spiffe://example.org/node",
    );
    let stored_rare = RegistrationEntry::new(rare).unwrap();
    create(&*f.store, vec![stored_rare, plain, upper]).await;
    let index = load(&f, 8).await;
    assert_eq!(index.len(), 3);
    for stored in f
        .store
        .list_entries(&Default::default(), &lanyard_store::PageRequest::default())
        .await
        .unwrap()
        .items
    {
        assert_eq!(
            index.get(stored.id()),
            Some(stored.clone()),
            "{}",
            stored.id()
        );
    }
    let hex = EntryKey::new(&EntryId::new("0123456789abcdef0123456789abcdef").unwrap());
    assert!(matches!(hex, EntryKey::Hex(_)));
    let upper = EntryKey::new(&EntryId::new("0123456789ABCDEF0123456789ABCDEF").unwrap());
    assert!(
        matches!(upper, EntryKey::Text(_)),
        "only lowercase hex is packed"
    );
}

#[tokio::test]
async fn interns_parents_and_selectors_and_forgets_unused_ones() {
    let f = fixture().await;
    let entries = (0..50)
        .map(|i| {
            entry(
                &format!("e{i}"),
                &format!("spiffe://example.org/w/{i}"),
                "spiffe://example.org/node",
            )
        })
        .collect();
    create(&*f.store, entries).await;
    let index = load(&f, 8).await;
    {
        let state = index.read();
        let first = state.slots.iter().flatten().next().unwrap();
        for e in state.slots.iter().flatten() {
            assert!(Arc::ptr_eq(&e.parent_id, &first.parent_id));
            assert!(Arc::ptr_eq(&e.selectors[0], &first.selectors[0]));
        }
        // One parent, one selector.
        assert_eq!(state.strings.set.len(), 2);
    }
    let ids: Vec<EntryId> = (0..50)
        .map(|i| EntryId::new(&format!("e{i}")).unwrap())
        .collect();
    f.store.delete_entries(&ids).await.unwrap();
    index.catch_up(&*f.store).await.unwrap();
    let mut state = index.state.write().unwrap();
    assert_eq!(state.ids.len(), 0);
    assert!(state.by_parent.is_empty());
    // Nothing uses them any more: a sweep drops both.
    state.strings.sweep();
    assert!(state.strings.set.is_empty());
}

#[tokio::test]
async fn slots_are_reused_and_lookups_follow_them() {
    let f = fixture().await;
    create(
        &*f.store,
        vec![
            entry("a", "spiffe://example.org/a", "spiffe://example.org/p"),
            entry("b", "spiffe://example.org/b", "spiffe://example.org/p"),
        ],
    )
    .await;
    let index = load(&f, 8).await;
    f.store
        .delete_entries(&[EntryId::new("a").unwrap()])
        .await
        .unwrap();
    create(
        &*f.store,
        vec![entry(
            "c",
            "spiffe://example.org/c",
            "spiffe://example.org/q",
        )],
    )
    .await;
    index.catch_up(&*f.store).await.unwrap();
    assert_eq!(index.read().slots.len(), 2, "c took a's slot");
    assert!(index.get(&EntryId::new("a").unwrap()).is_none());
    assert_eq!(ids_under(&index, &["spiffe://example.org/p"]), ["b"]);
    assert_eq!(ids_under(&index, &["spiffe://example.org/q"]), ["c"]);
    assert_eq!(index.len(), 2);
}

#[tokio::test]
async fn a_change_reaches_only_the_subscribers_of_its_parents() {
    let f = fixture().await;
    let index = load(&f, 8).await;
    let agent_a = "spiffe://example.org/lanyard/agent/join_token/a";
    let agent_b = "spiffe://example.org/lanyard/agent/join_token/b";
    let (mut a, _) = subscribe(&index, agent_a, &[]);
    let (mut b, _) = subscribe(&index, agent_b, &[]);
    create(
        &*f.store,
        vec![entry("e1", "spiffe://example.org/w1", agent_a)],
    )
    .await;
    index.catch_up(&*f.store).await.unwrap();
    let Delivery::Update(update) = next(&mut a) else {
        panic!("no resync expected");
    };
    let under_a = &update.by_parent[agent_a];
    assert_eq!(under_a.puts.len(), 1);
    assert_eq!(under_a.puts[0].spiffe_id(), "spiffe://example.org/w1");
    assert!(nothing_queued(&mut b), "b serves nothing under a");

    // Moving the entry to b: a is told to remove it, b gets it.
    let mut moved = spec("e1", "spiffe://example.org/w1", agent_b, &["unix:uid:1000"]);
    moved.revision = 0;
    f.store
        .update_entry(RegistrationEntry::new(moved).unwrap())
        .await
        .unwrap();
    index.catch_up(&*f.store).await.unwrap();
    let Delivery::Update(update) = next(&mut a) else {
        panic!("no resync expected");
    };
    assert_eq!(
        update.by_parent[agent_a].removed,
        [EntryId::new("e1").unwrap()]
    );
    assert!(update.by_parent[agent_a].puts.is_empty());
    let Delivery::Update(update) = next(&mut b) else {
        panic!("no resync expected");
    };
    assert_eq!(update.by_parent[agent_b].puts.len(), 1);
    assert!(update.by_parent[agent_b].removed.is_empty());

    // A parent nobody subscribes to is not even recorded.
    create(
        &*f.store,
        vec![entry(
            "e2",
            "spiffe://example.org/w2",
            "spiffe://example.org/nobody",
        )],
    )
    .await;
    index.catch_up(&*f.store).await.unwrap();
    assert!(nothing_queued(&mut a) && nothing_queued(&mut b));

    // Dropping a subscription unsubscribes it.
    drop(b);
    assert!(
        !index
            .subscribers
            .lock()
            .unwrap()
            .by_parent
            .contains_key(agent_b)
    );
    assert_eq!(index.subscribers.lock().unwrap().subs.len(), 1);
}

#[tokio::test]
async fn alias_changes_reach_every_subscriber_and_resubscribe_follows_grants() {
    let f = fixture().await;
    let index = load(&f, 8).await;
    let agent = "spiffe://example.org/lanyard/agent/join_token/a";
    let other = "spiffe://example.org/lanyard/agent/join_token/b";
    let (mut a, grants) = subscribe(&index, agent, &["k8s:cluster:blue"]);
    let (mut b, _) = subscribe(&index, other, &["k8s:cluster:green"]);
    assert_eq!(grants.parents, BTreeSet::from([id(agent)]));
    let alias = RegistrationEntry::new(spec(
        "alias",
        "spiffe://example.org/cluster/blue",
        SERVER,
        &["k8s:cluster:blue"],
    ))
    .unwrap();
    create(&*f.store, vec![alias]).await;
    index.catch_up(&*f.store).await.unwrap();
    for sub in [&mut a, &mut b] {
        let Delivery::Update(update) = next(sub) else {
            panic!("no resync expected");
        };
        assert!(update.aliases_changed);
    }
    let grants = index.resubscribe(
        &a,
        &id(agent),
        &selectors(&["k8s:cluster:blue"]),
        SystemTime::now(),
    );
    assert!(
        grants
            .parents
            .contains(&id("spiffe://example.org/cluster/blue"))
    );
    // Now a hears of entries under the alias; b, which does not match it, does not.
    create(
        &*f.store,
        vec![entry(
            "w",
            "spiffe://example.org/w",
            "spiffe://example.org/cluster/blue",
        )],
    )
    .await;
    index.catch_up(&*f.store).await.unwrap();
    let Delivery::Update(update) = next(&mut a) else {
        panic!("no resync expected");
    };
    assert_eq!(
        update.by_parent["spiffe://example.org/cluster/blue"]
            .puts
            .len(),
        1
    );
    assert!(nothing_queued(&mut b));
}

#[tokio::test]
async fn a_full_queue_turns_into_one_resync() {
    let f = fixture().await;
    let index = load(&f, 2).await;
    let agent = "spiffe://example.org/lanyard/agent/join_token/a";
    let (mut sub, _) = subscribe(&index, agent, &[]);
    for i in 0..5 {
        create(
            &*f.store,
            vec![entry(
                &format!("e{i}"),
                &format!("spiffe://example.org/w{i}"),
                agent,
            )],
        )
        .await;
        index.catch_up(&*f.store).await.unwrap();
    }
    // Two fit, three were refused: the next delivery says "resync" and empties the queue.
    assert!(sub.lagged.load(Ordering::Acquire));
    assert!(matches!(sub.recv().await, Some(Delivery::Resync)));
    assert!(nothing_queued(&mut sub));
    // The full set has all five, and later changes flow again.
    assert_eq!(ids_under(&index, &[agent]).len(), 5);
    create(
        &*f.store,
        vec![entry("e5", "spiffe://example.org/w5", agent)],
    )
    .await;
    index.catch_up(&*f.store).await.unwrap();
    let Some(Delivery::Update(update)) = sub.recv().await else {
        panic!("an update after the resync");
    };
    assert_eq!(update.by_parent[agent].puts.len(), 1);
}

#[tokio::test]
async fn reserved_ids_are_counted_but_not_served() {
    let f = fixture().await;
    let agent = "spiffe://example.org/lanyard/agent/join_token/a";
    // Written around the admin API's check, as an older version might have.
    let reserved = RegistrationEntry::new(spec(
        "r",
        "spiffe://example.org/lanyard/agent/join_token/x",
        agent,
        &["unix:uid:0"],
    ))
    .unwrap();
    create(
        &*f.store,
        vec![reserved, entry("ok", "spiffe://example.org/ok", agent)],
    )
    .await;
    let index = load(&f, 8).await;
    assert_eq!(index.len(), 2);
    assert!(index.get(&EntryId::new("r").unwrap()).is_none());
    assert_eq!(ids_under(&index, &[agent]), ["ok"]);
    f.store
        .delete_entries(&[EntryId::new("r").unwrap()])
        .await
        .unwrap();
    index.catch_up(&*f.store).await.unwrap();
    assert_eq!(index.len(), 1);
}

/// Memory per entry, measured as the growth of this process's RSS while 1,000,000 entries shaped
/// like node-load's (an agent parent among 10,000, two selectors of which one is shared by 1% of
/// the entries, a unique SPIFFE ID) go into the index. Run alone, one test per process:
/// `cargo test -p lanyard-server index_memory_compact -- --ignored --nocapture` (and
/// `index_memory_before`, the structure this index replaced: `HashMap<EntryId,
/// RegistrationEntry>` and `HashMap<SpiffeId, BTreeSet<EntryId>>`).
const MEMORY_ENTRIES: usize = 1_000_000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn load_shaped(i: usize) -> RegistrationEntry {
    let mut spec = spec(
        &format!(
            "{:032x}",
            0x0190_0000_0000_0000_0000_0000_0000_0000_u128 + i as u128 * 7919
        ),
        &format!("spiffe://example.org/bench/ns-{}/w-{i}", i % 100),
        &format!(
            "spiffe://example.org/lanyard/agent/join_token/a-{}",
            i % 10_000
        ),
        &[],
    );
    spec.selectors = selectors(&[&format!("k8s:ns:ns-{}", i % 100), &format!("k8s:sa:w-{i}")]);
    spec.revision = i as u64 + 1;
    RegistrationEntry::new(spec).unwrap()
}

#[test]
#[ignore = "a measurement: run alone, see MEMORY_ENTRIES"]
fn index_memory_compact() {
    let before = rss_kib();
    let mut state = IndexState::default();
    for i in 0..MEMORY_ENTRIES {
        let indexed = IndexedEntry::new(&load_shaped(i), &mut state.strings);
        state.insert(indexed);
    }
    state.strings.maybe_sweep();
    let grown = rss_kib() - before;
    assert_eq!(state.ids.len(), MEMORY_ENTRIES);
    println!(
        "compact index: {MEMORY_ENTRIES} entries, RSS +{} MiB = {} bytes per entry",
        grown / 1024,
        grown * 1024 / MEMORY_ENTRIES as u64
    );
}

#[test]
#[ignore = "a measurement: run alone, see MEMORY_ENTRIES"]
fn index_memory_before() {
    use std::collections::HashMap;
    let before = rss_kib();
    let mut by_id: HashMap<EntryId, RegistrationEntry> = HashMap::new();
    let mut by_parent: HashMap<SpiffeId, BTreeSet<EntryId>> = HashMap::new();
    for i in 0..MEMORY_ENTRIES {
        let entry = load_shaped(i);
        by_parent
            .entry(entry.parent_id().clone())
            .or_default()
            .insert(entry.id().clone());
        by_id.insert(entry.id().clone(), entry);
    }
    let grown = rss_kib() - before;
    assert_eq!(by_id.len(), MEMORY_ENTRIES);
    println!(
        "previous index: {MEMORY_ENTRIES} entries, RSS +{} MiB = {} bytes per entry",
        grown / 1024,
        grown * 1024 / MEMORY_ENTRIES as u64
    );
}

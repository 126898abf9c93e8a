//! Registration entries, their global revision counter, and tombstones of deletions.
//!
//! Every entry write runs in one transaction that first locks the `entry_revision` counter row.
//! That serializes entry writers, so revisions are handed out in commit order: a reader that has
//! seen revision N has seen every write below N. The same lock makes the duplicate checks below
//! (read, then insert) race-free on PostgreSQL, where the transaction is READ COMMITTED.

use std::collections::{HashMap, HashSet};

use lanyard_core::{
    DnsName, EntryId, EntrySpec, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain,
};

use super::{SqlStore, counter_value, finish_page, missing_counter, page_limit, push_list};
use crate::codec::{
    canonical_selectors, duration_to_us, sha256_hex, time_to_us, u64_to_i64, us_to_duration,
    us_to_time,
};
use crate::db::{MAX_PARAMS, Row, Stmt, Tx};
use crate::{
    EntryChange, EntryChanges, EntryFilter, Error, Page, PageRequest, Result, SelectorMatch,
};

pub(super) const REVISION_COUNTER: &str = "entry_revision";
const PRUNED_COUNTER: &str = "entry_pruned_through";
const KIND: &str = "entry";

/// The columns [`decode_row`] reads, in order, from `entries e`.
const COLUMNS: &str = "e.id, e.spiffe_id, e.parent_id, e.selectors, e.x509_svid_ttl_us, \
    e.jwt_svid_ttl_us, e.dns_names, e.federates_with, e.admin, e.downstream, e.hint, \
    e.expires_at_us, e.revision";

const INSERT_COLUMNS: &str = "id, spiffe_id, parent_id, selectors, selector_count, \
    selectors_key, identity_key, x509_svid_ttl_us, jwt_svid_ttl_us, dns_names, federates_with, \
    admin, downstream, hint, expires_at_us, revision, created_at_us, updated_at_us";
const INSERT_COLUMN_COUNT: usize = 18;

/// Most selectors a listing filter may name.
const MAX_FILTER_SELECTORS: usize = 256;
/// Up to this many selectors, a subset filter looks up the keys of all subsets (2^n - 1 of them)
/// instead of grouping selector rows.
const SUBSET_KEYS_MAX_SELECTORS: usize = 10;

/// An entry as column values (what [`decode`] turns back into an entry).
#[derive(Debug, Clone)]
struct Columns {
    id: String,
    spiffe_id: String,
    parent_id: String,
    selectors: String,
    x509_svid_ttl_us: i64,
    jwt_svid_ttl_us: i64,
    dns_names: String,
    federates_with: String,
    admin: bool,
    downstream: bool,
    hint: String,
    expires_at_us: Option<i64>,
    revision: i64,
}

/// An entry ready to write: its columns and the keys derived from them.
#[derive(Debug, Clone)]
struct Encoded {
    columns: Columns,
    /// (kind, value) of each selector, for `entry_selectors`.
    selector_rows: Vec<(String, String)>,
    selectors_key: String,
    identity_key: String,
}

// --- writes ---

pub(super) async fn create(
    store: &SqlStore,
    entries: Vec<RegistrationEntry>,
) -> Result<Vec<Result<RegistrationEntry>>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let now = time_to_us("now", store.now())?;
    // Encoding needs no database; an entry that cannot be encoded fails alone.
    let encoded: Vec<Result<Encoded>> = entries.iter().map(encode).collect();

    let mut tx = store.pool.begin_write().await?;
    let base = lock_revision(&mut tx).await?;
    let (taken_ids, taken_keys) = find_taken(&mut tx, &encoded).await?;

    // Decide each item in order; an item clashes with stored entries and earlier items alike.
    let mut batch_ids: HashSet<String> = HashSet::new();
    let mut batch_keys: HashMap<String, String> = HashMap::new();
    let mut revision = base;
    let mut outcomes: Vec<Result<Encoded>> = Vec::with_capacity(encoded.len());
    for item in encoded {
        let mut item = match item {
            Ok(item) => item,
            Err(e) => {
                outcomes.push(Err(e));
                continue;
            }
        };
        let id = &item.columns.id;
        let clash = if taken_ids.contains(id) || batch_ids.contains(id) {
            Some(id.clone())
        } else {
            taken_keys
                .get(&item.identity_key)
                .or_else(|| batch_keys.get(&item.identity_key))
                .cloned()
        };
        if let Some(key) = clash {
            outcomes.push(Err(Error::AlreadyExists { kind: KIND, key }));
            continue;
        }
        batch_ids.insert(id.clone());
        batch_keys.insert(item.identity_key.clone(), id.clone());
        revision += 1;
        item.columns.revision = u64_to_i64("revision", revision)?;
        outcomes.push(Ok(item));
    }
    let to_insert: Vec<&Encoded> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();

    insert_entries(&mut tx, &to_insert, now).await?;
    insert_selectors(&mut tx, &to_insert).await?;
    if revision != base {
        set_revision(&mut tx, revision).await?;
    }
    tx.commit().await?;
    store.entries_written(to_insert.len()).await;

    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.and_then(|stored| decode(stored.columns)))
        .collect())
}

pub(super) async fn update(
    store: &SqlStore,
    entry: RegistrationEntry,
) -> Result<RegistrationEntry> {
    let now = time_to_us("now", store.now())?;
    let mut item = encode(&entry)?;

    let mut tx = store.pool.begin_write().await?;
    let base = lock_revision(&mut tx).await?;
    let exists = tx
        .fetch_optional(
            Stmt::new("SELECT 1 FROM entries WHERE id = $1").bind(item.columns.id.clone()),
        )
        .await?;
    if exists.is_none() {
        return Err(not_found(&item.columns.id));
    }
    let clash = tx
        .fetch_optional(
            Stmt::new("SELECT id FROM entries WHERE identity_key = $1 AND id <> $2")
                .bind(item.identity_key.clone())
                .bind(item.columns.id.clone()),
        )
        .await?;
    if let Some(row) = clash {
        return Err(Error::AlreadyExists {
            kind: KIND,
            key: row.get(0)?,
        });
    }

    let revision = base + 1;
    item.columns.revision = u64_to_i64("revision", revision)?;
    let c = &item.columns;
    tx.execute(
        Stmt::new(
            "UPDATE entries SET spiffe_id = $2, parent_id = $3, selectors = $4, \
             selector_count = $5, selectors_key = $6, identity_key = $7, x509_svid_ttl_us = $8, \
             jwt_svid_ttl_us = $9, dns_names = $10, federates_with = $11, admin = $12, \
             downstream = $13, hint = $14, expires_at_us = $15, revision = $16, \
             updated_at_us = $17 WHERE id = $1",
        )
        .bind(c.id.clone())
        .bind(c.spiffe_id.clone())
        .bind(c.parent_id.clone())
        .bind(c.selectors.clone())
        .bind(selector_count(&item)?)
        .bind(item.selectors_key.clone())
        .bind(item.identity_key.clone())
        .bind(c.x509_svid_ttl_us)
        .bind(c.jwt_svid_ttl_us)
        .bind(c.dns_names.clone())
        .bind(c.federates_with.clone())
        .bind(c.admin)
        .bind(c.downstream)
        .bind(c.hint.clone())
        .bind(c.expires_at_us)
        .bind(c.revision)
        .bind(now),
    )
    .await?;
    tx.execute(Stmt::new("DELETE FROM entry_selectors WHERE entry_id = $1").bind(c.id.clone()))
        .await?;
    insert_selectors(&mut tx, &[&item]).await?;
    set_revision(&mut tx, revision).await?;
    tx.commit().await?;
    decode(item.columns)
}

pub(super) async fn delete(store: &SqlStore, ids: &[EntryId]) -> Result<Vec<Result<()>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.pool.begin_write().await?;
    let base = lock_revision(&mut tx).await?;

    let unique: Vec<&str> = {
        let mut seen = HashSet::new();
        ids.iter()
            .map(EntryId::as_str)
            .filter(|id| seen.insert(*id))
            .collect()
    };
    let mut deleted: HashSet<String> = HashSet::new();
    for chunk in unique.chunks(MAX_PARAMS) {
        let mut stmt = Stmt::new("DELETE FROM entries WHERE id IN (");
        push_list(&mut stmt, chunk.iter().map(|id| (*id).to_owned()));
        stmt.push(") RETURNING id");
        for row in tx.fetch_all(stmt).await? {
            deleted.insert(row.get(0)?);
        }
    }

    // Each deletion gets a revision, in request order; an id named twice is gone the second time.
    let mut revision = base;
    let mut tombstones: Vec<(i64, &str)> = Vec::new();
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        if deleted.remove(id.as_str()) {
            revision += 1;
            tombstones.push((u64_to_i64("revision", revision)?, id.as_str()));
            results.push(Ok(()));
        } else {
            results.push(Err(not_found(id.as_str())));
        }
    }
    for chunk in tombstones.chunks(MAX_PARAMS / 2) {
        let mut stmt = Stmt::new("INSERT INTO entry_tombstones (revision, entry_id) VALUES ");
        for (i, (revision, id)) in chunk.iter().enumerate() {
            stmt.push(if i == 0 { "(" } else { ", (" });
            stmt.push_bind(*revision)
                .push(", ")
                .push_bind(*id)
                .push(")");
        }
        tx.execute(stmt).await?;
    }
    if revision != base {
        set_revision(&mut tx, revision).await?;
    }
    tx.commit().await?;
    store
        .entries_written(results.iter().filter(|r| r.is_ok()).count())
        .await;
    Ok(results)
}

pub(super) async fn prune_tombstones(store: &SqlStore, revision: u64) -> Result<u64> {
    let mut tx = store.pool.begin_write().await?;
    let current = lock_revision(&mut tx).await?;
    let through = u64_to_i64("revision", revision.min(current))?;
    let removed = tx
        .execute(Stmt::new("DELETE FROM entry_tombstones WHERE revision <= $1").bind(through))
        .await?;
    tx.execute(
        Stmt::new("UPDATE counters SET value = $1 WHERE name = $2 AND value < $1")
            .bind(through)
            .bind(PRUNED_COUNTER),
    )
    .await?;
    tx.commit().await?;
    Ok(removed)
}

// --- reads ---

pub(super) async fn get(store: &SqlStore, id: &EntryId) -> Result<Option<RegistrationEntry>> {
    let stmt =
        Stmt::new(format!("SELECT {COLUMNS} FROM entries e WHERE e.id = $1")).bind(id.as_str());
    store
        .pool
        .fetch_optional(stmt)
        .await?
        .map(|row| decode_row(&row))
        .transpose()
}

pub(super) async fn count(store: &SqlStore) -> Result<u64> {
    super::count_rows(store, "entries").await
}

pub(super) async fn list(
    store: &SqlStore,
    filter: &EntryFilter,
    page: &PageRequest,
) -> Result<Page<RegistrationEntry>> {
    let after = super::page_after(page, |token| EntryId::new(token).ok())?;

    let mut stmt = Stmt::new(format!("SELECT {COLUMNS} FROM entries e WHERE 1 = 1"));
    if let Some(id) = &filter.spiffe_id {
        stmt.push(" AND e.spiffe_id = ").push_bind(id.as_str());
    }
    if let Some(id) = &filter.parent_id {
        stmt.push(" AND e.parent_id = ").push_bind(id.as_str());
    }
    if let Some(selectors) = &filter.selectors
        && !push_selector_condition(&mut stmt, &selectors.selectors, selectors.mode)?
    {
        return Ok(Page {
            items: Vec::new(),
            next_token: None,
        });
    }
    if let Some(after) = &after {
        stmt.push(" AND e.id > ").push_bind(after.as_str());
    }
    stmt.push(" ORDER BY e.id");
    if let Some(limit) = page_limit(page) {
        stmt.push(" LIMIT ").push_bind(limit);
    }
    let rows = store.pool.fetch_all(stmt).await?;
    let items = rows.iter().map(decode_row).collect::<Result<Vec<_>>>()?;
    Ok(finish_page(items, page, |e| e.id().as_str().to_owned()))
}

pub(super) async fn changes_since(
    store: &SqlStore,
    revision: u64,
    limit: u32,
) -> Result<EntryChanges> {
    let after = u64_to_i64("revision", revision)?;
    let mut tx = store.pool.begin_read().await?;

    let mut current = None;
    let mut pruned = None;
    let counters = tx
        .fetch_all(
            Stmt::new("SELECT name, value FROM counters WHERE name IN ($1, $2)")
                .bind(REVISION_COUNTER)
                .bind(PRUNED_COUNTER),
        )
        .await?;
    for row in counters {
        let name: String = row.get(0)?;
        if name == REVISION_COUNTER {
            current = Some(counter_value(REVISION_COUNTER, row.get(1)?)?);
        } else {
            pruned = Some(counter_value(PRUNED_COUNTER, row.get(1)?)?);
        }
    }
    let current = current.ok_or_else(|| missing_counter(REVISION_COUNTER))?;
    let pruned = pruned.ok_or_else(|| missing_counter(PRUNED_COUNTER))?;
    if revision < pruned || revision > current {
        return Err(Error::ChangesUnavailable {
            requested: revision,
            oldest: pruned,
            current,
        });
    }

    let limit_clause = if limit > 0 { " LIMIT $2" } else { "" };
    let mut puts = Stmt::new(format!(
        "SELECT {COLUMNS} FROM entries e WHERE e.revision > $1 ORDER BY e.revision{limit_clause}"
    ))
    .bind(after);
    let mut deletes = Stmt::new(format!(
        "SELECT revision, entry_id FROM entry_tombstones WHERE revision > $1 \
         ORDER BY revision{limit_clause}"
    ))
    .bind(after);
    if limit > 0 {
        puts = puts.bind(i64::from(limit));
        deletes = deletes.bind(i64::from(limit));
    }
    let puts = tx.fetch_all(puts).await?;
    let deletes = tx.fetch_all(deletes).await?;
    tx.commit().await?;

    let mut changes = puts
        .iter()
        .map(|row| decode_row(row).map(EntryChange::Put))
        .collect::<Result<Vec<_>>>()?;
    for row in deletes {
        let revision: i64 = row.get(0)?;
        let id: String = row.get(1)?;
        let id = EntryId::new(&id).map_err(|e| invalid(&id, &e))?;
        let revision =
            u64::try_from(revision).map_err(|_| invalid(id.as_str(), "negative revision"))?;
        changes.push(EntryChange::Delete { id, revision });
    }
    changes.sort_by_key(EntryChange::revision);
    if limit > 0 {
        changes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(EntryChanges {
        changes,
        current_revision: current,
    })
}

// --- helpers ---

/// Locks the revision counter for the rest of the transaction and returns its value. The no-op
/// UPDATE is the portable way to take the row lock (SQLite has no `SELECT … FOR UPDATE`; there the
/// transaction already holds the write lock).
async fn lock_revision(tx: &mut Tx) -> Result<u64> {
    let row = tx
        .fetch_optional(
            Stmt::new("UPDATE counters SET value = value WHERE name = $1 RETURNING value")
                .bind(REVISION_COUNTER),
        )
        .await?;
    match row {
        Some(row) => counter_value(REVISION_COUNTER, row.get(0)?),
        None => Err(missing_counter(REVISION_COUNTER)),
    }
}

async fn set_revision(tx: &mut Tx, revision: u64) -> Result<()> {
    tx.execute(
        Stmt::new("UPDATE counters SET value = $1 WHERE name = $2")
            .bind(u64_to_i64("revision", revision)?)
            .bind(REVISION_COUNTER),
    )
    .await?;
    Ok(())
}

/// The ids and identity keys among `items` that stored entries already have; the keys map to the
/// id of the entry that has them. Two queries rather than one with `OR`, so that each is a plain
/// index lookup on both backends.
async fn find_taken(
    tx: &mut Tx,
    items: &[Result<Encoded>],
) -> Result<(HashSet<String>, HashMap<String, String>)> {
    let items: Vec<&Encoded> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
    let mut ids = HashSet::new();
    let mut keys = HashMap::new();
    for chunk in items.chunks(MAX_PARAMS) {
        let mut stmt = Stmt::new("SELECT id FROM entries WHERE id IN (");
        push_list(&mut stmt, chunk.iter().map(|i| i.columns.id.clone()));
        stmt.push(")");
        for row in tx.fetch_all(stmt).await? {
            ids.insert(row.get(0)?);
        }
        let mut stmt = Stmt::new("SELECT id, identity_key FROM entries WHERE identity_key IN (");
        push_list(&mut stmt, chunk.iter().map(|i| i.identity_key.clone()));
        stmt.push(")");
        for row in tx.fetch_all(stmt).await? {
            keys.insert(row.get(1)?, row.get(0)?);
        }
    }
    Ok((ids, keys))
}

async fn insert_entries(tx: &mut Tx, items: &[&Encoded], now: i64) -> Result<()> {
    for items in items.chunks(MAX_PARAMS / INSERT_COLUMN_COUNT) {
        let mut stmt = Stmt::new(format!("INSERT INTO entries ({INSERT_COLUMNS}) VALUES "));
        for (i, item) in items.iter().enumerate() {
            let c = &item.columns;
            stmt.push(if i == 0 { "(" } else { ", (" });
            stmt.push_bind(c.id.clone()).push(", ");
            stmt.push_bind(c.spiffe_id.clone()).push(", ");
            stmt.push_bind(c.parent_id.clone()).push(", ");
            stmt.push_bind(c.selectors.clone()).push(", ");
            stmt.push_bind(selector_count(item)?).push(", ");
            stmt.push_bind(item.selectors_key.clone()).push(", ");
            stmt.push_bind(item.identity_key.clone()).push(", ");
            stmt.push_bind(c.x509_svid_ttl_us).push(", ");
            stmt.push_bind(c.jwt_svid_ttl_us).push(", ");
            stmt.push_bind(c.dns_names.clone()).push(", ");
            stmt.push_bind(c.federates_with.clone()).push(", ");
            stmt.push_bind(c.admin).push(", ");
            stmt.push_bind(c.downstream).push(", ");
            stmt.push_bind(c.hint.clone()).push(", ");
            stmt.push_bind(c.expires_at_us).push(", ");
            stmt.push_bind(c.revision).push(", ");
            stmt.push_bind(now).push(", ");
            stmt.push_bind(now).push(")");
        }
        debug_assert_eq!(stmt.arg_count(), items.len() * INSERT_COLUMN_COUNT);
        tx.execute(stmt).await?;
    }
    Ok(())
}

async fn insert_selectors(tx: &mut Tx, items: &[&Encoded]) -> Result<()> {
    let rows: Vec<(&str, &str, &str)> = items
        .iter()
        .flat_map(|item| {
            item.selector_rows
                .iter()
                .map(|(kind, value)| (item.columns.id.as_str(), kind.as_str(), value.as_str()))
        })
        .collect();
    for chunk in rows.chunks(MAX_PARAMS / 3) {
        let mut stmt = Stmt::new("INSERT INTO entry_selectors (entry_id, kind, value) VALUES ");
        for (i, (id, kind, value)) in chunk.iter().enumerate() {
            stmt.push(if i == 0 { "(" } else { ", (" });
            stmt.push_bind(*id).push(", ").push_bind(*kind).push(", ");
            stmt.push_bind(*value).push(")");
        }
        tx.execute(stmt).await?;
    }
    Ok(())
}

/// Appends the selector condition of a listing. Returns false when no entry can match (so the
/// query need not run).
fn push_selector_condition(
    stmt: &mut Stmt,
    selectors: &SelectorSet,
    mode: SelectorMatch,
) -> Result<bool> {
    if selectors.len() > MAX_FILTER_SELECTORS {
        return Err(Error::InvalidArgument {
            field: "selectors",
            reason: format!(
                "a filter may name at most {MAX_FILTER_SELECTORS} selectors, got {}",
                selectors.len()
            ),
        });
    }
    if selectors.is_empty() {
        // Every entry has at least one selector: each is a superset of nothing, and matches
        // nothing in the other modes.
        return Ok(mode == SelectorMatch::Superset);
    }
    let n = i64::try_from(selectors.len()).unwrap_or(i64::MAX);
    match mode {
        SelectorMatch::Exact => {
            let key = sha256_hex(canonical_selectors(selectors).as_bytes());
            stmt.push(" AND e.selectors_key = ").push_bind(key);
        }
        SelectorMatch::Superset => {
            stmt.push(" AND e.id IN (SELECT s.entry_id FROM entry_selectors s WHERE ");
            push_selector_match(stmt, selectors);
            stmt.push(" GROUP BY s.entry_id HAVING COUNT(*) = ")
                .push_bind(n);
            stmt.push(")");
        }
        SelectorMatch::Subset if selectors.len() <= SUBSET_KEYS_MAX_SELECTORS => {
            // An entry whose selectors are a subset of the given ones has the selectors_key of
            // one of the 2^n - 1 non-empty subsets: a handful of index lookups, however many
            // entries share a common selector.
            stmt.push(" AND e.selectors_key IN (");
            for (i, key) in subset_keys(selectors).into_iter().enumerate() {
                if i > 0 {
                    stmt.push(", ");
                }
                stmt.push_bind(key);
            }
            stmt.push(")");
        }
        SelectorMatch::Subset => {
            // Candidates come from the selector index; an entry qualifies when all of its
            // selectors were among the matches.
            stmt.push(" AND e.selector_count <= ").push_bind(n);
            stmt.push(
                " AND e.id IN (SELECT s.entry_id FROM entry_selectors s \
                 JOIN entries x ON x.id = s.entry_id WHERE ",
            );
            push_selector_match(stmt, selectors);
            stmt.push(" GROUP BY s.entry_id, x.selector_count HAVING COUNT(*) = x.selector_count)");
        }
        SelectorMatch::Any => {
            stmt.push(" AND e.id IN (SELECT s.entry_id FROM entry_selectors s WHERE ");
            push_selector_match(stmt, selectors);
            stmt.push(")");
        }
    }
    Ok(true)
}

/// The selectors_key of every non-empty subset of `selectors`.
fn subset_keys(selectors: &SelectorSet) -> Vec<String> {
    // Iteration is in sorted order, so joining any selection in order gives its canonical text.
    let parts: Vec<String> = selectors.iter().map(ToString::to_string).collect();
    (1u32..(1 << parts.len()))
        .map(|mask| {
            let chosen: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, part)| part.as_str())
                .collect();
            sha256_hex(chosen.join("\n").as_bytes())
        })
        .collect()
}

/// `((s.kind = $a AND s.value = $b) OR …)`: the row of `entry_selectors s` is one of `selectors`.
fn push_selector_match(stmt: &mut Stmt, selectors: &SelectorSet) {
    stmt.push("(");
    for (i, selector) in selectors.iter().enumerate() {
        stmt.push(if i == 0 {
            "(s.kind = "
        } else {
            " OR (s.kind = "
        });
        stmt.push_bind(selector.kind()).push(" AND s.value = ");
        stmt.push_bind(selector.value()).push(")");
    }
    stmt.push(")");
}

fn selector_count(item: &Encoded) -> Result<i64> {
    i64::try_from(item.selector_rows.len()).map_err(|_| Error::InvalidArgument {
        field: "selectors",
        reason: "too many selectors".to_owned(),
    })
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        kind: KIND,
        key: id.to_owned(),
    }
}

fn invalid(id: &str, reason: impl ToString) -> Error {
    Error::InvalidData {
        kind: KIND,
        key: id.to_owned(),
        reason: reason.to_string(),
    }
}

// --- encoding ---

fn encode(entry: &RegistrationEntry) -> Result<Encoded> {
    let json = |field: &'static str, value: serde_json::Result<String>| {
        value.map_err(|e| Error::InvalidArgument {
            field,
            reason: e.to_string(),
        })
    };
    let canonical = canonical_selectors(entry.selectors());
    let identity = format!(
        "{}\n{}\n{}",
        entry.spiffe_id(),
        entry.parent_id(),
        canonical
    );
    Ok(Encoded {
        columns: Columns {
            id: entry.id().as_str().to_owned(),
            spiffe_id: entry.spiffe_id().as_str().to_owned(),
            parent_id: entry.parent_id().as_str().to_owned(),
            selectors: json("selectors", serde_json::to_string(entry.selectors()))?,
            x509_svid_ttl_us: duration_to_us("x509_svid_ttl", entry.x509_svid_ttl())?,
            jwt_svid_ttl_us: duration_to_us("jwt_svid_ttl", entry.jwt_svid_ttl())?,
            dns_names: json("dns_names", serde_json::to_string(entry.dns_names()))?,
            federates_with: json(
                "federates_with",
                serde_json::to_string(entry.federates_with()),
            )?,
            admin: entry.admin(),
            downstream: entry.downstream(),
            hint: entry.hint().to_owned(),
            expires_at_us: entry
                .expires_at()
                .map(|t| time_to_us("expires_at", t))
                .transpose()?,
            revision: 0,
        },
        selector_rows: entry
            .selectors()
            .iter()
            .map(|s| (s.kind().to_owned(), s.value().to_owned()))
            .collect(),
        selectors_key: sha256_hex(canonical.as_bytes()),
        identity_key: sha256_hex(identity.as_bytes()),
    })
}

fn decode_row(row: &Row) -> Result<RegistrationEntry> {
    decode(Columns {
        id: row.get(0)?,
        spiffe_id: row.get(1)?,
        parent_id: row.get(2)?,
        selectors: row.get(3)?,
        x509_svid_ttl_us: row.get(4)?,
        jwt_svid_ttl_us: row.get(5)?,
        dns_names: row.get(6)?,
        federates_with: row.get(7)?,
        admin: row.get(8)?,
        downstream: row.get(9)?,
        hint: row.get(10)?,
        expires_at_us: row.get(11)?,
        revision: row.get(12)?,
    })
}

/// Parses stored columns with lanyard-core's rules; anything that fails is `InvalidData`.
fn decode(c: Columns) -> Result<RegistrationEntry> {
    let bad = |reason: &dyn std::fmt::Display| invalid(&c.id, format!("{reason}"));
    let ttl = |field: &str, us: i64| {
        us_to_duration(us).ok_or_else(|| bad(&format!("{field}: negative duration")))
    };
    let spec = EntrySpec {
        id: EntryId::new(&c.id).map_err(|e| bad(&e))?,
        spiffe_id: SpiffeId::parse(&c.spiffe_id).map_err(|e| bad(&format!("spiffe_id: {e}")))?,
        parent_id: SpiffeId::parse(&c.parent_id).map_err(|e| bad(&format!("parent_id: {e}")))?,
        selectors: serde_json::from_str::<SelectorSet>(&c.selectors)
            .map_err(|e| bad(&format!("selectors: {e}")))?,
        x509_svid_ttl: ttl("x509_svid_ttl", c.x509_svid_ttl_us)?,
        jwt_svid_ttl: ttl("jwt_svid_ttl", c.jwt_svid_ttl_us)?,
        dns_names: serde_json::from_str::<Vec<DnsName>>(&c.dns_names)
            .map_err(|e| bad(&format!("dns_names: {e}")))?,
        federates_with: serde_json::from_str::<Vec<TrustDomain>>(&c.federates_with)
            .map_err(|e| bad(&format!("federates_with: {e}")))?,
        admin: c.admin,
        downstream: c.downstream,
        hint: c.hint.clone(),
        expires_at: c
            .expires_at_us
            .map(|us| us_to_time(us).ok_or_else(|| bad(&"expires_at: out of range")))
            .transpose()?,
        revision: u64::try_from(c.revision).map_err(|_| bad(&"negative revision"))?,
    };
    RegistrationEntry::new(spec).map_err(|e| bad(&e))
}

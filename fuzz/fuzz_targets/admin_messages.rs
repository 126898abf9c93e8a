//! The admin API's request messages (`lanyard.admin.v1`, crates/proto), decoded with prost and then
//! parsed into lanyard-core types.
//!
//! The server's own conversion (crates/server/src/convert.rs) is crate-private, and reaching it
//! would pull lanyard-server's whole tree (store, sqlx, SQLite, PostgreSQL, TLS) into the fuzz
//! build. `entry_from_proto` below mirrors it instead: the same lanyard-core parsers in the same
//! composition (`SpiffeId`, `Selector`, `DnsName`, `TrustDomain`, `EntryId`, TTLs with 0 as the
//! default, `RegistrationEntry::new_in`). If convert.rs changes, change the mirror with it.
//!
//! The first input byte picks the message; the rest is its protobuf encoding.
//!
//! Properties:
//! - nothing panics;
//! - every decoded message re-encodes to `encoded_len` bytes that decode to an equal message;
//! - an entry that parses, written back as the server writes it (`entry_to_proto`), parses to an
//!   equal entry;
//! - every string the server parses (IDs, selectors, DNS names, trust domains, entry ids) prints
//!   back as a string that re-parses to an equal value;
//! - a federated bundle that parses survives `to_json`;
//! - SVIDs minted for a request verify, and name exactly what was asked for.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use lanyard_ca::{JwtSvidRequest, X509SvidRequest};
use lanyard_core::entry::{DEFAULT_JWT_SVID_TTL, DEFAULT_X509_SVID_TTL};
use lanyard_core::{
    Bundle, DnsName, EntryId, EntrySpec, RegistrationEntry, Selector, SelectorSet, SpiffeId,
    TrustDomain,
};
use lanyard_proto::admin as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 11 {
        0 => {
            if let Some(request) = decode::<pb::BatchCreateEntriesRequest>(bytes) {
                let id = EntryId::new("fuzz").expect("an entry id");
                for entry in &request.entries {
                    check_entry(entry, id.clone());
                }
            }
        }
        1 => {
            if let Some(request) = decode::<pb::UpdateEntryRequest>(bytes)
                && let Some(entry) = &request.entry
                && let Some(id) = parse_nonempty::<EntryId>(&entry.id)
            {
                check_entry(entry, id);
            }
        }
        2 => {
            if let Some(request) = decode::<pb::GetEntryRequest>(bytes) {
                parse_nonempty::<EntryId>(&request.id);
            }
        }
        3 => {
            if let Some(request) = decode::<pb::ListEntriesRequest>(bytes) {
                parse_nonempty::<SpiffeId>(&request.by_spiffe_id);
                parse_nonempty::<SpiffeId>(&request.by_parent_id);
                parse_selectors(&request.by_selectors);
                let _ = pb::SelectorMatch::try_from(request.selector_match);
            }
        }
        4 => {
            if let Some(request) = decode::<pb::BatchDeleteEntriesRequest>(bytes) {
                for id in &request.ids {
                    parse_nonempty::<EntryId>(id);
                }
            }
        }
        5 => {
            if let Some(request) = decode::<pb::GenerateJoinTokenRequest>(bytes) {
                parse_ttl(request.ttl_seconds, Duration::from_secs(600));
                parse_nonempty::<SpiffeId>(&request.spiffe_id);
            }
        }
        6 => {
            // GetAgent, EvictAgent and BanAgent carry the same single field.
            if let Some(request) = decode::<pb::GetAgentRequest>(bytes) {
                parse_nonempty::<SpiffeId>(&request.spiffe_id);
            }
        }
        7 => {
            if let Some(request) = decode::<pb::SetFederatedBundleRequest>(bytes)
                && let Some(td) = parse_nonempty::<TrustDomain>(&request.trust_domain)
                && let Ok(bundle) = Bundle::parse_json(td.clone(), request.spiffe_json.as_bytes())
            {
                let back = Bundle::parse_json(td, bundle.to_json().as_bytes())
                    .expect("a written bundle parses");
                assert_eq!(back, bundle);
            }
        }
        8 => {
            if let Some(request) = decode::<pb::DeleteFederatedBundleRequest>(bytes) {
                parse_nonempty::<TrustDomain>(&request.trust_domain);
            }
        }
        9 => {
            if let Some(request) = decode::<pb::MintX509SvidRequest>(bytes)
                && let Some(spiffe_id) = parse_nonempty::<SpiffeId>(&request.spiffe_id)
                && let Some(ttl) = parse_ttl(request.ttl_seconds, DEFAULT_X509_SVID_TTL)
                && let Some(dns_names) = parse_all::<DnsName>(&request.dns_names)
            {
                let mut req = X509SvidRequest::new(spiffe_id).with_ttl(ttl);
                req.dns_names = dns_names;
                lanyard_fuzz::mint_and_check_x509(&req);
            }
        }
        _ => {
            if let Some(request) = decode::<pb::MintJwtSvidRequest>(bytes)
                && let Some(spiffe_id) = parse_nonempty::<SpiffeId>(&request.spiffe_id)
                && let Some(ttl) = parse_ttl(request.ttl_seconds, DEFAULT_JWT_SVID_TTL)
            {
                let req = JwtSvidRequest::new(spiffe_id, request.audience).with_ttl(ttl);
                lanyard_fuzz::mint_and_check_jwt(&req);
            }
        }
    }
});

fn decode<M: Message + Default + PartialEq>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    lanyard_fuzz::check_protobuf_round_trip(&message);
    Some(message)
}

/// Parses a value the way the server does (empty means "not given"), checking that it prints
/// back as a string that parses to an equal value.
fn parse_nonempty<T>(value: &str) -> Option<T>
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    if value.is_empty() {
        return None;
    }
    let parsed: T = value.parse().ok()?;
    let printed = parsed.to_string();
    assert_eq!(
        printed.parse::<T>().ok().as_ref(),
        Some(&parsed),
        "{value:?}"
    );
    Some(parsed)
}

fn parse_all<T>(values: &[String]) -> Option<Vec<T>>
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    values.iter().map(|v| parse_nonempty(v)).collect()
}

fn parse_selectors(values: &[String]) -> Option<SelectorSet> {
    Some(parse_all::<Selector>(values)?.into_iter().collect())
}

/// convert.rs `parse_ttl`: 0 means the default, negative is refused.
fn parse_ttl(seconds: i64, default: Duration) -> Option<Duration> {
    match u64::try_from(seconds).ok()? {
        0 => Some(default),
        s => Some(Duration::from_secs(s)),
    }
}

/// convert.rs `entry_from_proto`, through the same lanyard-core parsers (see the module docs).
fn entry_from_proto(entry: &pb::Entry, id: EntryId) -> Option<RegistrationEntry> {
    let expires_at = match entry.expires_at {
        0 => None,
        secs => Some(
            u64::try_from(secs)
                .ok()
                .filter(|s| *s > 0)
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))?,
        ),
    };
    let spec = EntrySpec {
        id,
        spiffe_id: parse_nonempty(&entry.spiffe_id)?,
        parent_id: parse_nonempty(&entry.parent_id)?,
        selectors: parse_selectors(&entry.selectors)?,
        x509_svid_ttl: parse_ttl(entry.x509_svid_ttl_seconds, DEFAULT_X509_SVID_TTL)?,
        jwt_svid_ttl: parse_ttl(entry.jwt_svid_ttl_seconds, DEFAULT_JWT_SVID_TTL)?,
        dns_names: parse_all(&entry.dns_names)?,
        federates_with: parse_all(&entry.federates_with)?,
        admin: entry.admin,
        downstream: entry.downstream,
        hint: entry.hint.clone(),
        expires_at,
        revision: 0,
    };
    RegistrationEntry::new_in(spec, &lanyard_fuzz::trust_domain()).ok()
}

/// convert.rs `entry_to_proto`.
fn entry_to_proto(entry: &RegistrationEntry) -> pb::Entry {
    let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    pb::Entry {
        id: entry.id().to_string(),
        spiffe_id: entry.spiffe_id().to_string(),
        parent_id: entry.parent_id().to_string(),
        selectors: entry.selectors().iter().map(ToString::to_string).collect(),
        x509_svid_ttl_seconds: seconds(entry.x509_svid_ttl()),
        jwt_svid_ttl_seconds: seconds(entry.jwt_svid_ttl()),
        dns_names: entry.dns_names().iter().map(ToString::to_string).collect(),
        federates_with: entry
            .federates_with()
            .iter()
            .map(ToString::to_string)
            .collect(),
        admin: entry.admin(),
        downstream: entry.downstream(),
        hint: entry.hint().to_owned(),
        expires_at: entry.expires_at().map_or(0, |at| {
            at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        }),
        revision: entry.revision(),
    }
}

fn check_entry(entry: &pb::Entry, id: EntryId) {
    let Some(parsed) = entry_from_proto(entry, id.clone()) else {
        return;
    };
    let written = entry_to_proto(&parsed);
    let back = entry_from_proto(&written, id)
        .unwrap_or_else(|| panic!("an entry written back does not parse: {written:?}"));
    assert_eq!(back, parsed);
    lanyard_fuzz::check_protobuf_round_trip(&written);
}

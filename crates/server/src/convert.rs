//! Admin API messages ↔ lanyard-core types. Every string from a request is parsed here, and a bad
//! one is refused with `InvalidArgument` naming the field: validation happens at the door.

use std::time::Duration;

use lanyard_core::{
    DnsName, EntryId, EntrySpec, RegistrationEntry, Selector, SelectorSet, SpiffeId, TrustDomain,
};
use lanyard_proto::admin as pb;
use lanyard_store::AttestedAgent;
use tonic::Status;

use crate::{CaSettings, from_unix_seconds, unix_seconds};

/// Refuses a request: `field` is what the user typed it as.
pub(crate) fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

pub(crate) fn parse_id(field: &str, value: &str) -> Result<SpiffeId, Status> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    value.parse().map_err(|e| invalid(field, e))
}

/// A SPIFFE ID an admin request may issue an SVID for: any but those lanyard keeps for its own
/// server and agents ([`SpiffeId::is_reserved_for_lanyard`]), by which they trust each other.
pub(crate) fn parse_issuable_id(field: &str, value: &str) -> Result<SpiffeId, Status> {
    let id = parse_id(field, value)?;
    if id.is_reserved_for_lanyard() {
        return Err(reserved(field, &id));
    }
    Ok(id)
}

/// Refuses `id` in `field` because it is reserved for lanyard.
pub(crate) fn reserved(field: &str, id: &SpiffeId) -> Status {
    invalid(
        field,
        format!(
            "`{id}` is reserved for lanyard's own server and agents (spiffe://<td>/lanyard/…); choose an ID outside /lanyard"
        ),
    )
}

pub(crate) fn parse_trust_domain(field: &str, value: &str) -> Result<TrustDomain, Status> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    value.parse().map_err(|e| invalid(field, e))
}

pub(crate) fn parse_selectors(field: &str, values: &[String]) -> Result<SelectorSet, Status> {
    values
        .iter()
        .map(|s| {
            s.parse::<Selector>()
                .map_err(|e| invalid(field, format!("`{s}`: {e}")))
        })
        .collect()
}

/// The request `lanyard policy test` puts to the loaded policies. The context is a JSON object
/// with any of `ttl_seconds`, `purpose`, `on_behalf_of`, `on_behalf_of_verified`,
/// `on_behalf_of_issuer`, `delegation_depth`, `root_principal`, `parent_workload` (others
/// refused).
pub(crate) fn grant_request(
    request: &lanyard_proto::admin::TestPolicyRequest,
    now: std::time::SystemTime,
) -> Result<lanyard_policy::GrantRequest, Status> {
    const MAX_CONTEXT_BYTES: usize = 16 * 1024;
    let principal = parse_id("principal", &request.principal)?;
    let selectors = parse_selectors("selectors", &request.selectors)?;
    let mut grant = lanyard_policy::GrantRequest {
        principal,
        selectors,
        audience: request.resource.clone(),
        operations: request.operations.clone(),
        ttl_seconds: 300,
        purpose: String::new(),
        on_behalf_of: String::new(),
        on_behalf_of_verified: false,
        on_behalf_of_issuer: String::new(),
        delegation_depth: 0,
        root_principal: String::new(),
        parent_workload: String::new(),
        now,
    };
    if request.context_json.is_empty() {
        return Ok(grant);
    }
    if request.context_json.len() > MAX_CONTEXT_BYTES {
        return Err(invalid(
            "context",
            format!("at most {MAX_CONTEXT_BYTES} bytes"),
        ));
    }
    let context: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&request.context_json)
            .map_err(|e| invalid("context", format!("not a JSON object: {e}")))?;
    for (key, value) in context {
        let bad = |expected: &str| invalid("context", format!("`{key}` must be {expected}"));
        match key.as_str() {
            "ttl_seconds" => {
                grant.ttl_seconds = value
                    .as_u64()
                    .ok_or_else(|| bad("a non-negative integer"))?
            }
            "delegation_depth" => {
                grant.delegation_depth = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("a small non-negative integer"))?;
            }
            "purpose" => grant.purpose = value.as_str().ok_or_else(|| bad("a string"))?.to_owned(),
            "on_behalf_of" => {
                grant.on_behalf_of = value.as_str().ok_or_else(|| bad("a string"))?.to_owned();
            }
            "on_behalf_of_verified" => {
                grant.on_behalf_of_verified = value.as_bool().ok_or_else(|| bad("a boolean"))?;
            }
            "on_behalf_of_issuer" => {
                grant.on_behalf_of_issuer =
                    value.as_str().ok_or_else(|| bad("a string"))?.to_owned();
            }
            "root_principal" => {
                grant.root_principal = value.as_str().ok_or_else(|| bad("a string"))?.to_owned();
            }
            "parent_workload" => {
                grant.parent_workload = value.as_str().ok_or_else(|| bad("a string"))?.to_owned();
            }
            other => {
                return Err(invalid(
                    "context",
                    format!(
                        "unknown key `{other}` (known: ttl_seconds, purpose, on_behalf_of, on_behalf_of_verified, on_behalf_of_issuer, delegation_depth, root_principal, parent_workload; time is now)"
                    ),
                ));
            }
        }
    }
    Ok(grant)
}

pub(crate) fn parse_dns_names(field: &str, values: &[String]) -> Result<Vec<DnsName>, Status> {
    values
        .iter()
        .map(|s| s.parse().map_err(|e| invalid(field, e)))
        .collect()
}

pub(crate) fn parse_entry_id(value: &str) -> Result<EntryId, Status> {
    if value.is_empty() {
        return Err(invalid("id", "is required"));
    }
    value.parse().map_err(|e| invalid("id", e))
}

/// A TTL in seconds: 0 means `default`; negative is refused.
pub(crate) fn parse_ttl(field: &str, seconds: i64, default: Duration) -> Result<Duration, Status> {
    match u64::try_from(seconds) {
        Ok(0) => Ok(default),
        Ok(s) => Ok(Duration::from_secs(s)),
        Err(_) => Err(invalid(
            field,
            format!("{seconds} is negative; give a duration such as 1h"),
        )),
    }
}

/// A new entry id: 128 bits as 32 lowercase hex digits, time-ordered like a UUIDv7: the first 48
/// bits are the Unix time in milliseconds, the other 80 random, and each id of this process is
/// above the one before. Ids made one after the other sort together, so inserts append to the
/// entries table's primary key instead of landing on random pages of it: with random ids the
/// insert rate fell 3× between the first and the last 10,000 of 100,000 entries
/// (docs/benchmarks.md). 80 random bits keep ids unguessable enough for an identifier that is
/// not a secret, and unique across servers. The wall clock only orders ids: nothing reads a time
/// back from them.
pub(crate) fn new_entry_id() -> Result<EntryId, Status> {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let mut random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut random[6..]).map_err(|_| Status::internal("no randomness"))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let candidate = (millis & ((1 << 48) - 1)) << 80 | u128::from_be_bytes(random);
    let id = {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        // The clock may step back, or two ids fall in one millisecond: count up from the last.
        *last = candidate.max(last.wrapping_add(1));
        *last
    };
    EntryId::new(&format!("{id:032x}")).map_err(|e| Status::internal(e.to_string()))
}

/// Parses an entry from a request; `id` is the id to give it.
pub(crate) fn entry_from_proto(
    entry: &pb::Entry,
    id: EntryId,
    trust_domain: &TrustDomain,
    defaults: &CaSettings,
) -> Result<RegistrationEntry, Status> {
    let expires_at = match entry.expires_at {
        0 => None,
        secs => Some(
            from_unix_seconds(secs)
                .ok_or_else(|| invalid("expires_at", "must be a positive Unix time"))?,
        ),
    };
    let spec = EntrySpec {
        id,
        spiffe_id: parse_id("spiffe_id", &entry.spiffe_id)?,
        parent_id: parse_id("parent_id", &entry.parent_id)?,
        selectors: parse_selectors("selectors", &entry.selectors)?,
        x509_svid_ttl: parse_ttl(
            "x509_svid_ttl",
            entry.x509_svid_ttl_seconds,
            defaults.default_x509_svid_ttl,
        )?,
        jwt_svid_ttl: parse_ttl(
            "jwt_svid_ttl",
            entry.jwt_svid_ttl_seconds,
            defaults.default_jwt_svid_ttl,
        )?,
        dns_names: parse_dns_names("dns_names", &entry.dns_names)?,
        federates_with: entry
            .federates_with
            .iter()
            .map(|td| parse_trust_domain("federates_with", td))
            .collect::<Result<_, _>>()?,
        admin: entry.admin,
        downstream: entry.downstream,
        hint: entry.hint.clone(),
        expires_at,
        revision: 0,
    };
    RegistrationEntry::new_in(spec, trust_domain)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

pub(crate) fn entry_to_proto(entry: &RegistrationEntry) -> pb::Entry {
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
        expires_at: entry.expires_at().map_or(0, unix_seconds),
        revision: entry.revision(),
    }
}

pub(crate) fn agent_to_proto(agent: &AttestedAgent) -> pb::Agent {
    pb::Agent {
        spiffe_id: agent.spiffe_id.to_string(),
        attestation_type: agent.attestation_type.clone(),
        serial_number: agent.serial.clone(),
        expires_at: unix_seconds(agent.expires_at),
        banned: agent.banned,
        selectors: agent.selectors.iter().map(ToString::to_string).collect(),
        created_at: unix_seconds(agent.created_at),
        updated_at: unix_seconds(agent.updated_at),
    }
}

pub(crate) fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    fn request() -> pb::Entry {
        pb::Entry {
            spiffe_id: "spiffe://example.org/web".into(),
            parent_id: "spiffe://example.org/agent".into(),
            selectors: vec!["unix:uid:1000".into()],
            ..Default::default()
        }
    }

    fn parse(entry: &pb::Entry) -> Result<RegistrationEntry, Status> {
        entry_from_proto(
            entry,
            EntryId::new("e1").unwrap(),
            &td(),
            &CaSettings::default(),
        )
    }

    #[test]
    fn defaults_fill_zero_ttls_and_round_trip() {
        let entry = parse(&request()).unwrap();
        assert_eq!(entry.x509_svid_ttl(), Duration::from_secs(3600));
        assert_eq!(entry.jwt_svid_ttl(), Duration::from_secs(300));
        let back = entry_to_proto(&entry);
        assert_eq!(back.spiffe_id, "spiffe://example.org/web");
        assert_eq!(back.x509_svid_ttl_seconds, 3600);
        assert_eq!(back.expires_at, 0);
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut pb::Entry)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|e| e.spiffe_id = "http://x".into()), "spiffe_id"),
            (Box::new(|e| e.spiffe_id = String::new()), "spiffe_id"),
            (
                Box::new(|e| e.parent_id = "spiffe://Bad/a".into()),
                "parent_id",
            ),
            (
                Box::new(|e| e.selectors = vec!["nocolon".into()]),
                "selectors",
            ),
            (Box::new(|e| e.selectors = vec![]), "selectors"),
            (Box::new(|e| e.x509_svid_ttl_seconds = -5), "x509_svid_ttl"),
            (
                Box::new(|e| e.jwt_svid_ttl_seconds = i64::MAX),
                "jwt_svid_ttl",
            ),
            (
                Box::new(|e| e.dns_names = vec!["-bad-".into()]),
                "dns_names",
            ),
            (
                Box::new(|e| e.federates_with = vec!["UPPER".into()]),
                "federates_with",
            ),
            (Box::new(|e| e.expires_at = -1), "expires_at"),
            (
                Box::new(|e| e.spiffe_id = "spiffe://other.org/web".into()),
                "spiffe_id",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org".into()),
                "spiffe_id",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org/lanyard/server".into()),
                "spiffe_id",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org/lanyard/agent/x".into()),
                "spiffe_id",
            ),
            (
                Box::new(|e| e.spiffe_id = "spiffe://example.org/lanyard".into()),
                "spiffe_id",
            ),
        ];
        for (mutate, field) in cases {
            let mut entry = request();
            mutate(&mut entry);
            let status = parse(&entry).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
            assert!(
                status.message().starts_with(field),
                "{field}: {}",
                status.message()
            );
        }
    }

    #[test]
    fn lanyard_ids_are_parents_not_spiffe_ids() {
        for parent in [
            "spiffe://example.org/lanyard/server",
            "spiffe://example.org/lanyard/agent/join_token/0123456789abcdef",
        ] {
            let mut entry = request();
            entry.parent_id = parent.into();
            assert!(parse(&entry).is_ok(), "{parent}");
        }
        for id in [
            "spiffe://example.org/lanyard/server",
            "spiffe://example.org/lanyard/agent/x",
            "spiffe://example.org/lanyard",
        ] {
            let status = parse_issuable_id("spiffe_id", id).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{id}");
            assert!(
                status.message().starts_with("spiffe_id: ")
                    && status.message().contains("reserved")
                    && status.message().contains(id),
                "{id}: {}",
                status.message()
            );
        }
        assert_eq!(
            parse_issuable_id("spiffe_id", "spiffe://example.org/lanyardx")
                .unwrap()
                .as_str(),
            "spiffe://example.org/lanyardx"
        );
    }

    #[test]
    fn entry_ids_are_valid_and_time_ordered() {
        let ids: Vec<EntryId> = (0..1000).map(|_| new_entry_id().unwrap()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{:?} then {:?}", pair[0], pair[1]);
        }
        for id in &ids {
            assert_eq!(id.as_str().len(), 32);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
        // The high 48 bits are the time in milliseconds: this decade's, not random.
        let millis = u64::from_str_radix(&ids[0].as_str()[..12], 16).unwrap();
        assert!((1_700_000_000_000..4_000_000_000_000).contains(&millis));
    }
}

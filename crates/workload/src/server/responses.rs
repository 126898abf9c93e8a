//! Building Workload API messages from a [`Snapshot`] for one caller. Pure functions: the
//! streams call them on every snapshot change and compare the result with what they sent last.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use lanyard_core::{Bundle, BundleSet, SelectorSet, SpiffeId, TrustDomain, VerifiedJwtSvid};
use lanyard_proto::task::{RevokedToken, WatchRevocationsResponse};
use lanyard_proto::workload::{
    JwtBundlesResponse, X509BundlesResponse, X509svid, X509svidResponse,
};
use serde_json::Value;
use tonic::Status;

use super::status;
use crate::{Identity, Revocations, Snapshot};

/// Claims returned for a token of another trust domain (SPIRE filters the rest).
const FOREIGN_CLAIMS: [&str; 3] = ["aud", "exp", "sub"];

/// The caller's identities, first match first, without a second identity whose non-empty hint
/// was already used (WAPI-7: hints are unique; the first wins). Never empty: no identity is
/// `PermissionDenied`.
pub(crate) fn entitled<'a>(
    snapshot: &'a Snapshot,
    caller: &'a SelectorSet,
) -> Result<Vec<&'a Identity>, Status> {
    let mut hints = BTreeSet::new();
    let identities: Vec<_> = snapshot
        .matching(caller)
        .filter(|identity| identity.hint().is_empty() || hints.insert(identity.hint()))
        .collect();
    if identities.is_empty() {
        return Err(status::no_identity());
    }
    Ok(identities)
}

/// `FetchX509SVID`: every entitled SVID with the bundle of its trust domain, and the federated
/// bundles its entries name.
pub(crate) fn x509_svids(
    snapshot: &Snapshot,
    caller: &SelectorSet,
) -> Result<X509svidResponse, Status> {
    let mut svids = Vec::new();
    let mut federated = BTreeSet::new();
    for identity in entitled(snapshot, caller)? {
        let trust_domain = identity.spiffe_id().trust_domain();
        let Some(bundle) = snapshot.bundles().get(&trust_domain) else {
            // An SVID nobody can verify would only fail in the client; leave it out.
            tracing::warn!(spiffe_id = %identity.spiffe_id(), "no bundle for the SVID's trust domain");
            continue;
        };
        svids.push(X509svid {
            spiffe_id: identity.spiffe_id().to_string(),
            x509_svid: identity.x509_chain().concat(),
            x509_svid_key: identity.key().as_pkcs8_der().to_vec(),
            bundle: bundle.x509_authorities_der(),
            hint: identity.hint().to_owned(),
        });
        federated.extend(
            identity
                .federates_with()
                .iter()
                .filter(|td| **td != trust_domain),
        );
    }
    if svids.is_empty() {
        return Err(status::no_identity());
    }
    let federated_bundles = federated
        .into_iter()
        .filter(|td| *td != snapshot.trust_domain())
        .filter_map(|td| snapshot.bundles().get(td))
        .filter(|bundle| !bundle.x509_authorities().is_empty())
        .map(|bundle| {
            (
                bundle_key(bundle.trust_domain()),
                bundle.x509_authorities_der(),
            )
        })
        .collect();
    Ok(X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles,
    })
}

/// `FetchX509Bundles`: own and federated roots as concatenated DER.
pub(crate) fn x509_bundles(
    snapshot: &Snapshot,
    caller: &SelectorSet,
) -> Result<X509BundlesResponse, Status> {
    let bundles = caller_bundles(snapshot, caller)?
        .iter()
        .map(|bundle| {
            (
                bundle_key(bundle.trust_domain()),
                bundle.x509_authorities_der(),
            )
        })
        .collect();
    Ok(X509BundlesResponse {
        crl: Vec::new(),
        bundles,
    })
}

/// `FetchJWTBundles`: own and federated JWT keys as JWKS documents.
pub(crate) fn jwt_bundles(
    snapshot: &Snapshot,
    caller: &SelectorSet,
) -> Result<JwtBundlesResponse, Status> {
    let bundles = caller_bundles(snapshot, caller)?
        .iter()
        .map(|bundle| {
            (
                bundle_key(bundle.trust_domain()),
                bundle.jwks_json().into_bytes(),
            )
        })
        .collect();
    Ok(JwtBundlesResponse { bundles })
}

/// `WatchRevocations`: the revoked tokens, once the source has heard them (`None` before: an
/// empty list would say nothing is revoked). A source that does not track revocations revokes
/// nothing. A caller with no identity is refused, as for the other streams.
pub(crate) fn revocations(
    snapshot: &Snapshot,
    caller: &SelectorSet,
) -> Result<Option<WatchRevocationsResponse>, Status> {
    entitled(snapshot, caller)?;
    let revoked = match snapshot.revocations() {
        Revocations::Pending => return Ok(None),
        Revocations::NotTracked => Vec::new(),
        Revocations::Known(list) => list
            .iter()
            .map(|(jti, expires_at)| RevokedToken {
                token_id: jti.to_owned(),
                expires_at: unix_seconds(expires_at),
            })
            .collect(),
    };
    Ok(Some(WatchRevocationsResponse { revoked }))
}

/// Whole seconds since the epoch (negative before it), saturating at the ends of `i64`.
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The bundles a caller may see: its own trust domain's (empty if the agent has none yet: that
/// says "trust nothing", which is the truth) and those its entries federate with.
fn caller_bundles(snapshot: &Snapshot, caller: &SelectorSet) -> Result<Vec<Bundle>, Status> {
    let identities = entitled(snapshot, caller)?;
    let mut bundles = own_bundle(snapshot);
    federated_for(snapshot, identities.into_iter(), &mut bundles);
    Ok(bundles.iter().cloned().collect())
}

/// The bundles `ValidateJWTSVID` checks against: own, plus those the caller's entries federate
/// with. A caller with no identity may still validate tokens of its own trust domain.
pub(crate) fn validation_bundles(snapshot: &Snapshot, caller: &SelectorSet) -> BundleSet {
    let mut bundles = own_bundle(snapshot);
    federated_for(snapshot, snapshot.matching(caller), &mut bundles);
    bundles
}

fn own_bundle(snapshot: &Snapshot) -> BundleSet {
    let own = snapshot.trust_domain();
    let mut bundles = BundleSet::new();
    bundles.insert(
        snapshot
            .bundles()
            .get(own)
            .cloned()
            .unwrap_or_else(|| Bundle::new(own.clone())),
    );
    bundles
}

fn federated_for<'a>(
    snapshot: &Snapshot,
    identities: impl Iterator<Item = &'a Identity>,
    bundles: &mut BundleSet,
) {
    for identity in identities {
        for td in identity.federates_with() {
            if bundles.get(td).is_none()
                && let Some(bundle) = snapshot.bundles().get(td)
            {
                bundles.insert(bundle.clone());
            }
        }
    }
}

/// The SPIFFE IDs a caller may get JWT-SVIDs for, each once, with its hint.
pub(crate) fn jwt_identities(
    snapshot: &Snapshot,
    caller: &SelectorSet,
) -> Result<Vec<(SpiffeId, String)>, Status> {
    let mut seen = BTreeSet::new();
    Ok(entitled(snapshot, caller)?
        .into_iter()
        .filter(|identity| seen.insert(identity.spiffe_id()))
        .map(|identity| (identity.spiffe_id().clone(), identity.hint().to_owned()))
        .collect())
}

/// `spiffe://<td>`: the key of bundle maps in Workload API responses (WAPI-6).
fn bundle_key(trust_domain: &TrustDomain) -> String {
    trust_domain.id().to_string()
}

/// The claims `ValidateJWTSVID` returns: all of them for the own trust domain, only `aud`, `exp`
/// and `sub` for another (as SPIRE does); `aud` always as a list.
pub(crate) fn claims(
    verified: &VerifiedJwtSvid,
    own_trust_domain: &TrustDomain,
) -> prost_types::Struct {
    let own = verified.spiffe_id().is_member_of(own_trust_domain);
    let mut fields: BTreeMap<String, prost_types::Value> = verified
        .claims()
        .iter()
        .filter(|(name, _)| own || FOREIGN_CLAIMS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), to_prost_value(value)))
        .collect();
    let audience = verified
        .audience()
        .iter()
        .map(|aud| Value::String(aud.clone()))
        .collect();
    fields.insert("aud".into(), to_prost_value(&Value::Array(audience)));
    prost_types::Struct { fields }
}

/// JSON to protobuf `Value`. Depth is bounded by `serde_json`'s recursion limit on parsing.
fn to_prost_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_prost_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), to_prost_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

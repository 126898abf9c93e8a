//! Rotation driven by a manual clock: the schedule, forced rotation, revocation, and a long
//! simulation in which every unexpired SVID verifies at every instant.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use lanyard_ca::{AuthorityInfo, AuthorityKind, AuthorityState, Ca, CaError, JwtSvidRequest};
use lanyard_core::{verify_jwt_svid, verify_x509_svid};

use crate::support::*;

const H: u64 = 3600;

fn at(secs_after_t0: u64) -> SystemTime {
    t0() + Duration::from_secs(secs_after_t0)
}

fn of(ca: &Ca, kind: AuthorityKind) -> Vec<AuthorityInfo> {
    ca.authorities()
        .into_iter()
        .filter(|a| a.kind == kind)
        .collect()
}

fn states(ca: &Ca, kind: AuthorityKind) -> Vec<AuthorityState> {
    of(ca, kind).into_iter().map(|a| a.state).collect()
}

fn active(ca: &Ca, kind: AuthorityKind) -> AuthorityInfo {
    of(ca, kind)
        .into_iter()
        .find(|a| a.state == AuthorityState::Active)
        .unwrap()
}

#[test]
fn schedule_prepares_at_half_activates_at_five_sixths_and_prunes_after_not_after() {
    use AuthorityState::*;
    let clock = clock();
    let ca = new_ca(&clock);
    assert_eq!(states(&ca, AuthorityKind::X509), [Active]);
    assert_eq!(states(&ca, AuthorityKind::Jwt), [Active]);
    assert_eq!(ca.bundle().sequence(), 1);
    assert_eq!(ca.bundle().refresh_hint(), Some(Duration::from_secs(300)));
    let first = active(&ca, AuthorityKind::X509);
    let rev = ca.journal_revision();

    // Nothing happens before half-life (the X.509 CA's NotBefore is backdated by 10 s, so its
    // half-life falls 5 s before 12 h).
    clock.set(at(12 * H - 6));
    assert_eq!(ca.tick().unwrap(), Default::default());
    assert_eq!(ca.journal_revision(), rev);

    // At half-life the successor is prepared and published at once: one bundle change.
    clock.set(at(12 * H));
    let out = ca.tick().unwrap();
    assert!(out.journal_changed && out.bundle_changed);
    assert_eq!(states(&ca, AuthorityKind::X509), [Active, Prepared]);
    assert_eq!(states(&ca, AuthorityKind::Jwt), [Active, Prepared]);
    assert_eq!(ca.bundle().sequence(), 2);
    assert_eq!(ca.bundle().x509_authorities().len(), 2);
    assert_eq!(ca.bundle().jwt_authorities().len(), 2);
    assert!(ca.journal_revision() > rev);

    // Still signing with the first until 5/6.
    clock.set(at(20 * H - 3));
    assert_eq!(ca.tick().unwrap(), Default::default());
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
    assert_eq!(svid.authority_id, first.id);

    // At 5/6 the successor becomes active; the bundle's contents (and sequence) do not change.
    clock.set(at(20 * H));
    let out = ca.tick().unwrap();
    assert!(out.journal_changed && !out.bundle_changed);
    assert_eq!(states(&ca, AuthorityKind::X509), [Old, Active]);
    assert_eq!(states(&ca, AuthorityKind::Jwt), [Old, Active]);
    assert_eq!(ca.bundle().sequence(), 2);
    let svid = ca
        .mint_x509_svid(&WorkloadKey::p256().spki(), &request("/w"))
        .unwrap();
    assert_ne!(svid.authority_id, first.id);

    // The old authority stays through its NotAfter (inclusive) and leaves one second later.
    // By then the second one has passed its own half-life (12 h after it was made), so its
    // successor is already published: three roots for one second.
    clock.set(first.not_after);
    let out = ca.tick().unwrap();
    assert!(out.bundle_changed);
    assert_eq!(states(&ca, AuthorityKind::X509), [Old, Active, Prepared]);
    assert_eq!(ca.bundle().x509_authorities().len(), 3);
    assert_eq!(ca.bundle().sequence(), 3);
    clock.set(first.not_after + Duration::from_secs(1));
    let out = ca.tick().unwrap();
    assert!(out.bundle_changed);
    assert_eq!(states(&ca, AuthorityKind::X509), [Active, Prepared]);
    assert_eq!(states(&ca, AuthorityKind::Jwt), [Active, Prepared]);
    assert_eq!(ca.bundle().x509_authorities().len(), 2);
    assert_eq!(ca.bundle().sequence(), 4);
    assert!(!ca.bundle().x509_authorities().iter().any(|a| {
        let (_, c) = x509_parser::parse_x509_certificate(a.der()).unwrap();
        c.validity().not_after.timestamp() as u64 == unix(first.not_after)
    }));
}

#[test]
fn minting_needs_a_tick_after_the_active_authority_expired() {
    let clock = clock();
    let ca = new_ca(&clock);
    clock.set(at(25 * H));
    let key = WorkloadKey::p256();
    assert!(matches!(
        ca.mint_x509_svid(&key.spki(), &request("/w")),
        Err(CaError::NoActiveAuthority { .. })
    ));
    assert!(matches!(
        ca.mint_jwt_svid(&JwtSvidRequest::new(id("/w"), ["a"])),
        Err(CaError::NoActiveAuthority { .. })
    ));
    // After a long outage one tick replaces and prunes everything.
    let out = ca.tick().unwrap();
    assert!(out.bundle_changed);
    assert_eq!(states(&ca, AuthorityKind::X509), [AuthorityState::Active]);
    assert_eq!(ca.bundle().x509_authorities().len(), 1);
    let svid = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
    verify_x509_svid(&svid.cert_chain, &bundle_set(ca.bundle()), at(25 * H)).unwrap();
}

#[test]
fn taint_rotates_now_and_keeps_old_svids_valid_until_revoked() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let before = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
    let jwt_before = ca
        .mint_jwt_svid(&JwtSvidRequest::new(id("/w"), ["a"]))
        .unwrap();
    let seq = ca.bundle().sequence();

    clock.set(at(60));
    let x509_id = active(&ca, AuthorityKind::X509).id;
    let out = ca.taint(&x509_id).unwrap();
    assert!(out.bundle_changed && out.journal_changed);
    assert_eq!(ca.bundle().sequence(), seq + 1);
    let x509 = of(&ca, AuthorityKind::X509);
    assert_eq!(x509.len(), 2);
    assert!(x509[0].tainted && x509[0].state == AuthorityState::Old);
    assert!(!x509[1].tainted && x509[1].state == AuthorityState::Active);

    let jwt_id = active(&ca, AuthorityKind::Jwt).id;
    let _ = ca.taint(&jwt_id).unwrap();
    assert_ne!(active(&ca, AuthorityKind::Jwt).id, jwt_id);

    // New SVIDs come from the new authorities; old ones still verify.
    let after = ca.mint_x509_svid(&key.spki(), &request("/w")).unwrap();
    assert_ne!(after.authority_id, before.authority_id);
    let jwt_after = ca
        .mint_jwt_svid(&JwtSvidRequest::new(id("/w"), ["a"]))
        .unwrap();
    assert_ne!(jwt_after.key_id, jwt_before.key_id);
    let set = bundle_set(ca.bundle());
    for chain in [&before.cert_chain, &after.cert_chain] {
        verify_x509_svid(chain, &set, at(61)).unwrap();
    }
    for token in [&jwt_before.token, &jwt_after.token] {
        verify_jwt_svid(token, "a", &set, at(61)).unwrap();
    }

    // The active authority cannot be revoked; the tainted one can, and its SVIDs stop verifying.
    let new_active = active(&ca, AuthorityKind::X509).id;
    assert!(matches!(
        ca.revoke(&new_active),
        Err(CaError::RevokeActive(_))
    ));
    assert!(matches!(
        ca.revoke("nope"),
        Err(CaError::UnknownAuthority(_))
    ));
    let seq = ca.bundle().sequence();
    let out = ca.revoke(&x509_id).unwrap();
    assert!(out.bundle_changed);
    let _ = ca.revoke(&jwt_id).unwrap();
    assert_eq!(ca.bundle().sequence(), seq + 2);
    let set = bundle_set(ca.bundle());
    assert!(verify_x509_svid(&before.cert_chain, &set, at(62)).is_err());
    assert!(verify_jwt_svid(&jwt_before.token, "a", &set, at(62)).is_err());
    verify_x509_svid(&after.cert_chain, &set, at(62)).unwrap();
    verify_jwt_svid(&jwt_after.token, "a", &set, at(62)).unwrap();
}

#[test]
fn taint_activates_a_prepared_successor_and_drops_a_tainted_prepared_one() {
    let clock = clock();
    let ca = new_ca(&clock);
    clock.set(at(13 * H));
    let _ = ca.tick().unwrap();
    let x509 = of(&ca, AuthorityKind::X509);
    let (old, prepared) = (x509[0].id.clone(), x509[1].id.clone());

    // Tainting the prepared one removes it (it signed nothing); the next tick prepares another.
    let out = ca.taint(&prepared).unwrap();
    assert!(out.bundle_changed);
    assert_eq!(states(&ca, AuthorityKind::X509), [AuthorityState::Active]);
    let _ = ca.tick().unwrap();
    let x509 = of(&ca, AuthorityKind::X509);
    assert_eq!(x509.len(), 2);
    let prepared = x509[1].id.clone();

    // Tainting the active one activates the already-published successor: no new root needed.
    let out = ca.taint(&old).unwrap();
    assert!(!out.bundle_changed && out.journal_changed);
    assert_eq!(active(&ca, AuthorityKind::X509).id, prepared);
}

/// The acceptance test of issue 3: four CA lifetimes, SVIDs minted every 5 simulated minutes,
/// and at every step every unexpired SVID verifies against the bundle published at that step.
#[test]
fn every_unexpired_svid_verifies_at_every_instant_across_four_ca_lifetimes() {
    let clock = clock();
    let ca = new_ca(&clock);
    let key = WorkloadKey::p256();
    let step = Duration::from_secs(5 * 60);
    let end = t0() + Duration::from_secs(4 * 24 * H);

    let mut x509_svids = Vec::new();
    let mut jwt_svids = Vec::new();
    let mut authority_not_after: HashMap<String, SystemTime> = HashMap::new();
    let mut first_published: HashMap<Vec<u8>, SystemTime> = HashMap::new();
    let mut first_signed: HashMap<String, SystemTime> = HashMap::new();
    let mut last_bundle = ca.bundle();
    let mut x509_authorities_seen = std::collections::HashSet::new();
    let mut verifications = 0u64;

    let mut now = t0();
    while now <= end {
        clock.set(now);
        let out = ca.tick().unwrap();
        let bundle = ca.bundle();

        // The sequence changes exactly when the contents do, and only upwards.
        let contents_changed = bundle.x509_authorities() != last_bundle.x509_authorities()
            || bundle.jwt_authorities() != last_bundle.jwt_authorities();
        assert_eq!(out.bundle_changed, contents_changed, "at {now:?}");
        if contents_changed {
            assert!(bundle.sequence() > last_bundle.sequence());
        } else {
            assert_eq!(bundle.sequence(), last_bundle.sequence());
        }
        assert!(bundle.x509_authorities().len() <= 3);
        for a in bundle.x509_authorities() {
            first_published.entry(a.der().to_vec()).or_insert(now);
        }
        for a in ca.authorities() {
            authority_not_after.insert(a.id.clone(), a.not_after);
            if a.kind == AuthorityKind::X509 {
                x509_authorities_seen.insert(a.id.clone());
            }
        }

        // Mint, with a mix of TTLs (some longer than what is left of the CA: capped).
        let ttl = [300, 3600, 6 * 3600][x509_svids.len() % 3];
        let svid = ca
            .mint_x509_svid(
                &key.spki(),
                &request("/w").with_ttl(Duration::from_secs(ttl)),
            )
            .unwrap();
        assert!(
            svid.not_after <= authority_not_after[&svid.authority_id],
            "outlives its signer"
        );
        first_signed.entry(svid.authority_id.clone()).or_insert(now);
        x509_svids.push(svid);
        let jwt = ca
            .mint_jwt_svid(&JwtSvidRequest::new(id("/w"), ["aud"]))
            .unwrap();
        assert!(
            jwt.expires_at <= authority_not_after[&jwt.key_id],
            "outlives its key"
        );
        jwt_svids.push(jwt);

        // Every unexpired SVID verifies against the bundle published now.
        let set = bundle_set(bundle.clone());
        x509_svids.retain(|s| s.not_after >= now);
        for s in &x509_svids {
            verify_x509_svid(&s.cert_chain, &set, now)
                .unwrap_or_else(|e| panic!("{} at {now:?}: {e}", s.authority_id));
            verifications += 1;
        }
        jwt_svids.retain(|s| s.expires_at > now);
        for s in &jwt_svids {
            verify_jwt_svid(&s.token, "aud", &set, now)
                .unwrap_or_else(|e| panic!("{} at {now:?}: {e}", s.key_id));
            verifications += 1;
        }

        last_bundle = bundle;
        now += step;
    }

    // Four lifetimes saw at least five X.509 authorities, each (after the first) published well
    // before it signed anything: 1/3 of a lifetime (8 h) minus one step.
    assert!(
        x509_authorities_seen.len() >= 5,
        "{x509_authorities_seen:?}"
    );
    assert!(verifications > 4 * 24 * 12 * 5);
    let bundle_roots: Vec<_> = first_published.values().copied().collect();
    assert!(bundle_roots.len() >= 5);
    let mut leads: Vec<Duration> = Vec::new();
    for svid_authority in first_signed.keys() {
        let Some(root) = first_published.iter().find(|(der, _)| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            let ski = cert
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                        Some(k.0.to_vec())
                    }
                    _ => None,
                })
                .unwrap();
            ski.iter().map(|b| format!("{b:02x}")).collect::<String>() == *svid_authority
        }) else {
            panic!("authority {svid_authority} never published");
        };
        leads.push(
            first_signed[svid_authority]
                .duration_since(*root.1)
                .unwrap(),
        );
    }
    leads.sort();
    // The first authority signs at once; every later one had ≥ 8 h − 5 min in the bundle.
    assert_eq!(leads[0], Duration::ZERO);
    assert!(
        leads[1..]
            .iter()
            .all(|d| *d >= Duration::from_secs(8 * H - 300)),
        "{leads:?}"
    );
}

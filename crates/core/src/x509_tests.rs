#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

fn secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

#[test]
fn unix_seconds_convert_both_sides_of_the_epoch() {
    assert_eq!(to_system_time(0), UNIX_EPOCH);
    assert_eq!(to_system_time(86_400), secs(86_400));
    assert_eq!(
        to_system_time(-86_400),
        UNIX_EPOCH - Duration::from_secs(86_400)
    );
    // 9999-12-31T23:59:59Z, the last GeneralizedTime an X.509 certificate can carry.
    assert_eq!(to_system_time(253_402_300_799), secs(253_402_300_799));
}

#[test]
fn anchor_limits_check_dates_then_path_length() {
    let limits = AnchorLimits {
        not_before: secs(100),
        not_after: secs(200),
        max_intermediates: Some(1),
    };
    assert_eq!(limits.check(secs(100), 0), Ok(()));
    assert_eq!(limits.check(secs(200), 1), Ok(()));
    assert_eq!(
        limits.check(secs(99), 0),
        Err(X509SvidError::AuthorityNotYetValid)
    );
    assert_eq!(
        limits.check(secs(201), 0),
        Err(X509SvidError::AuthorityExpired)
    );
    assert_eq!(
        limits.check(secs(150), 2),
        Err(X509SvidError::PathLenConstraint)
    );
    let unconstrained = AnchorLimits {
        max_intermediates: None,
        ..limits
    };
    assert_eq!(unconstrained.check(secs(150), 15), Ok(()));
}

#[test]
fn webpki_errors_map_to_causes() {
    let td = TrustDomain::new("example.org").unwrap();
    let map = |e| map_webpki_error(e, &td);
    assert_eq!(
        map(webpki::Error::UnknownIssuer),
        X509SvidError::UntrustedChain {
            trust_domain: td.clone()
        }
    );
    assert_eq!(
        map(webpki::Error::InvalidSignatureForPublicKey),
        X509SvidError::BadSignature
    );
    assert_eq!(
        map(webpki::Error::CaUsedAsEndEntity),
        X509SvidError::LeafIsCa
    );
    assert_eq!(
        map(webpki::Error::PathLenConstraintViolated),
        X509SvidError::PathLenConstraint
    );
    assert_eq!(
        map(webpki::Error::NameConstraintViolation),
        X509SvidError::NameConstraint
    );
    assert!(matches!(
        map(webpki::Error::MaximumPathDepthExceeded),
        X509SvidError::PathValidation { .. }
    ));
}

#[test]
fn certificate_parse_errors_carry_the_index() {
    assert!(matches!(
        parse_certificate(3, &[0x30, 0x00]),
        Err(X509SvidError::MalformedCertificate { index: 3, .. })
    ));
    assert!(matches!(
        check_x509_svid_leaf(b""),
        Err(X509SvidError::MalformedCertificate { index: 0, .. })
    ));
}

#[test]
fn signature_algorithms_are_aws_lc_rs_ones_only() {
    // Every entry comes from webpki's aws-lc-rs module: the count pins the list so that an
    // addition is a visible decision.
    assert_eq!(SIGNATURE_ALGORITHMS.len(), 19);
}

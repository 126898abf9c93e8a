#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::json;

use super::*;

#[test]
fn the_nine_allowed_algorithms_round_trip_through_their_names() {
    let names: Vec<&str> = JwtAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"
        ]
    );
    for alg in JwtAlgorithm::ALL {
        assert_eq!(alg.as_str().parse::<JwtAlgorithm>(), Ok(alg));
        assert_eq!(alg.to_string(), alg.as_str());
    }
}

#[test]
fn refused_algorithms_name_why() {
    assert_eq!("none".parse::<JwtAlgorithm>(), Err(JwtSvidError::AlgNone));
    for hs in ["HS256", "HS384", "HS512"] {
        assert_eq!(
            hs.parse::<JwtAlgorithm>(),
            Err(JwtSvidError::SymmetricAlg { alg: hs.to_owned() })
        );
    }
    assert_eq!("EdDSA".parse::<JwtAlgorithm>(), Err(JwtSvidError::EdDsaAlg));
    for other in ["NONE", "None", "rs256", "ES256K", "RS1", "PS256 ", ""] {
        assert_eq!(
            other.parse::<JwtAlgorithm>(),
            Err(JwtSvidError::UnsupportedAlg {
                alg: other.to_owned()
            })
        );
    }
}

#[test]
fn each_algorithm_fits_exactly_its_key_type() {
    let types = [
        JwtKeyType::EcP256,
        JwtKeyType::EcP384,
        JwtKeyType::EcP521,
        JwtKeyType::Rsa,
    ];
    for alg in JwtAlgorithm::ALL {
        let fitting: Vec<JwtKeyType> = types.into_iter().filter(|t| alg.fits(*t)).collect();
        let expected = match alg {
            JwtAlgorithm::Es256 => JwtKeyType::EcP256,
            JwtAlgorithm::Es384 => JwtKeyType::EcP384,
            JwtAlgorithm::Es512 => JwtKeyType::EcP521,
            _ => JwtKeyType::Rsa,
        };
        assert_eq!(fitting, [expected], "{alg}");
    }
}

#[test]
fn numeric_dates() {
    let secs = |s| UNIX_EPOCH + Duration::from_secs(s);
    assert_eq!(numeric_date(&json!(0)), Some(UNIX_EPOCH));
    assert_eq!(
        numeric_date(&json!(1_700_000_000)),
        Some(secs(1_700_000_000))
    );
    assert_eq!(numeric_date(&json!(u64::MAX)), None, "beyond SystemTime");
    assert_eq!(
        numeric_date(&json!(1.5)),
        Some(UNIX_EPOCH + Duration::from_millis(1500))
    );
    assert_eq!(
        numeric_date(&json!(-10)),
        Some(UNIX_EPOCH - Duration::from_secs(10))
    );
    for bad in [json!("1"), json!(null), json!(true), json!([1]), json!({})] {
        assert_eq!(numeric_date(&bad), None, "{bad}");
    }
}

#[test]
fn decoded_parts_must_be_unique_key_objects() {
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    assert_eq!(
        decode_object(&b64(r#"{"a":1}"#), Part::Claims).unwrap()["a"],
        json!(1)
    );
    assert_eq!(
        decode_object(&b64(r#"{"kid":"a","kid":"b"}"#), Part::Header),
        Err(JwtSvidError::DuplicateHeaderParameter {
            name: "kid".to_owned()
        })
    );
    assert_eq!(
        decode_object(&b64(r#"{"aud":"a","x":{"aud":1},"aud":"b"}"#), Part::Claims),
        Err(JwtSvidError::DuplicateClaim {
            name: "aud".to_owned()
        })
    );
    assert_eq!(
        decode_object(&b64("1"), Part::Claims),
        Err(JwtSvidError::ClaimsNotObject)
    );
    assert_eq!(
        decode_object("###", Part::Header),
        Err(JwtSvidError::HeaderEncoding)
    );
    assert!(matches!(
        decode_object(&b64("{"), Part::Header),
        Err(JwtSvidError::HeaderJson { .. })
    ));
}

#[test]
fn leeway_is_small() {
    // Documented in the module: half a minute, well under a 5-minute JWT-SVID lifetime.
    assert_eq!(JWT_LEEWAY, Duration::from_secs(30));
}

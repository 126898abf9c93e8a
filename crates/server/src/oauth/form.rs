//! Token and introspection requests: `application/x-www-form-urlencoded` bodies (RFC 6749 §3.2),
//! read whole up to a limit. A parameter sent twice is refused (§3.2: "MUST NOT be included more
//! than once"); one sent without a value counts as not sent.

use std::collections::BTreeMap;

use http_body_util::{BodyExt as _, Limited};
use hyper::Request;
use hyper::body::Incoming;

use super::OAuthError;

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Most parameters in one request; the grants use at most eight.
const MAX_PARAMETERS: usize = 32;

/// The parameters of a request.
#[derive(Debug, Default)]
pub(crate) struct Form(BTreeMap<String, String>);

/// Reads the form in `request`'s body, at most `max` bytes. The body is read before the content
/// type is judged: a refusal sent with the body still unread would leave the keep-alive
/// connection unusable (the server closes it, and a pooling client's next request fails).
pub(crate) async fn read(request: Request<Incoming>, max: usize) -> Result<Form, OAuthError> {
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = match Limited::new(request.into_body(), max).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(OAuthError::too_large(max));
        }
        Err(_) => return Err(OAuthError::invalid_request("the body could not be read")),
    };
    if content_type.split(';').next().map(str::trim) != Some(FORM_CONTENT_TYPE) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    Form::parse(&body)
}

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if params.len() >= MAX_PARAMETERS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {:?} is sent more than once",
                    crate::limits::clip(&name, 64)
                )));
            }
        }
        Ok(Self(params))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parameters_are_decoded_and_empty_ones_ignored() {
        let form = Form::parse(b"grant_type=a%3Ab&scope=read+write&resource=&x").unwrap();
        assert_eq!(form.get("grant_type"), Some("a:b"));
        assert_eq!(form.get("scope"), Some("read write"));
        assert_eq!(form.get("resource"), None);
        assert!(form.required("resource").is_err());
    }

    #[test]
    fn repeated_and_too_many_parameters_are_refused() {
        let e = Form::parse(b"scope=a&scope=b").unwrap_err();
        assert_eq!(e.code, "invalid_request");
        let many: String = (0..40).map(|i| format!("p{i}=v&")).collect();
        assert!(Form::parse(many.as_bytes()).is_err());
        // Hostile bytes decode lossily, never panic.
        assert!(Form::parse(&[0xff, b'=', 0xfe, b'&', b'%', b'z']).is_ok());
    }
}

//! Workload API endpoint addresses (`SPIFFE_ENDPOINT_SOCKET`, SPIFFE Workload Endpoint §4):
//! `unix:///absolute/path` (or `unix:/absolute/path`) and `tcp://<IP>:<port>`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The environment variable SPIFFE clients read the Workload API address from.
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Why a string is not a Workload API endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("endpoint address is empty")]
    Empty,
    #[error("endpoint address must start with unix: or tcp:")]
    Scheme,
    #[error("a unix endpoint has no authority: write unix:///path, not unix://host/path")]
    UnixAuthority,
    #[error("a unix endpoint needs an absolute path")]
    UnixRelative,
    #[error("a unix endpoint is a path only: no query or fragment")]
    UnixExtra,
    #[error("a tcp endpoint is tcp://IP:PORT with an IP address, a port and nothing else")]
    Tcp,
}

/// Where the Workload API is served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl EndpointAddress {
    /// The Unix socket path, if this is a `unix:` address.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(path) => Some(path),
            Self::Tcp(_) => None,
        }
    }
}

impl FromStr for EndpointAddress {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = match rest.strip_prefix("//") {
                // `unix://` must be followed by an empty authority, i.e. a third slash.
                Some(after) if after.starts_with('/') => after,
                Some(_) => return Err(EndpointError::UnixAuthority),
                None => rest,
            };
            if path.contains(['?', '#']) {
                return Err(EndpointError::UnixExtra);
            }
            if !path.starts_with('/') || path.len() < 2 {
                return Err(EndpointError::UnixRelative);
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            // `SocketAddr` parsing demands an IP literal and a port, and refuses anything after.
            let addr: SocketAddr = rest.parse().map_err(|_| EndpointError::Tcp)?;
            return Ok(Self::Tcp(addr));
        }
        Err(EndpointError::Scheme)
    }
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn accepts_the_forms_the_spec_allows() {
        let unix = |p: &str| EndpointAddress::Unix(PathBuf::from(p));
        assert_eq!(
            "unix:///run/x/agent.sock".parse(),
            Ok(unix("/run/x/agent.sock"))
        );
        assert_eq!(
            "unix:/run/x/agent.sock".parse(),
            Ok(unix("/run/x/agent.sock"))
        );
        assert_eq!(
            "tcp://127.0.0.1:8000".parse(),
            Ok(EndpointAddress::Tcp("127.0.0.1:8000".parse().unwrap()))
        );
        assert_eq!(
            "tcp://[::1]:8000".parse(),
            Ok(EndpointAddress::Tcp("[::1]:8000".parse().unwrap()))
        );
    }

    #[test]
    fn refuses_what_the_spec_forbids() {
        let cases = [
            ("", EndpointError::Empty),
            ("/run/agent.sock", EndpointError::Scheme),
            ("http://x", EndpointError::Scheme),
            ("unix://foo", EndpointError::UnixAuthority),
            ("unix://host/run/a.sock", EndpointError::UnixAuthority),
            ("unix:relative.sock", EndpointError::UnixRelative),
            ("unix:/", EndpointError::UnixRelative),
            ("unix:///a.sock?x=1", EndpointError::UnixExtra),
            ("unix:///a.sock#f", EndpointError::UnixExtra),
            ("tcp://localhost:8000", EndpointError::Tcp),
            ("tcp://127.0.0.1", EndpointError::Tcp),
            ("tcp://127.0.0.1:8000/foo", EndpointError::Tcp),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<EndpointAddress>(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["unix:///run/x/agent.sock", "tcp://127.0.0.1:8000"] {
            let parsed: EndpointAddress = input.parse().unwrap();
            assert_eq!(parsed.to_string(), input);
            assert_eq!(
                parsed.to_string().parse::<EndpointAddress>().unwrap(),
                parsed
            );
        }
    }
}

//! Runnable examples of using lanyard from a workload. See `src/bin/`:
//!
//! - `mtls-echo-server`: accepts mTLS connections from one allowed SPIFFE ID (or any ID in the
//!   trust domain) and echoes each line back, prefixed with the caller's SPIFFE ID;
//! - `mtls-echo-client`: connects to it, requiring the server's SPIFFE ID, sends a line per
//!   connection, and keeps going across SVID rotations.
//!
//! Both get their identity from the agent's Workload API socket through
//! `lanyard_tls::WorkloadIdentity`, so neither ever reads a key file.

//! Integration tests of the CA through its public API, checked by lanyard-core's verifiers and
//! by tools nobody here wrote (x509-parser, the `spiffe` crate, the `openssl` CLI).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

mod interop;
mod jwt;
mod profile;
mod requests;
mod restart;
mod rotation;
mod upstream;

//! Generated gRPC code for the protocols lanyard speaks.
//!
//! - [`workload`]: the standard SPIFFE Workload API (`proto/workload.proto`). The proto file has no
//!   `package` line, so the service's gRPC paths are `/SpiffeWorkloadAPI/<Rpc>`, which is what every
//!   SPIFFE client calls.
//! - [`admin`]: `lanyard.admin.v1`, the server's admin API on its Unix socket.
//! - [`node`]: `lanyard.node.v1`, the node API agents call on the server.
//! - [`task`]: `lanyard.task.v1`, task credentials, on the agent's socket.
//!
//! Nothing here is written by hand except this file and [`codec`] (the buffer settings of the
//! admin and node APIs); `build.rs` compiles the `.proto` files with
//! `protox`, so no system `protoc` is needed.

pub mod codec;

/// The SPIFFE Workload API: messages, the `SpiffeWorkloadApi` server trait and a client.
pub mod workload {
    #![allow(
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        reason = "generated code"
    )]
    tonic::include_proto!("_");
}

/// lanyard's admin API (`lanyard.admin.v1.Admin`), served on the server's admin socket.
pub mod admin {
    #![allow(
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        reason = "generated code"
    )]
    tonic::include_proto!("lanyard.admin.v1");
}

/// lanyard's task service (`lanyard.task.v1.Tasks`), served on the agent's socket beside the
/// Workload API: task-scoped credentials for AI agents.
pub mod task {
    #![allow(
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        reason = "generated code"
    )]
    tonic::include_proto!("lanyard.task.v1");
}

/// lanyard's node API (`lanyard.node.v1.Node`): what agents call on the server over mTLS.
pub mod node {
    #![allow(
        missing_debug_implementations,
        unreachable_pub,
        clippy::all,
        clippy::pedantic,
        reason = "generated code"
    )]
    tonic::include_proto!("lanyard.node.v1");
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_name_has_no_package() {
        // Real clients call `/SpiffeWorkloadAPI/FetchX509SVID`; a `package` line would break them.
        assert_eq!(
            super::workload::spiffe_workload_api_server::SERVICE_NAME,
            "SpiffeWorkloadAPI"
        );
    }
}

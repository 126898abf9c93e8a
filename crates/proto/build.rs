//! Compiles `proto/*.proto` with `protox`, a pure-Rust protobuf compiler, so that `cargo build`
//! needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "workload.proto",
        "lanyard/admin/v1/admin.proto",
        "lanyard/node/v1/node.proto",
    ]
    .map(|f| proto_dir.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The CLI prints admin responses as JSON documents.
        .type_attribute(".lanyard.admin.v1", "#[derive(serde::Serialize)]")
        .compile_fds(descriptors)?;
    Ok(())
}

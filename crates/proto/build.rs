//! Compiles `proto/*.proto` with `protox`, a pure-Rust protobuf compiler, so that `cargo build`
//! needs no system `protoc`.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    // The admin and node APIs import the task messages. Each package is included in its own flat
    // module of this crate, so they name them by crate path (`extern_path`); the task package is
    // then generated on its own, last, so that its file is the one with its own types in it.
    compile(
        &proto_dir,
        &["lanyard/admin/v1/admin.proto", "lanyard/node/v1/node.proto"],
        true,
    )?;
    compile(
        &proto_dir,
        &["workload.proto", "lanyard/task/v1/task.proto"],
        false,
    )?;
    Ok(())
}

fn compile(
    proto_dir: &Path,
    files: &[&str],
    task_is_extern: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<PathBuf> = files.iter().map(|f| proto_dir.join(f)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [proto_dir])?;
    let mut config = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The CLI prints admin responses (tasks among them) as JSON documents.
        .type_attribute(".lanyard.admin.v1", "#[derive(serde::Serialize)]")
        .type_attribute(".lanyard.task.v1", "#[derive(serde::Serialize)]");
    if task_is_extern {
        // The admin and node APIs: small per-call buffers (see src/codec.rs).
        config = config
            .extern_path(".lanyard.task.v1", "crate::task")
            .codec_path("crate::codec::SmallBuffers");
    }
    config.compile_fds(descriptors)?;
    Ok(())
}

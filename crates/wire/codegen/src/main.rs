//! Regenerates `crates/wire/src/gen/dp2ptcs.v1.rs` from `crates/wire/proto/` with a pure-Rust
//! protobuf compiler (no `protoc` needed). Run from anywhere: `cargo run -p dp2ptcs-wire-codegen`.
//! CI runs it and fails if the committed file differs.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto_dir = root.join("proto");
    let files = [proto_dir.join("dp2ptcs/v1/wire.proto")];
    let descriptors = protox::compile(&files, [&proto_dir])?;
    let out = root.join("src/gen");
    std::fs::create_dir_all(&out)?;
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(descriptors)?;
    println!("wrote {}", out.join("dp2ptcs.v1.rs").display());
    Ok(())
}

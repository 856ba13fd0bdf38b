//! Regenerates the etcd v3 client stubs that `socketplane-store` keeps in
//! its tree, so that building SocketPlane never needs `protoc`.
//!
//! Usage: `cargo run --manifest-path tools/etcd-proto-gen/Cargo.toml -- <proto dir> <out dir>`

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(proto), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: etcd-proto-gen <proto dir> <out dir>".into());
    };
    let proto = PathBuf::from(proto);
    let files: Vec<PathBuf> = [
        "etcd/api/authpb/auth.proto",
        "etcd/api/mvccpb/kv.proto",
        "etcd/api/etcdserverpb/rpc.proto",
    ]
    .iter()
    .map(|f| proto.join(f))
    .collect();
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(true)
        .out_dir(&out)
        .compile_protos(&files, &[proto])?;
    Ok(())
}

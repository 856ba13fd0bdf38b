//! The etcd v3 gRPC API, generated from `crates/store/proto` by
//! `scripts/gen-etcd-proto.sh` and kept in the tree, so that building
//! SocketPlane needs no `protoc`. Only the client side is generated.

#![allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]

pub mod authpb;
pub mod etcdserverpb;
pub mod mvccpb;

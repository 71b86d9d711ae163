//! # shop-proto — the shop's gRPC contract
//!
//! Generated from `proto/shop/v1/*.proto` by `tonic-prost-build`:
//!
//! | proto file | service | what it is for |
//! |---|---|---|
//! | `common.proto` | — | `Strategy`, `LineItem`, leader listing types shared by all |
//! | `order.proto` | `OrderService` | the saga: CreateOrder, GetOrder, PaymentResult |
//! | `inventory.proto` | `InventoryService` | stock and reservations: Reserve, Commit, Release |
//! | `payment.proto` | `PaymentService` | payments and the payment queue's depth |
//!
//! Protobuf types stop at each service's gRPC layer: services convert them into their
//! own domain types (`TryFrom`) and never pass them further in.

/// `shop.v1`: every message, enum, client and server of the shop.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shop.v1");
}

/// The encoded `FileDescriptorSet` of every shop proto, for gRPC server reflection
/// (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shop_descriptor");

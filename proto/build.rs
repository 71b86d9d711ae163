//! Compiles `shop/v1/*.proto` into Rust (messages, clients, servers) and writes the
//! file descriptor set that the services hand to gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "shop/v1/common.proto",
        "shop/v1/order.proto",
        "shop/v1/inventory.proto",
        "shop/v1/payment.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("shop_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}

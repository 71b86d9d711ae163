//! A tour of the keys coord writes: builds a typical moment of a primitive (a holder
//! and its waiters, a leader and its candidates, …) under `/tour/<scene>` and shows it
//! with `etcdctl`, the way docs/primitives/*.md print it.
//!
//! ```text
//! scripts/etcd.sh start
//! cargo run -p coord --example tour                   # every scene, one after another
//! cargo run -p coord --example tour -- mutex --hold   # keep the scene until Enter
//! ```
//!
//! With `--hold`, look at it from another terminal (`etcdctl get --prefix /tour/mutex`,
//! `etcdctl watch --prefix /tour/mutex`, …), kill the example and watch the keys go
//! when the leases run out.

#[path = "tour/scenes.rs"]
mod scenes;

use std::io::BufRead as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hold = args.iter().any(|a| a == "--hold");
    let chosen: Vec<&str> = match args.iter().find(|a| !a.starts_with("--")) {
        Some(name) => vec![name.as_str()],
        None => scenes::SCENES.to_vec(),
    };
    // `ETCD_ENDPOINTS` as coord reads it (default 127.0.0.1:2379), for etcdctl too.
    let config = coord::EtcdConfig::from_env()?;
    let endpoints = config.endpoints.join(",");
    let client = config.connect().await?;
    let etcdctl = scenes::local_etcdctl();
    for name in chosen {
        let scene = scenes::build(&client, name).await?;
        println!("== {name}: built under {}", scene.prefix);
        match scenes::transcript(&etcdctl, &endpoints, &scene).await {
            Ok(transcript) => print!("{transcript}"),
            Err(e) => {
                println!("(cannot show it here: {e:#})\nlook at it with:");
                for command in &scene.commands {
                    println!("$ {command}");
                }
            }
        }
        if hold {
            println!("holding it; press Enter to let go");
            tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().next()).await?;
        }
        scene.finish().await?;
    }
    Ok(())
}

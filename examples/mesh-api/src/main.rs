//! `mesh-api`: the example Mesh API (see the library docs) on a PostgreSQL the caller names.
//!
//! ```text
//! mesh-api --dir /tmp/mesh --control postgres://mesh@127.0.0.1/mesh --shards postgres://mesh@127.0.0.1/mesh
//! curl -X POST localhost:8080/rooms/general/messages -H 'content-type: application/json' \
//!      -d '{"author_id": 1, "body": "hello"}'
//! curl -X POST localhost:8080/rooms/general/decentralise
//! curl -N localhost:8080/rooms/general/decentralise/status
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use roomshard::home::{Home, HomeOptions, HomeShards};
use roomshard::router::RouterConfig;
use roomshard_core::ProviderUrl;
use roomshard_example_mesh_api::{Api, app};

/// The example Mesh API: messages through roomshard's router, decentralise in the background.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The home directory (media and keys live here).
    #[arg(long)]
    dir: PathBuf,
    /// The control plane's PostgreSQL URL.
    #[arg(long)]
    control: String,
    /// The shards' PostgreSQL URL (the host's shared tables and one schema per sovereign room).
    #[arg(long)]
    shards: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Most connections to the shard server at once.
    #[arg(long, default_value_t = 16)]
    budget: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-api: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut options = HomeOptions::default();
    options.providers.control =
        Some(ProviderUrl::parse(&args.control, "--control").map_err(|e| e.to_string())?);
    options.providers.shards =
        Some(ProviderUrl::parse(&args.shards, "--shards").map_err(|e| e.to_string())?);
    let home = Home::open(&args.dir, roomshard_example_mesh::schema(), options)
        .await
        .map_err(|e| e.to_string())?;
    let HomeShards::Postgres(store) = &home.shards else {
        return Err("--shards must be a postgres:// URL".into());
    };
    let config = RouterConfig {
        budget_per_server: args.budget,
        ..RouterConfig::default()
    };
    let api = Api::new(home.roomshard.clone(), store.clone(), config);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("listening on {}: {e}", args.addr))?;
    println!(
        "mesh-api: listening on http://{}/ (Ctrl-C to stop)",
        args.addr
    );
    axum::serve(listener, app(api))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

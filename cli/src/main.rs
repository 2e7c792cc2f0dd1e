//! The `herald` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_registry::ServerConfig;

/// Herald: a schema-governed event platform.
#[derive(Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything Herald has on one embedded data directory (today: the schema registry
    /// on 127.0.0.1:8081).
    ///
    /// Example: herald up --data-dir ./herald-data
    Up {
        /// Where Herald keeps its data.
        #[arg(long, default_value = "./herald-data")]
        data_dir: PathBuf,
        /// Address of the schema registry's HTTP API.
        #[arg(long, default_value = "127.0.0.1:8081")]
        registry_listen: SocketAddr,
    },
    /// Schema registry commands.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Serve the Confluent-compatible schema registry API.
    ///
    /// Example: herald registry serve --listen 127.0.0.1:8081 --data-dir ./herald-data/registry
    Serve {
        /// Address to listen on (port 0 picks a free port; the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Directory of the registry's sled database.
        #[arg(long)]
        data_dir: PathBuf,
        /// TOML file of basic-auth users and roles; without it the API is open.
        #[arg(long)]
        auth_file: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            data_dir,
            registry_listen,
        } => {
            serve_registry(ServerConfig {
                listen: registry_listen,
                data_dir: data_dir.join("registry"),
                auth_file: None,
            })
            .await
        }
        Command::Registry {
            command:
                RegistryCommand::Serve {
                    listen,
                    data_dir,
                    auth_file,
                },
        } => {
            serve_registry(ServerConfig {
                listen,
                data_dir,
                auth_file,
            })
            .await
        }
    }
}

async fn serve_registry(config: ServerConfig) -> anyhow::Result<()> {
    herald_registry::serve(
        config,
        |addr| println!("herald registry listening on http://{addr}"),
        shutdown_signal(),
    )
    .await
    .context("the schema registry failed")
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested");
}

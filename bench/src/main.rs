//! herald-bench: Herald against an in-run baseline or peer. Every figure printed here is
//! meant to be quoted as a ratio against the other side of the same run.

mod broker;
mod broker_cluster;
mod broker_groups;
mod broker_iggy;
mod broker_nats;
mod codegen;
mod fixed_rate;
mod registry;
mod report;
mod sdk;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herald-bench", about = "Herald benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Schema registry: ID lookups vs a constant axum handler, registration under
    /// FULL_TRANSITIVE against many versions, resident memory with many schemas.
    Registry(registry::Options),
    /// Broker: produce and consume throughput, ack latency at fixed rates (open loop,
    /// coordinated-omission corrected), against NATS JetStream in the same run with
    /// `--peer nats`.
    Broker(broker::Options),
    /// SDK: typed Producer<T>/Consumer<T> vs the raw wire client in the same run, and the
    /// per-message serialize + frame cost vs bare prost / apache-avro.
    Sdk(sdk::Options),
    /// Codegen: build-script time for many schemas and for a no-change rebuild, against
    /// protox + prost-build alone on the Protobuf half.
    Codegen(codegen::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Registry(options) => registry::run(options),
        Command::Broker(options) => broker::run(options),
        Command::Sdk(options) => sdk::run(options),
        Command::Codegen(options) => codegen::run(options),
    }
}

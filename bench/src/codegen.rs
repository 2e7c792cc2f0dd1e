//! Codegen benchmark: `herald_codegen::Config::compile` (what a build script runs) over many
//! schemas — a first build and a no-change rebuild — against a baseline of protox + prost-build
//! alone on the Protobuf half (what a prost user's build script does), in the same run.

use std::path::Path;
use std::time::Instant;

#[derive(clap::Args, Clone)]
pub(crate) struct Options {
    /// Schemas generated: half `.proto` files, half `.avsc` files, one topic each.
    #[arg(long, default_value_t = 200)]
    schemas: usize,
    /// Repetitions; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn write_schemas(dir: &Path, count: usize) -> anyhow::Result<()> {
    let protos = count / 2;
    std::fs::create_dir_all(dir.join("proto/bench"))?;
    std::fs::create_dir_all(dir.join("avro"))?;
    let mut manifest = String::from("[schemas]\nproto_include = [\"proto\"]\nproto = [\n");
    for i in 0..protos {
        std::fs::write(
            dir.join(format!("proto/bench/events{i}.proto")),
            format!(
                "syntax = \"proto3\";\npackage bench.v{i};\nimport \"google/protobuf/timestamp.proto\";\n\
                 // Event {i}.\nmessage Event{i} {{\n  message Line {{ string sku = 1; int32 qty = 2; }}\n  enum Kind {{ KIND_UNSPECIFIED = 0; KIND_A = 1; }}\n  string id = 1;\n  string customer = 2;\n  repeated Line lines = 3;\n  Kind kind = 4;\n  google.protobuf.Timestamp at = 5;\n  map<string, string> attributes = 6;\n  int64 total = 7;\n}}\n"
            ),
        )?;
        manifest.push_str(&format!("  \"proto/bench/events{i}.proto\",\n"));
    }
    manifest.push_str("]\navro = [\n");
    for i in protos..count {
        std::fs::write(
            dir.join(format!("avro/record{i}.avsc")),
            format!(
                r#"{{"type":"record","name":"Record{i}","namespace":"bench.avro{i}","doc":"Record {i}.","fields":[
  {{"name":"id","type":"string"}},{{"name":"amount","type":"long","default":0}},
  {{"name":"kind","type":{{"type":"enum","name":"Kind","symbols":["A","B"]}}}},
  {{"name":"note","type":["null","string"],"default":null}},
  {{"name":"tags","type":{{"type":"array","items":"string"}},"default":[]}},
  {{"name":"at","type":{{"type":"long","logicalType":"timestamp-millis"}}}}]}}"#
            ),
        )?;
        manifest.push_str(&format!("  \"avro/record{i}.avsc\",\n"));
    }
    manifest.push_str("]\n");
    for i in 0..protos {
        manifest.push_str(&format!(
            "[[topic]]\nname = \"events-{i}\"\nmessage = \"bench.v{i}.Event{i}\"\nkey = \"customer\"\nidempotency_key = [\"id\"]\n"
        ));
    }
    for i in protos..count {
        manifest.push_str(&format!(
            "[[topic]]\nname = \"records-{i}\"\nmessage = \"bench.avro{i}.Record{i}\"\nkey = \"id\"\n"
        ));
    }
    std::fs::write(dir.join("herald.toml"), manifest)?;
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn run(options: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_schemas(dir.path(), options.schemas)?;
    let manifest = dir.path().join("herald.toml");
    let protos: Vec<_> = (0..options.schemas / 2)
        .map(|i| dir.path().join(format!("proto/bench/events{i}.proto")))
        .collect();
    let (mut first, mut again, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    let mut output_bytes = 0;
    for round in 0..options.rounds {
        let out = dir.path().join(format!("out{round}"));
        std::fs::create_dir_all(&out)?;
        let config = herald_codegen::Config::new()
            .manifest(&manifest)
            .out_dir(&out)
            .emit_rerun_if_changed(false);
        let started = Instant::now();
        anyhow::ensure!(config.compile()?, "the first build writes herald.rs");
        first.push(started.elapsed().as_secs_f64() * 1000.0);
        output_bytes = std::fs::metadata(out.join("herald.rs"))?.len();
        let started = Instant::now();
        anyhow::ensure!(!config.compile()?, "a no-change rebuild must write nothing");
        again.push(started.elapsed().as_secs_f64() * 1000.0);

        let baseline_out = dir.path().join(format!("prost{round}"));
        std::fs::create_dir_all(&baseline_out)?;
        let started = Instant::now();
        let fds = protox::compile(&protos, [dir.path().join("proto")])?;
        prost_build::Config::new()
            .out_dir(&baseline_out)
            .compile_fds(fds)?;
        baseline.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (first, again, baseline) = (median(first), median(again), median(baseline));
    println!(
        "# codegen: {} schemas ({} .proto + {} .avsc), {} topics, {} rounds, herald.rs {} bytes",
        options.schemas,
        options.schemas / 2,
        options.schemas - options.schemas / 2,
        options.schemas,
        options.rounds,
        output_bytes
    );
    println!(
        "phase=codegen first_build_ms={first:.1} no_change_rebuild_ms={again:.1} prost_build_protos_only_ms={baseline:.1} first_vs_prost={:.2}",
        first / baseline
    );
    Ok(())
}

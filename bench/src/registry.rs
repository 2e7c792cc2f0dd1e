//! Registry benchmarks.
//!
//! * `lookup`: `GET /schemas/ids/{id}` on Herald's full stack vs an axum handler returning the
//!   same bytes as a constant, same runtime shape, same load generator, same run.
//! * `register`: registering a new version under FULL_TRANSITIVE against N existing versions
//!   (median and p99 over repeated registrations, including the fsync).
//! * `memory`: resident set size of a `herald` process holding N registered schemas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use herald_registry::{app, Registry, Store};
use herald_registry_client::{NewSchema, RegistryClient};
use tower::Layer;

#[derive(clap::Args)]
pub(crate) struct Options {
    /// Which phases to run.
    #[arg(long, value_delimiter = ',', default_value = "lookup,register,memory")]
    phases: Vec<String>,
    /// Seconds of load per side in the lookup phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Existing versions for the register phase.
    #[arg(long, default_value_t = 1000)]
    versions: usize,
    /// Registrations measured in the register phase.
    #[arg(long, default_value_t = 50)]
    registrations: usize,
    /// Schemas registered for the memory phase.
    #[arg(long, default_value_t = 10_000)]
    schemas: usize,
}

pub(crate) fn run(options: Options) -> anyhow::Result<()> {
    for phase in &options.phases {
        match phase.as_str() {
            "lookup" => lookup(&options)?,
            "register" => register(&options)?,
            "memory" => memory(&options)?,
            other => anyhow::bail!("unknown phase '{other}': use lookup, register, memory"),
        }
    }
    Ok(())
}

/// A realistic event schema with `extra` marking the version.
fn order_schema(extra: usize, fields: usize) -> String {
    let mut list: Vec<String> = (0..fields)
        .map(|i| format!(r#"{{"name":"field_{i}","type":["null","string"],"default":null}}"#))
        .collect();
    list.push(format!(
        r#"{{"name":"extra_{extra}","type":"long","default":0}}"#
    ));
    format!(
        r#"{{"type":"record","name":"OrderCreated","namespace":"shop.v1","fields":[{}]}}"#,
        list.join(",")
    )
}

/// Runs the server `serve` makes on its own one-thread runtime in its own OS thread; `serve`
/// sends its bound address on the sender it is given.
fn on_own_thread<F>(
    serve: impl FnOnce(std::sync::mpsc::Sender<SocketAddr>) -> F + Send + 'static,
) -> anyhow::Result<SocketAddr>
where
    F: std::future::Future<Output = ()>,
{
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(serve(sender));
    });
    Ok(receiver.recv_timeout(Duration::from_secs(10))?)
}

/// Runs `router` with `axum::serve` (the baseline's server).
fn spawn_server(router: Router) -> anyhow::Result<SocketAddr> {
    on_own_thread(|sender| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        sender
            .send(listener.local_addr().expect("addr"))
            .expect("send");
        let app =
            tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash().layer(router);
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .await
        .expect("serve");
    })
}

/// Runs the registry as `herald registry serve` does (`herald_registry::serve`: its bounded
/// connection loop, limits and middleware) over `data_dir`.
fn spawn_registry(data_dir: PathBuf) -> anyhow::Result<SocketAddr> {
    on_own_thread(|sender| async move {
        let config = herald_registry::ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir,
            auth: herald_registry::AuthSource::Open,
            tls: None,
        };
        herald_registry::serve(
            config,
            move |addr| {
                let _ = sender.send(addr);
            },
            std::future::pending(),
        )
        .await
        .expect("serve");
    })
}

struct LoadResult {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Closed-loop load: `connections` tasks each issuing GETs back to back for `seconds`.
fn load(
    url: &str,
    connections: usize,
    seconds: u64,
    expected_len: usize,
) -> anyhow::Result<LoadResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let client = client.clone();
            let url = url.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let body = client.get(&url).send().await?.bytes().await?;
                    anyhow::ensure!(
                        body.len() == expected_len,
                        "unexpected body of {} bytes",
                        body.len()
                    );
                    latencies.push(sent.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        Ok(LoadResult {
            requests: latencies.len() as u64,
            elapsed,
            latencies,
        })
    })
}

fn lookup(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let herald = spawn_registry(dir.path().to_owned())?;
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let schema = order_schema(0, 12);
    let id = client_runtime.block_on(async {
        RegistryClient::new(format!("http://{herald}"))?
            .register("orders-value", &NewSchema::avro(&schema))
            .await
    })?;
    let herald_url = format!("http://{herald}/schemas/ids/{id}");
    let body = client_runtime.block_on(async { reqwest::get(&herald_url).await?.bytes().await })?;
    let constant = body.clone();
    let baseline = spawn_server(Router::new().route(
        "/schemas/ids/{id}",
        get(move || {
            let constant = constant.clone();
            async move {
                (
                    [("content-type", "application/vnd.schemaregistry.v1+json")],
                    constant,
                )
            }
        }),
    ))?;
    let baseline_url = format!("http://{baseline}/schemas/ids/{id}");
    println!(
        "# lookup: GET /schemas/ids/{{id}}, body {} bytes, {} connections, {} s per side",
        body.len(),
        options.connections,
        options.seconds
    );
    let mut throughputs = Vec::new();
    for (name, url) in [("baseline", &baseline_url), ("herald", &herald_url)] {
        let result = load(url, options.connections, options.seconds, body.len())?;
        let per_second = result.requests as f64 / result.elapsed.as_secs_f64();
        throughputs.push(per_second);
        println!(
            "phase=lookup side={name} requests={} requests_per_s={per_second:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
            result.requests,
            percentile(&result.latencies, 0.50),
            percentile(&result.latencies, 0.99),
            percentile(&result.latencies, 0.999)
        );
    }
    println!(
        "phase=lookup herald_vs_baseline={:.2}",
        throughputs[1] / throughputs[0]
    );
    Ok(())
}

fn register(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = Arc::new(Registry::open(Store::open(dir.path())?)?);
    let addr = spawn_server(app(registry, None))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = RegistryClient::new(format!("http://{addr}"))?;
        // Fill quickly under NONE, then measure under FULL_TRANSITIVE.
        client.set_compatibility_level(Some("orders-value"), "NONE").await?;
        let fill_started = Instant::now();
        for version in 0..options.versions {
            client.register("orders-value", &NewSchema::avro(order_schema(version, 12))).await?;
        }
        let fill = fill_started.elapsed();
        client.set_compatibility_level(Some("orders-value"), "FULL_TRANSITIVE").await?;
        let mut timings = Vec::new();
        for n in 0..options.registrations {
            let schema = order_schema(options.versions + n, 12);
            let started = Instant::now();
            client.register("orders-value", &NewSchema::avro(schema)).await?;
            timings.push(started.elapsed());
        }
        timings.sort_unstable();
        println!(
            "phase=register level=FULL_TRANSITIVE existing_versions={}..{} registrations={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} (fill under NONE: {:.2} ms per registration)",
            options.versions,
            options.versions + options.registrations,
            timings.len(),
            percentile(&timings, 0.5),
            percentile(&timings, 0.99),
            percentile(&timings, 1.0),
            fill.as_secs_f64() * 1000.0 / options.versions.max(1) as f64
        );
        Ok(())
    })
}

fn herald_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join("herald");
    anyhow::ensure!(
        path.exists(),
        "{} not found: cargo build --release -p herald-cli first",
        path.display()
    );
    Ok(path)
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

fn memory(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(herald_binary()?)
        .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let url = line
        .trim()
        .strip_prefix("herald registry listening on ")
        .context("no address line")?
        .to_owned();
    let pid = child.id();
    let before = resident_kib(pid)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let client = RegistryClient::new(url)?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        let per_task = options.schemas.div_ceil(8);
        for task in 0..8 {
            let client = client.clone();
            let count = per_task.min(options.schemas.saturating_sub(task * per_task));
            tasks.push(tokio::spawn(async move {
                for n in 0..count {
                    let index = task * per_task + n;
                    client
                        .register(
                            &format!("topic-{index}-value"),
                            &NewSchema::avro(order_schema(index, 20)),
                        )
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        // Touch every schema by ID once, as deserializers would.
        for id in 1..=options.schemas as u32 {
            client.schema_by_id(id).await?;
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    });
    let after = resident_kib(pid)?;
    let _ = child.kill();
    let _ = child.wait();
    let elapsed = result?;
    println!(
        "phase=memory schemas={} rss_before_mb={:.1} rss_after_mb={:.1} (registered and read back in {:.1} s)",
        options.schemas,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        elapsed.as_secs_f64()
    );
    Ok(())
}

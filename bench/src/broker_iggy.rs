//! The same produce and consume workload against Apache Iggy, with Iggy's own tools: an
//! `iggy-server`, `iggy-bench pinned-producer` and then `pinned-consumer` (reading what the
//! producers wrote), built from Iggy's public repository (`--iggy-dir DIR`, the
//! checkout with `target/release/`; bench/README.md says how to build it). Each of Iggy's
//! pinned producers waits for every acknowledgement, so Herald's window of W requests in
//! flight is W producers on W streams there. Transports: TCP with TLS and nodelay (the same
//! encryption as Herald's QUIC), and QUIC; with `--durability fsync` the topic fsyncs every
//! write (`--enforce-fsync`), over plain TCP too (the third column). The server runs
//! on loopback ports chosen here, with a data directory of its own that is removed after.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::broker::{free_port, BenchProcess};

/// How long the server may take to listen.
const SERVER_START_MAX: Duration = Duration::from_secs(60);
/// The root user the server is started with and the bench logs in as.
const ROOT_USER: &str = "iggy";
const ROOT_PASSWORD: &str = "iggy";

/// What the Iggy side needs of the options.
pub(crate) struct Workload {
    pub(crate) records: usize,
    pub(crate) record_bytes: usize,
    pub(crate) batch_records: usize,
    pub(crate) window: usize,
    pub(crate) fsync: bool,
}

/// One transport the workload runs over.
struct Transport {
    label: &'static str,
    /// Whether the server's TCP listener speaks TLS (a plain client cannot talk to it).
    tcp_tls: bool,
    /// `iggy-bench`'s transport argument; it connects to the server's listener of that kind.
    kind: &'static str,
    /// Arguments after the server address.
    extra: &'static [&'static str],
}

const TRANSPORTS: [Transport; 3] = [
    Transport {
        label: "tcp-tls",
        tcp_tls: true,
        kind: "tcp",
        extra: &["--nodelay", "--tls"],
    },
    Transport {
        label: "quic",
        tcp_tls: true,
        kind: "quic",
        extra: &[],
    },
    Transport {
        label: "tcp",
        tcp_tls: false,
        kind: "tcp",
        extra: &["--nodelay"],
    },
];

impl Transport {
    /// `iggy-bench` arguments after the benchmark kind.
    fn args(&self, tcp: &str, quic: &str) -> Vec<String> {
        let address = if self.kind == "quic" { quic } else { tcp };
        [self.kind, "--server-address", address]
            .iter()
            .chain(self.extra)
            .map(|arg| (*arg).to_owned())
            .collect()
    }
}

fn binary(iggy_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = iggy_dir.join("target/release").join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build Iggy first (bench/README.md, 'Apache Iggy as a peer')",
        path.display()
    );
    Ok(path)
}

/// Starts `iggy-server` with TCP (with TLS and a generated certificate when `tcp_tls`) and
/// QUIC on loopback ports.
fn start_server(
    iggy_dir: &Path,
    tcp: &str,
    quic: &str,
    tcp_tls: bool,
) -> anyhow::Result<BenchProcess> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    let log = std::fs::File::create(dir.path().join("server.log"))?;
    let child = Command::new(binary(iggy_dir, "iggy-server")?)
        .current_dir(iggy_dir)
        .env("IGGY_CONFIG_PATH", iggy_dir.join("core/server/config.toml"))
        .env("IGGY_ROOT_USERNAME", ROOT_USER)
        .env("IGGY_ROOT_PASSWORD", ROOT_PASSWORD)
        .env("IGGY_SYSTEM_PATH", &data)
        .env("IGGY_HTTP_ENABLED", "false")
        .env("IGGY_TCP_ADDRESS", tcp)
        .env("IGGY_TCP_TLS_ENABLED", tcp_tls.to_string())
        .env("IGGY_TCP_TLS_SELF_SIGNED", "true")
        .env("IGGY_TCP_TLS_CERT_FILE", certs.join("cert.pem"))
        .env("IGGY_TCP_TLS_KEY_FILE", certs.join("key.pem"))
        .env("IGGY_QUIC_ENABLED", "true")
        .env("IGGY_QUIC_ADDRESS", quic)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting iggy-server")?;
    let mut server = BenchProcess::new(child, dir);
    let started = Instant::now();
    while std::net::TcpStream::connect(tcp).is_err() {
        if let Some(status) = server.child.try_wait()? {
            let log = std::fs::read_to_string(server.dir().join("server.log")).unwrap_or_default();
            anyhow::bail!("iggy-server exited ({status}):\n{log}");
        }
        anyhow::ensure!(
            started.elapsed() < SERVER_START_MAX,
            "iggy-server did not listen on {tcp} within {SERVER_START_MAX:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

/// Runs the workload over every transport (plain TCP only with fsync, as the issue's
/// comparison has it) and prints a produce and a consume result line per transport.
pub(crate) fn run(workload: &Workload, iggy_dir: &Path) -> anyhow::Result<()> {
    let bench = binary(iggy_dir, "iggy-bench")?;
    let batches = workload
        .records
        .div_ceil(workload.batch_records * workload.window);
    println!(
        "# iggy: {} batches of {} records of {} bytes per producer, {} pinned producer(s) on as many streams, fsync {}",
        batches, workload.batch_records, workload.record_bytes, workload.window, workload.fsync
    );
    for transport in &TRANSPORTS {
        if transport.label == "tcp" && !workload.fsync {
            continue;
        }
        // A fresh server per transport: every run starts from empty streams.
        let tcp = format!("127.0.0.1:{}", free_port()?);
        let quic = format!("127.0.0.1:{}", free_port()?);
        let _server = start_server(iggy_dir, &tcp, &quic, transport.tcp_tls)?;
        let label = format!(
            "{}{}",
            transport.label,
            if workload.fsync { "-fsync" } else { "" }
        );
        let records = batches * workload.batch_records * workload.window;
        // The producers fill the streams the consumers then read.
        for (kind, actors, summary, phase) in [
            (
                "pinned-producer",
                "--producers",
                "Producers Results:",
                "produce",
            ),
            (
                "pinned-consumer",
                "--consumers",
                "Consumers Results:",
                "consume",
            ),
        ] {
            let mut command = Command::new(&bench);
            command
                .env("NO_COLOR", "1")
                .args(["--username", ROOT_USER, "--password", ROOT_PASSWORD])
                .args(["--message-size", &workload.record_bytes.to_string()])
                .args(["--messages-per-batch", &workload.batch_records.to_string()])
                .args(["--message-batches", &batches.to_string()]);
            if workload.fsync {
                command.arg("--enforce-fsync");
            }
            let window = workload.window.to_string();
            command
                .args([kind, "--streams", &window, actors, &window])
                .args(transport.args(&tcp, &quic))
                .stdin(Stdio::null());
            let output = command.output().context("running iggy-bench")?;
            let text = strip_ansi(&format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
            anyhow::ensure!(
                output.status.success(),
                "iggy-bench {kind} over {} failed ({}):\n{text}",
                transport.label,
                output.status
            );
            let results = parse_results(&text, summary).with_context(|| {
                format!(
                    "no '{summary}' line from iggy-bench {kind} over {}:\n{text}",
                    transport.label
                )
            })?;
            println!(
                "system=iggy-{label} phase={phase} records={records} records_per_s={:.0} mb_per_s={:.1} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
                results.records_per_s,
                results.mb_per_s,
                results.p50_ms,
                results.p99_ms,
                results.p999_ms
            );
        }
    }
    Ok(())
}

/// Iggy's summary figures.
#[derive(Debug, PartialEq)]
struct Results {
    mb_per_s: f64,
    records_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

/// Reads `<summary> Total throughput: X MB/s, Y messages/s, … p50 latency: A ms, … p99
/// latency: B ms, p999 latency: C ms, …` (`summary` is `Producers Results:` or `Consumers
/// Results:`) from iggy-bench's output.
fn parse_results(text: &str, summary: &str) -> Option<Results> {
    let line = text.lines().find(|l| l.contains(summary))?;
    let number_before = |suffix: &str| -> Option<f64> {
        let end = line.find(suffix)?;
        let start = line[..end].rfind([' ', ':'])? + 1;
        line[start..end].trim().parse().ok()
    };
    let number_after = |label: &str| -> Option<f64> {
        let start = line.find(label)? + label.len();
        let rest = line[start..].trim_start();
        let end = rest.find(' ')?;
        rest[..end].parse().ok()
    };
    Some(Results {
        mb_per_s: number_before(" MB/s")?,
        records_per_s: number_before(" messages/s")?,
        p50_ms: number_after("p50 latency:")?,
        p99_ms: number_after("p99 latency:")?,
        p999_ms: number_after("p999 latency:")?,
    })
}

/// `text` without ANSI escape sequences (colour codes).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_connects_to_its_listener_with_its_flags() {
        let args = |label: &str| {
            TRANSPORTS
                .iter()
                .find(|t| t.label == label)
                .expect("transport")
                .args("127.0.0.1:1", "127.0.0.1:2")
        };
        assert_eq!(
            args("tcp-tls"),
            [
                "tcp",
                "--server-address",
                "127.0.0.1:1",
                "--nodelay",
                "--tls"
            ]
        );
        assert_eq!(args("quic"), ["quic", "--server-address", "127.0.0.1:2"]);
        assert_eq!(
            args("tcp"),
            ["tcp", "--server-address", "127.0.0.1:1", "--nodelay"]
        );
    }

    #[test]
    fn iggy_bench_summaries_are_read() {
        let line = "\u{1b}[32mProducers Results: Total throughput: 265.19 MB/s, 2651900 messages/s, average throughput per Producer: 265.19 MB/s, p50 latency: 0.36 ms, p90 latency: 0.40 ms, p95 latency: 0.42 ms, p99 latency: 0.51 ms, p999 latency: 0.90 ms, p9999 latency: 1.20 ms, average latency: 0.37 ms, median latency: 0.36 ms, min: 0.20 ms, max: 3.10 ms, std dev: 0.05 ms, total time: 7.54 s\u{1b}[0m";
        let text = format!("some log\n{line}\n");
        assert_eq!(
            parse_results(&strip_ansi(&text), "Producers Results:"),
            Some(Results {
                mb_per_s: 265.19,
                records_per_s: 2_651_900.0,
                p50_ms: 0.36,
                p99_ms: 0.51,
                p999_ms: 0.90,
            })
        );
        assert_eq!(
            parse_results(&strip_ansi(&text), "Consumers Results:"),
            None
        );
        assert_eq!(parse_results("nothing here", "Producers Results:"), None);
    }
}

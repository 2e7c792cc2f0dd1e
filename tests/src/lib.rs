//! Helpers for Herald's cross-crate integration tests: spawn the real `herald` binary on port
//! 0, find the address it bound, kill it with SIGKILL, restart it on the same data directory.
//! (Network faults: `herald-netfault`.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a started server may take to print its address.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What `herald broker serve` prints before its address.
const BROKER_ANNOUNCE: &str = "herald broker listening on quic://";

/// The directory holding the test executables' sibling binaries (`target/<profile>`).
pub fn target_profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("no current exe")?;
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("test binary is not under target/<profile>/deps")
}

/// The `herald` binary built by this `cargo test` run.
pub fn herald_binary() -> anyhow::Result<PathBuf> {
    let path = target_profile_dir()?.join(format!("herald{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!(
            "{} does not exist: run the tests with `cargo test --workspace`",
            path.display()
        );
    }
    Ok(path)
}

/// A running `herald` process, started with some arguments, whose first stdout line with a
/// given prefix was read.
pub struct HeraldProcess {
    child: Child,
    /// The rest of the announced line after the prefix.
    pub announced: String,
}

impl HeraldProcess {
    pub fn start(
        args: &[&str],
        data_dir: &Path,
        announce_prefix: &'static str,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(herald_binary()?);
        command
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stderr(Stdio::inherit());
        Self::spawn(command, announce_prefix)
    }

    /// Like [`HeraldProcess::start`], through `sh -c '<shell_prefix> exec herald …'`: the shell
    /// runs `shell_prefix` (say `ulimit -n 256;`), then becomes herald, so what the prefix sets
    /// holds from herald's first instruction. Herald's stderr is echoed to the test's output
    /// and, should herald not start, quoted in the error with its exit status.
    #[cfg(unix)]
    pub fn start_in_shell(
        shell_prefix: &str,
        args: &[&str],
        data_dir: &Path,
        announce_prefix: &'static str,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{shell_prefix} exec \"$0\" \"$@\""))
            .arg(herald_binary()?)
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .stderr(Stdio::piped());
        Self::spawn(command, announce_prefix)
    }

    /// Spawns `command` (herald, or a shell that becomes herald) and waits for the first line
    /// of its stdout that starts with `announce_prefix`. A piped stderr is echoed to the test's
    /// output and kept for the error should that line not come.
    fn spawn(mut command: Command, announce_prefix: &'static str) -> anyhow::Result<Self> {
        command
            .env("RUST_LOG", "warn,openraft=error")
            .stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot spawn {:?}", command.get_program()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let errors = Arc::new(Mutex::new(String::new()));
        let stderr_kept = child.stderr.is_some();
        if let Some(stderr) = child.stderr.take() {
            let kept = errors.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if let Ok(mut kept) = kept.lock() {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
            });
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(announce_prefix) {
                    let _ = sender.send(rest.trim().to_owned());
                }
            }
        });
        let started = Instant::now();
        // Disconnected (stdout closed) as soon as a herald that failed to start exits.
        let Ok(announced) = receiver.recv_timeout(STARTUP_TIMEOUT) else {
            let _ = child.kill();
            if !stderr_kept {
                bail!(
                    "herald did not announce itself within {:?}",
                    started.elapsed()
                );
            }
            let status = child.wait().context("wait")?;
            // Let the stderr thread take the last lines.
            std::thread::sleep(Duration::from_millis(100));
            let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
            bail!(
                "herald did not announce itself within {:?} ({status}): {errors}",
                started.elapsed()
            );
        };
        Ok(Self { child, announced })
    }

    /// SIGKILL: no shutdown hook runs, like a power cut for the process.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill")?;
        self.child.wait().context("wait")?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    #[cfg(unix)]
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("herald did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `herald registry serve` process.
pub struct RegistryProcess {
    process: HeraldProcess,
    pub url: String,
}

impl RegistryProcess {
    /// Starts a registry on `127.0.0.1:0` over `data_dir` and waits for its address.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// [`RegistryProcess::start`] with more arguments (`--users FILE`, ...).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["registry", "serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let process = HeraldProcess::start(&args, data_dir, "herald registry listening on ")?;
        let url = process.announced.clone();
        Ok(Self { process, url })
    }

    pub fn kill(self) -> anyhow::Result<()> {
        self.process.kill()
    }

    #[cfg(unix)]
    pub fn terminate(self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.terminate()
    }
}

/// A running `herald broker serve` process.
pub struct BrokerProcess {
    process: HeraldProcess,
    pub addr: std::net::SocketAddr,
    pub fingerprint: String,
    /// The admin credential the broker generated into its data directory on first start
    /// (authentication is on by default); `None` with `--insecure-no-auth`.
    pub credentials: herald_broker_client::Credentials,
}

impl BrokerProcess {
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// Starts on a fixed address (to restart a broker where its clients expect it).
    pub fn start_on(data_dir: &Path, listen: std::net::SocketAddr) -> anyhow::Result<Self> {
        let listen = listen.to_string();
        let process = HeraldProcess::start(
            &["broker", "serve", "--listen", &listen],
            data_dir,
            BROKER_ANNOUNCE,
        )?;
        Self::from_process(process, data_dir)
    }

    /// Starts with extra arguments (e.g. `--config FILE`).
    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_on_with(data_dir, "127.0.0.1:0".parse()?, extra_args)
    }

    /// Starts on a fixed address with extra arguments (a cluster node restarted where its
    /// peers and clients expect it).
    pub fn start_on_with(
        data_dir: &Path,
        listen: std::net::SocketAddr,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let listen = listen.to_string();
        let mut args = vec!["broker", "serve", "--listen", &listen];
        args.extend_from_slice(extra_args);
        let process = HeraldProcess::start(&args, data_dir, BROKER_ANNOUNCE)?;
        Self::from_process(process, data_dir)
    }

    /// Starts on `127.0.0.1:0` through `sh -c '<shell_prefix> exec herald …'` (see
    /// [`HeraldProcess::start_in_shell`]), e.g. under `ulimit -n 256;`.
    #[cfg(unix)]
    pub fn start_in_shell(data_dir: &Path, shell_prefix: &str) -> anyhow::Result<Self> {
        let process = HeraldProcess::start_in_shell(
            shell_prefix,
            &["broker", "serve", "--listen", "127.0.0.1:0"],
            data_dir,
            BROKER_ANNOUNCE,
        )?;
        Self::from_process(process, data_dir)
    }

    /// The broker's process id (for `/proc/<pid>/…`).
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// A client connected to this broker as its admin (or unauthenticated with
    /// `--insecure-no-auth`).
    pub async fn client(&self) -> anyhow::Result<herald_broker_client::BrokerClient> {
        Ok(herald_broker_client::BrokerClient::connect_with(
            self.addr,
            self.trust(),
            &self.credentials,
        )
        .await?)
    }

    /// Trust in this broker's certificate.
    pub fn trust(&self) -> herald_broker_client::Trust {
        herald_broker_client::Trust::Fingerprint(self.fingerprint.clone())
    }

    /// An SDK configuration for this broker as its admin, with `registry_url`.
    pub fn client_config(&self, registry_url: impl Into<String>) -> herald::ClientConfig {
        herald::ClientConfig::new(self.addr, self.trust(), registry_url)
            .with_credentials(self.credentials.clone())
    }

    fn from_process(process: HeraldProcess, data_dir: &Path) -> anyhow::Result<Self> {
        // "<addr> fingerprint=<hex> certificate=<path>"
        let mut words = process.announced.split_whitespace();
        let addr = words
            .next()
            .context("no address")?
            .parse()
            .context("bad address")?;
        let fingerprint = words
            .next()
            .and_then(|w| w.strip_prefix("fingerprint="))
            .context("no fingerprint")?
            .to_owned();
        let file = data_dir.join(herald_auth::local::LOCAL_CREDENTIALS_FILE);
        let credentials = if file.exists() {
            herald_broker_client::Credentials::from_local_file(&file)?
        } else {
            herald_broker_client::Credentials::None
        };
        Ok(Self {
            process,
            addr,
            fingerprint,
            credentials,
        })
    }

    pub fn kill(self) -> anyhow::Result<()> {
        self.process.kill()
    }

    /// The broker's exit status if it has exited (it never does on its own unless it must
    /// stop: a node the cluster refused).
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.process.child.try_wait()
    }
}

/// A batch of one record whose value is `value` (producers' timestamp 1, no key).
pub fn one_record(value: impl Into<Vec<u8>>) -> anyhow::Result<Vec<u8>> {
    let mut builder = herald_wire::batch::BatchBuilder::new();
    builder.push(herald_wire::batch::Record {
        timestamp_ms: 1,
        key: None,
        value: Some(value.into()),
        headers: Vec::new(),
    });
    Ok(builder.encode()?)
}

/// A batch of one record whose value is `tag` padded with dots to `bytes`.
pub fn padded_record(tag: &str, bytes: usize) -> anyhow::Result<Vec<u8>> {
    let mut value = tag.as_bytes().to_vec();
    value.resize(bytes.max(value.len()), b'.');
    one_record(value)
}

/// Runs `command` with `input` on its standard input (closed after it): its output.
pub fn run_with_input(command: &mut Command, input: &str) -> anyhow::Result<std::process::Output> {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// The pinned Confluent Python client the interop tests drive.
pub const CONFLUENT_CLIENT_REQUIREMENT: &str =
    "confluent-kafka[avro,protobuf,schemaregistry]==2.16.0";

/// A Python with Confluent's client installed, in `target/interop-venv` (created on first use;
/// `.ci/run` does it up front). Needs `python3` with `venv` and access to PyPI.
pub fn interop_python() -> anyhow::Result<PathBuf> {
    let venv = target_profile_dir()?
        .parent()
        .context("target dir")?
        .join("interop-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("herald-installed");
    if !marker.exists() {
        run_checked(
            std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv),
        )?;
        run_checked(std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            CONFLUENT_CLIENT_REQUIREMENT,
        ]))?;
        std::fs::write(&marker, CONFLUENT_CLIENT_REQUIREMENT)?;
    }
    Ok(python)
}

fn run_checked(command: &mut std::process::Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} failed with {status}");
    Ok(())
}

/// A registry and a broker process over `dir`, and an SDK client connected to both.
pub struct Servers {
    pub registry: RegistryProcess,
    pub broker: BrokerProcess,
    pub client: herald::Client,
}

/// Starts [`Servers`] (the broker without schema validation unless `broker_args` asks).
pub async fn servers(dir: &Path, broker_args: &[&str]) -> anyhow::Result<Servers> {
    let registry = RegistryProcess::start(&dir.join("registry"))?;
    let mut args: Vec<String> = broker_args.iter().map(|a| (*a).to_owned()).collect();
    if args.iter().any(|a| a == "--registry") {
        args.push(registry.url.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start_with(&dir.join("broker"), &args)?;
    let client = herald::Client::connect(broker.client_config(registry.url.clone())).await?;
    Ok(Servers {
        registry,
        broker,
        client,
    })
}

/// Creates `topic` with `partitions`, its values' schema IDs checked against the registry
/// (the broker must run with `--registry`).
pub async fn create_validating_topic(
    client: &herald::Client,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    use herald_wire::messages::{SchemaValidation, TopicConfig};
    let config = TopicConfig {
        partitions,
        validation: SchemaValidation {
            value: true,
            ..SchemaValidation::default()
        },
        ..TopicConfig::default()
    };
    Ok(client.broker().create_topic(topic, config).await?)
}

/// Events a handler made by [`collector`] gathered.
pub type Seen<T> = std::sync::Arc<std::sync::Mutex<Vec<herald::Event<T>>>>;

/// A handler that keeps every event it is given in `seen`.
pub fn collector<T: Send + 'static>(
    seen: Seen<T>,
) -> impl Fn(herald::Event<T>) -> std::future::Ready<Result<(), herald::HandlerError>> {
    move |event| {
        let pushed = seen
            .lock()
            .map(|mut s| s.push(event))
            .map_err(|_| herald::HandlerError::Fatal("lock".into()));
        std::future::ready(pushed)
    }
}

/// How long [`drain`] keeps consuming after the expected count arrived, so that a copy
/// delivered after it (a duplicate) is among the events returned.
pub const DRAIN_SETTLE: Duration = Duration::from_millis(250);

/// Runs `consume(seen, stop)` (a consumer's `run` with [`collector`]) until `expected` events
/// were handled (and [`DRAIN_SETTLE`] more passed) or 30 s passed; returns every event handled
/// with the run's summary. Reaching the count proves nothing about which records arrived:
/// callers check the delivered IDs, e.g. with [`assert_each_once`].
pub async fn drain<T: Send + 'static>(
    expected: usize,
    consume: impl AsyncFnOnce(
        Seen<T>,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> anyhow::Result<herald::consumer::RunSummary>,
) -> anyhow::Result<(Vec<herald::Event<T>>, herald::consumer::RunSummary)> {
    let seen: Seen<T> = std::sync::Arc::default();
    let watch = seen.clone();
    let stop = Box::pin(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while watch.lock().map_or(0, |s| s.len()) < expected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(DRAIN_SETTLE).await;
    });
    let summary = consume(seen.clone(), stop).await?;
    let events = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("lock"))?);
    Ok((events, summary))
}

/// Asserts that the delivered IDs are exactly `expected`, each delivered once: a missing ID,
/// an unexpected one, or an ID delivered twice (say a duplicate standing in for a lost record,
/// which a count check lets pass) fails, naming them.
pub fn assert_each_once<I: Ord + std::fmt::Debug>(
    delivered: impl IntoIterator<Item = I>,
    expected: impl IntoIterator<Item = I>,
    what: &str,
) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut counts: BTreeMap<I, usize> = BTreeMap::new();
    for id in delivered {
        *counts.entry(id).or_default() += 1;
    }
    let expected: BTreeSet<I> = expected.into_iter().collect();
    let missing: Vec<&I> = expected
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let unexpected: Vec<&I> = counts.keys().filter(|id| !expected.contains(*id)).collect();
    let repeated: Vec<(&I, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty() && repeated.is_empty(),
        "{what}: missing {missing:?}, unexpected {unexpected:?}, delivered more than once \
         (id, times) {repeated:?}"
    );
}

/// A tmpfs mounted for a test (a small disk to fill), unmounted on drop. Mounting needs root:
/// `None` where `mount` is refused.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, bytes: u64) -> Option<Self> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

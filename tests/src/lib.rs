//! Helpers for Herald's cross-crate integration tests: spawn the real `herald` binary on port
//! 0, find the address it bound, kill it with SIGKILL, restart it on the same data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a started server may take to print its address.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A running `herald registry serve` process.
pub struct RegistryProcess {
    child: Child,
    pub url: String,
}

impl RegistryProcess {
    /// Starts a registry on `127.0.0.1:0` over `data_dir` and waits for its address.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(herald_binary()?)
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot spawn herald")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("herald registry listening on ") {
                    let _ = sender.send(url.trim().to_owned());
                }
            }
        });
        let started = Instant::now();
        match receiver.recv_timeout(STARTUP_TIMEOUT) {
            Ok(url) => Ok(Self { child, url }),
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "herald did not report its address within {:?}",
                    started.elapsed()
                )
            }
        }
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

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

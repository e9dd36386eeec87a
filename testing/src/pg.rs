//! A private PostgreSQL cluster for the fault tests that stop, restart or reconfigure the
//! server: initdb into a temporary directory, a free port, torn down when dropped. The
//! machine's shared cluster is never touched. As root it runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::nats::free_port;

pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The server binaries of the newest installed PostgreSQL (`PG_BIN` overrides).
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries (initdb, pg_ctl) are required for the fault tests: apt-get install postgresql",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivateCluster {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("kl-pg-").tempdir().unwrap();
        let cluster = Self {
            bin: bin_dir(),
            port: free_port(),
            dir,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the private cluster's directory");
        }
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let path = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(self.dir.path()).output().unwrap()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server the way an operator's restart does (fast: clients are disconnected).
    pub fn stop_server(&self) {
        let out = self.run(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The admin URL (database `postgres`), for [`super::TestDb::postgres_at`].
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL as the superuser; panics with psql's message on failure.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{}/{database}", self.port);
        let out = Command::new(self.bin.join("psql"))
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-Atc", sql])
            // The test's own session writes even when it has made the server read-only.
            .env("PGOPTIONS", "-c default_transaction_read_only=off")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Waits until the server answers a query (after a restart).
    pub fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            let out = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap();
            if out.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the private PostgreSQL did not come back within {limit:?}");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"],
        );
    }
}

//! benches

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

pub mod graphbench;
pub mod pgpeer;
pub mod synbench;

/// White noise, the incompressible extra row beside the EM-like volume of
/// `neurocube_service::demo` (never the only row: EM compresses).
#[must_use]
pub fn white_noise(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// What a bench reads about a server process from `/proc`.
pub mod proc {
    use std::time::{Duration, Instant};

    /// The process's peak resident memory (VmHWM), MiB.
    pub fn peak_rss_mib(pid: u32) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: f64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();
        kib / 1024.0
    }

    /// CPU seconds the process has used (user + system).
    pub fn cpu_secs(pid: u32) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Waits (at most 300 s) until the server has used under 5% of a core for
    /// two seconds running: queries are measured once the engine's background
    /// compaction of the upload and the version is done, as a user querying a
    /// version meets it. On Cassandra the node's own compaction is not waited
    /// for.
    pub async fn settle(label: &str, pid: u32) {
        let started = Instant::now();
        let mut last = cpu_secs(pid);
        let mut quiet = 0;
        while quiet < 2 && started.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = cpu_secs(pid);
            quiet = if now - last < 0.05 { quiet + 1 } else { 0 };
            last = now;
        }
        eprintln!(
            "[{label}] waited {:.1} s for the server to go idle (background compaction)",
            started.elapsed().as_secs_f64()
        );
    }
}

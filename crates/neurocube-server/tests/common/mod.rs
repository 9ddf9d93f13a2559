//! Helpers of the binary-level tests: run the real `neurocube` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neurocube_core::Box3;

pub const BIN: &str = env!("CARGO_BIN_EXE_neurocube");

/// A `neurocube serve` process on a free port; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `neurocube serve` on `dir` with extra `NEUROCUBE__...` settings.
pub fn serve(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--port", "0", "--data-dir"])
        .arg(dir)
        .env("NEUROCUBE__STORE__DURABILITY", "flush")
        .env("NEUROCUBE__SERVER__WORKERS", "2")
        .env("NEUROCUBE__LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start neurocube serve");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("neurocube listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, url }
}

/// Poll `f` until it returns Some, at most `secs` seconds.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Dense values of one level over box `b`, x fastest.
pub struct Vol {
    pub b: Box3,
    pub v: Vec<u64>,
}

impl Vol {
    pub fn at(&self, p: [u64; 3]) -> u64 {
        let s = self.b.shape();
        let r = [
            p[0] - self.b.start[0],
            p[1] - self.b.start[1],
            p[2] - self.b.start[2],
        ];
        self.v[((r[2] * s[1] + r[1]) * s[0] + r[0]) as usize]
    }
}

/// The next coarser level, computed the textbook way: the rounded mean of
/// the existing finer voxels of each block.
pub fn reference_next(fine: &Vol, bounds: Box3, step: [u64; 3]) -> Vol {
    let mut v = Vec::new();
    for z in bounds.start[2]..bounds.end[2] {
        for y in bounds.start[1]..bounds.end[1] {
            for x in bounds.start[0]..bounds.end[0] {
                let (mut s, mut n) = (0, 0);
                for zz in z * step[2]..(z + 1) * step[2] {
                    for yy in y * step[1]..(y + 1) * step[1] {
                        for xx in x * step[0]..(x + 1) * step[0] {
                            let p = [xx, yy, zz];
                            if (0..3).all(|a| fine.b.start[a] <= p[a] && p[a] < fine.b.end[a]) {
                                s += fine.at(p);
                                n += 1;
                            }
                        }
                    }
                }
                v.push((s + n / 2) / n);
            }
        }
    }
    Vol { b: bounds, v }
}

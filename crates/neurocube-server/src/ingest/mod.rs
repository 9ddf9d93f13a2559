//! `neurocube ingest`: load a directory of 2-D slices (PNG, TIFF, JPEG; 8-
//! or 16-bit grayscale), a 3-D (multi-page) TIFF or an npy file into a
//! channel, into a local data directory or a running server (`--url`).
//!
//! Every source header is checked before anything is written: a slice that
//! cannot be read or differs from the first (size, bit depth) stops the
//! ingest with a message naming the file. The stack is written in slabs one
//! chunk deep, decoded in parallel while the previous slab is stored; each
//! slab is a task of an `ingest` job kept in the store, so a re-run skips
//! the finished slabs, and a job is done only when every slab is. Then the
//! coarser levels are computed by a `downsample` job.
//!
//! `neurocube jobs` lists, shows and cancels jobs of a running server.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use futures::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use neurocube_core::Box3;
use neurocube_core::{ChannelName, DatasetName};
use neurocube_service::jobs::{JobState, TaskSpec};
use neurocube_service::{ServiceConfig, Services};
use serde_json::{Value, json};

use crate::config::Settings;

/// Arguments of `neurocube ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// A directory of 2-D slices (sorted by name, numbers numerically: one
    /// per z), a 3-D TIFF, or a 3-D `.npy` array (z, y, x).
    pub source: PathBuf,
    /// Dataset to load into.
    #[arg(long, value_parser = DatasetName::parse)]
    pub dataset: DatasetName,
    /// Channel to load into.
    #[arg(long, value_parser = ChannelName::parse)]
    pub channel: ChannelName,
    /// A running server to send the data to, e.g. http://127.0.0.1:8080
    /// (otherwise the local data directory is opened).
    #[arg(long)]
    pub url: Option<String>,
    /// Token for a server in `auth.mode = "tokens"` (with --url).
    #[arg(long, env = "NEUROCUBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of the embedded store (local mode).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A settings file layered over config/default.toml (local mode).
    #[arg(long, env = "NEUROCUBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// z of the first slice in the dataset (default: the dataset's first z).
    #[arg(long)]
    pub z: Option<u64>,
    /// Create the dataset and channel if they do not exist, sized to the source.
    #[arg(long)]
    pub create: bool,
    /// With --create: voxel size in nm, x,y,z.
    #[arg(long, default_value = "4,4,40")]
    pub voxel_size: String,
    /// With --create: resolution levels (default: until x and y fit in one chunk).
    #[arg(long)]
    pub levels: Option<u8>,
    /// With --create: `image` or `segmentation`.
    #[arg(long, default_value = "image")]
    pub kind: String,
    /// Do not start downsampling afterwards.
    #[arg(long)]
    pub no_downsample: bool,
}

/// Arguments of `neurocube jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Token for a server in `auth.mode = "tokens"`.
    #[arg(long, env = "NEUROCUBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do (default: list).
    #[command(subcommand)]
    pub cmd: Option<JobsCmd>,
}

/// `neurocube jobs` subcommands.
#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// List jobs, newest first.
    List,
    /// Show one job (JSON).
    Show {
        /// Job id.
        id: String,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Start downsampling a channel.
    Downsample {
        /// Dataset.
        #[arg(value_parser = DatasetName::parse)]
        dataset: DatasetName,
        /// Channel.
        #[arg(value_parser = ChannelName::parse)]
        channel: ChannelName,
    },
}

mod jobs_cmd;
mod sink;
mod source;

pub use jobs_cmd::jobs;
use sink::Sink;
use source::open_source;

/// An HTTP client that sends `token`, if given, as `Authorization: Bearer`.
pub fn http_client(token: Option<&str>) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| "--token holds characters a header cannot carry".to_string())?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|e| e.to_string())
}

/// Run `neurocube ingest`.
pub async fn run(a: IngestArgs) -> Result<(), String> {
    let src = a.source.clone();
    let st = tokio::task::spawn_blocking(move || open_source(&src))
        .await
        .map_err(|e| e.to_string())??;
    let sink = match &a.url {
        Some(u) => Sink::Http {
            client: http_client(a.token.as_deref())?,
            base: u.trim_end_matches('/').to_string(),
        },
        None => {
            let mut s = Settings::load(a.config.as_deref()).map_err(|e| e.to_string())?;
            if let Some(d) = &a.data_dir {
                s.store.data_dir.clone_from(d);
            }
            let store = crate::app::open_store(&s.store)
                .await
                .map_err(|e| e.to_string())?;
            let config = ServiceConfig {
                volumes: neurocube_service::volume::VolumeLimits {
                    max_cutout_bytes: s.limits.max_cutout_bytes,
                    max_cas_attempts: s.limits.max_cas_attempts,
                },
                ..ServiceConfig::default()
            };
            Sink::Local(Arc::new(Services::new(&config, store)))
        }
    };
    let (d, c) = sink.ensure(&a, &st).await?;
    let bounds = d.level(0).bounds();
    let z0 = a.z.unwrap_or(bounds.start[2]);
    let target = Box3::with_shape([bounds.start[0], bounds.start[1], z0], st.shape)
        .map_err(|e| e.to_string())?;
    if !bounds.contains(&target) {
        return Err(format!(
            "{} is {}x{}x{} voxels; placed at z {z0} it spans {target}, outside dataset '{}' ({bounds})",
            a.source.display(),
            st.shape[0],
            st.shape[1],
            st.shape[2],
            d.name
        ));
    }
    // Slabs aligned to the chunk grid in z.
    let cz = c.chunk_size[2];
    let mut slabs = Vec::new();
    let mut z = target.start[2];
    while z < target.end[2] {
        let z1 = ((z / cz + 1) * cz).min(target.end[2]);
        slabs.push((z, z1));
        z = z1;
    }
    let sb = st.slice_bytes() as u64;
    let name = |z: u64| format!("z{z:010}");
    let tasks: Vec<TaskSpec> = slabs
        .iter()
        .map(|&(a0, a1)| TaskSpec {
            name: name(a0),
            units: (a1 - a0) * sb,
            spec: Value::Null,
        })
        .collect();
    let key = format!("ingest/{}/{}/{z0}/{:016x}", d.name, c.name, st.fingerprint);
    let params = json!({
        "dataset": d.name, "channel": c.name, "source": a.source.display().to_string(),
        "shape": st.shape, "dtype": st.dtype, "z": z0,
    });
    let (job, done) = sink.job(&key, params, tasks).await?;
    let todo: Vec<(u64, u64)> = slabs
        .iter()
        .copied()
        .filter(|s| !done.contains(&name(s.0)))
        .collect();
    let total_bytes = st.shape.iter().product::<u64>() * st.dtype.size() as u64;
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let skipped: u64 = slabs
        .iter()
        .filter(|s| done.contains(&name(s.0)))
        .map(|s| s.1 - s.0)
        .sum();
    bar.set_position(skipped * sb);
    bar.reset_eta();
    let mut slices = skipped;
    bar.set_message(format!("slices {slices}/{}", st.shape[2]));
    if skipped > 0 {
        eprintln!("resuming job {}: {skipped} slices already ingested", job.id);
    }
    let st = Arc::new(st);
    let decoded = stream::iter(todo.clone())
        .map(|(s0, s1)| {
            let st = st.clone();
            let off = target.start[2];
            async move {
                let r = tokio::task::spawn_blocking(move || st.read(s0 - off, s1 - off))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                ((s0, s1), r)
            }
        })
        .buffered(2);
    futures::pin_mut!(decoded);
    while let Some(((s0, s1), data)) = decoded.next().await {
        let result = async {
            let data = data?;
            let b = Box3::new(
                [target.start[0], target.start[1], s0],
                [target.end[0], target.end[1], s1],
            )
            .map_err(|e| e.to_string())?;
            sink.write(&a.dataset, &a.channel, b, data)
                .await
                .map_err(|e| {
                    format!(
                        "writing slices {} to {}: {e}",
                        st.name(s0 - target.start[2]),
                        st.name(s1 - 1 - target.start[2])
                    )
                })?;
            sink.task_done(&job.id, &name(s0)).await
        }
        .await;
        if let Err(e) = result {
            bar.abandon();
            sink.fail(&job.id, &e).await;
            return Err(format!(
                "ingest stopped (job {} is not done; re-run to resume): {e}",
                job.id
            ));
        }
        slices += s1 - s0;
        bar.set_message(format!("slices {slices}/{}", st.shape[2]));
        bar.inc((s1 - s0) * sb);
    }
    bar.finish();
    println!(
        "ingested {} slices of {}x{} {} into {}/{} (job {})",
        st.shape[2], st.shape[0], st.shape[1], st.dtype, d.name, c.name, job.id
    );
    if !a.no_downsample && d.levels > 1 {
        let r = sink.downsample(&a.dataset, &a.channel).await?;
        if r.state != JobState::Done {
            return Err(format!(
                "downsampling job {} ended {:?}: {:?}",
                r.id, r.state, r.errors
            ));
        }
        println!("downsampled {} levels (job {})", d.levels - 1, r.id);
    }
    Ok(())
}

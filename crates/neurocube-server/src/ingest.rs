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

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::{StreamExt, stream};
use image::ImageDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use neurocube_core::meta::{Channel, ChannelType, Compression, Dataset, Scaling, default_chunk};
use neurocube_core::{Box3, DType};
use neurocube_service::jobs::{JobRecord, JobState, TaskSpec};
use neurocube_service::{ServiceConfig, Services};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::config::Settings;

/// Arguments of `neurocube ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// A directory of 2-D slices (sorted by name, numbers numerically: one
    /// per z), a 3-D TIFF, or a 3-D `.npy` array (z, y, x).
    pub source: PathBuf,
    /// Dataset to load into.
    #[arg(long)]
    pub dataset: String,
    /// Channel to load into.
    #[arg(long)]
    pub channel: String,
    /// A running server to send the data to, e.g. http://127.0.0.1:8080
    /// (otherwise the local data directory is opened).
    #[arg(long)]
    pub url: Option<String>,
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
        dataset: String,
        /// Channel.
        channel: String,
    },
}

// ---------------------------------------------------------------- sources

/// What to read.
#[derive(Debug)]
enum Source {
    /// One file per z.
    Slices(Vec<PathBuf>),
    /// A multi-page TIFF.
    Tiff(PathBuf),
    /// An npy array; data starts at the offset.
    Npy(PathBuf, u64),
}

/// A checked source: its shape and voxel type.
#[derive(Debug)]
struct Stack {
    source: Source,
    /// `[x, y, z]`.
    shape: [u64; 3],
    dtype: DType,
    /// Fingerprint of the inputs (names, sizes), for resuming.
    fingerprint: u64,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Sort key: names with their digit runs compared as numbers.
fn natural_key(name: &str) -> Vec<(u8, u64, String)> {
    let mut out = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((1, 0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((
                    0,
                    digits.parse().unwrap_or(u64::MAX),
                    std::mem::take(&mut digits),
                ));
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        out.push((0, digits.parse().unwrap_or(u64::MAX), digits));
    }
    if !text.is_empty() {
        out.push((1, 0, text));
    }
    out
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        matches!(
            e.to_ascii_lowercase().as_str(),
            "png" | "tif" | "tiff" | "jpg" | "jpeg"
        )
    })
}

fn dtype_of(c: image::ColorType, p: &Path) -> Result<DType, String> {
    match c {
        image::ColorType::L8 => Ok(DType::Uint8),
        image::ColorType::L16 => Ok(DType::Uint16),
        other => Err(format!(
            "{}: {other:?} pixels; only 8- or 16-bit grayscale slices can be ingested",
            p.display()
        )),
    }
}

/// Size and type of one 2-D slice, from its header.
fn slice_header(p: &Path) -> Result<(u32, u32, DType), String> {
    let d = image::ImageReader::open(p)
        .and_then(image::ImageReader::with_guessed_format)
        .map_err(|e| format!("{}: cannot read: {e}", p.display()))?
        .into_decoder()
        .map_err(|e| format!("{}: not a readable image: {e}", p.display()))?;
    let (w, h) = d.dimensions();
    Ok((w, h, dtype_of(d.color_type(), p)?))
}

fn tiff_type(c: tiff::ColorType, p: &Path) -> Result<DType, String> {
    match c {
        tiff::ColorType::Gray(8) => Ok(DType::Uint8),
        tiff::ColorType::Gray(16) => Ok(DType::Uint16),
        other => Err(format!(
            "{}: {other:?} pixels; only 8- or 16-bit grayscale can be ingested",
            p.display()
        )),
    }
}

/// Open and check a source: every slice's header agrees with the first.
fn open_source(path: &Path) -> Result<Stack, String> {
    let mut fp = 0xcbf2_9ce4_8422_2325u64;
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: cannot list: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            return Err(format!(
                "{}: no .png, .tif, .tiff, .jpg or .jpeg slices found",
                path.display()
            ));
        }
        files.sort_by_cached_key(|p| {
            natural_key(&p.file_name().unwrap_or_default().to_string_lossy())
        });
        let headers: Vec<Result<(u32, u32, DType), String>> =
            files.par_iter().map(|f| slice_header(f)).collect();
        let mut first: Option<(u32, u32, DType, &PathBuf)> = None;
        for (f, h) in files.iter().zip(headers) {
            let (w, hh, t) = h?;
            match first {
                None => first = Some((w, hh, t, f)),
                Some((w0, h0, t0, f0)) => {
                    if (w, hh) != (w0, h0) {
                        return Err(format!(
                            "{}: {w}x{hh} pixels, but {} (the first slice) is {w0}x{h0}; all slices must have the same size",
                            f.display(),
                            f0.display()
                        ));
                    }
                    if t != t0 {
                        return Err(format!(
                            "{}: {}-bit, but {} (the first slice) is {}-bit; all slices must have the same bit depth",
                            f.display(),
                            t.size() * 8,
                            f0.display(),
                            t0.size() * 8
                        ));
                    }
                }
            }
            // Names, not sizes: a slice fixed after a failed run keeps the job.
            fnv(&mut fp, f.to_string_lossy().as_bytes());
        }
        let (w, h, t, _) = first.expect("at least one slice");
        return Ok(Stack {
            shape: [u64::from(w), u64::from(h), files.len() as u64],
            dtype: t,
            fingerprint: fp,
            source: Source::Slices(files),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    fnv(&mut fp, path.to_string_lossy().as_bytes());
    fnv(
        &mut fp,
        &std::fs::metadata(path).map_or(0, |m| m.len()).to_le_bytes(),
    );
    match ext.as_str() {
        "npy" => {
            let mut f =
                File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let mut head = vec![0u8; 1 << 16];
            let n =
                read_up_to(&mut f, &mut head).map_err(|e| format!("{}: {e}", path.display()))?;
            head.truncate(n);
            let (hdr, off) = neurocube_core::npy::parse(&head)
                .map_err(|e| format!("{}: not a readable npy file: {e}", path.display()))?;
            let shape = match hdr.shape[..] {
                [z, y, x] => [x, y, z],
                [y, x] => [x, y, 1],
                _ => {
                    return Err(format!(
                        "{}: shape {:?}; a 2-D (y, x) or 3-D (z, y, x) array is needed",
                        path.display(),
                        hdr.shape
                    ));
                }
            };
            let need = off as u64 + shape.iter().product::<u64>() * hdr.dtype.size() as u64;
            let have = std::fs::metadata(path).map_or(0, |m| m.len());
            if have < need {
                return Err(format!(
                    "{}: the file holds {have} bytes but its header promises {need}; it is truncated",
                    path.display()
                ));
            }
            Ok(Stack {
                source: Source::Npy(path.to_path_buf(), off as u64),
                shape,
                dtype: hdr.dtype,
                fingerprint: fp,
            })
        }
        "tif" | "tiff" => {
            let f =
                File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let err = |e: tiff::TiffError| format!("{}: not a readable TIFF: {e}", path.display());
            let mut d = tiff::decoder::Decoder::new(std::io::BufReader::new(f)).map_err(err)?;
            let (w, h) = d.dimensions().map_err(err)?;
            let t = tiff_type(d.colortype().map_err(err)?, path)?;
            let mut pages = 1u64;
            while d.more_images() {
                d.next_image().map_err(err)?;
                let (w2, h2) = d.dimensions().map_err(err)?;
                let t2 = tiff_type(d.colortype().map_err(err)?, path)?;
                if (w2, h2, t2) != (w, h, t) {
                    return Err(format!(
                        "{}: page {pages} is {w2}x{h2} {t2}, but page 0 is {w}x{h} {t}; all pages must match",
                        path.display()
                    ));
                }
                pages += 1;
            }
            Ok(Stack {
                source: Source::Tiff(path.to_path_buf()),
                shape: [u64::from(w), u64::from(h), pages],
                dtype: t,
                fingerprint: fp,
            })
        }
        _ => Err(format!(
            "{}: not a directory of slices, a .tif/.tiff stack or a .npy file",
            path.display()
        )),
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Decode one 2-D slice into little-endian voxel bytes.
fn decode_slice(p: &Path, shape: [u64; 3], dtype: DType) -> Result<Vec<u8>, String> {
    let img = image::ImageReader::open(p)
        .and_then(image::ImageReader::with_guessed_format)
        .map_err(|e| format!("{}: cannot read: {e}", p.display()))?
        .decode()
        .map_err(|e| format!("{}: cannot decode: {e}", p.display()))?;
    if (u64::from(img.width()), u64::from(img.height())) != (shape[0], shape[1]) {
        return Err(format!("{}: size changed while ingesting", p.display()));
    }
    match (img, dtype) {
        (image::DynamicImage::ImageLuma8(b), DType::Uint8) => Ok(b.into_raw()),
        (image::DynamicImage::ImageLuma16(b), DType::Uint16) => {
            Ok(b.into_raw().iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        _ => Err(format!(
            "{}: pixel type changed while ingesting",
            p.display()
        )),
    }
}

impl Stack {
    fn slice_bytes(&self) -> usize {
        (self.shape[0] * self.shape[1]) as usize * self.dtype.size()
    }

    /// Voxels of source slices `z0..z1`, C order.
    fn read(&self, z0: u64, z1: u64) -> Result<Vec<u8>, String> {
        let sb = self.slice_bytes();
        let mut out = vec![0u8; sb * (z1 - z0) as usize];
        match &self.source {
            Source::Slices(files) => {
                out.par_chunks_mut(sb)
                    .zip(&files[z0 as usize..z1 as usize])
                    .try_for_each(|(dst, f)| {
                        let v = decode_slice(f, self.shape, self.dtype)?;
                        dst.copy_from_slice(&v);
                        Ok::<_, String>(())
                    })?;
            }
            Source::Npy(p, off) => {
                let mut f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
                f.seek(SeekFrom::Start(off + z0 * sb as u64))
                    .and_then(|_| f.read_exact(&mut out))
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Source::Tiff(p) => {
                let f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
                let err =
                    |e: tiff::TiffError| format!("{}: page decoding failed: {e}", p.display());
                let mut d = tiff::decoder::Decoder::new(std::io::BufReader::new(f)).map_err(err)?;
                for (i, dst) in out.chunks_mut(sb).enumerate() {
                    d.seek_to_image(z0 as usize + i).map_err(err)?;
                    match d.read_image().map_err(err)? {
                        tiff::decoder::DecodingResult::U8(v) if v.len() == sb => {
                            dst.copy_from_slice(&v);
                        }
                        tiff::decoder::DecodingResult::U16(v) if v.len() * 2 == sb => {
                            for (o, x) in dst.chunks_exact_mut(2).zip(v) {
                                o.copy_from_slice(&x.to_le_bytes());
                            }
                        }
                        _ => {
                            return Err(format!(
                                "{}: page {} has an unexpected layout",
                                p.display(),
                                z0 as usize + i
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Which source file holds slice `z` (for messages).
    fn name(&self, z: u64) -> String {
        match &self.source {
            Source::Slices(f) => f[z as usize].display().to_string(),
            Source::Tiff(p) | Source::Npy(p, _) => format!("{} (z {z})", p.display()),
        }
    }
}

// ---------------------------------------------------------------- sinks

/// Where the voxels go: a local store or a server.
enum Sink {
    Local(Arc<Services>),
    Http {
        client: reqwest::Client,
        base: String,
    },
}

fn http_err(e: reqwest::Error) -> String {
    format!("request failed: {e}")
}

async fn check(r: reqwest::Response) -> Result<Value, String> {
    let status = r.status();
    let body = r.text().await.map_err(http_err)?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if status.is_success() {
        Ok(v)
    } else {
        Err(format!(
            "server answered {status}: {}",
            v["message"].as_str().unwrap_or(&body)
        ))
    }
}

impl Sink {
    async fn get_json(&self, path: &str) -> Result<Option<Value>, String> {
        let Sink::Http { client, base } = self else {
            return Ok(None);
        };
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(http_err)?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(r).await.map(Some)
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, String> {
        let Sink::Http { client, base } = self else {
            return Err("not a server".into());
        };
        let r = client
            .request(method, format!("{base}{path}"))
            .json(body)
            .send()
            .await
            .map_err(http_err)?;
        check(r).await
    }

    /// The dataset and channel, created with --create if missing.
    async fn ensure(&self, a: &IngestArgs, st: &Stack) -> Result<(Dataset, Channel), String> {
        let (ds, ch) = (&a.dataset, &a.channel);
        let existing_ds: Option<Dataset> = match self {
            Sink::Local(s) => s.catalog.dataset(ds).await.ok().map(|d| (*d).clone()),
            Sink::Http { .. } => self
                .get_json(&format!("/v1/datasets/{ds}"))
                .await?
                .map(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("level_info");
                    }
                    serde_json::from_value(v).map_err(|e| format!("dataset {ds}: {e}"))
                })
                .transpose()?,
        };
        let d = match existing_ds {
            Some(d) => d,
            None if a.create => {
                let vs: Vec<f64> = a
                    .voxel_size
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        format!("--voxel-size '{}' must look like 4,4,40", a.voxel_size)
                    })?;
                let [vx, vy, vz] = vs[..] else {
                    return Err(format!(
                        "--voxel-size '{}' must look like 4,4,40",
                        a.voxel_size
                    ));
                };
                let chunk = default_chunk();
                let levels = a.levels.unwrap_or_else(|| {
                    let mut l = 1u8;
                    let mut s = st.shape[0].max(st.shape[1]);
                    while s > chunk[0] && l < 8 {
                        s = s.div_ceil(2);
                        l += 1;
                    }
                    l
                });
                let d = Dataset {
                    name: ds.clone(),
                    voxel_size: [vx, vy, vz],
                    extent: [st.shape[0], st.shape[1], a.z.unwrap_or(0) + st.shape[2]],
                    offset: [0, 0, 0],
                    levels,
                    scaling: Scaling::Anisotropic,
                    description: format!("ingested from {}", a.source.display()),
                };
                match self {
                    Sink::Local(s) => {
                        s.catalog
                            .create_dataset(d.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Sink::Http { .. } => {
                        self.send_json(
                            reqwest::Method::PUT,
                            &format!("/v1/datasets/{ds}"),
                            &serde_json::to_value(&d).unwrap_or_default(),
                        )
                        .await?;
                    }
                }
                d
            }
            None => {
                return Err(format!(
                    "dataset '{ds}' does not exist; create it first or pass --create"
                ));
            }
        };
        let existing_ch: Option<Channel> = match self {
            Sink::Local(s) => s
                .catalog
                .channel(ds, ch)
                .await
                .ok()
                .map(|c| c.channel.meta.clone()),
            Sink::Http { .. } => self
                .get_json(&format!("/v1/datasets/{ds}/channels/{ch}"))
                .await?
                .map(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("level_status");
                        o.remove("dataset");
                    }
                    serde_json::from_value(v).map_err(|e| format!("channel {ds}/{ch}: {e}"))
                })
                .transpose()?,
        };
        let c = match existing_ch {
            Some(c) => c,
            None if a.create => {
                let kind = match a.kind.as_str() {
                    "image" => ChannelType::Image,
                    "segmentation" => ChannelType::Segmentation,
                    k => return Err(format!("--kind '{k}' must be image or segmentation")),
                };
                let c = Channel {
                    name: ch.clone(),
                    kind,
                    dtype: st.dtype,
                    chunk_size: default_chunk(),
                    compression: Compression::BloscLz4,
                    description: String::new(),
                };
                match self {
                    Sink::Local(s) => {
                        s.catalog
                            .create_channel(ds, c.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Sink::Http { .. } => {
                        self.send_json(
                            reqwest::Method::PUT,
                            &format!("/v1/datasets/{ds}/channels/{ch}"),
                            &serde_json::to_value(&c).unwrap_or_default(),
                        )
                        .await?;
                    }
                }
                c
            }
            None => {
                return Err(format!(
                    "channel '{ch}' does not exist in dataset '{ds}'; create it first or pass --create"
                ));
            }
        };
        if c.dtype != st.dtype {
            return Err(format!(
                "{} holds {} voxels but channel {ds}/{ch} is {}",
                a.source.display(),
                st.dtype,
                c.dtype
            ));
        }
        Ok((d, c))
    }

    /// The ingest job of this source (existing: resumed) and its finished slabs.
    async fn job(
        &self,
        key: &str,
        params: Value,
        tasks: Vec<TaskSpec>,
    ) -> Result<(JobRecord, Vec<String>), String> {
        match self {
            Sink::Local(s) => {
                let (j, _) = s
                    .jobs
                    .create_external(key, "ingest", params, "bytes", tasks)
                    .await
                    .map_err(|e| e.to_string())?;
                let done = s
                    .jobs
                    .tasks(&j.id, Some(0))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|(_, t)| t.state == neurocube_service::jobs::TaskState::Done)
                    .map(|(_, t)| t.name)
                    .collect();
                Ok((j, done))
            }
            Sink::Http { .. } => {
                let body = json!({
                    "kind": "ingest",
                    "key": key,
                    "params": params,
                    "unit": "bytes",
                    "tasks": tasks.iter().map(|t| json!({"name": t.name, "units": t.units})).collect::<Vec<_>>(),
                });
                let v = self
                    .send_json(reqwest::Method::POST, "/v1/jobs", &body)
                    .await?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let full = self
                    .get_json(&format!("/v1/jobs/{id}?tasks=true"))
                    .await?
                    .ok_or_else(|| format!("job {id} vanished"))?;
                let done = full["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["state"] == "done")
                    .filter_map(|t| t["name"].as_str().map(String::from))
                    .collect();
                let rec: JobRecord =
                    serde_json::from_value(v).map_err(|e| format!("job {id}: {e}"))?;
                Ok((rec, done))
            }
        }
    }

    async fn write(&self, ds: &str, ch: &str, b: Box3, data: Vec<u8>) -> Result<(), String> {
        match self {
            Sink::Local(s) => {
                let t = s
                    .volumes
                    .target(ds, ch, 0, b)
                    .await
                    .map_err(|e| e.to_string())?;
                s.volumes
                    .write(t, Bytes::from(data))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Sink::Http { client, base } => {
                let url = format!(
                    "{base}/{ds}/{ch}/raw/0/{},{}/{},{}/{},{}/",
                    b.start[0], b.end[0], b.start[1], b.end[1], b.start[2], b.end[2]
                );
                let r = client.put(url).body(data).send().await.map_err(http_err)?;
                check(r).await.map(|_| ())
            }
        }
    }

    async fn task_done(&self, id: &str, name: &str) -> Result<(), String> {
        match self {
            Sink::Local(s) => s
                .jobs
                .complete_task(id, name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Sink::Http { .. } => self
                .send_json(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/tasks/{name}/done"),
                    &json!({}),
                )
                .await
                .map(|_| ()),
        }
    }

    async fn fail(&self, id: &str, error: &str) {
        let r = match self {
            Sink::Local(s) => s
                .jobs
                .fail(id, error.to_string())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Sink::Http { .. } => self
                .send_json(
                    reqwest::Method::POST,
                    &format!("/v1/jobs/{id}/fail"),
                    &json!({"error": error}),
                )
                .await
                .map(|_| ()),
        };
        if let Err(e) = r {
            eprintln!("neurocube: could not record the failure in job {id}: {e}");
        }
    }

    /// Start downsampling and follow it to the end with a progress bar.
    async fn downsample(&self, ds: &str, ch: &str) -> Result<JobRecord, String> {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "downsample {msg} [{bar:30}] {pos}/{len} chunks {per_sec} ETA {eta}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        bar.set_message(format!("{ds}/{ch}"));
        let show = |r: &JobRecord| {
            bar.set_length(r.total);
            bar.set_position(r.done);
        };
        let rec = match self {
            Sink::Local(s) => {
                let (j, _) = s
                    .pyramid
                    .start_downsample(ds, ch)
                    .await
                    .map_err(|e| e.to_string())?;
                s.jobs
                    .run_to_end(&j.id, show)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Sink::Http { .. } => {
                let v = self
                    .send_json(
                        reqwest::Method::POST,
                        &format!("/v1/datasets/{ds}/channels/{ch}/downsample"),
                        &json!({}),
                    )
                    .await?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                loop {
                    let v = self
                        .get_json(&format!("/v1/jobs/{id}"))
                        .await?
                        .ok_or_else(|| format!("job {id} vanished"))?;
                    let r: JobRecord =
                        serde_json::from_value(v).map_err(|e| format!("job {id}: {e}"))?;
                    show(&r);
                    if r.state.is_final() {
                        break r;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };
        bar.finish();
        Ok(rec)
    }
}

/// Run `neurocube ingest`.
pub async fn run(a: IngestArgs) -> Result<(), String> {
    let src = a.source.clone();
    let st = tokio::task::spawn_blocking(move || open_source(&src))
        .await
        .map_err(|e| e.to_string())??;
    let sink = match &a.url {
        Some(u) => Sink::Http {
            client: reqwest::Client::new(),
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
                max_cutout_bytes: s.limits.max_cutout_bytes,
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
            sink.write(&d.name, &c.name, b, data).await.map_err(|e| {
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
        let r = sink.downsample(&d.name, &c.name).await?;
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

fn fmt_secs(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) => format!("{:.0}m", s / 60.0),
    }
}

/// Run `neurocube jobs`.
pub async fn jobs(a: JobsArgs) -> Result<(), String> {
    let sink = Sink::Http {
        client: reqwest::Client::new(),
        base: a.url.trim_end_matches('/').to_string(),
    };
    match a.cmd.unwrap_or(JobsCmd::List) {
        JobsCmd::List => {
            let v = sink.get_json("/v1/jobs").await?.unwrap_or_default();
            println!(
                "{:<24} {:<10} {:<9} {:>22} {:>12} {:>6}  what",
                "id", "kind", "state", "done/total", "rate/s", "eta"
            );
            for j in v["jobs"].as_array().into_iter().flatten() {
                let what = format!(
                    "{}/{}",
                    j["params"]["dataset"].as_str().unwrap_or("-"),
                    j["params"]["channel"].as_str().unwrap_or("-")
                );
                println!(
                    "{:<24} {:<10} {:<9} {:>22} {:>12} {:>6}  {what}{}",
                    j["id"].as_str().unwrap_or_default(),
                    j["kind"].as_str().unwrap_or_default(),
                    j["state"].as_str().unwrap_or_default(),
                    format!(
                        "{}/{} {}",
                        j["done"],
                        j["total"],
                        j["unit"].as_str().unwrap_or_default()
                    ),
                    j["rate"].as_f64().map_or("-".into(), |r| format!("{r:.1}")),
                    fmt_secs(j["eta_seconds"].as_f64()),
                    j["errors"]
                        .as_array()
                        .and_then(|e| e.last())
                        .and_then(Value::as_str)
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        JobsCmd::Show { id } => {
            let v = sink
                .get_json(&format!("/v1/jobs/{id}?tasks=true"))
                .await?
                .ok_or_else(|| format!("job '{id}' does not exist"))?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        JobsCmd::Cancel { id } => {
            let Sink::Http { client, base } = &sink else {
                unreachable!()
            };
            let r = client
                .delete(format!("{base}/v1/jobs/{id}"))
                .send()
                .await
                .map_err(http_err)?;
            let v = check(r).await?;
            println!("job {id} is {}", v["state"].as_str().unwrap_or_default());
        }
        JobsCmd::Downsample { dataset, channel } => {
            let r = sink.downsample(&dataset, &channel).await?;
            println!(
                "job {} {:?}: {}/{} {}",
                r.id, r.state, r.done, r.total, r.unit
            );
            if r.state != JobState::Done {
                return Err(format!("job {} ended {:?}: {:?}", r.id, r.state, r.errors));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_sort_numerically() {
        let mut v = vec!["s10.png", "s9.png", "s100.png", "s0.png"];
        v.sort_by_cached_key(|n| natural_key(n));
        assert_eq!(v, vec!["s0.png", "s9.png", "s10.png", "s100.png"]);
    }
}

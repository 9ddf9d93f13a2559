//! `neurocube ingest` as users run it: slices in, exact voxels out; bad
//! stacks refused before anything is written, naming the file; a failed
//! ingest is not done, and a re-run resumes it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use common::{BIN, serve};
use neurocube_core::Box3;
use neurocube_service::jobs::JobState;
use neurocube_service::{ServiceConfig, Services};
use neurocube_store::Table;
use neurocube_store::embedded::{Durability, EmbeddedOptions, EmbeddedStore};

fn dn(s: &str) -> neurocube_core::DatasetName {
    neurocube_core::DatasetName::parse(s).unwrap()
}

fn cn(s: &str) -> neurocube_core::ChannelName {
    neurocube_core::ChannelName::parse(s).unwrap()
}

fn ingest(data: &Path, src: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ingest")
        .arg(src)
        .arg("--data-dir")
        .arg(data)
        .args(["--dataset", "d", "--channel", "c", "--create"])
        .args(extra)
        .env("NEUROCUBE__STORE__DURABILITY", "flush")
        .env("NEUROCUBE__LOG__LEVEL", "warn")
        .output()
        .expect("run neurocube ingest")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// 8-bit slice `z` of a w x h stack: every pixel depends on x, y and z.
fn slice8(w: u32, h: u32, z: u32) -> Vec<u8> {
    (0..w * h)
        .map(|i| ((i % w) * 7 + (i / w) * 13 + z * 29) as u8)
        .collect()
}

fn write_png8(p: &Path, w: u32, h: u32, px: Vec<u8>) {
    image::GrayImage::from_raw(w, h, px)
        .unwrap()
        .save(p)
        .unwrap();
}

fn services(data: &Path) -> Services {
    let store = EmbeddedStore::open(&EmbeddedOptions {
        cache_bytes: 16 << 20,
        durability: Durability::Flush,
        ..EmbeddedOptions::new(data.to_path_buf())
    })
    .unwrap();
    Services::new(&ServiceConfig::default(), Arc::new(store))
}

async fn read(s: &Services, level: u8, b: Box3) -> Vec<u8> {
    let t = s
        .volumes
        .target(&dn("d"), &cn("c"), level, b)
        .await
        .unwrap();
    s.volumes.read_all(t).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_stack_reads_back_exactly_and_a_failed_run_resumes() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (w, h, n) = (150u32, 70u32, 20u32);
    // Names sort numerically: s2 before s10.
    for z in 0..n {
        write_png8(&src.path().join(format!("s{z}.png")), w, h, slice8(w, h, z));
    }
    // s17 is cut short: its header is fine, its pixels are not.
    let good17 = std::fs::read(src.path().join("s17.png")).unwrap();
    std::fs::write(src.path().join("s17.png"), &good17[..good17.len() / 2]).unwrap();
    let o = ingest(data.path(), src.path(), &["--levels", "2"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("s17.png") && e.contains("not done"), "{e}");
    {
        let s = services(data.path());
        let jobs = s.jobs.list().await.unwrap();
        assert_eq!(jobs.len(), 1, "no downsample job after a failed ingest");
        assert_eq!(jobs[0].state, JobState::Failed);
        assert!(jobs[0].done < jobs[0].total);
        assert!(
            jobs[0].errors[0].contains("s17.png"),
            "{:?}",
            jobs[0].errors
        );
    }

    // Fixed and re-run: the first slab (z 0..16) is not written again.
    std::fs::write(src.path().join("s17.png"), &good17).unwrap();
    let o = ingest(data.path(), src.path(), &["--levels", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("ingested 20 slices of 150x70 uint8 into d/c"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("16 slices already ingested"),
        "{}",
        stderr(&o)
    );

    let s = services(data.path());
    let b = Box3::new([0, 0, 0], [150, 70, 20]).unwrap();
    let got = read(&s, 0, b).await;
    let want: Vec<u8> = (0..n).flat_map(|z| slice8(w, h, z)).collect();
    assert!(got == want, "level 0 differs from the slices");
    let jobs = s.jobs.list().await.unwrap();
    let ingest_job = jobs.iter().find(|j| j.kind == "ingest").unwrap();
    assert_eq!(ingest_job.state, JobState::Done);
    assert_eq!(ingest_job.done, u64::from(w * h * n));
    let ds_job = jobs.iter().find(|j| j.kind == "downsample").unwrap();
    assert_eq!(ds_job.state, JobState::Done);
    // Level 1 was computed: a 2x2 mean of level 0.
    let l1 = read(&s, 1, Box3::new([0, 0, 0], [75, 35, 20]).unwrap()).await;
    let at = |x: usize, y: usize, z: usize| u32::from(want[(z * 70 + y) * 150 + x]);
    let m = (at(20, 10, 3) + at(21, 10, 3) + at(20, 11, 3) + at(21, 11, 3) + 2) / 4;
    assert_eq!(u32::from(l1[(3 * 35 + 5) * 75 + 10]), m);
    let rc = s.catalog.channel(&dn("d"), &cn("c")).await.unwrap();
    assert_eq!(s.pyramid.status(&rc).await.unwrap()[1].state, "current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_bit_slices_and_npy_read_back_exactly() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (w, h) = (33u32, 17u32);
    let mut want = Vec::new();
    for z in 0..3u32 {
        let px: Vec<u16> = (0..w * h).map(|i| (i * 977 + z * 20011) as u16).collect();
        want.extend(px.iter().flat_map(|v| v.to_le_bytes()));
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, px)
            .unwrap()
            .save(src.path().join(format!("{z:03}.png")))
            .unwrap();
    }
    let o = ingest(data.path(), src.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    {
        let s = services(data.path());
        assert_eq!(
            read(&s, 0, Box3::new([0, 0, 0], [33, 17, 3]).unwrap()).await,
            want
        );
    }
    // An npy volume into another dataset, placed at z 2.
    let data2 = tempfile::tempdir().unwrap();
    let vox: Vec<u8> = (0..5 * 6 * 7).map(|i| (i * 3) as u8).collect();
    let mut npy = neurocube_core::npy::header(neurocube_core::DType::Uint8, &[5, 6, 7]);
    npy.extend_from_slice(&vox);
    let f = src.path().join("vol.npy");
    std::fs::write(&f, npy).unwrap();
    let o = ingest(data2.path(), &f, &["--z", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = services(data2.path());
    assert_eq!(
        read(&s, 0, Box3::new([0, 0, 2], [7, 6, 7]).unwrap()).await,
        vox
    );
    assert_eq!(
        read(&s, 0, Box3::new([0, 0, 0], [7, 6, 2]).unwrap()).await,
        vec![0; 84]
    );
}

async fn nothing_written(data: &Path) {
    if !data.join("engine").exists()
        && std::fs::read_dir(data).map_or(true, |mut d| d.next().is_none())
    {
        return;
    }
    let s = services(data);
    let page = s.store.scan_all(Table::Chunks, None, 10).await.unwrap();
    assert!(page.rows.is_empty(), "chunks were written");
    assert!(
        s.jobs
            .list()
            .await
            .unwrap()
            .iter()
            .all(|j| j.state != JobState::Done)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_or_unreadable_slices_stop_before_writing() {
    for (case, want) in [
        ("size", "s3.png: 41x20 pixels, but"),
        ("depth", "s1.png: 16-bit, but"),
        ("garbage", "s2.png: not a readable image"),
        ("rgb", "s0.png: Rgb8 pixels; only 8- or 16-bit grayscale"),
    ] {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for z in 0..5u32 {
            write_png8(
                &src.path().join(format!("s{z}.png")),
                40,
                20,
                slice8(40, 20, z),
            );
        }
        let p = |n: &str| src.path().join(n);
        match case {
            "size" => write_png8(&p("s3.png"), 41, 20, slice8(41, 20, 3)),
            "depth" => image::ImageBuffer::<image::Luma<u16>, _>::from_raw(40, 20, vec![7u16; 800])
                .unwrap()
                .save(p("s1.png"))
                .unwrap(),
            "garbage" => std::fs::write(p("s2.png"), b"this is not a picture").unwrap(),
            _ => image::RgbImage::from_raw(40, 20, vec![1u8; 2400])
                .unwrap()
                .save(p("s0.png"))
                .unwrap(),
        }
        let o = ingest(data.path(), src.path(), &[]);
        assert!(!o.status.success(), "{case}");
        let e = stderr(&o);
        assert!(e.contains(want), "{case}: {e}");
        nothing_written(data.path()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_http_into_a_running_server() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    for z in 0..4u32 {
        write_png8(
            &src.path().join(format!("{z}.png")),
            300,
            200,
            slice8(300, 200, z),
        );
    }
    let server = serve(
        data.path(),
        &[("NEUROCUBE__JOBS__AUTO_DOWNSAMPLE", "false")],
    );
    let o = Command::new(BIN)
        .arg("ingest")
        .arg(src.path())
        .args([
            "--url",
            &server.url,
            "--dataset",
            "d",
            "--channel",
            "c",
            "--create",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let c = reqwest::Client::new();
    let got = c
        .get(format!("{}/d/c/raw/0/0,300/0,200/0,4/", server.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let want: Vec<u8> = (0..4).flat_map(|z| slice8(300, 200, z)).collect();
    assert!(got[..] == want[..]);
    // Downsampled by the server; the levels are current.
    let r = c
        .get(format!("{}/d/c/raw/1/0,150/0,100/0,4/", server.url))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("X-Neurocube-Level-Stale").is_none());
    let jobs = Command::new(BIN)
        .args(["jobs", "--url", &server.url])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        listing.contains("ingest") && listing.contains("downsample") && listing.contains("d/c"),
        "{listing}"
    );
    assert_eq!(listing.matches(" done ").count(), 2, "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_page_tiff_reads_back_exactly() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (w, h, n) = (45u32, 28u32, 5u32);
    let f = src.path().join("stack.tif");
    let mut want = Vec::new();
    {
        let mut enc = tiff::encoder::TiffEncoder::new(std::fs::File::create(&f).unwrap()).unwrap();
        for z in 0..n {
            let px: Vec<u16> = (0..w * h).map(|i| (i * 31 + z * 1000) as u16).collect();
            want.extend(px.iter().flat_map(|v| v.to_le_bytes()));
            enc.write_image::<tiff::encoder::colortype::Gray16>(w, h, &px)
                .unwrap();
        }
    }
    let o = ingest(data.path(), &f, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = services(data.path());
    assert_eq!(
        read(&s, 0, Box3::new([0, 0, 0], [45, 28, 5]).unwrap()).await,
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_slices_read_back_as_decoded() {
    let src = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut want = Vec::new();
    for z in 0..3u32 {
        let p = src.path().join(format!("j{z}.jpg"));
        image::GrayImage::from_raw(64, 48, slice8(64, 48, z))
            .unwrap()
            .save(&p)
            .unwrap();
        // JPEG is lossy: the reference is the file as a decoder sees it.
        want.extend(image::open(&p).unwrap().into_luma8().into_raw());
    }
    let o = ingest(data.path(), src.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = services(data.path());
    assert_eq!(
        read(&s, 0, Box3::new([0, 0, 0], [64, 48, 3]).unwrap()).await,
        want
    );
}

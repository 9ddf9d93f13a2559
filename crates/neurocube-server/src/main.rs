//! `neurocube`: serve volumes by URL, or create a demo dataset and serve it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use neurocube_server::{Application, Settings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "neurocube",
    version,
    about = "Petascale EM volumes and annotations, served by URL"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the HTTP service.
    Serve(ServeArgs),
    /// Create the demo dataset (synthetic EM + segmentation), print its URLs, and serve it.
    Demo(DemoArgs),
    /// Load a directory of 2-D slices, a 3-D TIFF or an npy file into a channel, then downsample it.
    Ingest(neurocube_server::ingest::IngestArgs),
    /// List, show or cancel the jobs of a running server, or start downsampling.
    Jobs(neurocube_server::ingest::JobsArgs),
    /// Make, list or revoke access tokens (for `auth.mode = "tokens"`).
    Token(neurocube_server::token_cmd::TokenArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// A settings file layered over config/default.toml.
    #[arg(long, env = "NEUROCUBE_CONFIG")]
    config: Option<PathBuf>,
    /// Address to bind.
    #[arg(long)]
    host: Option<String>,
    /// Port to bind (0: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// Data directory of the embedded store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Store URI: `embedded` or `cassandra://host1,host2/keyspace`.
    #[arg(long)]
    store: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Extent of the demo volume as XxYxZ voxels.
    #[arg(long, default_value = "1024x1024x64")]
    size: String,
    /// Instead of --size: about this many GiB of uint8 image (4096 x 4096 x 64·GiB).
    #[arg(long)]
    gib: Option<f64>,
    /// A MICrONS-like connectome on the demo segmentation: this many
    /// synapses, nuclei, proofreading status, two cell-type tables, and two
    /// materialized versions (0: no annotation tables).
    #[arg(long, default_value_t = 100_000)]
    synapses: u64,
    /// Create the data and exit without serving.
    #[arg(long)]
    no_serve: bool,
}

fn settings(a: &ServeArgs) -> Result<Settings, String> {
    let mut s = Settings::load(a.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(h) = &a.host {
        s.server.host.clone_from(h);
    }
    if let Some(p) = a.port {
        s.server.port = p;
    }
    if let Some(d) = &a.data_dir {
        s.store.data_dir.clone_from(d);
    }
    if let Some(u) = &a.store {
        s.store.uri.clone_from(u);
    }
    Ok(s)
}

fn init_logging(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&s.log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if s.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn parse_size(a: &DemoArgs) -> Result<[u64; 3], String> {
    if let Some(g) = a.gib {
        if !(g > 0.0 && g <= 64.0) {
            return Err(format!("--gib {g} must be between 0 and 64"));
        }
        return Ok([4096, 4096, ((g * 64.0).round() as u64).max(1)]);
    }
    let parts: Vec<u64> = a
        .size
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("--size '{}' must look like 1024x1024x64", a.size))?;
    match parts[..] {
        [x, y, z] if x > 0 && y > 0 && z > 0 => Ok([x, y, z]),
        _ => Err(format!("--size '{}' must look like 1024x1024x64", a.size)),
    }
}

async fn serve(app: Application) -> Result<(), String> {
    println!("neurocube listening on {}", app.url());
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Ingest(a) => neurocube_server::ingest::run(a).await,
        Cmd::Jobs(a) => neurocube_server::ingest::jobs(a).await,
        Cmd::Token(a) => neurocube_server::token_cmd::run(a).await,
        Cmd::Serve(a) => {
            let s = settings(&a)?;
            init_logging(&s);
            let app = Application::build(s).await.map_err(|e| e.to_string())?;
            serve(app).await
        }
        Cmd::Demo(a) => {
            let extent = parse_size(&a)?;
            let mut s = settings(&a.serve)?;
            if a.no_serve {
                // Nothing will be served: take any free loopback port, so a
                // busy configured port cannot stop the data being made.
                s.server.host = "127.0.0.1".into();
                s.server.port = 0;
            }
            init_logging(&s);
            let app = Application::build(s).await.map_err(|e| e.to_string())?;
            let total: u64 = extent.iter().product();
            let bar = ProgressBar::new(total * 5);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .map_err(|e| e.to_string())?
                .progress_chars("=> "),
            );
            bar.set_message(format!("demo {}x{}x{}", extent[0], extent[1], extent[2]));
            // Bytes written: 1 (image) + 4 (segmentation) per voxel.
            let created = neurocube_service::demo::create(&app.services(), extent, |done, _| {
                bar.set_position(done * 5)
            })
            .await
            .map_err(|e| e.to_string())?;
            bar.finish_with_message(if created {
                "demo created"
            } else {
                "demo already present"
            });
            if a.synapses > 0 {
                let bar = ProgressBar::new(a.synapses);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} synapses {per_sec} ETA {eta}",
                    )
                    .map_err(|e| e.to_string())?
                    .progress_chars("=> "),
                );
                bar.set_message("connectome");
                let made = neurocube_service::demo::create_annotations(
                    &app.services(),
                    extent,
                    a.synapses,
                    |done, _| bar.set_position(done),
                )
                .await
                .map_err(|e| e.to_string())?;
                bar.finish_with_message(format!(
                    "connectome: {} neurons ({} proofread), versions {:?}",
                    made.neurons, made.proofread, made.versions
                ));
            }
            let base = app.url();
            let (cx, cy, cz) = (extent[0] / 2, extent[1] / 2, extent[2] / 2);
            let (x0, x1) = (cx.saturating_sub(256), (cx + 256).min(extent[0]));
            let (y0, y1) = (cy.saturating_sub(256), (cy + 256).min(extent[1]));
            println!("\nOpen:");
            println!("  {base}/demo/image/xy/0/{x0},{x1}/{y0},{y1}/{cz}/          EM slice (PNG)");
            println!(
                "  {base}/demo/segmentation/xy/0/{x0},{x1}/{y0},{y1}/{cz}/   segmentation slice (PNG)"
            );
            println!(
                "  {base}/demo/image/xz/0/{x0},{x1}/{cy}/0,{}/         xz slice",
                extent[2]
            );
            println!(
                "  {base}/demo/image/npy/0/{x0},{x1}/{y0},{y1}/0,{}/   cutout (npy)",
                extent[2].min(16)
            );
            println!("  {base}/v1/datasets/demo                              metadata");
            if a.synapses > 0 {
                println!(
                    "  {base}/v1/datasets/demo/tables                       annotation tables"
                );
                println!(
                    "  curl -X POST {base}/v1/datasets/demo/tables/synapses/query -d '{{\"limit\": 5}}'"
                );
                println!(
                    "  {base}/v1/datasets/demo/versions                     materialized versions"
                );
            }
            if a.no_serve {
                return Ok(());
            }
            serve(app).await
        }
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("neurocube: {e}");
            ExitCode::FAILURE
        }
    }
}

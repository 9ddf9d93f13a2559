//! Building and running the HTTP application: open the store, build the
//! services, bind (port 0 in tests), and serve.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Server, Service};
use actix_web::middleware::{NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer, web};
use neurocube_service::{ServiceConfig, Services};
use neurocube_store::Store;
use neurocube_store::cassandra::{CassandraOptions, CassandraStore};
use neurocube_store::embedded::{Durability, EmbeddedOptions, EmbeddedStore};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::config::{CassandraSettings, Settings, StoreSettings};
use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is wrong.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] neurocube_store::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
}

/// Open the store a URI names.
pub async fn open_store(s: &StoreSettings) -> Result<Arc<dyn Store>, StartError> {
    let durability = match s.durability.as_str() {
        "fsync" => Durability::Fsync,
        "flush" => Durability::Flush,
        d => {
            return Err(StartError::Setting(format!(
                "store.durability '{d}' must be fsync or flush"
            )));
        }
    };
    match s.uri.as_str() {
        "embedded" => {
            let opts = EmbeddedOptions {
                path: s.data_dir.clone(),
                cache_bytes: s.cache_bytes,
                durability,
            };
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&opts))
                .await
                .map_err(|e| StartError::Setting(e.to_string()))??;
            Ok(Arc::new(store))
        }
        u if u.starts_with("cassandra://") => {
            let opts = cassandra_options(u, &s.cassandra)?;
            Ok(Arc::new(CassandraStore::open(opts).await?))
        }
        u => Err(StartError::Setting(format!(
            "store.uri '{u}' must be 'embedded' or 'cassandra://host1,host2/keyspace'"
        ))),
    }
}

/// The Cassandra store's options from its URI and `[store.cassandra]`.
pub fn cassandra_options(uri: &str, c: &CassandraSettings) -> Result<CassandraOptions, StartError> {
    use neurocube_store::cassandra::{parse_consistency, parse_serial_consistency};
    let mut o = CassandraOptions::from_uri(uri).map_err(StartError::Setting)?;
    let setting =
        |name: &str, e: String| StartError::Setting(format!("store.cassandra.{name}: {e}"));
    o.replication.clone_from(&c.replication);
    o.read_consistency =
        parse_consistency(&c.read_consistency).map_err(|e| setting("read_consistency", e))?;
    o.write_consistency =
        parse_consistency(&c.write_consistency).map_err(|e| setting("write_consistency", e))?;
    o.serial_consistency = parse_serial_consistency(&c.serial_consistency)
        .map_err(|e| setting("serial_consistency", e))?;
    o.max_concurrency = c.max_concurrency.max(1);
    o.connect_timeout = std::time::Duration::from_millis(c.connect_timeout_ms);
    o.request_timeout = std::time::Duration::from_millis(c.request_timeout_ms);
    o.startup_deadline = std::time::Duration::from_secs(c.startup_deadline_secs);
    Ok(o)
}

/// HTTP metrics, registered beside the service metrics.
#[derive(Clone)]
struct HttpMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

impl HttpMetrics {
    fn register(registry: &prometheus::Registry) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "neurocube_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new("neurocube_http_request_seconds", "HTTP latency by route").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ],
            ),
            &["route"],
        )
        .expect("valid metric");
        let bytes_in = IntCounter::new("neurocube_http_bytes_in_total", "Request body bytes")
            .expect("valid metric");
        let bytes_out = IntCounter::new("neurocube_http_bytes_out_total", "Response body bytes")
            .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(seconds.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            requests,
            seconds,
            bytes_in,
            bytes_out,
        }
    }
}

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    host: String,
    server: Server,
    services: Arc<Services>,
}

impl Application {
    /// Open the configured store and bind.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let store = open_store(&settings.store).await?;
        Self::with_store(&settings, store)
    }

    /// Bind over an already open store.
    pub fn with_store(settings: &Settings, store: Arc<dyn Store>) -> Result<Self, StartError> {
        let config = ServiceConfig {
            max_cutout_bytes: settings.limits.max_cutout_bytes,
            tiles: neurocube_service::tiles::TileConfig {
                tile_cache_bytes: settings.tiles.cache_bytes,
                chunk_cache_bytes: settings.tiles.chunk_cache_bytes,
                prefetch: settings.tiles.prefetch,
                prefetch_queue: settings.tiles.prefetch_queue,
                prefetch_workers: settings.tiles.prefetch_workers,
            },
        };
        let services = Arc::new(Services::new(&config, store));
        crate::runner::start(&settings.jobs, &services);
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?
            .port();
        let http = HttpMetrics::register(&services.metrics.registry);
        let state = web::Data::new(AppState {
            services: services.clone(),
            // Room for an npy header or Blosc overhead around the largest cutout.
            body_limit: settings.limits.max_cutout_bytes + (1 << 16),
        });
        let mut server = HttpServer::new(move || {
            let http = http.clone();
            App::new()
                .app_data(state.clone())
                .app_data(web::PathConfig::default().error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()))
                .app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::BadRequest(format!("bad query string: {e}")).into()))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
                .wrap_fn(move |req, srv| {
                    let started = Instant::now();
                    let method = req.method().to_string();
                    let path = req.path().to_string();
                    let bytes_in = req
                        .headers()
                        .get(actix_web::http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    let fut = srv.call(req);
                    let http = http.clone();
                    async move {
                        let res = fut.await?;
                        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
                        let status = res.status();
                        let secs = started.elapsed().as_secs_f64();
                        let bytes_out = match res.response().body().size() {
                            BodySize::Sized(n) => n,
                            _ => 0,
                        };
                        http.requests.with_label_values(&[route.as_str(), method.as_str(), status.as_str()]).inc();
                        http.seconds.with_label_values(&[route.as_str()]).observe(secs);
                        http.bytes_in.inc_by(bytes_in);
                        http.bytes_out.inc_by(bytes_out);
                        tracing::info!(%method, %path, status = status.as_u16(), ms = secs * 1e3, bytes_in, bytes_out, "request");
                        Ok(res)
                    }
                })
                .wrap(NormalizePath::new(TrailingSlash::Trim))
        })
        .listen(listener)
        .map_err(|source| StartError::Bind { addr: addr.clone(), source })?
        .shutdown_timeout(10);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Self {
            port,
            host: settings.server.host.clone(),
            server: server.run(),
            services,
        })
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Base URL, e.g. `http://127.0.0.1:8080`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The services (tests and the demo use them directly).
    #[must_use]
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    /// A handle to stop the server.
    #[must_use]
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serve until stopped (by a signal or the handle).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

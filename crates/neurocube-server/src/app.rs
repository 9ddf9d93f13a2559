//! Building and running the HTTP application: open the store, build the
//! services, bind (port 0 in tests), and serve.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Server, Service};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{NormalizePath, TrailingSlash};
use actix_web::{App, HttpMessage, HttpServer, web};
use neurocube_service::{RequestContext, ServiceConfig, Services};
use neurocube_store::Store;
use neurocube_store::cassandra::{CassandraOptions, CassandraStore};
use neurocube_store::embedded::{Durability, EmbeddedOptions, EmbeddedStore};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::config::{CassandraSettings, Settings, StoreSettings};
use crate::endpoint::new_request_id;
use crate::routes;
use crate::state::AppState;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
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
    /// Work a previous run acknowledged could not be brought back.
    #[error("cannot recover: {0}")]
    Recover(String),
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
                engine_threads: s.engine_threads,
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

/// Access control from `[auth]`.
pub fn auth_config(s: &Settings) -> Result<neurocube_service::auth::AuthConfig, StartError> {
    use neurocube_service::auth::{AuthConfig, AuthMode, MetricsAccess};
    let mode = match s.auth.mode.as_str() {
        "open" => AuthMode::Open,
        "tokens" => AuthMode::Tokens,
        m => {
            return Err(StartError::Setting(format!(
                "auth.mode '{m}' must be open or tokens"
            )));
        }
    };
    let metrics = match s.auth.metrics.as_str() {
        "public" => MetricsAccess::Public,
        "authenticated" => MetricsAccess::Authenticated,
        "admin" => MetricsAccess::Admin,
        m => {
            return Err(StartError::Setting(format!(
                "auth.metrics '{m}' must be public, authenticated or admin"
            )));
        }
    };
    let rate = s.auth.rate_limit_per_second;
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(StartError::Setting(format!(
            "auth.rate_limit_per_second {rate} must be 0 (no limit) or more"
        )));
    }
    Ok(AuthConfig {
        mode,
        metrics,
        rate: neurocube_service::auth::rate::RateConfig {
            per_second: rate,
            burst: s.auth.rate_limit_burst.max(1),
        },
    })
}

/// Default lifetime of cached tiles and decoded chunks on a shared store.
const SHARED_STORE_MAX_AGE: Duration = Duration::from_secs(30);

/// How long tiles and decoded chunks may be served from memory: on a
/// Cassandra store other servers may write, so by default for 30 s.
fn tile_max_age(s: &Settings) -> Option<Duration> {
    match s.tiles.max_age_secs {
        Some(0) => None,
        Some(n) => Some(Duration::from_secs(n)),
        None if s.store.uri.starts_with("cassandra://") => Some(SHARED_STORE_MAX_AGE),
        None => None,
    }
}

/// The service settings from the server settings.
pub fn service_config(s: &Settings) -> Result<ServiceConfig, StartError> {
    Ok(ServiceConfig {
        volumes: neurocube_service::volume::VolumeLimits {
            max_cutout_bytes: s.limits.max_cutout_bytes,
            max_cas_attempts: s.limits.max_cas_attempts,
        },
        max_inflight_bytes: s.limits.max_inflight_bytes,
        body_idle_timeout: Duration::from_secs(s.limits.body_idle_timeout_secs.max(1)),
        tiles: neurocube_service::tiles::TileConfig {
            tile_cache_bytes: s.tiles.cache_bytes,
            chunk_cache_bytes: s.tiles.chunk_cache_bytes,
            prefetch: s.tiles.prefetch,
            prefetch_queue: s.tiles.prefetch_queue,
            prefetch_workers: s.tiles.prefetch_workers,
            max_age: tile_max_age(s),
        },
        jobs: neurocube_service::jobs::JobsConfig {
            workers: s.jobs.workers,
            lease: Duration::from_secs(s.jobs.lease_seconds.max(1)),
            pause: Duration::from_millis(s.jobs.pause_ms),
        },
        auto_downsample: s
            .jobs
            .auto_downsample
            .then(|| Duration::from_millis(s.jobs.auto_delay_ms)),
        background_threads: s.server.background_threads.max(1),
        annotations: neurocube_service::annotations::AnnotationConfig {
            writer: neurocube_service::annotations::WriterConfig {
                queue_rows: s.annotations.queue_rows.max(1),
                batch_rows: s.annotations.batch_rows.max(1),
            },
            max_paged_limit: s.annotations.max_paged_limit,
            max_graph_png_nodes: s.annotations.max_graph_png_nodes.max(1),
            query_batch_rows: s.annotations.query_batch_rows.max(1),
            pack_min_rows: s.annotations.pack_min_rows,
            ingest_min_rows: s.annotations.ingest_min_rows,
            ..Default::default()
        },
        max_upload_bytes: s.annotations.max_upload_bytes,
        objects: neurocube_service::objects::ObjectsConfig {
            max_pending_bytes: s.objects.max_pending_bytes.max(1 << 20),
            flush_interval: Duration::from_millis(s.objects.flush_interval_ms),
            flush_max_delay: Duration::from_millis(s.objects.flush_max_delay_ms),
            flush_at_bytes: match s.objects.flush_at_bytes {
                0 => s.objects.max_pending_bytes.max(1 << 20) / 2,
                n => n,
            },
            flush_parallel: s.objects.flush_parallel.max(1),
            log_name: log_name(s)?,
            max_voxels: s.objects.max_voxels.max(1),
        },
        auth: auth_config(s)?,
    })
}

/// This instance's label log name (`objects.log_name`, or a default: `local`
/// on the embedded store, host name and port on a shared one; with port 0
/// the port is the one bound, see [`Application::with_store`]).
fn log_name(s: &Settings) -> Result<String, StartError> {
    log_name_on(s, s.server.port)
}

fn log_name_on(s: &Settings, port: u16) -> Result<String, StartError> {
    let name = s.objects.log_name.trim();
    if !name.is_empty() {
        if name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(StartError::Setting(format!(
                "objects.log_name '{name}' must be 1 to 64 letters, digits or -_.:"
            )));
        }
        return Ok(name.to_string());
    }
    if s.store.uri == "embedded" {
        return Ok("local".into());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    Ok(format!(
        "{}:{port}",
        if host.is_empty() { "server" } else { &host },
    ))
}

/// The methods the server knows, as metric labels; anything else is
/// `other`, so made-up methods cannot create metric series without bound.
fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *m {
        M::GET => "GET",
        M::PUT => "PUT",
        M::POST => "POST",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        _ => "other",
    }
}

/// A client's `X-Request-Id` if it is a sane token, else a fresh one.
fn request_id(req: &actix_web::dev::ServiceRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(new_request_id, str::to_string)
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
    #[allow(clippy::expect_used)] // startup: static metric names
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
    grace: Duration,
}

impl Application {
    /// Open the configured store and bind.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let store = open_store(&settings.store).await?;
        Self::with_store(&settings, store).await
    }

    /// Bind over an already open store: replay this instance's label log,
    /// then start the background workers. The socket is bound first, so
    /// that on port 0 the default label log name holds the port the system
    /// gave (two servers on one host and store never share a log); requests
    /// wait in its backlog until the log is replayed.
    pub async fn with_store(
        settings: &Settings,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
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
        let mut config = service_config(settings)?;
        if settings.server.port == 0 && settings.objects.log_name.trim().is_empty() {
            config.objects.log_name = log_name_on(settings, port)?;
        }
        let services = Arc::new(Services::new(&config, store));
        services
            .recover()
            .await
            .map_err(|e| StartError::Recover(format!("replaying the label log failed: {e}")))?;
        services.start();
        let http = HttpMetrics::register(&services.metrics.registry);
        let timeout = (settings.server.request_timeout_secs > 0)
            .then(|| Duration::from_secs(settings.server.request_timeout_secs));
        let state = web::Data::new(AppState {
            services: services.clone(),
            request_timeout: timeout,
            max_header_bytes: settings.limits.max_header_bytes,
        });
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let mut server = HttpServer::new(move || {
            let http = http.clone();
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
                .wrap_fn(move |req, srv| {
                    let started = Instant::now();
                    let method = method_label(req.method());
                    let path = req.path().to_string();
                    let bytes_in = req
                        .headers()
                        .get(actix_web::http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    // The request context: built once here, read by every endpoint.
                    let id = request_id(&req);
                    req.extensions_mut()
                        .insert(RequestContext::anonymous(id.clone(), timeout));
                    let fut = srv.call(req);
                    let http = http.clone();
                    async move {
                        let mut res = fut.await?;
                        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
                        let status = res.status();
                        let secs = started.elapsed().as_secs_f64();
                        let bytes_out = match res.response().body().size() {
                            BodySize::Sized(n) => n,
                            _ => 0,
                        };
                        http.requests.with_label_values(&[route.as_str(), method, status.as_str()]).inc();
                        http.seconds.with_label_values(&[route.as_str()]).observe(secs);
                        http.bytes_in.inc_by(bytes_in);
                        http.bytes_out.inc_by(bytes_out);
                        if let Ok(v) = HeaderValue::from_str(&id) {
                            res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
                        }
                        // Precomputed volumes are read by viewers served elsewhere (errors too).
                        if path.starts_with("/precomputed/") {
                            res.headers_mut().insert(
                                actix_web::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                                HeaderValue::from_static("*"),
                            );
                        }
                        tracing::info!(request_id = %id, %method, %path, status = status.as_u16(), ms = secs * 1e3, bytes_in, bytes_out, "request");
                        Ok(res)
                    }
                })
                .wrap(NormalizePath::new(TrailingSlash::Trim))
        })
        // Small answers (one root id's synapses) go out at once, not after
        // the client's delayed ACK (Nagle would hold their last chunk ~40 ms).
        .on_connect(|conn, _ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .client_request_timeout(Duration::from_secs(settings.limits.head_timeout_secs.max(1)))
        .listen(listener)
        .map_err(|source| StartError::Bind { addr: addr.clone(), source })?
        .shutdown_timeout(grace.as_secs());
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Self {
            port,
            host: settings.server.host.clone(),
            server: server.run(),
            services,
            grace,
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

    /// Serve until stopped (by SIGTERM, SIGINT or the handle), then shut
    /// down in order: the HTTP server stops accepting and lets in-flight
    /// requests finish (at most the grace period), the background workers
    /// drain their queues, and the store is flushed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        tracing::info!("HTTP server stopped; draining background workers");
        match self.services.shutdown(self.grace).await {
            Ok(true) => tracing::info!("shut down cleanly"),
            Ok(false) => {
                tracing::warn!("shut down; some background work was cut off at the grace period")
            }
            Err(e) => {
                tracing::error!(error = %e, "flushing the store at shutdown failed");
                return Err(std::io::Error::other(e.to_string()));
            }
        }
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tiles_expire_by_default_only_on_a_shared_store() {
        let mut s = Settings::defaults();
        assert_eq!(
            tile_max_age(&s),
            None,
            "embedded: one server owns the store"
        );
        s.store.uri = "cassandra://127.0.0.1/ks".into();
        assert_eq!(tile_max_age(&s), Some(Duration::from_secs(30)));
        s.tiles.max_age_secs = Some(0);
        assert_eq!(tile_max_age(&s), None, "0: forever");
        s.store.uri = "embedded".into();
        s.tiles.max_age_secs = Some(5);
        assert_eq!(tile_max_age(&s), Some(Duration::from_secs(5)));
    }
}

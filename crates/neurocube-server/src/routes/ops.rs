//! Health, metrics and the API index.

use actix_web::{HttpResponse, web};
use prometheus::Encoder;
use serde_json::json;

use crate::state::AppState;

/// `GET /health`: the process is up and which store it uses.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "store": state.services.store.backend()}))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut buf = Vec::new();
    let families = state.services.metrics.registry.gather();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut buf) {
        return HttpResponse::InternalServerError().body(e.to_string());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(buf)
}

/// `GET /v1`: the API, in brief (docs/api.md has the details).
pub async fn index() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "neurocube",
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "docs/api.md",
        "endpoints": [
            {"method": "GET", "path": "/v1/datasets", "does": "list datasets"},
            {"method": "PUT|GET|DELETE", "path": "/v1/datasets/{ds}", "does": "create (JSON: voxel_size, extent, offset, levels, scaling), read, delete (?recursive=true with channels)"},
            {"method": "GET", "path": "/v1/datasets/{ds}/channels", "does": "list channels"},
            {"method": "PUT|GET|DELETE", "path": "/v1/datasets/{ds}/channels/{ch}", "does": "create (JSON: type, dtype, chunk_size, compression), read, delete"},
            {"method": "POST", "path": "/v1/datasets/{ds}/channels/{ch}/downsample", "does": "recompute the stale coarser levels of a channel (a job; 202)"},
            {"method": "GET", "path": "/v1/jobs", "does": "background jobs, newest first: state, done/total, rate, eta_seconds, errors, holder"},
            {"method": "GET|DELETE", "path": "/v1/jobs/{id}", "does": "one job (?tasks=true lists its tasks); DELETE cancels"},
            {"method": "GET|PUT", "path": "/{ds}/{ch}/{npy|raw|blosc}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/", "does": "read or write a cutout, C order (z, y, x)"},
            {"method": "GET", "path": "/{ds}/{ch}/xy/{level}/{x0,x1}/{y0,y1}/{z}/", "does": "xy slice as PNG (?format=jpeg&quality=85, ?window=lo,hi)"},
            {"method": "GET", "path": "/{ds}/{ch}/xz/{level}/{x0,x1}/{y}/{z0,z1}/", "does": "xz slice"},
            {"method": "GET", "path": "/{ds}/{ch}/yz/{level}/{x}/{y0,y1}/{z0,z1}/", "does": "yz slice"},
            {"method": "GET", "path": "/ocp/ca/...", "does": "every data URL under the OCP prefix"},
            {"method": "GET", "path": "/v1/tiles/{ds}/{ch}/{xy|xz|yz}/{256|512|1024}/{level}/{slice}/{row}/{col}.{png|jpg}", "does": "a cached square tile of a plane (ETag, Cache-Control, 304 on If-None-Match)"},
            {"method": "GET", "path": "/catmaid/{ds}/{ch}/xy/{z}/{row}_{col}_{level}.{png|jpg}", "does": "CATMAID tile source: 512-pixel tiles, z in level-0 sections"},
            {"method": "GET", "path": "/viewer/", "does": "the tile viewer page"},
            {"method": "GET", "path": "/health", "does": "liveness and store backend"},
            {"method": "GET", "path": "/metrics", "does": "Prometheus metrics"}
        ]
    }))
}

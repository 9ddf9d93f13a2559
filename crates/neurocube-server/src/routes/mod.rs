//! Routes: each parses its request into typed values and makes one service
//! call. Registered in order: API, operations, OCP prefix, bare data URLs.

use actix_web::{HttpRequest, web};

use crate::error::ApiError;

mod data;
mod jobs;
mod meta;
mod ops;
mod tiles;
mod viewer;

/// Register every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(ops::health))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/v1", web::get().to(ops::index))
        .route("/v1/datasets", web::get().to(meta::list_datasets))
        .service(
            web::resource("/v1/datasets/{ds}")
                .route(web::get().to(meta::get_dataset))
                .route(web::put().to(meta::put_dataset))
                .route(web::delete().to(meta::delete_dataset)),
        )
        .route(
            "/v1/datasets/{ds}/channels",
            web::get().to(meta::list_channels),
        )
        .service(
            web::resource("/v1/datasets/{ds}/channels/{ch}")
                .route(web::get().to(meta::get_channel))
                .route(web::put().to(meta::put_channel))
                .route(web::delete().to(meta::delete_channel)),
        );
    // Tiles and the viewer, before the generic data URLs.
    cfg.route(
        "/v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}",
        web::get().to(tiles::tile),
    )
    .route(
        "/catmaid/{ds}/{ch}/{plane}/{z}/{tile}",
        web::get().to(tiles::catmaid),
    )
    .route("/viewer", web::get().to(viewer::index))
    .route("/viewer/{file}", web::get().to(viewer::file));
    // Jobs and downsampling, before the generic data URLs.
    cfg.service(
        web::resource("/v1/jobs")
            .route(web::get().to(jobs::list))
            .route(web::post().to(jobs::create)),
    )
    .service(
        web::resource("/v1/jobs/{id}")
            .route(web::get().to(jobs::get))
            .route(web::delete().to(jobs::cancel)),
    )
    .route(
        "/v1/jobs/{id}/tasks/{name}/done",
        web::post().to(jobs::task_done),
    )
    .route("/v1/jobs/{id}/fail", web::post().to(jobs::fail))
    .route(
        "/v1/datasets/{ds}/channels/{ch}/downsample",
        web::post().to(jobs::downsample),
    );
    for prefix in ["/ocp/ca", ""] {
        cfg.service(
            web::resource(format!(
                "{prefix}/{{ds}}/{{ch}}/{{fmt}}/{{level}}/{{a}}/{{b}}/{{c}}"
            ))
            .route(web::get().to(data::get))
            .route(web::put().to(data::put))
            .route(web::post().to(data::put)),
        );
    }
}

/// 404 for every URL no route matches.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NoRoute(format!(
        "no route for {} {}; GET /v1 lists the API, data URLs look like /{{dataset}}/{{channel}}/npy/{{level}}/x0,x1/y0,y1/z0,z1/",
        req.method(),
        req.path()
    )))
}

//! The route table: every route of the server, in matching order, as
//! (method, path, what it does, endpoint). `configure` registers it, the
//! API index (`GET /v1`) lists it, and tests walk it, so none of them can
//! forget a route. Each endpoint is a type in one of the modules below.

use actix_web::http::Method;
use actix_web::{HttpRequest, web};

use crate::endpoint::{Endpoint, serve};
use crate::error::ApiError;

mod annotations;
mod auth;
mod boss;
mod cave;
mod data;
mod graph;
mod jobs;
mod meta;
mod objects;
mod ops;
mod precomputed;
mod tiles;
mod viewer;

/// One route.
#[derive(Clone, Debug)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path pattern.
    pub path: String,
    /// What it does, for the API index.
    pub does: &'static str,
    handler: fn(Method) -> actix_web::Route,
}

fn to<E: Endpoint>(m: Method) -> actix_web::Route {
    web::method(m).to(serve::<E>)
}

fn route<E: Endpoint>(method: Method, path: &str, does: &'static str) -> Route {
    Route {
        method,
        path: path.to_string(),
        does,
        handler: to::<E>,
    }
}

/// Every route, in matching order: the API, operations, tiles, the viewer
/// and jobs first, then the OCP data URLs (under `/ocp/ca` and bare).
#[must_use]
pub fn table() -> Vec<Route> {
    use Method as M;
    let mut t = vec![
        route::<ops::Health>(
            M::GET,
            "/health",
            "liveness, store backend and background workers",
        ),
        route::<ops::Metrics>(M::GET, "/metrics", "Prometheus metrics"),
        route::<ops::Index>(M::GET, "/v1", "this list"),
        route::<ops::Workers>(
            M::GET,
            "/v1/workers",
            "background workers: state, queue depth, errors",
        ),
        route::<auth::WhoAmI>(
            M::GET,
            "/v1/auth/whoami",
            "the caller: user, groups, admin, and the server's auth mode",
        ),
        route::<auth::ListUsers>(M::GET, "/v1/auth/users", "users (server admins)"),
        route::<auth::PutUser>(
            M::PUT,
            "/v1/auth/users/{user}",
            "create or change a user (JSON: groups, admin; server admins)",
        ),
        route::<auth::DeleteUser>(
            M::DELETE,
            "/v1/auth/users/{user}",
            "delete a user and revoke its tokens (server admins)",
        ),
        route::<auth::ListTokens>(
            M::GET,
            "/v1/auth/tokens",
            "one's tokens (admins: everyone's, or ?user=), ids only",
        ),
        route::<auth::CreateToken>(
            M::POST,
            "/v1/auth/tokens",
            "make a token (JSON: user, description, expires_in_days); the secret is in this answer only",
        ),
        route::<auth::RevokeToken>(M::DELETE, "/v1/auth/tokens/{id}", "revoke a token"),
        route::<meta::ListDatasets>(
            M::GET,
            "/v1/datasets",
            "list the datasets the caller may read",
        ),
        route::<meta::GetDataset>(M::GET, "/v1/datasets/{ds}", "a dataset and its levels"),
        route::<meta::PutDataset>(
            M::PUT,
            "/v1/datasets/{ds}",
            "create a dataset (JSON: voxel_size, extent, offset, levels, scaling)",
        ),
        route::<meta::PatchDataset>(
            M::PATCH,
            "/v1/datasets/{ds}",
            "change a dataset's description and CAVE's datastack tables (JSON: description, synapse_table, soma_table; null clears a table)",
        ),
        route::<meta::DeleteDataset>(
            M::DELETE,
            "/v1/datasets/{ds}",
            "delete a dataset (?recursive=true with its channels)",
        ),
        route::<auth::GetPermissions>(
            M::GET,
            "/v1/datasets/{ds}/permissions",
            "who may read, write and administer the dataset (its admins)",
        ),
        route::<auth::PutPermissions>(
            M::PUT,
            "/v1/datasets/{ds}/permissions",
            "replace them (JSON: public, grants: [{user or group, role: read|write|admin}])",
        ),
        route::<meta::ListChannels>(M::GET, "/v1/datasets/{ds}/channels", "list channels"),
        route::<meta::GetChannel>(
            M::GET,
            "/v1/datasets/{ds}/channels/{ch}",
            "a channel and the state of its levels",
        ),
        route::<meta::PutChannel>(
            M::PUT,
            "/v1/datasets/{ds}/channels/{ch}",
            "create a channel (JSON: type, dtype, chunk_size, compression)",
        ),
        route::<meta::DeleteChannel>(
            M::DELETE,
            "/v1/datasets/{ds}/channels/{ch}",
            "delete a channel (its chunks are purged in the background)",
        ),
        route::<annotations::ListSchemas>(
            M::GET,
            "/v1/schemas",
            "the built-in annotation schemas (CAVE's column names)",
        ),
        route::<annotations::GetSchema>(
            M::GET,
            "/v1/schemas/{name}",
            "one built-in schema: fields and flattened columns",
        ),
        route::<annotations::ListTables>(
            M::GET,
            "/v1/datasets/{ds}/tables",
            "annotation tables of a dataset",
        ),
        route::<annotations::GetTable>(
            M::GET,
            "/v1/datasets/{ds}/tables/{table}",
            "a table: declaration, columns, row count",
        ),
        route::<annotations::PutTable>(
            M::PUT,
            "/v1/datasets/{ds}/tables/{table}",
            "declare a table (JSON: schema or custom fields, voxel_resolution, segmentation, reference_table, description)",
        ),
        route::<annotations::DeleteTable>(
            M::DELETE,
            "/v1/datasets/{ds}/tables/{table}",
            "delete a table: it is gone at once; its rows, versions' rows and indexes are purged in the background",
        ),
        route::<objects::CreateObjects>(
            M::POST,
            "/v1/datasets/{ds}/tables/{table}/objects",
            "create annotation objects with their voxels (JSON or NDJSON; ?conflict=overwrite|preserve|exception); all checked before anything is written",
        ),
        route::<objects::GetObject>(
            M::GET,
            "/v1/datasets/{ds}/tables/{table}/objects/{id}",
            "an object: its row, voxel count and bounding box",
        ),
        route::<objects::DeleteObject>(
            M::DELETE,
            "/v1/datasets/{ds}/tables/{table}/objects/{id}",
            "delete an object: its voxels are cleared, its row deleted",
        ),
        route::<objects::PutVoxels>(
            M::PUT,
            "/v1/datasets/{ds}/tables/{table}/objects/{id}/voxels",
            "label an object's voxels: a JSON list, or a mask (npy, blosc, raw) of ?x=&y=&z=; ?conflict=overwrite|preserve|exception",
        ),
        route::<objects::GetVoxels>(
            M::GET,
            "/v1/datasets/{ds}/tables/{table}/objects/{id}/voxels",
            "an object's voxels (pending label writes included)",
        ),
        route::<objects::GetBoundingBox>(
            M::GET,
            "/v1/datasets/{ds}/tables/{table}/objects/{id}/boundingbox",
            "an object's bounding box and voxel count",
        ),
        route::<objects::GetObjectCutout>(
            M::GET,
            "/v1/datasets/{ds}/tables/{table}/objects/{id}/cutout",
            "an object's labels over its bounding box (or ?x=&y=&z=), other labels 0; ?format=npy|blosc|raw",
        ),
        route::<annotations::InsertRows>(
            M::POST,
            "/v1/datasets/{ds}/tables/{table}/rows",
            "insert rows (JSON, NDJSON, CSV or Arrow IPC by Content-Type); 422 names the first bad row and nothing is written",
        ),
        route::<annotations::UpdateRows>(
            M::PUT,
            "/v1/datasets/{ds}/tables/{table}/rows",
            "update rows: each names the id it replaces (not on object tables: 400)",
        ),
        route::<annotations::DeleteRows>(
            M::DELETE,
            "/v1/datasets/{ds}/tables/{table}/rows",
            "delete rows (JSON: ids; not on object tables: 400)",
        ),
        route::<annotations::QueryTable>(
            M::POST,
            "/v1/datasets/{ds}/tables/{table}/query",
            "query with CAVE's filters; Arrow, CSV or JSON lines (?format= or Accept), streamed",
        ),
        route::<annotations::CountRows>(
            M::GET,
            "/v1/datasets/{ds}/tables/{table}/count",
            "rows valid now, in a ?version= or at a ?timestamp=",
        ),
        route::<annotations::SynapseQueryEndpoint>(
            M::POST,
            "/v1/datasets/{ds}/synapse_query",
            "synapses by pre_ids and/or post_ids and bounding_box",
        ),
        route::<graph::GetGraph>(
            M::GET,
            "/v1/datasets/{ds}/graph",
            "the synapse graph (ids, pre_ids, post_ids, bounding_box, select_table; min_synapses): csv, json, graphml, npz, arrow or png",
        ),
        route::<graph::GetGraph>(
            M::POST,
            "/v1/datasets/{ds}/graph",
            "the synapse graph, its fields as JSON (for long id lists)",
        ),
        route::<graph::GraphStats>(
            M::GET,
            "/v1/datasets/{ds}/graph/stats",
            "node and edge counts, degree distributions, reciprocity, synapses per edge",
        ),
        route::<graph::GraphStats>(
            M::POST,
            "/v1/datasets/{ds}/graph/stats",
            "graph statistics, the fields as JSON",
        ),
        route::<annotations::ListVersions>(
            M::GET,
            "/v1/datasets/{ds}/versions",
            "materialized versions: timestamp, validity, expiry",
        ),
        route::<annotations::CreateVersion>(
            M::POST,
            "/v1/datasets/{ds}/versions",
            "materialize a version (a job; 202)",
        ),
        route::<annotations::GetVersion>(M::GET, "/v1/datasets/{ds}/versions/{v}", "one version"),
        route::<cave::Fixed<{ cave::INFO_VERSION }>>(
            M::GET,
            "/info/version",
            "CAVE info service: its version",
        ),
        route::<cave::Datastacks>(
            M::GET,
            "/info/api/v2/datastacks",
            "CAVE: the datastacks (datasets) the caller may read",
        ),
        route::<cave::Datastack>(
            M::GET,
            "/info/api/v2/datastack/full/{ds}",
            "CAVE: a dataset as a datastack (aligned volume, local_server, synapse_table, soma_table, segmentation_source)",
        ),
        route::<cave::Fixed<{ cave::SCHEMA_VERSIONS }>>(
            M::GET,
            "/schema/versions",
            "CAVE schema service: its API versions",
        ),
        route::<cave::Schemas<true>>(
            M::GET,
            "/schema/api/v2/types_all",
            "CAVE: every annotation schema as JSON Schema",
        ),
        route::<cave::Schemas<false>>(M::GET, "/schema/api/v2/type", "CAVE: the schema names"),
        route::<cave::Schemas<false>>(
            M::GET,
            "/schema/api/v2/type/{name}",
            "CAVE: one schema as JSON Schema",
        ),
        route::<cave::Fixed<{ cave::MATERIALIZE_APIS }>>(
            M::GET,
            "/materialize/api/versions",
            "CAVE materialization engine: its API versions",
        ),
        route::<cave::Fixed<{ cave::MATERIALIZE_VERSION }>>(
            M::GET,
            "/materialize/version",
            "CAVE: the engine version the protocol follows",
        ),
        route::<cave::Versions<false>>(
            M::GET,
            "/materialize/api/v3/datastack/{ds}/versions",
            "CAVE: the usable versions (?expired=True: also expired ones)",
        ),
        route::<cave::Versions<true>>(
            M::GET,
            "/materialize/api/v3/datastack/{ds}/metadata",
            "CAVE: each version's time_stamp, expires_on, valid",
        ),
        route::<cave::Version>(
            M::GET,
            "/materialize/api/v3/datastack/{ds}/version/{v}",
            "CAVE: one version",
        ),
        route::<cave::Tables<false>>(
            M::GET,
            "/materialize/api/v2/datastack/{ds}/version/{v}/tables",
            "CAVE: the tables of a version",
        ),
        route::<cave::Tables<true>>(
            M::GET,
            "/materialize/api/v3/datastack/{ds}/version/{v}/tables/metadata",
            "CAVE: the metadata of every table of a version",
        ),
        route::<cave::Table<false>>(
            M::GET,
            "/materialize/api/v3/datastack/{ds}/version/{v}/table/{table}/metadata",
            "CAVE: a table's metadata (schema, reference_table, voxel_resolution_x/y/z)",
        ),
        route::<cave::Table<true>>(
            M::GET,
            "/materialize/api/v2/datastack/{ds}/version/{v}/table/{table}/count",
            "CAVE: the rows of a table in a version",
        ),
        route::<cave::Query>(
            M::POST,
            "/materialize/api/v3/datastack/{ds}/version/{v}/table/{table}/query",
            "CAVE query_table: filters keyed by table, Arrow stream (data.arrow) with dataframe_resolution",
        ),
        route::<cave::Query>(
            M::POST,
            "/materialize/api/v3/datastack/{ds}/version/{v}/query",
            "CAVE join_query: a reference table merged with its target, or two tables joined",
        ),
        route::<cave::Fixed<{ cave::SEGMENTATION_APIS }>>(
            M::GET,
            "/segmentation/api/versions",
            "CAVE chunkedgraph: its API versions",
        ),
        route::<cave::Chunkedgraph<{ cave::IS_LATEST }>>(
            M::POST,
            "/segmentation/api/v1/table/{ds}/is_latest_roots",
            "CAVE live queries: every root of a static segmentation is the latest",
        ),
        route::<cave::Chunkedgraph<{ cave::ROOT_TIMESTAMPS }>>(
            M::POST,
            "/segmentation/api/v1/table/{ds}/root_timestamps",
            "CAVE live queries: when roots were made",
        ),
        route::<cave::Chunkedgraph<{ cave::PAST_ID_MAPPING }>>(
            M::GET,
            "/segmentation/api/v1/table/{ds}/past_id_mapping",
            "CAVE live queries: ids map to themselves",
        ),
        route::<cave::Chunkedgraph<{ cave::ROOTS_BINARY }>>(
            M::POST,
            "/segmentation/api/v1/table/{ds}/roots_binary",
            "CAVE live queries: the root of each supervoxel (uint64 little-endian in and out)",
        ),
        route::<tiles::Tile>(
            M::GET,
            "/v1/tiles/{ds}/{ch}/{plane}/{size}/{level}/{slice}/{row}/{col}",
            "a cached square tile {xy|xz|yz}/{256|512|1024}/{level}/{slice}/{row}/{col}.{png|jpg} (ETag, 304)",
        ),
        route::<tiles::Catmaid>(
            M::GET,
            "/catmaid/{ds}/{ch}/{plane}/{z}/{tile}",
            "CATMAID tile source: xy/{z}/{row}_{col}_{level}.{png|jpg}, 512-pixel tiles, z in level-0 sections",
        ),
        route::<precomputed::AnnotationInfo>(
            M::GET,
            "/precomputed/{ds}/annotations/{table}/info",
            "an annotation table as Neuroglancer precomputed annotations (lines for synapse tables, points otherwise)",
        ),
        route::<precomputed::AnnotationIndex>(
            M::GET,
            "/precomputed/{ds}/annotations/{table}/{index}/{key}",
            "its by_id/{id}, rel_{root id column}/{root id} and spatial0/0_0_0",
        ),
        route::<precomputed::Info<false>>(
            M::GET,
            "/precomputed/{ds}/{ch}/info",
            "Neuroglancer precomputed info: one scale per level (raw; compressed_segmentation for uint32/uint64 labels)",
        ),
        route::<precomputed::Info<true>>(
            M::GET,
            "/precomputed/{ds}/{ch}/jpeg/info",
            "the same for uint8 images, jpeg-encoded",
        ),
        route::<precomputed::SegmentProperties>(
            M::GET,
            "/precomputed/{ds}/{ch}/segment_properties/info",
            "Neuroglancer segment properties of a segmentation channel: its labels (the whole of level 0 when it fits in one cutout) and its objects' kinds, authors and tables",
        ),
        route::<precomputed::Chunk<true>>(
            M::GET,
            "/precomputed/{ds}/{ch}/jpeg/{scale}/{chunk}",
            "a jpeg chunk",
        ),
        route::<precomputed::Chunk<false>>(
            M::GET,
            "/precomputed/{ds}/{ch}/{scale}/{chunk}",
            "a chunk x0-x1_y0-y1_z0-z1 of a scale (ETag; gzip for labels when accepted; never-written chunks read as zeros)",
        ),
        route::<boss::Collections>(
            M::GET,
            "/v1/collection",
            "BOSS: the collections (a dataset is a collection with one experiment, 'default')",
        ),
        route::<boss::Collection>(M::GET, "/v1/collection/{coll}", "BOSS: a collection"),
        route::<boss::Experiments>(
            M::GET,
            "/v1/collection/{coll}/experiment",
            "BOSS: its experiments",
        ),
        route::<boss::Experiment<false>>(
            M::GET,
            "/v1/collection/{coll}/experiment/{exp}",
            "BOSS: an experiment",
        ),
        route::<boss::Experiment<true>>(
            M::GET,
            "/v1/collection/{coll}/experiment/{exp}/channel",
            "BOSS: its channels",
        ),
        route::<boss::Channel>(
            M::GET,
            "/v1/collection/{coll}/experiment/{exp}/channel/{ch}",
            "BOSS: a channel (datatype, type image or annotation)",
        ),
        route::<boss::CoordFrame>(
            M::GET,
            "/v1/coord/{frame}",
            "BOSS: a dataset's coordinate frame (named like the dataset)",
        ),
        route::<boss::Cutout>(
            M::GET,
            "/v1/cutout/{coll}/{exp}/{ch}/{res}/{x}/{y}/{z}",
            "BOSS cutout x0:x1/y0:y1/z0:z1 as application/blosc (intern's get_cutout)",
        ),
        route::<boss::WriteCutout>(
            M::POST,
            "/v1/cutout/{coll}/{exp}/{ch}/{res}/{x}/{y}/{z}",
            "write a BOSS cutout, a Blosc body (intern's create_cutout)",
        ),
        route::<viewer::Page>(M::GET, "/viewer", "the tile viewer page"),
        route::<viewer::File>(
            M::GET,
            "/viewer/{file}",
            "the viewer's script and style sheet",
        ),
        route::<jobs::ListJobs>(
            M::GET,
            "/v1/jobs",
            "background jobs, newest first: state, done/total, rate, eta_seconds, errors, holder",
        ),
        route::<jobs::CreateJob>(
            M::POST,
            "/v1/jobs",
            "create a client-run job (the ingest command)",
        ),
        route::<jobs::GetJob>(
            M::GET,
            "/v1/jobs/{id}",
            "one job (?tasks=true lists its tasks)",
        ),
        route::<jobs::CancelJob>(M::DELETE, "/v1/jobs/{id}", "cancel a job"),
        route::<jobs::TaskDone>(
            M::POST,
            "/v1/jobs/{id}/tasks/{name}/done",
            "a client finished a task of its job",
        ),
        route::<jobs::FailJob>(
            M::POST,
            "/v1/jobs/{id}/fail",
            "a client stopped its job on an error (JSON: error)",
        ),
        route::<jobs::Downsample>(
            M::POST,
            "/v1/datasets/{ds}/channels/{ch}/downsample",
            "recompute the stale coarser levels of a channel (a job; 202)",
        ),
    ];
    let precomputed: Vec<String> = t
        .iter()
        .filter(|r| r.path.starts_with("/precomputed/"))
        .map(|r| r.path.clone())
        .collect();
    for path in precomputed {
        t.push(route::<precomputed::Preflight>(
            M::OPTIONS,
            &path,
            "CORS preflight",
        ));
    }
    for prefix in ["/ocp/ca", ""] {
        let path = format!("{prefix}/{{ds}}/{{ch}}/{{fmt}}/{{level}}/{{a}}/{{b}}/{{c}}");
        t.push(route::<data::Get>(M::GET, &path, "a cutout {npy|raw|blosc}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/, the stored chunks as they are (chunks/..., docs/chunks.md) or a slice xy/{level}/{x0,x1}/{y0,y1}/{z}/ (also xz, yz; ?format=jpeg&quality=85, ?window=lo,hi)"));
        t.push(route::<data::Put>(
            M::PUT,
            &path,
            "write a cutout {npy|raw|blosc}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/, C order (z, y, x)",
        ));
        t.push(route::<data::Put>(
            M::POST,
            &path,
            "write a cutout (as PUT)",
        ));
    }
    t
}

/// Register every route: one resource per path (so a known path with an
/// unknown method is a 405), in table order.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let table = table();
    let mut paths: Vec<&str> = Vec::new();
    for r in &table {
        if !paths.contains(&r.path.as_str()) {
            paths.push(&r.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        for r in table.iter().filter(|r| r.path == path) {
            resource = resource.route((r.handler)(r.method.clone()));
        }
        cfg.service(resource);
    }
}

/// 404 for every URL no route matches.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NoRoute {
        method: req.method().to_string(),
        path: req.path().to_string(),
    })
}

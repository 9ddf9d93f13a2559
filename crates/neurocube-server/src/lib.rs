//! The neurocube HTTP server (actix-web): settings, typed endpoints in the
//! OCP URL grammar and under `/v1` (one route table), the error table,
//! request-context and metrics middleware, and the [`app::Application`]
//! that tests start on port 0.

pub mod app;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod ingest;
pub mod routes;
mod state;
pub mod token_cmd;
pub mod url;

pub use app::Application;
pub use config::Settings;

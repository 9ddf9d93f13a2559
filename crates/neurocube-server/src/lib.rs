//! The neurocube HTTP server (actix-web): settings, routes in the OCP URL
//! grammar and under `/v1`, the error table, metrics middleware, and the
//! [`app::Application`] that tests start on port 0.

pub mod app;
mod body;
pub mod config;
pub mod error;
pub mod ingest;
mod routes;
mod runner;
mod state;
pub mod url;

pub use app::Application;
pub use config::Settings;

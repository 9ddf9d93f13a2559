//! HTTP integration tests: the real server, port 0, a temporary data
//! directory, the embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

mod annotation_filters;
mod annotation_versions;
mod annotations;
mod auth;
mod auth_matrix;
mod bad_input;
mod boss;
mod busy_neurons;
mod cave;
mod concurrency;
mod cutouts;
mod datasets;
mod fuzz;
mod graph;
mod helpers;
mod hostile;
mod jobs;
mod objects;
mod objects_bulk;
mod ops;
mod precomputed;
mod slices;
mod tiles;

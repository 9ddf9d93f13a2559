//! benches

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches: a panic is a failure report

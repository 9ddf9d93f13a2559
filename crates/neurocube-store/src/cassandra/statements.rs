//! The prepared statements of one table, made once when the store opens,
//! and the options its CQL table is created with.

use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

use super::options::{CassandraOptions, prep_error};
use crate::{StoreError, Table};

/// Prepared statements of one table.
pub(super) struct Stmts {
    pub(super) put: PreparedStatement,
    pub(super) get_in: PreparedStatement,
    pub(super) del: PreparedStatement,
    pub(super) del_partition: PreparedStatement,
    /// `scan[lower][upper]`: lower 0 none, 1 `s >= ?`, 2 `s > ?`; upper 0 none, 1 `s < ?`.
    pub(super) scan: [[PreparedStatement; 2]; 3],
    pub(super) ring: PreparedStatement,
    /// Distinct partition keys: from the start of the ring, and after one.
    pub(super) parts_first: PreparedStatement,
    pub(super) parts_after: PreparedStatement,
    pub(super) cas_insert: PreparedStatement,
    pub(super) cas_update: PreparedStatement,
    pub(super) cas_delete: PreparedStatement,
    pub(super) serial_get: PreparedStatement,
}

/// Options of a table at creation. Chunks are Blosc frames already, so
/// Cassandra's own LZ4 (on by default) would only cost CPU on every read
/// and write: store-compare measured it (BENCHMARKS.md, issue 15).
pub(super) fn table_options(t: Table) -> &'static str {
    match t {
        Table::Chunks => " WITH compression = {'enabled': 'false'}",
        _ => "",
    }
}

#[allow(clippy::expect_used)] // startup: arrays filled by loops of fixed length
pub(super) async fn prepare_table(
    session: &Session,
    opts: &CassandraOptions,
    hosts: &str,
    t: Table,
) -> Result<Stmts, StoreError> {
    let name = format!("{}.{}", opts.keyspace, t.name());
    let prep = |q: String, c: Consistency, idempotent: bool| async move {
        let mut p = session
            .prepare(q)
            .await
            .map_err(|e| prep_error(hosts, "prepare a statement", e))?;
        p.set_consistency(c);
        p.set_is_idempotent(idempotent);
        if !idempotent {
            p.set_serial_consistency(Some(opts.serial_consistency));
        }
        Ok::<_, StoreError>(p)
    };
    let (r, w) = (opts.read_consistency, opts.write_consistency);
    let lowers = ["", " AND s >= ?", " AND s > ?"];
    let uppers = ["", " AND s < ?"];
    let mut scan = Vec::new();
    for lo in lowers {
        let mut row = Vec::new();
        for up in uppers {
            row.push(
                prep(
                    format!("SELECT s, v FROM {name} WHERE p = ?{lo}{up} LIMIT ?"),
                    r,
                    true,
                )
                .await?,
            );
        }
        scan.push(<[PreparedStatement; 2]>::try_from(row).expect("two uppers"));
    }
    let serial = match opts.serial_consistency {
        scylla::statement::SerialConsistency::Serial => Consistency::Serial,
        scylla::statement::SerialConsistency::LocalSerial => Consistency::LocalSerial,
    };
    Ok(Stmts {
        put: prep(
            format!("INSERT INTO {name} (p, s, v) VALUES (?, ?, ?)"),
            w,
            true,
        )
        .await?,
        get_in: prep(
            format!("SELECT s, v FROM {name} WHERE p = ? AND s IN ?"),
            r,
            true,
        )
        .await?,
        del: prep(format!("DELETE FROM {name} WHERE p = ? AND s = ?"), w, true).await?,
        del_partition: prep(format!("DELETE FROM {name} WHERE p = ?"), w, true).await?,
        scan: <[[PreparedStatement; 2]; 3]>::try_from(scan).expect("three lowers"),
        ring: prep(
            format!("SELECT token(p), p, s, v FROM {name} WHERE token(p) > ? LIMIT ?"),
            r,
            true,
        )
        .await?,
        parts_first: prep(format!("SELECT DISTINCT p FROM {name} LIMIT ?"), r, true).await?,
        parts_after: prep(
            format!("SELECT DISTINCT p FROM {name} WHERE token(p) > token(?) LIMIT ?"),
            r,
            true,
        )
        .await?,
        cas_insert: prep(
            format!("INSERT INTO {name} (p, s, v) VALUES (?, ?, ?) IF NOT EXISTS"),
            w,
            false,
        )
        .await?,
        cas_update: prep(
            format!("UPDATE {name} SET v = ? WHERE p = ? AND s = ? IF v = ?"),
            w,
            false,
        )
        .await?,
        cas_delete: prep(
            format!("DELETE FROM {name} WHERE p = ? AND s = ? IF v = ?"),
            w,
            false,
        )
        .await?,
        serial_get: prep(
            format!("SELECT v FROM {name} WHERE p = ? AND s = ?"),
            serial,
            true,
        )
        .await?,
    })
}

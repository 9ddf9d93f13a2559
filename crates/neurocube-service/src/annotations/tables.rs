//! Annotation tables: declared (a built-in CAVE schema or user fields),
//! with a voxel resolution, an owner, a description, an optional bound
//! segmentation channel and, for reference tables, a target table. Records
//! live in the meta table; like channels they carry a random uid that keys
//! their rows, so a table dropped and created again starts empty.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use neurocube_core::annotation::{Field, Schema};
use neurocube_core::meta::ChannelType;
use neurocube_core::{ChannelName, DatasetName, TableName};
use neurocube_store::{Scan, SortRange, Table};
use serde::{Deserialize, Serialize};

use super::Annotations;
use crate::catalog::Created;
use crate::error::{Result, ServiceError};
use crate::keys;
use crate::purge::RowsEntry;

/// A table as users declare it (`PUT /v1/datasets/{ds}/tables/{table}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// A built-in schema (`synapse`, `nucleus`, `point`, `cell_type_local`,
    /// `cell_type_reference`, `proofreading_status_and_strategy`,
    /// `proofreading_status_reference`), or `custom` with `fields`.
    pub schema: String,
    /// Fields of a `custom` schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<Field>>,
    /// A `custom` schema's rows reference `reference_table` by `target_id`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reference: bool,
    /// The table reference rows point into (reference schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_table: Option<TableName>,
    /// Voxel size of positions in nm, `[x, y, z]`.
    pub voxel_resolution: [f64; 3],
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Who made it (defaults to the requester).
    #[serde(default)]
    pub owner: String,
    /// Segmentation channel whose labels under bound points are their
    /// supervoxel and root ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<ChannelName>,
}

/// A table as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    /// Name.
    pub name: TableName,
    /// The declaration.
    #[serde(flatten)]
    pub spec: TableSpec,
    /// Key prefix of its rows.
    pub uid: u64,
    /// Created (ms since the epoch).
    pub created_ms: u64,
}

/// A table ready to use: its record, dataset and parsed schema.
#[derive(Clone, Debug)]
pub struct ResolvedTable {
    /// The dataset.
    pub dataset: DatasetName,
    /// The record.
    pub record: Arc<TableRecord>,
    /// The schema.
    pub schema: Arc<Schema>,
    /// Bits per axis of its spatial index cells.
    pub cell_bits: [u32; 3],
}

/// Cells per axis of a table's spatial index, about.
const CELLS_PER_AXIS: f64 = 32.0;

/// Bits per axis of a table's spatial cells: about 32 cells per axis of
/// the dataset, in the table's voxels.
#[must_use]
pub fn cell_bits(ds: &neurocube_core::meta::Dataset, res: [f64; 3]) -> [u32; 3] {
    std::array::from_fn(|a| {
        let end = (ds.offset[a] + ds.extent[a]) as f64 * ds.voxel_size[a] / res[a];
        let cell = (end / CELLS_PER_AXIS).max(1.0);
        cell.log2().ceil().clamp(0.0, 40.0) as u32
    })
}

impl ResolvedTable {
    /// The table's uid.
    #[must_use]
    pub fn uid(&self) -> u64 {
        self.record.uid
    }

    /// The table's name.
    #[must_use]
    pub fn name(&self) -> &TableName {
        &self.record.name
    }
}

/// The schema a spec declares.
pub fn schema_of(name: &TableName, spec: &TableSpec) -> Result<Schema> {
    if spec.schema == "custom" {
        let fields = spec.fields.clone().ok_or_else(|| {
            ServiceError::field(
                "fields",
                "a custom schema needs \"fields\": [{\"name\": ..., \"type\": int|float|bool|string|enum|position|id|point}, ...]",
            )
        })?;
        return Schema::declare(name.as_str(), fields, spec.reference)
            .map_err(|e| ServiceError::field("fields", e.0));
    }
    if spec.fields.is_some() {
        return Err(ServiceError::field(
            "fields",
            format!(
                "schema '{}' is built in: drop \"fields\", or use \"schema\": \"custom\"",
                spec.schema
            ),
        ));
    }
    Schema::builtin(&spec.schema).ok_or_else(|| {
        ServiceError::field(
            "schema",
            format!(
                "unknown schema '{}': use one of {} or custom (GET /v1/schemas lists them)",
                spec.schema,
                Schema::BUILTIN.join(", ")
            ),
        )
    })
}

impl Annotations {
    /// Create a table; an identical re-creation is a no-op, a different one a conflict.
    pub async fn create_table(
        &self,
        ds: &DatasetName,
        name: &TableName,
        mut spec: TableSpec,
        owner: &str,
    ) -> Result<Created> {
        self.catalog.dataset(ds).await?;
        let schema = schema_of(name, &spec)?;
        if spec
            .voxel_resolution
            .iter()
            .any(|v| !v.is_finite() || *v <= 0.0)
        {
            return Err(ServiceError::field(
                "voxel_resolution",
                format!(
                    "voxel_resolution {:?} must be three positive numbers (nm per voxel of the positions)",
                    spec.voxel_resolution
                ),
            ));
        }
        match (&spec.reference_table, schema.reference) {
            (None, true) => {
                return Err(ServiceError::field(
                    "reference_table",
                    format!(
                        "schema '{}' makes a reference table: name the table its target_id points into in \"reference_table\"",
                        spec.schema
                    ),
                ));
            }
            (Some(_), false) => {
                return Err(ServiceError::field(
                    "reference_table",
                    format!(
                        "schema '{}' has no target_id: drop \"reference_table\"",
                        spec.schema
                    ),
                ));
            }
            (Some(t), true) if t == name => {
                return Err(ServiceError::field(
                    "reference_table",
                    "a table cannot reference itself",
                ));
            }
            (Some(t), true) => {
                let target = self.table(ds, t).await?;
                if target.schema.reference {
                    return Err(ServiceError::field(
                        "reference_table",
                        format!(
                            "'{t}' is a reference table itself: reference the table it points into"
                        ),
                    ));
                }
            }
            (None, false) => {}
        }
        if let Some(seg) = &spec.segmentation {
            let rc = self.catalog.channel(ds, seg).await?;
            if rc.channel.meta.kind != ChannelType::Segmentation {
                return Err(ServiceError::field(
                    "segmentation",
                    format!("channel '{seg}' is an image channel; bind a segmentation channel"),
                ));
            }
        }
        if Schema::is_object_schema(&spec.schema) {
            let Some(seg) = &spec.segmentation else {
                return Err(ServiceError::field(
                    "segmentation",
                    format!(
                        "schema '{}' makes an object table: name its annotation channel (a uint32 or uint64 segmentation channel) in \"segmentation\"",
                        spec.schema
                    ),
                ));
            };
            let rc = self.catalog.channel(ds, seg).await?;
            let dtype = rc.channel.meta.dtype;
            if !matches!(
                dtype,
                neurocube_core::DType::Uint32 | neurocube_core::DType::Uint64
            ) {
                return Err(ServiceError::field(
                    "segmentation",
                    format!(
                        "channel '{seg}' holds {dtype} voxels; an annotation channel holds uint32 or uint64 labels"
                    ),
                ));
            }
        }
        if spec.owner.is_empty() {
            spec.owner = owner.to_string();
        }
        let record = TableRecord {
            name: name.clone(),
            spec,
            uid: uuid::Uuid::new_v4().as_u64_pair().0,
            created_ms: crate::jobs::now_ms(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| ServiceError::Internal {
            during: "encoding a table record",
            reason: e.to_string(),
        })?;
        if self
            .store
            .compare_and_set(
                Table::Meta,
                keys::table(ds, name),
                None,
                Some(Bytes::from(value)),
            )
            .await?
        {
            self.tables_cache.invalidate(ds.as_str());
            return Ok(Created::New);
        }
        let existing = self.table(ds, name).await?;
        let mut same = existing.record.spec.clone();
        same.owner.clone_from(&record.spec.owner);
        if same == record.spec {
            Ok(Created::Unchanged)
        } else {
            Err(ServiceError::TableExists {
                dataset: ds.to_string(),
                name: name.to_string(),
            })
        }
    }

    /// A table by name (cached for a few seconds).
    pub async fn table(&self, ds: &DatasetName, name: &TableName) -> Result<ResolvedTable> {
        let cache_key = (ds.to_string(), name.to_string());
        if let Some(hit) = self.tables.get(&cache_key) {
            return Ok(hit);
        }
        let dataset = self.catalog.dataset(ds).await?;
        let got = self
            .store
            .get_many(Table::Meta, &[keys::table(ds, name)])
            .await?
            .remove(0);
        let Some(bytes) = got else {
            return Err(ServiceError::UnknownTable {
                dataset: ds.to_string(),
                name: name.to_string(),
            });
        };
        let record: TableRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ServiceError::corrupt_json("table", format!("{ds}/{name}"), &e))?;
        let schema = schema_of(&record.name, &record.spec).map_err(|e| ServiceError::Corrupt {
            what: "table",
            key: format!("{ds}/{name}"),
            reason: e.to_string(),
        })?;
        let resolved = ResolvedTable {
            dataset: ds.clone(),
            cell_bits: cell_bits(&dataset, record.spec.voxel_resolution),
            record: Arc::new(record),
            schema: Arc::new(schema),
        };
        self.tables.insert(cache_key, resolved.clone());
        Ok(resolved)
    }

    /// Every table of a dataset, by name (cached for a few seconds).
    pub async fn tables(&self, ds: &DatasetName) -> Result<Vec<TableRecord>> {
        if let Some(hit) = self.tables_cache.get(ds.as_str()) {
            return Ok((*hit).clone());
        }
        self.catalog.dataset(ds).await?;
        let all: Vec<TableRecord> = Scan::partition(
            self.store.clone(),
            Table::Meta,
            keys::tables_partition(ds),
            SortRange::all(),
        )
        .rows()
        .map(|row| {
            let (k, v) = row?;
            serde_json::from_slice(&v).map_err(|e| {
                ServiceError::corrupt_json("table", String::from_utf8_lossy(&k.sort), &e)
            })
        })
        .try_collect()
        .await?;
        self.tables_cache
            .insert(ds.to_string(), Arc::new(all.clone()));
        Ok(all)
    }

    /// Delete a table: its record at once (a table made again under the
    /// name gets a new uid), its rows, versions and indexes in the
    /// background (the purge queue). A table that reference tables point
    /// into cannot be deleted before them.
    pub async fn delete_table(&self, ds: &DatasetName, name: &TableName) -> Result<()> {
        let t = self.table(ds, name).await?;
        let referrers: Vec<String> = self
            .tables(ds)
            .await?
            .into_iter()
            .filter(|t| t.spec.reference_table.as_ref() == Some(name))
            .map(|t| t.name.to_string())
            .collect();
        if !referrers.is_empty() {
            return Err(ServiceError::TableReferenced {
                dataset: ds.to_string(),
                name: name.to_string(),
                referrers,
            });
        }
        // Queued first: a purge entry whose table record is still there is
        // left alone, so a delete cut short here loses nothing.
        self.purger
            .enqueue_rows(
                &t.uid().to_be_bytes(),
                &RowsEntry {
                    what: format!("table {ds}/{name} (deleted)"),
                    table: Some((ds.to_string(), name.to_string(), t.uid())),
                },
            )
            .await?;
        self.store
            .delete_many(Table::Meta, &[keys::table(ds, name)])
            .await?;
        self.tables.invalidate(&(ds.to_string(), name.to_string()));
        self.tables_cache.invalidate(ds.as_str());
        self.purger.wake();
        Ok(())
    }
}

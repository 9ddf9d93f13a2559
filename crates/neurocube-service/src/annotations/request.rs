//! What a query asks for, as users send it: CAVE's query fields, joins,
//! timestamps and `synapse_query`'s shorthand.

use neurocube_core::annotation::Filters;
use neurocube_core::{DatasetName, TableName};
use serde::Deserialize;
use serde_json::{Map, Value as J};

use super::{Annotations, TableRecord};
use crate::error::{Result, ServiceError};

/// A query as users send it (`POST .../tables/{t}/query`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct QueryRequest {
    /// CAVE's filter fields.
    #[serde(flatten)]
    pub filters: Filters,
    /// Only these columns (`pre_pt_position` means its x, y, z).
    #[serde(default)]
    pub select_columns: Option<Vec<String>>,
    /// At most this many rows.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Skip this many matching rows first.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Resume after the last row of an earlier page.
    #[serde(default)]
    pub page_token: Option<String>,
    /// Positions rescaled to this voxel size (nm), as floats.
    #[serde(default)]
    pub desired_resolution: Option<[f64; 3]>,
    /// Positions as `_x`, `_y`, `_z` columns.
    #[serde(default)]
    pub split_positions: bool,
    /// A materialized version (default: the newest; live if there is none).
    #[serde(default)]
    pub version: Option<u32>,
    /// Instead of a version: the live rows valid at this time.
    #[serde(default)]
    pub timestamp: Option<J>,
    /// Merge a reference table's rows with their targets (default true).
    #[serde(default)]
    pub merge_reference: Option<bool>,
    /// Keep only rows whose column matches a row of another table.
    #[serde(default)]
    pub join: Option<JoinRequest>,
    /// Filters on a merged reference table's target rows (CAVE's join
    /// filters keyed by the target table; not a body field).
    #[serde(skip)]
    pub target_filters: Option<Filters>,
    /// Only these columns of the merged target (not a body field).
    #[serde(skip)]
    pub target_select: Option<Vec<String>>,
    /// CAVE's join naming (not a body field): every side keeps its system
    /// columns but `superceded_id`, and a name both sides have gets the
    /// suffix of its side (`[queried table, the other]`; a split position
    /// takes it before `_x`).
    #[serde(skip)]
    pub suffixes: Option<[String; 2]>,
    /// A sample: keep the rows whose hashed id falls in one of this many
    /// buckets (CAVE's `random_sample`; not a body field).
    #[serde(skip)]
    pub sample_every: Option<u64>,
}

/// A join: rows of the queried table whose `on[0]` equals `on[1]` of a row
/// of `table` (itself filtered); that row's columns are added with `suffix`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The other table.
    pub table: TableName,
    /// `[column of the queried table, column of the other]` (ids).
    pub on: [String; 2],
    /// Its filters.
    #[serde(flatten)]
    pub filters: Filters,
    /// Its columns to add (default: all but its system columns).
    #[serde(default)]
    pub select_columns: Option<Vec<String>>,
    /// Suffix of its columns in the result (default `_{table}`).
    #[serde(default)]
    pub suffix: Option<String>,
}

/// The fields a query body may have.
pub const QUERY_FIELDS: [&str; 21] = [
    "filter_in_dict",
    "filter_out_dict",
    "filter_notin_dict",
    "filter_equal_dict",
    "filter_greater_dict",
    "filter_less_dict",
    "filter_greater_equal_dict",
    "filter_less_equal_dict",
    "filter_spatial_dict",
    "filter_regex_dict",
    "select_columns",
    "limit",
    "offset",
    "page_token",
    "desired_resolution",
    "split_positions",
    "version",
    "timestamp",
    "merge_reference",
    "join",
    "table",
];

impl QueryRequest {
    /// Parse a JSON body, naming any unknown field.
    pub fn from_json(v: J) -> Result<Self> {
        if let J::Object(m) = &v {
            for k in m.keys() {
                if !QUERY_FIELDS.contains(&k.as_str()) {
                    return Err(ServiceError::field(
                        k,
                        format!(
                            "unknown query field '{k}'; the fields are {}",
                            QUERY_FIELDS.join(", ")
                        ),
                    ));
                }
            }
        }
        serde_json::from_value(v).map_err(|e| ServiceError::InvalidBody {
            format: "json",
            reason: format!("invalid query: {e}"),
        })
    }
}

/// Parse a timestamp: RFC 3339, CAVE's `YYYY-MM-DDTHH:MM:SS.ffffff` (UTC),
/// or seconds since the epoch as a number.
pub fn parse_time(v: &J) -> Result<i64> {
    let bad = || {
        ServiceError::field(
            "timestamp",
            format!(
                "timestamp {v} is not a time: use RFC 3339 (2024-05-01T12:00:00Z), YYYY-MM-DDTHH:MM:SS.ffffff (UTC) or seconds since the epoch"
            ),
        )
    };
    match v {
        J::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| (f * 1000.0) as i64)
            .ok_or_else(bad),
        J::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .map(|t| t.and_utc().timestamp_millis())
            })
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Filters of `synapse_query`: pre and post root ids (ANDed) and a box on
/// the post point, as CAVE's client builds them.
pub fn synapse_filters(
    pre_ids: Option<Vec<u64>>,
    post_ids: Option<Vec<u64>>,
    bounding_box: Option<J>,
) -> Filters {
    let mut f = Filters::default();
    let mut in_dict = Map::new();
    if let Some(p) = pre_ids {
        in_dict.insert("pre_pt_root_id".into(), p.into());
    }
    if let Some(p) = post_ids {
        in_dict.insert("post_pt_root_id".into(), p.into());
    }
    if !in_dict.is_empty() {
        f.filter_in_dict = Some(in_dict);
    }
    if let Some(b) = bounding_box {
        let mut m = Map::new();
        m.insert("post_pt_position".into(), b);
        f.filter_spatial_dict = Some(m);
    }
    f
}

/// The table of a `synapse` schema to use when none is named: the one the
/// dataset names as its `synapse_table` (while it exists), else the only one.
pub async fn synapse_table(ann: &Annotations, ds: &DatasetName) -> Result<TableName> {
    if let Some(name) = &ann.catalog.dataset(ds).await?.synapse_table
        && let Ok(t) = TableName::parse(name)
        && ann.table(ds, &t).await.is_ok()
    {
        return Ok(t);
    }
    let synapse: Vec<TableRecord> = ann
        .tables(ds)
        .await?
        .into_iter()
        .filter(|t| t.spec.schema == "synapse")
        .collect();
    match &synapse[..] {
        [one] => Ok(one.name.clone()),
        [] => Err(ServiceError::field(
            "table",
            format!("dataset '{ds}' has no table of the synapse schema"),
        )),
        many => Err(ServiceError::field(
            "table",
            format!(
                "dataset '{ds}' has several synapse tables ({}); name one in \"table\"",
                many.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

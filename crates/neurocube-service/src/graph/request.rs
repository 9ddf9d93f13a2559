//! A graph request: the same fields as JSON (POST) or as a query string
//! (GET, lists comma-separated).

use neurocube_core::TableName;
use serde::Deserialize;
use serde_json::{Map, Value as J};

use super::Selection;
use crate::error::{Result, ServiceError};

/// What graph to build and how to send it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphRequest {
    /// The synapse table (default: the dataset's only one).
    #[serde(default)]
    pub table: Option<TableName>,
    /// A materialized version (default: the newest, else the live rows).
    #[serde(default)]
    pub version: Option<u32>,
    /// Instead of a version: the live rows valid at this time.
    #[serde(default)]
    pub timestamp: Option<J>,
    /// The induced subgraph of these root ids.
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
    /// Edges out of these root ids.
    #[serde(default)]
    pub pre_ids: Option<Vec<u64>>,
    /// Edges into these root ids (with `pre_ids`: both).
    #[serde(default)]
    pub post_ids: Option<Vec<u64>>,
    /// Synapses whose point lies in `[[x0,y0,z0],[x1,y1,z1]]` (table voxels).
    #[serde(default)]
    pub bounding_box: Option<[[i64; 3]; 2]>,
    /// The point the box applies to (default: `post_pt_position`, as
    /// CAVE's synapse_query).
    #[serde(default)]
    pub bounding_box_column: Option<String>,
    /// Select nodes through a node table (a reference table, or one with a
    /// bound point): the root ids of its rows where `select_column` is one
    /// of `select_values`.
    #[serde(default)]
    pub select_table: Option<TableName>,
    /// Column of `select_table`.
    #[serde(default)]
    pub select_column: Option<String>,
    /// Values of `select_column` (`t`/`f` for booleans).
    #[serde(default)]
    pub select_values: Option<Vec<J>>,
    /// Drop edges with fewer synapses.
    #[serde(default)]
    pub min_synapses: Option<u64>,
    /// Keep edges from a neuron onto itself.
    #[serde(default)]
    pub autapses: Option<bool>,
    /// Node tables whose columns become node attributes (default: every
    /// node table of the dataset; `[]` for none).
    #[serde(default)]
    pub node_tables: Option<Vec<TableName>>,
    /// The attribute the PNG groups nodes by (default `cell_type`).
    #[serde(default)]
    pub order_by: Option<String>,
    /// Output format (also from `Accept`).
    #[serde(default)]
    pub format: Option<String>,
}

/// Fields whose query-string value is a comma-separated list.
const LISTS: [&str; 5] = ["ids", "pre_ids", "post_ids", "select_values", "node_tables"];
/// Fields whose query-string value is a number or a boolean.
const SCALARS: [&str; 4] = ["version", "min_synapses", "autapses", "timestamp"];

impl GraphRequest {
    /// From a JSON body; unknown fields and wrong types are 400s naming the field.
    pub fn from_json(v: J) -> Result<Self> {
        if let J::Object(m) = &v {
            for key in m.keys() {
                if !FIELDS.contains(&key.as_str()) {
                    return Err(unknown(key));
                }
            }
        }
        let whole = GraphRequest::deserialize(&v);
        match (whole, &v) {
            (Ok(r), _) => Ok(r),
            // Name the field whose value is wrong.
            (Err(e), J::Object(m)) => Err(m
                .iter()
                .find_map(|(key, value)| {
                    let mut one = Map::new();
                    one.insert(key.clone(), value.clone());
                    serde_json::from_value::<GraphRequest>(J::Object(one))
                        .err()
                        .map(|e| ServiceError::field(key.clone(), bad_value(key, &e)))
                })
                .unwrap_or_else(|| ServiceError::field("body", e.to_string()))),
            (Err(e), _) => Err(ServiceError::field("body", e.to_string())),
        }
    }

    /// From a query string's pairs.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self> {
        let mut m = Map::new();
        for (k, v) in pairs {
            if !FIELDS.contains(&k.as_str()) {
                return Err(unknown(k));
            }
            let value = if LISTS.contains(&k.as_str()) {
                let items: Vec<J> = v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        let s = s.trim();
                        if k.ends_with("ids") {
                            s.parse::<u64>().map(J::from).map_err(|_| {
                                ServiceError::field(
                                    k.clone(),
                                    format!(
                                        "{k} must be root ids (non-negative integers), not '{s}'"
                                    ),
                                )
                            })
                        } else {
                            Ok(J::String(s.to_string()))
                        }
                    })
                    .collect::<Result<_>>()?;
                J::Array(items)
            } else if k == "bounding_box" {
                let n: Vec<i64> = v
                    .split(',')
                    .map(|s| s.trim().parse::<i64>())
                    .collect::<std::result::Result<_, _>>()
                    .ok()
                    .filter(|n: &Vec<i64>| n.len() == 6)
                    .ok_or_else(|| {
                        ServiceError::field(
                            "bounding_box",
                            format!(
                                "bounding_box must be six integers x0,y0,z0,x1,y1,z1, not '{v}'"
                            ),
                        )
                    })?;
                serde_json::json!([[n[0], n[1], n[2]], [n[3], n[4], n[5]]])
            } else if SCALARS.contains(&k.as_str()) {
                serde_json::from_str(v).unwrap_or_else(|_| J::String(v.clone()))
            } else {
                J::String(v.clone())
            };
            m.insert(k.clone(), value);
        }
        Self::from_json(J::Object(m))
    }

    /// The selection, checked: boxes not inverted, ids not mixed with pre/post.
    pub(super) fn selection(&self) -> Result<Selection> {
        if (self.ids.is_some() || self.select_table.is_some())
            && (self.pre_ids.is_some() || self.post_ids.is_some())
        {
            return Err(ServiceError::field(
                "ids",
                "give ids or select_table (an induced subgraph), or pre_ids/post_ids (edges out of or into them), not both",
            ));
        }
        if self.select_table.is_some()
            && (self.select_column.is_none() || self.select_values.is_none())
        {
            return Err(ServiceError::field(
                "select_column",
                "select_table needs select_column and select_values (for example select_column=cell_type&select_values=23P)",
            ));
        }
        let sorted = |v: &Option<Vec<u64>>| {
            v.as_ref().map(|v| {
                let mut v = v.clone();
                v.sort_unstable();
                v.dedup();
                v
            })
        };
        let bbox = match self.bounding_box {
            Some(b) => {
                if (0..3).any(|a| b[0][a] > b[1][a]) {
                    return Err(ServiceError::field(
                        "bounding_box",
                        format!(
                            "bounding_box {b:?} is inverted: each corner's coordinate in the first must be at most the second's"
                        ),
                    ));
                }
                Some((
                    self.bounding_box_column
                        .clone()
                        .unwrap_or_else(|| "post_pt_position".into()),
                    b,
                ))
            }
            None => None,
        };
        Ok(Selection {
            ids: sorted(&self.ids),
            pre: sorted(&self.pre_ids),
            post: sorted(&self.post_ids),
            bbox,
        })
    }
}

/// Every field a request may have.
pub const FIELDS: [&str; 16] = [
    "table",
    "version",
    "timestamp",
    "ids",
    "pre_ids",
    "post_ids",
    "bounding_box",
    "bounding_box_column",
    "select_table",
    "select_column",
    "select_values",
    "min_synapses",
    "autapses",
    "node_tables",
    "order_by",
    "format",
];

fn unknown(key: &str) -> ServiceError {
    ServiceError::field(
        key.to_string(),
        format!(
            "unknown graph parameter '{key}'; the parameters are {}",
            FIELDS.join(", ")
        ),
    )
}

fn bad_value(key: &str, e: &serde_json::Error) -> String {
    let what = match key {
        "ids" | "pre_ids" | "post_ids" => "a list of root ids (non-negative integers)",
        "version" | "min_synapses" => "a non-negative integer",
        "autapses" => "true or false",
        "bounding_box" => "[[x0,y0,z0],[x1,y1,z1]] of integers",
        "node_tables" => "a list of table names",
        "select_values" => "a list of values",
        _ => "valid",
    };
    format!("{key} must be {what}: {e}")
}

//! CAVE's protocol, as caveclient 8.x speaks it, mapped onto neurocube: a
//! datastack is a dataset (and its aligned volume), CAVE's tables and
//! materialization versions are the annotation store's, its schema
//! service lists our schemas as JSON Schema, and its chunkedgraph is the
//! dataset's segmentation, whose supervoxel ids are its root ids (roots
//! change only when the labels are rewritten). What the client parses to
//! the character (timestamps, the query body, join names) is here; the
//! use cases are in `usecases/cave.rs`.

use neurocube_core::annotation::{FieldType, Filters, Schema};
use serde::Deserialize;
use serde_json::{Map, Value as J, json};

use crate::annotations::{QueryRequest, VersionRecord};
use crate::error::{Result, ServiceError};

/// The MaterializationEngine version we answer as: caveclient gates
/// `query_table` and `live_query` on it (≥ 5.13.0).
pub const MATERIALIZE_VERSION: &str = "5.26.4";

/// The info-service version whose API we follow (caveclient parses it as a
/// version number and gates methods on it, e.g. `>=4.3.1`).
pub const INFO_VERSION: &str = "4.3.1";

/// A time as CAVE writes it: UTC, `YYYY-MM-DDTHH:MM:SS.ffffff`, no zone
/// (caveclient parses it with exactly that format).
#[must_use]
pub fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
    )
}

/// A version as `GET .../version/{v}` and `.../metadata` describe it.
#[must_use]
pub fn version_json(ds: &str, rec: &VersionRecord, now_ms: i64) -> J {
    json!({
        "version": rec.version,
        "id": rec.version,
        "datastack": ds,
        "time_stamp": time_text(rec.time_stamp_ms),
        "expires_on": rec.expires_ms.map(time_text),
        "valid": rec.valid_at(now_ms),
        "status": if rec.valid_at(now_ms) { "AVAILABLE" } else { "EXPIRED" },
        "is_merged": true,
    })
}

/// `count=True`'s answer: an Arrow stream of one row, column `count`.
pub fn count_arrow(n: u64) -> Result<bytes::Bytes> {
    use std::sync::Arc;
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "count",
        arrow_schema::DataType::Int64,
        false,
    )]));
    let err = |e: arrow_schema::ArrowError| ServiceError::Internal {
        during: "writing a count as Arrow",
        reason: e.to_string(),
    };
    let batch = arrow_array::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow_array::Int64Array::from(vec![
            i64::try_from(n).unwrap_or(i64::MAX),
        ]))],
    )
    .map_err(err)?;
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(err)?;
    w.write(&batch).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(bytes::Bytes::from(w.into_inner().map_err(err)?))
}

/// A schema as CAVE's schema service gives it: JSON Schema whose bound
/// points are `BoundSpatialPoint` and unbound ones `SpatialPoint` (what
/// caveclient's table manager reads to build its query arguments).
#[must_use]
pub fn schema_json(name: &str, schema: &Schema) -> J {
    let mut props = Map::new();
    if schema.reference {
        props.insert(
            "target_id".into(),
            json!({"type": "integer", "description": "id of the annotation this one refers to"}),
        );
    }
    let mut required = Vec::new();
    for f in &schema.fields {
        let p = match &f.kind {
            FieldType::Point { bound: true } => json!({"$ref": "#/definitions/BoundSpatialPoint"}),
            FieldType::Point { bound: false } => json!({"$ref": "#/definitions/SpatialPoint"}),
            FieldType::Int | FieldType::Id => json!({"type": "integer"}),
            FieldType::Float => json!({"type": "number", "format": "float"}),
            FieldType::Bool => json!({"type": "boolean"}),
            FieldType::String => json!({"type": "string"}),
            FieldType::Enum { values } => json!({"type": "string", "enum": values}),
            FieldType::Position => {
                json!({"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3})
            }
        };
        if f.required {
            required.push(f.name.clone());
        }
        props.insert(f.name.clone(), p);
    }
    let position =
        json!({"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3});
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$ref": format!("#/definitions/{name}"),
        "definitions": {
            name: {
                "type": "object",
                "additionalProperties": false,
                "properties": props,
                "required": required,
            },
            "SpatialPoint": {
                "type": "object",
                "properties": {"position": position},
                "required": ["position"],
            },
            "BoundSpatialPoint": {
                "type": "object",
                "properties": {
                    "position": position,
                    "supervoxel_id": {"type": "integer"},
                    "root_id": {"type": "integer"},
                },
                "required": ["position"],
            },
        },
    })
}

/// A filter field's value: `{table: {column: value}}`.
type Dict = Map<String, J>;

/// A query body as caveclient sends it (`.../table/{t}/query` and
/// `.../query`): filters keyed by table, then by column.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaveBody {
    #[serde(default)]
    filter_in_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_notin_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_out_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_equal_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_greater_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_less_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_greater_equal_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_less_equal_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_spatial_dict: Option<Map<String, J>>,
    #[serde(default)]
    filter_regex_dict: Option<Map<String, J>>,
    /// Columns: a list (one table) or `{table: [columns]}`.
    #[serde(default)]
    select_columns: Option<J>,
    /// `{table: [columns]}`.
    #[serde(default)]
    select_column_map: Option<Map<String, J>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    desired_resolution: Option<[f64; 3]>,
    /// A join: `[[table, column], [table, column]]`.
    #[serde(default)]
    tables: Option<Vec<(String, String)>>,
    /// Suffixes of shared column names, by table.
    #[serde(default)]
    suffix_map: Option<Map<String, J>>,
    /// The same as a list, in `tables` order.
    #[serde(default)]
    suffixes: Option<Vec<String>>,
}

/// The query string caveclient adds (`return_pyarrow=True&...`); only
/// `count` and `random_sample` change the answer. Unknown ones are ignored,
/// as CAVE does.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CaveParams {
    /// Answer the number of rows instead of the rows.
    #[serde(default)]
    pub count: Option<String>,
    /// About this many rows, drawn at random.
    #[serde(default)]
    pub random_sample: Option<u64>,
}

impl CaveParams {
    /// Whether `count=True`.
    #[must_use]
    pub fn count(&self) -> bool {
        self.count
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("true") || c == "1")
    }
}

/// What a CAVE query body asks of neurocube: the table queried and the
/// request (with the join or reference merge, if two tables were named).
#[derive(Debug)]
pub struct Mapped {
    /// The table the rows come from.
    pub table: String,
    /// The request, with filters, columns, paging and naming.
    pub request: QueryRequest,
}

impl CaveBody {
    /// Parse a body, naming what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        serde_json::from_slice(text).map_err(|e| ServiceError::InvalidBody {
            format: "json",
            reason: format!("invalid CAVE query: {e}"),
        })
    }

    /// The tables a join names, `[[a, col], [b, col]]`, if any.
    #[must_use]
    pub fn join_tables(&self) -> Option<&[(String, String)]> {
        self.tables.as_deref()
    }

    /// The filters on `table` (CAVE keys them by table; `{table: {}}` is no
    /// filter). A key naming a table the query does not read is refused.
    pub fn filters_of(&self, table: &str, tables: &[&str]) -> Result<Filters> {
        let mut f = Filters::default();
        let fields: [(&str, &Option<Dict>, &mut Option<Dict>); 10] = [
            (
                "filter_in_dict",
                &self.filter_in_dict,
                &mut f.filter_in_dict,
            ),
            (
                "filter_notin_dict",
                &self.filter_notin_dict,
                &mut f.filter_notin_dict,
            ),
            (
                "filter_out_dict",
                &self.filter_out_dict,
                &mut f.filter_out_dict,
            ),
            (
                "filter_equal_dict",
                &self.filter_equal_dict,
                &mut f.filter_equal_dict,
            ),
            (
                "filter_greater_dict",
                &self.filter_greater_dict,
                &mut f.filter_greater_dict,
            ),
            (
                "filter_less_dict",
                &self.filter_less_dict,
                &mut f.filter_less_dict,
            ),
            (
                "filter_greater_equal_dict",
                &self.filter_greater_equal_dict,
                &mut f.filter_greater_equal_dict,
            ),
            (
                "filter_less_equal_dict",
                &self.filter_less_equal_dict,
                &mut f.filter_less_equal_dict,
            ),
            (
                "filter_spatial_dict",
                &self.filter_spatial_dict,
                &mut f.filter_spatial_dict,
            ),
            (
                "filter_regex_dict",
                &self.filter_regex_dict,
                &mut f.filter_regex_dict,
            ),
        ];
        for (field, given, out) in fields {
            let Some(by_table) = given else { continue };
            for (t, cols) in by_table {
                if !tables.contains(&t.as_str()) {
                    return Err(ServiceError::field(
                        field,
                        format!(
                            "{field} names table '{t}', which this query does not read (it reads {})",
                            tables.join(", ")
                        ),
                    ));
                }
                let J::Object(cols) = cols else {
                    return Err(ServiceError::field(
                        field,
                        format!("{field}.{t} must map column names to values"),
                    ));
                };
                if t == table && !cols.is_empty() {
                    *out = Some(cols.clone());
                }
            }
        }
        Ok(f)
    }

    /// The columns selected of `table`, if a selection names it.
    pub fn select_of(&self, table: &str, only: bool) -> Result<Option<Vec<String>>> {
        let list = |v: &J, what: &str| -> Result<Vec<String>> {
            serde_json::from_value(v.clone()).map_err(|_| {
                ServiceError::field(what, format!("{what} must be a list of column names"))
            })
        };
        let map = match (&self.select_columns, &self.select_column_map) {
            (Some(J::Array(_)), _) if only => {
                return Ok(Some(list(
                    self.select_columns.as_ref().unwrap_or(&J::Null),
                    "select_columns",
                )?));
            }
            (Some(J::Object(m)), _) | (None, Some(m)) => m,
            (None, None) | (Some(J::Null), None) => return Ok(None),
            (Some(J::Array(_)), _) => {
                return Err(ServiceError::field(
                    "select_columns",
                    "a join selects columns by table: send select_column_map {table: [columns]}",
                ));
            }
            _ => {
                return Err(ServiceError::field(
                    "select_columns",
                    "select_columns must be a list of column names or {table: [columns]}",
                ));
            }
        };
        map.get(table)
            .map(|v| list(v, "select_column_map"))
            .transpose()
    }

    /// The suffixes of a join, `[first table's, second table's]`.
    fn join_suffixes(&self, a: &str, b: &str) -> Result<[String; 2]> {
        if let Some(s) = &self.suffixes {
            return match &s[..] {
                [x, y] => Ok([x.clone(), y.clone()]),
                _ => Err(ServiceError::field(
                    "suffixes",
                    "suffixes must be two strings, one per table",
                )),
            };
        }
        let get = |t: &str, default: &str| -> Result<String> {
            match self.suffix_map.as_ref().and_then(|m| m.get(t)) {
                None => Ok(default.to_string()),
                Some(J::String(s)) => Ok(s.clone()),
                Some(J::Null) => Ok(String::new()),
                Some(_) => Err(ServiceError::field(
                    "suffix_map",
                    format!("suffix_map.{t} must be a string"),
                )),
            }
        };
        let (x, y) = (get(a, "")?, get(b, "_ref")?);
        if x == y {
            return Err(ServiceError::field(
                "suffix_map",
                format!("tables '{a}' and '{b}' need different suffixes"),
            ));
        }
        Ok([x, y])
    }

    /// The paging, resolution and positions every CAVE query shares.
    fn base_request(&self, table_resolution: [f64; 3]) -> Result<QueryRequest> {
        if let Some(d) = self.desired_resolution
            && !d.iter().all(|v| v.is_finite() && *v > 0.0)
        {
            return Err(ServiceError::field(
                "desired_resolution",
                format!("desired_resolution {d:?} must be three positive numbers (nm)"),
            ));
        }
        if self.limit == Some(0) {
            return Err(ServiceError::field("limit", "limit must be at least 1"));
        }
        Ok(QueryRequest {
            limit: self.limit,
            offset: self.offset,
            // Positions in the table's own voxels stay integers.
            desired_resolution: self.desired_resolution.filter(|d| *d != table_resolution),
            split_positions: true,
            merge_reference: Some(false),
            ..QueryRequest::default()
        })
    }

    /// A one-table query (`.../table/{t}/query`) at a version.
    pub fn one_table(&self, table: &str, resolution: [f64; 3], version: u32) -> Result<Mapped> {
        if self.tables.is_some() {
            return Err(ServiceError::field(
                "tables",
                "a join is posted to .../version/{v}/query, not to one table's query",
            ));
        }
        let mut request = self.base_request(resolution)?;
        request.filters = self.filters_of(table, &[table])?;
        request.select_columns = self.select_of(table, true)?;
        request.version = Some(version);
        Ok(Mapped {
            table: table.to_string(),
            request,
        })
    }

    /// A two-table join (`.../version/{v}/query`): `tables` names the
    /// queried table first. `reference_of(a)` is `a`'s target table, if it
    /// is a reference table; a reference joined to its target by
    /// `target_id = id` is a merge.
    pub fn join(
        &self,
        resolution_of: impl Fn(&str) -> Option<[f64; 3]>,
        reference_of: impl Fn(&str) -> Option<String>,
        version: u32,
    ) -> Result<Mapped> {
        let tables = self.tables.as_deref().unwrap_or_default();
        let [(a, col_a), (b, col_b)] = tables else {
            return Err(ServiceError::field(
                "tables",
                "a join names two tables: [[table, column], [table, column]]",
            ));
        };
        let res = resolution_of(a).ok_or_else(|| {
            ServiceError::field("tables", format!("table '{a}' is not in version {version}"))
        })?;
        if resolution_of(b).is_none() {
            return Err(ServiceError::field(
                "tables",
                format!("table '{b}' is not in version {version}"),
            ));
        }
        let mut request = self.base_request(res)?;
        let names = [a.as_str(), b.as_str()];
        request.filters = self.filters_of(a, &names)?;
        request.select_columns = self.select_of(a, false)?;
        request.version = Some(version);
        request.suffixes = Some(self.join_suffixes(a, b)?);
        let other_filters = self.filters_of(b, &names)?;
        let other_select = self.select_of(b, false)?;
        let merge =
            reference_of(a).as_deref() == Some(b.as_str()) && col_a == "target_id" && col_b == "id";
        if merge {
            request.merge_reference = Some(true);
            request.target_filters = Some(other_filters);
            request.target_select = other_select;
        } else {
            request.join = Some(crate::annotations::JoinRequest {
                table: neurocube_core::TableName::parse(b)
                    .map_err(|e| ServiceError::field("tables", e.to_string()))?,
                on: [col_a.clone(), col_b.clone()],
                filters: other_filters,
                select_columns: other_select,
                suffix: None,
            });
        }
        Ok(Mapped {
            table: a.clone(),
            request,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_what_caveclient_parses() {
        // 2024-09-16 10:10:01.121 UTC
        assert_eq!(time_text(1_726_481_401_121), "2024-09-16T10:10:01.121000");
    }

    #[test]
    fn filters_are_keyed_by_table() {
        let b = CaveBody::parse(
            br#"{"filter_in_dict": {"syn": {"pre_pt_root_id": [1, 2]}}, "filter_equal_dict": {"syn": {}}}"#,
        )
        .unwrap();
        let f = b.filters_of("syn", &["syn"]).unwrap();
        assert_eq!(f.filter_in_dict.unwrap()["pre_pt_root_id"], json!([1, 2]));
        assert!(f.filter_equal_dict.is_none());
        let e = b.filters_of("other", &["other"]).unwrap_err();
        assert!(e.to_string().contains("names table 'syn'"), "{e}");
    }

    #[test]
    fn a_reference_joined_to_its_target_is_a_merge() {
        let b = CaveBody::parse(
            br#"{"tables": [["ct", "target_id"], ["nuc", "id"]], "suffix_map": {"ct": "", "nuc": "_ref"},
                 "filter_equal_dict": {"ct": {"cell_type": "BC"}, "nuc": {"pt_root_id": 7}},
                 "desired_resolution": [4, 4, 40]}"#,
        )
        .unwrap();
        let m = b
            .join(
                |_| Some([4.0, 4.0, 40.0]),
                |t| (t == "ct").then(|| "nuc".to_string()),
                3,
            )
            .unwrap();
        assert_eq!(m.table, "ct");
        let r = m.request;
        assert_eq!(r.merge_reference, Some(true));
        assert_eq!(r.suffixes, Some([String::new(), "_ref".into()]));
        assert!(
            r.desired_resolution.is_none(),
            "the table's own resolution stays integer"
        );
        assert_eq!(
            r.target_filters.unwrap().filter_equal_dict.unwrap()["pt_root_id"],
            json!(7)
        );
        assert_eq!(
            r.filters.filter_equal_dict.unwrap()["cell_type"],
            json!("BC")
        );
        let same = CaveBody::parse(
            br#"{"tables": [["a", "x"], ["b", "y"]], "suffix_map": {"a": "_s", "b": "_s"}}"#,
        )
        .unwrap()
        .join(|_| Some([1.0; 3]), |_| None, 1)
        .unwrap_err();
        assert!(same.to_string().contains("different suffixes"), "{same}");
    }

    #[test]
    fn schemas_mark_points_for_the_table_manager() {
        let s = Schema::builtin("proofreading_status_and_strategy").unwrap();
        let j = schema_json("proofreading_status_and_strategy", &s);
        let props = &j["definitions"]["proofreading_status_and_strategy"]["properties"];
        assert_eq!(props["pt"]["$ref"], "#/definitions/BoundSpatialPoint");
        assert_eq!(props["status_axon"]["type"], "boolean");
        assert_eq!(props["valid_id"]["type"], "integer");
        let r = schema_json(
            "cell_type_reference",
            &Schema::builtin("cell_type_reference").unwrap(),
        );
        assert_eq!(
            r["definitions"]["cell_type_reference"]["properties"]["target_id"]["type"],
            "integer"
        );
        let n = schema_json("synapse", &Schema::builtin("synapse").unwrap());
        assert_eq!(
            n["definitions"]["synapse"]["properties"]["size"]["format"],
            "float"
        );
    }
}

//! Parsing uploads of annotation rows: JSON (an array, or `{"rows": [...]}`),
//! NDJSON, CSV and Arrow IPC (stream or file), each into rows of values
//! checked against the table's schema. The first bad row stops the parse
//! with its index, the column and the reason; nothing is written.
//!
//! Columns are named as in queries: `pre_pt_position` (JSON `[x, y, z]`,
//! CSV `"[x, y, z]"`), or split as `pre_pt_position_x`/`_y`/`_z`; an `id`
//! column is optional (the server assigns ids). `created`, `deleted`,
//! `superceded_id` and `valid` are the server's.

use std::collections::HashMap;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use neurocube_core::annotation::{ColumnType, Role, Schema, Value};
use serde_json::Value as J;

use crate::error::{Result, ServiceError};

/// A row as uploaded: an optional id and one value per schema column.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    /// The id asked for, if any.
    pub id: Option<u64>,
    /// Values, one per schema column.
    pub values: Vec<Value>,
}

/// Wire formats of uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadFormat {
    /// JSON array of objects (or `{"rows": [...]}`).
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header row.
    Csv,
    /// Arrow IPC, stream or file.
    Arrow,
}

impl UploadFormat {
    /// From a Content-Type (parameters ignored); `None` for unknown types.
    #[must_use]
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            // curl's default for -d: its bodies are JSON here.
            "" | "application/json" | "application/x-www-form-urlencoded" => Some(Self::Json),
            "application/x-ndjson" | "application/jsonl" | "application/ndjson" => {
                Some(Self::Ndjson)
            }
            "text/csv" => Some(Self::Csv),
            "application/vnd.apache.arrow.stream"
            | "application/vnd.apache.arrow.file"
            | "application/x-arrow"
            | "data.arrow" => Some(Self::Arrow),
            _ => None,
        }
    }
}

/// Most rows in one upload.
pub const MAX_UPLOAD_ROWS: usize = 5_000_000;

fn bad(row: usize, column: &str, reason: impl Into<String>) -> ServiceError {
    ServiceError::InvalidRow {
        row,
        column: column.to_string(),
        reason: reason.into(),
    }
}

/// Where an uploaded column goes.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Id,
    Whole(usize),
    Axis(usize, usize),
}

/// Map an uploaded column name to its slot, or say why it is refused.
fn slot(schema: &Schema, name: &str, computed: &[bool]) -> std::result::Result<Slot, String> {
    if name == "id" {
        return Ok(Slot::Id);
    }
    if ["created", "deleted", "superceded_id", "valid"].contains(&name) {
        return Err(format!("'{name}' is set by the server; drop the column"));
    }
    if let Some(i) = schema.column(name) {
        if computed[i] {
            return Err(format!(
                "'{name}' is looked up in the table's segmentation; drop the column"
            ));
        }
        return Ok(Slot::Whole(i));
    }
    for (suffix, axis) in [("_x", 0), ("_y", 1), ("_z", 2)] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(i) = schema.column(base)
            && schema.columns[i].kind == ColumnType::Position
        {
            return Ok(Slot::Axis(i, axis));
        }
    }
    Err(format!(
        "unknown column '{name}'; the table's columns are id, {}",
        schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !computed[*i])
            .map(|(_, c)| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Builds rows value by value, then checks that split positions are whole.
struct Builder<'a> {
    schema: &'a Schema,
    computed: &'a [bool],
    rows: Vec<Incoming>,
    axes: HashMap<usize, [Option<i64>; 3]>,
}

impl<'a> Builder<'a> {
    fn new(schema: &'a Schema, computed: &'a [bool]) -> Self {
        Self {
            schema,
            computed,
            rows: Vec::new(),
            axes: HashMap::new(),
        }
    }

    fn start(&mut self) -> Result<()> {
        if self.rows.len() >= MAX_UPLOAD_ROWS {
            return Err(bad(
                self.rows.len(),
                "",
                format!("an upload holds at most {MAX_UPLOAD_ROWS} rows; split it"),
            ));
        }
        self.rows.push(Incoming {
            id: None,
            values: vec![Value::Null; self.schema.columns.len()],
        });
        self.axes.clear();
        Ok(())
    }

    fn index(&self) -> usize {
        self.rows.len().saturating_sub(1)
    }

    fn set(&mut self, name: &str, slot: Slot, v: Value) -> Result<()> {
        let row = self.index();
        let Some(r) = self.rows.last_mut() else {
            return Ok(());
        };
        match slot {
            Slot::Id => match v {
                Value::Id(i) if i > 0 => r.id = Some(i),
                Value::Null => {}
                _ => return Err(bad(row, name, "id must be a positive integer")),
            },
            Slot::Whole(i) => r.values[i] = v,
            Slot::Axis(i, axis) => {
                let c = match v {
                    Value::Int(c) => Some(c),
                    Value::Null => None,
                    _ => return Err(bad(row, name, "expected an integer coordinate")),
                };
                self.axes.entry(i).or_insert([None; 3])[axis] = c;
            }
        }
        Ok(())
    }

    fn finish_row(&mut self) -> Result<()> {
        let row = self.index();
        let axes: Vec<(usize, [Option<i64>; 3])> = self.axes.drain().collect();
        for (i, a) in axes {
            let name = &self.schema.columns[i].name;
            let value = match a {
                [Some(x), Some(y), Some(z)] => Value::Pos([x, y, z]),
                [None, None, None] => Value::Null,
                _ => {
                    return Err(bad(
                        row,
                        name,
                        format!("give all of {name}_x, {name}_y and {name}_z, or none"),
                    ));
                }
            };
            if let Some(r) = self.rows.last_mut() {
                r.values[i] = value;
            }
        }
        Ok(())
    }

    fn kind(&self, slot: Slot) -> ColumnType {
        match slot {
            Slot::Id => ColumnType::Id,
            Slot::Whole(i) => self.schema.columns[i].kind.clone(),
            Slot::Axis(..) => ColumnType::Int,
        }
    }

    fn slot(&self, name: &str) -> Result<Slot> {
        slot(self.schema, name, self.computed).map_err(|e| bad(self.index(), name, e))
    }
}

/// Parse an upload into rows. `computed` marks columns the server looks up
/// (supervoxel and root ids of a table bound to a segmentation).
pub fn parse(
    format: UploadFormat,
    body: &Bytes,
    schema: &Schema,
    computed: &[bool],
) -> Result<Vec<Incoming>> {
    let mut b = Builder::new(schema, computed);
    match format {
        UploadFormat::Json => {
            let v: J = serde_json::from_slice(body).map_err(|e| ServiceError::InvalidBody {
                format: "json",
                reason: format!("invalid JSON: {e}"),
            })?;
            let rows = match v {
                J::Array(a) => a,
                J::Object(mut o) => match o.remove("rows") {
                    Some(J::Array(a)) => a,
                    _ => {
                        return Err(ServiceError::InvalidBody {
                            format: "json",
                            reason: "send an array of rows, or {\"rows\": [...]}".into(),
                        });
                    }
                },
                _ => {
                    return Err(ServiceError::InvalidBody {
                        format: "json",
                        reason: "send an array of rows, or {\"rows\": [...]}".into(),
                    });
                }
            };
            for r in rows {
                json_row(&mut b, r)?;
            }
        }
        UploadFormat::Ndjson => {
            for (i, line) in body.split(|c| *c == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: J = serde_json::from_slice(line).map_err(|e| {
                    bad(b.rows.len(), "", format!("line {} is not JSON: {e}", i + 1))
                })?;
                json_row(&mut b, v)?;
            }
        }
        UploadFormat::Csv => csv_rows(&mut b, body)?,
        UploadFormat::Arrow => arrow_rows(&mut b, body)?,
    }
    Ok(b.rows)
}

/// Rows from JSON objects already parsed (the metadata of annotation
/// objects), checked like an upload.
pub fn json_rows(values: Vec<J>, schema: &Schema, computed: &[bool]) -> Result<Vec<Incoming>> {
    let mut b = Builder::new(schema, computed);
    for v in values {
        json_row(&mut b, v)?;
    }
    Ok(b.rows)
}

fn json_row(b: &mut Builder<'_>, v: J) -> Result<()> {
    b.start()?;
    let J::Object(o) = v else {
        return Err(bad(b.index(), "", "a row must be a JSON object"));
    };
    for (name, value) in o {
        let slot = b.slot(&name)?;
        let kind = b.kind(slot);
        let v = Value::from_json(&value, &kind).map_err(|e| bad(b.index(), &name, e))?;
        b.set(&name, slot, v)?;
    }
    b.finish_row()
}

fn csv_rows(b: &mut Builder<'_>, body: &Bytes) -> Result<()> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(&body[..]);
    let headers = r
        .headers()
        .map_err(|e| ServiceError::InvalidBody {
            format: "csv",
            reason: format!("the CSV header row is unreadable: {e}"),
        })?
        .clone();
    let mut slots = Vec::with_capacity(headers.len());
    for h in &headers {
        let h = h.trim();
        // pandas writes its index as an unnamed first column.
        if h.is_empty() || h == "Unnamed: 0" {
            slots.push(None);
            continue;
        }
        let s = slot(b.schema, h, b.computed).map_err(|e| bad(0, h, e))?;
        slots.push(Some((h.to_string(), s, b.kind(s))));
    }
    for rec in r.records() {
        let rec = rec.map_err(|e| bad(b.rows.len(), "", format!("unreadable CSV record: {e}")))?;
        b.start()?;
        for (field, spec) in rec.iter().zip(&slots) {
            let Some((name, s, kind)) = spec else {
                continue;
            };
            let v = Value::from_text(field, kind).map_err(|e| bad(b.index(), name, e))?;
            b.set(name, *s, v)?;
        }
        b.finish_row()?;
    }
    Ok(())
}

/// The record batches of an Arrow IPC stream or file. arrow-ipc 60 panics
/// (slicing a buffer) on a message whose buffers point past its body, where
/// it should return an error; that panic is contained here and answered as
/// the bad body it is (found by `fuzz_parsers`).
fn arrow_batches(body: &Bytes) -> Result<Vec<RecordBatch>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_arrow(body))).unwrap_or_else(
        |_| {
            Err(ServiceError::InvalidBody {
                format: "arrow",
                reason: "not a valid Arrow IPC stream or file: a record batch's buffers lie outside its message".into(),
            })
        },
    )
}

fn decode_arrow(body: &Bytes) -> Result<Vec<RecordBatch>> {
    let bad_body = |e: arrow_schema::ArrowError| ServiceError::InvalidBody {
        format: "arrow",
        reason: format!("not an Arrow IPC stream or file: {e}"),
    };
    if body.starts_with(b"ARROW1") {
        let r = arrow_ipc::reader::FileReader::try_new(std::io::Cursor::new(body.clone()), None)
            .map_err(bad_body)?;
        r.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad_body)
    } else {
        let r = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.clone()), None)
            .map_err(bad_body)?;
        r.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad_body)
    }
}

/// One Arrow cell as JSON (ids as integers, lists as arrays).
fn arrow_cell(a: &dyn Array, i: usize) -> std::result::Result<J, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
        UInt32Type, UInt64Type,
    };
    if a.is_null(i) {
        return Ok(J::Null);
    }
    Ok(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => {
            let f = f64::from(a.as_primitive::<Float32Type>().value(i));
            if f.is_nan() { J::Null } else { f.into() }
        }
        DataType::Float64 => {
            let f = a.as_primitive::<Float64Type>().value(i);
            if f.is_nan() { J::Null } else { f.into() }
        }
        DataType::Boolean => a.as_boolean().value(i).into(),
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).into(),
        DataType::Utf8View => a.as_string_view().value(i).into(),
        DataType::FixedSizeList(..) => {
            let l = a.as_fixed_size_list().value(i);
            J::Array(
                (0..l.len())
                    .map(|j| arrow_cell(&l, j))
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>().value(i);
            J::Array(
                (0..l.len())
                    .map(|j| arrow_cell(&l, j))
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>().value(i);
            J::Array(
                (0..l.len())
                    .map(|j| arrow_cell(&l, j))
                    .collect::<std::result::Result<_, _>>()?,
            )
        }
        other => return Err(format!("Arrow type {other} is not a type rows have")),
    })
}

fn arrow_rows(b: &mut Builder<'_>, body: &Bytes) -> Result<()> {
    for batch in arrow_batches(body)? {
        let schema = batch.schema();
        let mut cols = Vec::with_capacity(batch.num_columns());
        for (f, a) in schema.fields().iter().zip(batch.columns()) {
            let name = f.name();
            if name == "__index_level_0__" {
                continue;
            }
            let s = slot(b.schema, name, b.computed).map_err(|e| bad(b.rows.len(), name, e))?;
            cols.push((name.clone(), s, b.kind(s), a.clone()));
        }
        for i in 0..batch.num_rows() {
            b.start()?;
            for (name, s, kind, a) in &cols {
                let j = arrow_cell(a.as_ref(), i).map_err(|e| bad(b.index(), name, e))?;
                let v = Value::from_json(&j, kind).map_err(|e| bad(b.index(), name, e))?;
                b.set(name, *s, v)?;
            }
            b.finish_row()?;
        }
    }
    Ok(())
}

/// A row of [`arrow_objects`]: its cells as JSON, and the typed column's
/// array with the row's index in it.
pub type ArrowObject = (serde_json::Map<String, J>, Option<(ArrayRef, usize)>);

/// The rows of an Arrow IPC body as JSON objects, column name to cell
/// (uploads of annotation objects), except the column named `typed`,
/// handed back as its array and the row's index in it for the caller to
/// read in its own type (an object's `voxels`: most of the bytes).
pub fn arrow_objects(body: &Bytes, typed: &str) -> Result<Vec<ArrowObject>> {
    let mut out = Vec::new();
    for batch in arrow_batches(body)? {
        let schema = batch.schema();
        let special = schema.index_of(typed).ok().map(|c| batch.column(c).clone());
        for i in 0..batch.num_rows() {
            let mut m = serde_json::Map::new();
            for (f, a) in schema.fields().iter().zip(batch.columns()) {
                if f.name() == "__index_level_0__" || f.name() == typed {
                    continue;
                }
                let j = arrow_cell(a.as_ref(), i).map_err(|e| bad(out.len(), f.name(), e))?;
                m.insert(f.name().clone(), j);
            }
            out.push((m, special.clone().map(|a| (a, i))));
        }
    }
    Ok(out)
}

/// Columns the server computes for a table (supervoxel and root ids of
/// bound points, when the table is bound to a segmentation).
#[must_use]
pub fn computed_columns(schema: &Schema, bound_to_segmentation: bool) -> Vec<bool> {
    schema
        .columns
        .iter()
        .map(|c| bound_to_segmentation && matches!(c.role, Role::Supervoxel(_) | Role::Root(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, StringArray, UInt64Array};
    use arrow_schema::{Field, Schema as ArrowSchema};

    use super::*;

    fn synapse() -> Schema {
        Schema::builtin("synapse").unwrap()
    }

    fn expect(pre: [i64; 3], post: [i64; 3], size: Option<f64>) -> Vec<Value> {
        vec![
            Value::Pos(pre),
            Value::Null,
            Value::Null,
            Value::Pos(post),
            Value::Null,
            Value::Null,
            Value::Null,
            size.map_or(Value::Null, Value::Float),
        ]
    }

    #[test]
    fn every_format_gives_the_same_rows() {
        let s = synapse();
        let computed = computed_columns(&s, true);
        let want = vec![
            Incoming {
                id: Some(10),
                values: expect([1, 2, 3], [4, 5, 6], Some(7.5)),
            },
            Incoming {
                id: None,
                values: expect([7, 8, 9], [10, 11, 12], None),
            },
        ];
        let json = br#"[{"id": 10, "pre_pt_position": [1,2,3], "post_pt_position": [4,5,6], "size": 7.5},
                        {"pre_pt_position": [7,8,9], "post_pt_position_x": 10, "post_pt_position_y": 11, "post_pt_position_z": 12}]"#;
        assert_eq!(
            parse(UploadFormat::Json, &Bytes::from_static(json), &s, &computed).unwrap(),
            want
        );
        let nd = b"{\"id\": 10, \"pre_pt_position\": [1,2,3], \"post_pt_position\": [4,5,6], \"size\": 7.5}\n\n{\"pre_pt_position\": [7,8,9], \"post_pt_position\": [10,11,12]}\n";
        assert_eq!(
            parse(UploadFormat::Ndjson, &Bytes::from_static(nd), &s, &computed).unwrap(),
            want
        );
        let csv = b"id,pre_pt_position,post_pt_position_x,post_pt_position_y,post_pt_position_z,size\n10,\"[1, 2, 3]\",4,5,6,7.5\n,7 8 9,10,11,12,\n";
        assert_eq!(
            parse(UploadFormat::Csv, &Bytes::from_static(csv), &s, &computed).unwrap(),
            want
        );
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("id", arrow_schema::DataType::UInt64, true),
            Field::new("pre_pt_position_x", arrow_schema::DataType::Int64, false),
            Field::new("pre_pt_position_y", arrow_schema::DataType::Int64, false),
            Field::new("pre_pt_position_z", arrow_schema::DataType::Int64, false),
            Field::new("post_pt_position_x", arrow_schema::DataType::Int64, false),
            Field::new("post_pt_position_y", arrow_schema::DataType::Int64, false),
            Field::new("post_pt_position_z", arrow_schema::DataType::Int64, false),
            Field::new("size", arrow_schema::DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt64Array::from(vec![Some(10), None])),
                Arc::new(Int64Array::from(vec![1, 7])),
                Arc::new(Int64Array::from(vec![2, 8])),
                Arc::new(Int64Array::from(vec![3, 9])),
                Arc::new(Int64Array::from(vec![4, 10])),
                Arc::new(Int64Array::from(vec![5, 11])),
                Arc::new(Int64Array::from(vec![6, 12])),
                Arc::new(Float64Array::from(vec![Some(7.5), None])),
            ],
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        assert_eq!(
            parse(UploadFormat::Arrow, &Bytes::from(buf), &s, &computed).unwrap(),
            want
        );
    }

    #[test]
    fn bad_rows_name_their_index_column_and_reason() {
        let s = synapse();
        let computed = computed_columns(&s, true);
        let err = |fmt, body: &'static [u8]| {
            parse(fmt, &Bytes::from_static(body), &s, &computed)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(
                UploadFormat::Json,
                br#"[{"pre_pt_position": [1,2,3]}, {"pre_pt_position": [1,2]}]"#
            ),
            "row 1, column 'pre_pt_position': expected a position [x, y, z] of integers, got [1,2]; nothing of this upload was written"
        );
        assert!(
            err(UploadFormat::Json, br#"[{"pre_pt_root_id": 5}]"#)
                .contains("is looked up in the table's segmentation")
        );
        assert!(
            err(UploadFormat::Json, br#"[{"valid": true}]"#)
                .contains("'valid' is set by the server")
        );
        assert!(err(UploadFormat::Json, br#"[{"nope": 1}]"#).contains("unknown column 'nope'; the table's columns are id, pre_pt_position, post_pt_position, ctr_pt_position, size"));
        assert!(
            err(UploadFormat::Json, br#"[{"id": 0}]"#).contains("id must be a positive integer")
        );
        assert!(
            err(UploadFormat::Json, br#"[{"post_pt_position_x": 1}]"#)
                .contains("give all of post_pt_position_x")
        );
        assert!(
            err(UploadFormat::Csv, b"size\nbig\n")
                .contains("row 0, column 'size': expected a number, got \"big\"")
        );
        assert!(err(UploadFormat::Ndjson, b"{}\nnot json\n").contains("row 1"));
        assert!(err(UploadFormat::Arrow, b"garbage").contains("not an Arrow IPC stream or file"));
        assert!(err(UploadFormat::Json, b"{\"x\": 1}").contains("send an array of rows"));
        // Unbound tables take root ids as given.
        let free = computed_columns(&s, false);
        let rows = parse(
            UploadFormat::Json,
            &Bytes::from_static(br#"[{"pre_pt_root_id": "864691135533713769"}]"#),
            &s,
            &free,
        )
        .unwrap();
        assert_eq!(rows[0].values[2], Value::Id(864_691_135_533_713_769));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            UploadFormat::from_content_type("text/csv; charset=utf-8"),
            Some(UploadFormat::Csv)
        );
        assert_eq!(
            UploadFormat::from_content_type("application/vnd.apache.arrow.stream"),
            Some(UploadFormat::Arrow)
        );
        assert_eq!(
            UploadFormat::from_content_type(""),
            Some(UploadFormat::Json)
        );
        assert_eq!(UploadFormat::from_content_type("image/png"), None);
        let _ = StringArray::from(vec!["x"]);
    }
}

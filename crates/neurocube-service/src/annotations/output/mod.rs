//! Query results on the wire, batch by batch: Arrow IPC stream, CSV or JSON
//! lines. Columns follow CAVE: `id`, `created`, `superceded_id`, `valid`,
//! then the schema's columns; ids are 64-bit integers, `created` a UTC
//! timestamp in µs; positions either `[x, y, z]` lists or split into
//! `_x`/`_y`/`_z` columns, integers in the table's voxels or floats when
//! rescaled to a `desired_resolution`.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use bytes::Bytes;
use neurocube_core::annotation::{ColumnType, Row, Schema, Value};

use crate::error::{Result, ServiceError};

mod block;

/// Wire format of results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Arrow IPC stream.
    Arrow,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl OutputFormat {
    /// MIME type.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
            OutputFormat::Csv => "text/csv",
            OutputFormat::Jsonl => "application/x-ndjson",
        }
    }

    /// From `format=` (`arrow`, `csv`, `jsonl`/`ndjson`/`json`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "arrow" | "ipc" => Some(Self::Arrow),
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// From an `Accept` header: the first type named that we speak.
    #[must_use]
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(|part| {
            let t = part.split(';').next().unwrap_or("").trim();
            match t {
                "application/vnd.apache.arrow.stream"
                | "application/vnd.apache.arrow.file"
                | "data.arrow" => Some(Self::Arrow),
                "text/csv" => Some(Self::Csv),
                "application/x-ndjson" | "application/jsonl" | "application/json" => {
                    Some(Self::Jsonl)
                }
                _ => None,
            }
        })
    }
}

/// Where an output column's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Row id.
    Id,
    /// `created`.
    Created,
    /// `deleted`.
    Deleted,
    /// `superceded_id`.
    Superceded,
    /// `valid`.
    Valid,
    /// A schema column (a position's one axis when split).
    Column(usize, Option<usize>),
}

/// Type of an output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// i64 (ids too, as CAVE sends them).
    Int,
    /// f64.
    Float,
    /// bool.
    Bool,
    /// text.
    Str,
    /// µs timestamp, UTC.
    Time,
    /// `[x, y, z]` of i64.
    PosInt,
    /// `[x, y, z]` of f64.
    PosFloat,
}

/// One output column.
#[derive(Clone, Debug, PartialEq)]
pub struct OutColumn {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: Kind,
    /// From the queried row (0) or the joined one (1).
    pub side: usize,
    /// Which value.
    pub source: Source,
}

/// How positions are written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Positions {
    /// Multiply by this per axis (table resolution / desired), if rescaling.
    pub scale: Option<[f64; 3]>,
    /// Split into `_x`, `_y`, `_z` columns.
    pub split: bool,
}

/// The columns of a table's rows, CAVE's order: id, created, superceded_id,
/// valid, then the schema's (optionally only `select`).
#[must_use]
pub fn columns_of(
    schema: &Schema,
    side: usize,
    select: Option<&[String]>,
    pos: Positions,
    system: bool,
) -> Vec<OutColumn> {
    let wanted = |n: &str| select.is_none_or(|s| s.iter().any(|w| w == n));
    let mut out = Vec::new();
    if system {
        for (name, kind, source) in [
            ("id", Kind::Int, Source::Id),
            ("created", Kind::Time, Source::Created),
            ("superceded_id", Kind::Int, Source::Superceded),
            ("valid", Kind::Bool, Source::Valid),
        ] {
            if wanted(name) || (name == "id" && select.is_some_and(|s| s.is_empty())) {
                out.push(OutColumn {
                    name: name.into(),
                    kind,
                    side,
                    source,
                });
            }
        }
    }
    for (i, c) in schema.columns.iter().enumerate() {
        if !wanted(&c.name) {
            continue;
        }
        let kind = match &c.kind {
            ColumnType::Int | ColumnType::Id => Kind::Int,
            ColumnType::Float => Kind::Float,
            ColumnType::Bool => Kind::Bool,
            ColumnType::String | ColumnType::Enum(_) => Kind::Str,
            ColumnType::Position => {
                let (one, list) = if pos.scale.is_some() {
                    (Kind::Float, Kind::PosFloat)
                } else {
                    (Kind::Int, Kind::PosInt)
                };
                if pos.split {
                    for (a, axis) in ["x", "y", "z"].iter().enumerate() {
                        out.push(OutColumn {
                            name: format!("{}_{axis}", c.name),
                            kind: one,
                            side,
                            source: Source::Column(i, Some(a)),
                        });
                    }
                } else {
                    out.push(OutColumn {
                        name: c.name.clone(),
                        kind: list,
                        side,
                        source: Source::Column(i, None),
                    });
                }
                continue;
            }
        };
        out.push(OutColumn {
            name: c.name.clone(),
            kind,
            side,
            source: Source::Column(i, None),
        });
    }
    out
}

/// CAVE's join naming: a name that the queried table (side 0) and another
/// side both have gets `suffixes[0]` on side 0 and `suffixes[1]` on the
/// others; a split position takes it before its axis (`pt_position_ref_x`).
pub fn suffix_shared(columns: &mut [OutColumn], suffixes: &[String; 2]) {
    let names = |side0: bool, cols: &[OutColumn]| -> std::collections::HashSet<String> {
        cols.iter()
            .filter(|c| (c.side == 0) == side0)
            .map(|c| c.name.clone())
            .collect()
    };
    let (left, right) = (names(true, columns), names(false, columns));
    for c in columns.iter_mut() {
        if !(left.contains(&c.name) && right.contains(&c.name)) {
            continue;
        }
        let suffix = &suffixes[usize::from(c.side != 0)];
        match c.source {
            Source::Column(_, Some(_)) if c.name.len() > 2 => {
                let axis = c.name.split_off(c.name.len() - 2);
                c.name.push_str(suffix);
                c.name.push_str(&axis);
            }
            _ => c.name.push_str(suffix),
        }
    }
}

/// A result row: the queried row (side 0), then for reference merges and
/// joins the rows joined to it (`None`: nothing joined on that side).
pub type Record = Vec<Option<Row>>;

/// A cell's value as the output wants it.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Time(i64),
    Pos([f64; 3], bool),
}

fn cell(rec: &Record, c: &OutColumn, pos: &Positions) -> Cell {
    let Some(Some(row)) = rec.get(c.side) else {
        return Cell::Null;
    };
    match &c.source {
        Source::Id => Cell::Int(row.id as i64),
        Source::Created => Cell::Time(row.created * 1000),
        Source::Deleted => row.deleted.map_or(Cell::Null, |d| Cell::Time(d * 1000)),
        Source::Superceded => row
            .superceded_id
            .map_or(Cell::Null, |s| Cell::Int(s as i64)),
        Source::Valid => Cell::Bool(row.valid),
        Source::Column(i, axis) => match (row.values.get(*i), axis) {
            (None | Some(Value::Null), _) => Cell::Null,
            (Some(Value::Int(v)), _) => Cell::Int(*v),
            (Some(Value::Id(v)), _) => Cell::Int(*v as i64),
            (Some(Value::Float(v)), _) => Cell::Float(*v),
            (Some(Value::Bool(v)), _) => Cell::Bool(*v),
            (Some(Value::Str(v)), _) => Cell::Str(v.clone()),
            (Some(Value::Pos(p)), axis) => pos_cell(*p, *axis, pos),
        },
    }
}

/// A position's cell: one axis or all three, rescaled or not.
fn pos_cell(p: [i64; 3], axis: Option<usize>, pos: &Positions) -> Cell {
    let scaled = pos
        .scale
        .map(|s| [p[0] as f64 * s[0], p[1] as f64 * s[1], p[2] as f64 * s[2]]);
    match (axis, scaled) {
        (Some(a), Some(f)) => Cell::Float(f[a]),
        (Some(a), None) => Cell::Int(p[a]),
        (None, Some(f)) => Cell::Pos(f, true),
        (None, None) => Cell::Pos([p[0] as f64, p[1] as f64, p[2] as f64], false),
    }
}

fn arrow_type(k: Kind) -> DataType {
    match k {
        Kind::Int => DataType::Int64,
        Kind::Float => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::Str => DataType::Utf8,
        Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Kind::PosInt => {
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int64, true)), 3)
        }
        Kind::PosFloat => {
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float64, true)), 3)
        }
    }
}

fn csv_error(e: impl ToString) -> ServiceError {
    ServiceError::Internal {
        during: "writing CSV",
        reason: e.to_string(),
    }
}

fn internal(during: &'static str) -> impl Fn(arrow_schema::ArrowError) -> ServiceError {
    move |e| ServiceError::Internal {
        during,
        reason: e.to_string(),
    }
}

fn time_text(us: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write_time(&mut out, us);
    String::from_utf8(out).unwrap_or_default()
}

/// `us` (µs since the epoch, UTC) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Written
/// digit by digit for the years 0 to 9999 (every row has a `created`; a
/// formatter parsing its pattern per row was a third of a small query's
/// time), through chrono beyond them.
fn write_time(out: &mut Vec<u8>, us: i64) {
    // 0000-01-01 and 10000-01-01 in µs since the epoch.
    const MIN: i64 = -62_167_219_200_000_000;
    const MAX: i64 = 253_402_300_800_000_000;
    if !(MIN..MAX).contains(&us) {
        let text = chrono::DateTime::from_timestamp_micros(us).map_or_else(
            || us.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        );
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let days = us.div_euclid(86_400_000_000);
    let in_day = us.rem_euclid(86_400_000_000);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = in_day / 1_000_000;
    let fields: [(i64, usize, u8); 7] = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (secs / 3600, 2, b':'),
        (secs / 60 % 60, 2, b':'),
        (secs % 60, 2, b'.'),
        (in_day % 1_000_000, 6, b'Z'),
    ];
    for (v, width, sep) in fields {
        let start = out.len();
        out.resize(start + width, b'0');
        let mut v = v;
        for d in out[start..].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.push(sep);
    }
}

/// Writes results in one format, batch by batch.
pub struct Encoder {
    format: OutputFormat,
    columns: Vec<OutColumn>,
    pos: Positions,
    arrow: Option<arrow_ipc::writer::StreamWriter<Vec<u8>>>,
    schema: Arc<ArrowSchema>,
}

impl Encoder {
    /// An encoder for these columns.
    #[must_use]
    pub fn new(format: OutputFormat, columns: Vec<OutColumn>, pos: Positions) -> Self {
        let schema = Arc::new(ArrowSchema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, arrow_type(c.kind), true))
                .collect::<Vec<_>>(),
        ));
        Self {
            format,
            columns,
            pos,
            arrow: None,
            schema,
        }
    }

    /// The columns.
    #[must_use]
    pub fn columns(&self) -> &[OutColumn] {
        &self.columns
    }

    /// What comes before the first batch (Arrow's schema, CSV's header).
    pub fn header(&mut self) -> Result<Bytes> {
        match self.format {
            OutputFormat::Arrow => {
                let w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &self.schema)
                    .map_err(internal("writing an Arrow schema"))?;
                self.arrow = Some(w);
                Ok(self.take_arrow())
            }
            OutputFormat::Csv => {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(self.columns.iter().map(|c| c.name.as_str()))
                    .map_err(csv_error)?;
                w.into_inner().map(Bytes::from).map_err(csv_error)
            }
            OutputFormat::Jsonl => Ok(Bytes::new()),
        }
    }

    fn take_arrow(&mut self) -> Bytes {
        self.arrow
            .as_mut()
            .map(|w| Bytes::from(std::mem::take(w.get_mut())))
            .unwrap_or_default()
    }

    /// One batch of records.
    pub fn batch(&mut self, records: &[Record]) -> Result<Bytes> {
        match self.format {
            OutputFormat::Arrow => {
                let batch = self.arrow_batch(records)?;
                self.write_arrow(&batch)
            }
            OutputFormat::Csv => {
                self.csv_rows(records.len(), |i, c| cell(&records[i], c, &self.pos))
            }
            OutputFormat::Jsonl => {
                Ok(self.jsonl_rows(records.len(), |i, c| cell(&records[i], c, &self.pos)))
            }
        }
    }

    /// CSV lines of `n` rows, each column's value of row `i` from `cell_at`.
    fn csv_rows(&self, n: usize, cell_at: impl Fn(usize, &OutColumn) -> Cell) -> Result<Bytes> {
        let mut w = csv::Writer::from_writer(Vec::with_capacity(n * 128));
        let mut fields: Vec<String> = Vec::with_capacity(self.columns.len());
        for i in 0..n {
            fields.clear();
            for c in &self.columns {
                fields.push(match cell_at(i, c) {
                    Cell::Null => String::new(),
                    Cell::Int(v) => v.to_string(),
                    Cell::Float(v) => v.to_string(),
                    Cell::Bool(v) => v.to_string(),
                    Cell::Str(v) => v,
                    Cell::Time(us) => time_text(us),
                    Cell::Pos(p, true) => format!("[{}, {}, {}]", p[0], p[1], p[2]),
                    Cell::Pos(p, false) => {
                        format!("[{}, {}, {}]", p[0] as i64, p[1] as i64, p[2] as i64)
                    }
                });
            }
            w.write_record(&fields).map_err(csv_error)?;
        }
        w.into_inner().map(Bytes::from).map_err(csv_error)
    }

    /// JSON lines of `n` rows, each column's value of row `i` from
    /// `cell_at`: written directly (keys escaped once), not through a map
    /// per row.
    fn jsonl_rows(&self, n: usize, cell_at: impl Fn(usize, &OutColumn) -> Cell) -> Bytes {
        let keys: Vec<Vec<u8>> = self
            .columns
            .iter()
            .map(|c| {
                let mut k = serde_json::to_vec(&c.name).unwrap_or_default();
                k.push(b':');
                k
            })
            .collect();
        let mut out = Vec::with_capacity(n * 200);
        let json = |out: &mut Vec<u8>, v: &dyn erased::Json| v.write(out);
        for i in 0..n {
            out.push(b'{');
            for (j, (c, k)) in self.columns.iter().zip(&keys).enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(k);
                match cell_at(i, c) {
                    Cell::Null => out.extend_from_slice(b"null"),
                    Cell::Int(v) => json(&mut out, &v),
                    Cell::Float(v) => json(&mut out, &v),
                    Cell::Bool(v) => out.extend_from_slice(if v { b"true" } else { b"false" }),
                    Cell::Str(v) => json(&mut out, &v),
                    Cell::Time(us) => {
                        out.push(b'"');
                        write_time(&mut out, us);
                        out.push(b'"');
                    }
                    Cell::Pos(p, true) => json(&mut out, &p),
                    Cell::Pos(p, false) => json(&mut out, &[p[0] as i64, p[1] as i64, p[2] as i64]),
                }
            }
            out.extend_from_slice(b"}\n");
        }
        Bytes::from(out)
    }

    /// One Arrow batch as an IPC message.
    fn write_arrow(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        if let Some(w) = self.arrow.as_mut() {
            // The message is about the arrays' size: one allocation, not a
            // doubling series of copies.
            w.get_mut().reserve(batch.get_array_memory_size() + 1024);
            w.write(batch).map_err(internal("writing an Arrow batch"))?;
        }
        Ok(self.take_arrow())
    }

    /// What ends the stream (Arrow's end-of-stream marker).
    pub fn finish(&mut self) -> Result<Bytes> {
        if let Some(w) = self.arrow.as_mut() {
            w.finish().map_err(internal("ending an Arrow stream"))?;
            return Ok(self.take_arrow());
        }
        Ok(Bytes::new())
    }

    fn arrow_batch(&self, records: &[Record]) -> Result<RecordBatch> {
        let n = records.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let cells = records.iter().map(|r| cell(r, c, &self.pos));
            let a: ArrayRef = match c.kind {
                Kind::Int => {
                    let mut b = Int64Builder::with_capacity(n);
                    for x in cells {
                        match x {
                            Cell::Int(v) => b.append_value(v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::Float => {
                    let mut b = Float64Builder::with_capacity(n);
                    for x in cells {
                        match x {
                            Cell::Float(v) => b.append_value(v),
                            Cell::Int(v) => b.append_value(v as f64),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::Bool => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    for x in cells {
                        match x {
                            Cell::Bool(v) => b.append_value(v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::Str => {
                    let mut b = StringBuilder::with_capacity(n, n * 8);
                    for x in cells {
                        match x {
                            Cell::Str(v) => b.append_value(v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::Time => {
                    let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                    for x in cells {
                        match x {
                            Cell::Time(v) => b.append_value(v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::PosInt => {
                    let mut b = FixedSizeListBuilder::with_capacity(Int64Builder::new(), 3, n);
                    for x in cells {
                        match x {
                            Cell::Pos(p, _) => {
                                for v in p {
                                    b.values().append_value(v as i64);
                                }
                                b.append(true);
                            }
                            _ => {
                                for _ in 0..3 {
                                    b.values().append_null();
                                }
                                b.append(false);
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
                Kind::PosFloat => {
                    let mut b = FixedSizeListBuilder::with_capacity(Float64Builder::new(), 3, n);
                    for x in cells {
                        match x {
                            Cell::Pos(p, _) => {
                                for v in p {
                                    b.values().append_value(v);
                                }
                                b.append(true);
                            }
                            _ => {
                                for _ in 0..3 {
                                    b.values().append_null();
                                }
                                b.append(false);
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            arrays.push(a);
        }
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(internal("building an Arrow batch"))
    }
}

/// Values written as JSON into a buffer.
mod erased {
    /// A value that writes itself as JSON.
    pub(super) trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Writing plain numbers, text and arrays into a Vec cannot fail.
            let _ = serde_json::to_writer(out, self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_text(us: i64) -> String {
        chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .unwrap_or_default()
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        assert_eq!(
            time_text(1_726_481_401_121_000),
            "2024-09-16T10:10:01.121000Z"
        );
        assert_eq!(time_text(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(time_text(-1), "1969-12-31T23:59:59.999999Z");
        // Leap days, century and era edges, the ends of the digit-by-digit
        // range and beyond it, and a spread of values between.
        let mut probes = vec![
            951_782_400_000_000,     // 2000-02-29
            4_107_542_400_000_000,   // 2100-03-01
            -62_167_219_200_000_000, // 0000-01-01
            -62_167_219_200_000_001, // before it: chrono
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01: chrono
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            probes.push((x % 600_000_000_000_000_000) as i64 - 100_000_000_000_000_000);
        }
        for us in probes {
            assert_eq!(time_text(us), chrono_text(us), "{us}");
        }
    }
}

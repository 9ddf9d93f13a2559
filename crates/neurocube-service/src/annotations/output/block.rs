//! Results written from packed blocks ([`RowBlock`]): the same bytes as
//! [`Encoder::batch`] writes for the same rows, built from the columns.
//! Arrow arrays are copies (or scalings) of whole block columns; JSON lines
//! and CSV read each value from its column, without building the row.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::Field;
use bytes::Bytes;
use neurocube_core::annotation::block::{BlockColumn, RowBlock};

use super::{
    Cell, Encoder, Kind, OutColumn, OutputFormat, Positions, Source, arrow_type, internal, pos_cell,
};
use crate::error::Result;

/// [`cell`] of row `i` of a block of the queried table (side 0), read from
/// its columns without building the row.
fn block_cell(b: &RowBlock, i: usize, c: &OutColumn, pos: &Positions) -> Cell {
    if c.side != 0 {
        return Cell::Null;
    }
    match &c.source {
        Source::Id => Cell::Int(b.ids[i] as i64),
        Source::Created => Cell::Time(b.created[i] * 1000),
        Source::Deleted => b.deleted[i].map_or(Cell::Null, |d| Cell::Time(d * 1000)),
        Source::Superceded => b.superceded[i].map_or(Cell::Null, |s| Cell::Int(s as i64)),
        Source::Valid => Cell::Bool(b.valid[i]),
        Source::Column(j, axis) => match b.columns.get(*j) {
            Some(BlockColumn::Int(t)) if t.has(i) => Cell::Int(t.values[i]),
            Some(BlockColumn::Id(t)) if t.has(i) => Cell::Int(t.values[i] as i64),
            Some(BlockColumn::Float(t)) if t.has(i) => Cell::Float(t.values[i]),
            Some(BlockColumn::Bool(t)) if t.has(i) => Cell::Bool(t.values[i]),
            Some(BlockColumn::Str {
                offsets,
                data,
                present,
            }) if present.as_ref().is_none_or(|p| p[i]) => {
                Cell::Str(data[offsets[i] as usize..offsets[i + 1] as usize].to_string())
            }
            Some(BlockColumn::Pos(t)) if t.has(i) => pos_cell(
                [t.values[3 * i], t.values[3 * i + 1], t.values[3 * i + 2]],
                *axis,
                pos,
            ),
            _ => Cell::Null,
        },
    }
}

impl Encoder {
    /// Rows `range` of a block of the queried table (no joined sides): as
    /// Arrow straight from its columns, in the other formats through rows.
    pub fn block(&mut self, b: &RowBlock, range: std::ops::Range<usize>) -> Result<Bytes> {
        let at = |i: usize, c: &OutColumn| block_cell(b, range.start + i, c, &self.pos);
        match self.format {
            OutputFormat::Csv => return self.csv_rows(range.len(), at),
            OutputFormat::Jsonl => return Ok(self.jsonl_rows(range.len(), at)),
            OutputFormat::Arrow => {}
        }
        let batch = self.arrow_block(b, range)?;
        self.write_arrow(&batch)
    }

    /// The Arrow batch [`Encoder::batch`] makes of these rows, built from
    /// the columns: a value array is a copy (or a scaling) of a block
    /// column, never a value at a time through [`Cell`].
    fn arrow_block(&self, b: &RowBlock, r: std::ops::Range<usize>) -> Result<RecordBatch> {
        use arrow_array::{
            BooleanArray, FixedSizeListArray, Float64Array, Int64Array, StringArray,
            TimestampMicrosecondArray, new_null_array,
        };
        use arrow_buffer::{NullBuffer, ScalarBuffer};
        let n = r.len();
        let nulls = |p: &Option<Vec<bool>>, times: usize| {
            p.as_ref().map(|p| {
                NullBuffer::from(
                    p[r.clone()]
                        .iter()
                        .flat_map(|v| std::iter::repeat_n(*v, times))
                        .collect::<Vec<bool>>(),
                )
            })
        };
        let ints = |v: Vec<i64>, nulls: Option<NullBuffer>| -> ArrayRef {
            Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls))
        };
        let floats = |v: Vec<f64>, nulls: Option<NullBuffer>| -> ArrayRef {
            Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls))
        };
        let list = |child: ArrayRef, nulls: Option<NullBuffer>| -> Result<ArrayRef> {
            let field = Arc::new(Field::new("item", child.data_type().clone(), true));
            Ok(Arc::new(
                FixedSizeListArray::try_new(field, 3, child, nulls)
                    .map_err(internal("building an Arrow batch"))?,
            ))
        };
        let opt = |v: &[Option<i64>], mul: i64| -> ArrayRef {
            Arc::new(Int64Array::from(
                v.iter().map(|x| x.map(|x| x * mul)).collect::<Vec<_>>(),
            ))
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let ty = arrow_type(c.kind);
            let a: ArrayRef = match (&c.source, c.kind) {
                (Source::Id, Kind::Int) => {
                    ints(b.ids[r.clone()].iter().map(|v| *v as i64).collect(), None)
                }
                (Source::Created, Kind::Time) => Arc::new(
                    TimestampMicrosecondArray::new(
                        b.created[r.clone()].iter().map(|v| v * 1000).collect(),
                        None,
                    )
                    .with_timezone("UTC"),
                ),
                (Source::Deleted, Kind::Time) => {
                    let v: Vec<Option<i64>> = b.deleted[r.clone()]
                        .iter()
                        .map(|d| d.map(|d| d * 1000))
                        .collect();
                    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
                }
                (Source::Superceded, Kind::Int) => {
                    let v: Vec<Option<i64>> = b.superceded[r.clone()]
                        .iter()
                        .map(|s| s.map(|s| s as i64))
                        .collect();
                    opt(&v, 1)
                }
                (Source::Valid, Kind::Bool) => {
                    Arc::new(BooleanArray::from(b.valid[r.clone()].to_vec()))
                }
                (Source::Column(i, axis), kind) => match (b.columns.get(*i), kind, axis) {
                    (Some(BlockColumn::Int(t)), Kind::Int, _) => {
                        ints(t.values[r.clone()].to_vec(), nulls(&t.present, 1))
                    }
                    (Some(BlockColumn::Id(t)), Kind::Int, _) => ints(
                        t.values[r.clone()].iter().map(|v| *v as i64).collect(),
                        nulls(&t.present, 1),
                    ),
                    (Some(BlockColumn::Float(t)), Kind::Float, _) => {
                        floats(t.values[r.clone()].to_vec(), nulls(&t.present, 1))
                    }
                    (Some(BlockColumn::Int(t)), Kind::Float, _) => floats(
                        t.values[r.clone()].iter().map(|v| *v as f64).collect(),
                        nulls(&t.present, 1),
                    ),
                    (Some(BlockColumn::Bool(t)), Kind::Bool, _) => {
                        let v: Vec<Option<bool>> =
                            r.clone().map(|i| t.has(i).then_some(t.values[i])).collect();
                        Arc::new(BooleanArray::from(v))
                    }
                    (
                        Some(BlockColumn::Str {
                            offsets,
                            data,
                            present,
                        }),
                        Kind::Str,
                        _,
                    ) => {
                        let v: Vec<Option<&str>> =
                            r.clone()
                                .map(|i| {
                                    present.as_ref().is_none_or(|p| p[i]).then(|| {
                                        &data[offsets[i] as usize..offsets[i + 1] as usize]
                                    })
                                })
                                .collect();
                        Arc::new(StringArray::from(v))
                    }
                    (Some(BlockColumn::Pos(t)), kind, axis) => {
                        let p = &t.values[3 * r.start..3 * r.end];
                        match (axis, self.pos.scale) {
                            (Some(a), Some(s)) if kind == Kind::Float => floats(
                                p.iter()
                                    .skip(*a)
                                    .step_by(3)
                                    .map(|v| *v as f64 * s[*a])
                                    .collect(),
                                nulls(&t.present, 1),
                            ),
                            (Some(a), None) if kind == Kind::Int => ints(
                                p.iter().skip(*a).step_by(3).copied().collect(),
                                nulls(&t.present, 1),
                            ),
                            (None, Some(s)) if kind == Kind::PosFloat => list(
                                floats(
                                    p.iter()
                                        .enumerate()
                                        .map(|(j, v)| *v as f64 * s[j % 3])
                                        .collect(),
                                    nulls(&t.present, 3),
                                ),
                                nulls(&t.present, 1),
                            )?,
                            (None, None) if kind == Kind::PosInt => {
                                list(ints(p.to_vec(), nulls(&t.present, 3)), nulls(&t.present, 1))?
                            }
                            _ => new_null_array(&ty, n),
                        }
                    }
                    _ => new_null_array(&ty, n),
                },
                _ => new_null_array(&ty, n),
            };
            arrays.push(a);
        }
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(internal("building an Arrow batch"))
    }
}

#[cfg(test)]
mod tests {
    use neurocube_core::annotation::{ColumnType, Row, Schema, Value};

    use super::super::{Record, columns_of};
    use super::*;

    /// Rows of every built-in schema with a value of each column's type,
    /// some missing; every fifth row deleted and superseded.
    fn rows_of(schema: &Schema, n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| Row {
                id: 1000 + i as u64,
                created: 1_700_000_000_000 + i as i64 * 977,
                deleted: (i % 5 == 4).then_some(1_800_000_000_000),
                superceded_id: (i % 5 == 4).then_some(5000 + i as u64),
                valid: i % 5 != 4,
                values: schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(c, col)| {
                        if (i + c) % 7 == 3 {
                            return Value::Null;
                        }
                        let k = (i * 31 + c * 17) as i64;
                        match &col.kind {
                            ColumnType::Int => Value::Int(k - 50),
                            ColumnType::Float => Value::Float(k as f64 / 3.0),
                            ColumnType::Bool => Value::Bool(k % 2 == 0),
                            ColumnType::String | ColumnType::Enum(_) => {
                                Value::Str(format!("t{k}é"))
                            }
                            ColumnType::Position => Value::Pos([k, 2 * k + 1, k % 11]),
                            ColumnType::Id => Value::Id(k as u64 * 1_000_003),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    fn read_arrow(parts: &[Bytes]) -> Vec<RecordBatch> {
        let all: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(all), None)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn blocks_encode_as_their_rows_do_in_every_format_and_option() {
        use neurocube_core::annotation::block::RowBlock;
        for name in Schema::BUILTIN {
            let schema = Schema::builtin(name).unwrap();
            let rows = rows_of(&schema, 23);
            let block = RowBlock::from_rows(&rows).unwrap();
            let first = schema.columns[0].name.clone();
            let selects: [Option<Vec<String>>; 3] = [
                None,
                Some(vec![first, "valid".into(), "id".into()]),
                Some(vec![]),
            ];
            for select in &selects {
                for scale in [None, Some([4.0, 0.5, 40.0])] {
                    for split in [false, true] {
                        let pos = Positions { scale, split };
                        let cols = columns_of(&schema, 0, select.as_deref(), pos, true);
                        for format in [OutputFormat::Arrow, OutputFormat::Jsonl, OutputFormat::Csv]
                        {
                            let what = format!("{name} {select:?} {pos:?} {format:?}");
                            let mut a = Encoder::new(format, cols.clone(), pos);
                            let mut b = Encoder::new(format, cols.clone(), pos);
                            let recs: Vec<Record> =
                                rows[5..20].iter().map(|r| vec![Some(r.clone())]).collect();
                            let by_rows = vec![
                                a.header().unwrap(),
                                a.batch(&recs).unwrap(),
                                a.finish().unwrap(),
                            ];
                            let by_block = vec![
                                b.header().unwrap(),
                                b.block(&block, 5..20).unwrap(),
                                b.finish().unwrap(),
                            ];
                            if format == OutputFormat::Arrow {
                                let (x, y) = (read_arrow(&by_rows), read_arrow(&by_block));
                                assert_eq!(x.len(), 1, "{what}");
                                assert_eq!(x[0].num_rows(), 15, "{what}");
                                assert_eq!(x, y, "{what}");
                            } else {
                                assert_eq!(by_rows, by_block, "{what}");
                            }
                        }
                    }
                }
            }
        }
    }
}

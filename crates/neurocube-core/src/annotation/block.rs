//! Rows stored together in columns: a version's rows of one busy root id
//! (see the service's packed root-id index), read as a few values and
//! written out as arrays without building a [`Row`] each.
//!
//! Stored form (little-endian): format byte 1; rows `n` (u32); columns
//! (u16); ids (n × u64); created (n × i64); deleted (n × i64, `i64::MIN`
//! when none); superceded_id (n × u64, 0 when none); valid (n × u8); then
//! per column a type tag (0 all null, 1 int, 2 float, 3 bool, 4 text,
//! 5 position, 6 id), a byte saying whether a presence list (n × u8)
//! follows, and the values: 8 bytes each for int, float and id, one for
//! bool, 24 for a position, and for text n + 1 offsets (u32) then the
//! bytes.

use super::row::{Row, RowError, Value};

/// Values of one type, and which rows have one (`None`: every row).
#[derive(Clone, Debug, PartialEq)]
pub struct Typed<T> {
    /// One per row (a default where the row has none).
    pub values: Vec<T>,
    /// Whether each row has a value; `None` when all do.
    pub present: Option<Vec<bool>>,
}

impl<T> Typed<T> {
    /// Whether row `i` has a value.
    #[must_use]
    pub fn has(&self, i: usize) -> bool {
        self.present.as_ref().is_none_or(|p| p[i])
    }
}

/// One schema column of a block.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockColumn {
    /// No row has a value.
    Null,
    /// i64.
    Int(Typed<i64>),
    /// f64.
    Float(Typed<f64>),
    /// bool.
    Bool(Typed<bool>),
    /// Text: `offsets` (n + 1) into `data`.
    Str {
        /// Start of each row's text in `data`, and the end.
        offsets: Vec<u32>,
        /// The texts, one after another.
        data: String,
        /// Whether each row has a value; `None` when all do.
        present: Option<Vec<bool>>,
    },
    /// `[x, y, z]` voxels, three values a row.
    Pos(Typed<i64>),
    /// u64 ids.
    Id(Typed<u64>),
}

/// Rows in columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowBlock {
    /// Row ids.
    pub ids: Vec<u64>,
    /// `created` (ms).
    pub created: Vec<i64>,
    /// `deleted` (ms), if.
    pub deleted: Vec<Option<i64>>,
    /// `superceded_id`, if.
    pub superceded: Vec<Option<u64>>,
    /// `valid`.
    pub valid: Vec<bool>,
    /// One per schema column.
    pub columns: Vec<BlockColumn>,
}

const TAG_NULL: u8 = 0;

fn tag(v: &Value) -> u8 {
    match v {
        Value::Null => TAG_NULL,
        Value::Int(_) => 1,
        Value::Float(_) => 2,
        Value::Bool(_) => 3,
        Value::Str(_) => 4,
        Value::Pos(_) => 5,
        Value::Id(_) => 6,
    }
}

fn typed<T: Copy + Default, const W: usize>(
    rows: &[Row],
    c: usize,
    get: impl Fn(&Value) -> Option<[T; W]>,
) -> Typed<T> {
    let mut values = Vec::with_capacity(rows.len() * W);
    let mut present = Vec::with_capacity(rows.len());
    for r in rows {
        match get(&r.values[c]) {
            Some(v) => {
                values.extend_from_slice(&v);
                present.push(true);
            }
            None => {
                values.extend_from_slice(&[T::default(); W]);
                present.push(false);
            }
        }
    }
    Typed {
        values,
        present: present.contains(&false).then_some(present),
    }
}

impl RowBlock {
    /// The rows in columns. Fails if a column holds values of two types
    /// (nulls aside) or a row has another number of columns than the first.
    pub fn from_rows(rows: &[Row]) -> Result<Self, RowError> {
        let ncols = rows.first().map_or(0, |r| r.values.len());
        if let Some(r) = rows.iter().find(|r| r.values.len() != ncols) {
            return Err(RowError(format!(
                "row {} has {} columns, the block {ncols}",
                r.id,
                r.values.len()
            )));
        }
        let mut columns = Vec::with_capacity(ncols);
        for c in 0..ncols {
            let mut kind = TAG_NULL;
            for r in rows {
                let t = tag(&r.values[c]);
                if t != TAG_NULL && kind != TAG_NULL && t != kind {
                    return Err(RowError(format!(
                        "column {c} holds values of two types (row {})",
                        r.id
                    )));
                }
                kind = kind.max(t);
            }
            columns.push(match kind {
                1 => BlockColumn::Int(typed(rows, c, |v| match v {
                    Value::Int(i) => Some([*i]),
                    _ => None,
                })),
                2 => BlockColumn::Float(typed(rows, c, |v| match v {
                    Value::Float(f) => Some([*f]),
                    _ => None,
                })),
                3 => BlockColumn::Bool(typed(rows, c, |v| match v {
                    Value::Bool(b) => Some([*b]),
                    _ => None,
                })),
                4 => {
                    let mut offsets = Vec::with_capacity(rows.len() + 1);
                    let mut data = String::new();
                    let mut present = Vec::with_capacity(rows.len());
                    offsets.push(0);
                    for r in rows {
                        if let Value::Str(s) = &r.values[c] {
                            data.push_str(s);
                            present.push(true);
                        } else {
                            present.push(false);
                        }
                        let end = u32::try_from(data.len())
                            .map_err(|_| RowError("a block's text passes 4 GiB".into()))?;
                        offsets.push(end);
                    }
                    BlockColumn::Str {
                        offsets,
                        data,
                        present: present.contains(&false).then_some(present),
                    }
                }
                5 => BlockColumn::Pos(typed(rows, c, |v| match v {
                    Value::Pos(p) => Some(*p),
                    _ => None,
                })),
                6 => BlockColumn::Id(typed(rows, c, |v| match v {
                    Value::Id(i) => Some([*i]),
                    _ => None,
                })),
                _ => BlockColumn::Null,
            });
        }
        Ok(Self {
            ids: rows.iter().map(|r| r.id).collect(),
            created: rows.iter().map(|r| r.created).collect(),
            deleted: rows.iter().map(|r| r.deleted).collect(),
            superceded: rows.iter().map(|r| r.superceded_id).collect(),
            valid: rows.iter().map(|r| r.valid).collect(),
            columns,
        })
    }

    /// Rows held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds no row.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Row `i` as a [`Row`].
    #[must_use]
    pub fn row(&self, i: usize) -> Row {
        let values = self
            .columns
            .iter()
            .map(|c| match c {
                BlockColumn::Null => Value::Null,
                BlockColumn::Int(t) if t.has(i) => Value::Int(t.values[i]),
                BlockColumn::Float(t) if t.has(i) => Value::Float(t.values[i]),
                BlockColumn::Bool(t) if t.has(i) => Value::Bool(t.values[i]),
                BlockColumn::Id(t) if t.has(i) => Value::Id(t.values[i]),
                BlockColumn::Pos(t) if t.has(i) => {
                    Value::Pos([t.values[3 * i], t.values[3 * i + 1], t.values[3 * i + 2]])
                }
                BlockColumn::Str {
                    offsets,
                    data,
                    present,
                } if present.as_ref().is_none_or(|p| p[i]) => {
                    Value::Str(data[offsets[i] as usize..offsets[i + 1] as usize].to_string())
                }
                _ => Value::Null,
            })
            .collect();
        Row {
            id: self.ids[i],
            created: self.created[i],
            deleted: self.deleted[i],
            superceded_id: self.superceded[i],
            valid: self.valid[i],
            values,
        }
    }

    /// Append the stored form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.len();
        out.reserve(64 + n * (33 + 16 * self.columns.len()));
        out.push(1);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&(self.columns.len() as u16).to_le_bytes());
        for v in &self.ids {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.created {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.deleted {
            out.extend_from_slice(&v.unwrap_or(i64::MIN).to_le_bytes());
        }
        for v in &self.superceded {
            out.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
        }
        out.extend(self.valid.iter().map(|v| u8::from(*v)));
        let present = |out: &mut Vec<u8>, p: &Option<Vec<bool>>| match p {
            Some(p) => {
                out.push(1);
                out.extend(p.iter().map(|v| u8::from(*v)));
            }
            None => out.push(0),
        };
        for c in &self.columns {
            match c {
                BlockColumn::Null => out.push(TAG_NULL),
                BlockColumn::Int(t) | BlockColumn::Pos(t) => {
                    out.push(if matches!(c, BlockColumn::Int(_)) {
                        1
                    } else {
                        5
                    });
                    present(out, &t.present);
                    for v in &t.values {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
                BlockColumn::Float(t) => {
                    out.push(2);
                    present(out, &t.present);
                    for v in &t.values {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
                BlockColumn::Bool(t) => {
                    out.push(3);
                    present(out, &t.present);
                    out.extend(t.values.iter().map(|v| u8::from(*v)));
                }
                BlockColumn::Str {
                    offsets,
                    data,
                    present: p,
                } => {
                    out.push(4);
                    present(out, p);
                    for v in offsets {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    out.extend_from_slice(data.as_bytes());
                }
                BlockColumn::Id(t) => {
                    out.push(6);
                    present(out, &t.present);
                    for v in &t.values {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
    }

    /// The stored form as a new buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decode a stored block.
    pub fn decode(b: &[u8]) -> Result<Self, RowError> {
        let mut r = Cursor { b, at: 0 };
        let format = r.take(1)?[0];
        if format != 1 {
            return Err(RowError(format!("unknown row block format {format}")));
        }
        let n = u32::from_le_bytes(r.array()?) as usize;
        let ncols = u16::from_le_bytes(r.array()?);
        // Every row takes at least 33 bytes: a count the buffer cannot hold
        // is refused before anything is allocated for it.
        if n.saturating_mul(33) > b.len() {
            return Err(RowError(format!(
                "a block of {n} rows cannot fit in {} bytes",
                b.len()
            )));
        }
        let ids = r.words(n, u64::from_le_bytes)?;
        let created = r.words(n, i64::from_le_bytes)?;
        let deleted = r.words(n, |w| {
            Some(i64::from_le_bytes(w)).filter(|d| *d != i64::MIN)
        })?;
        let superceded = r.words(n, |w| Some(u64::from_le_bytes(w)).filter(|s| *s != 0))?;
        let valid = r.take(n)?.iter().map(|v| *v != 0).collect();
        let mut columns = Vec::with_capacity(usize::from(ncols));
        for c in 0..ncols {
            let t = r.take(1)?[0];
            if t == TAG_NULL {
                columns.push(BlockColumn::Null);
                continue;
            }
            let present = match r.take(1)?[0] {
                0 => None,
                1 => Some(r.take(n)?.iter().map(|v| *v != 0).collect()),
                p => return Err(RowError(format!("column {c}: presence flag {p}"))),
            };
            columns.push(match t {
                1 => BlockColumn::Int(Typed {
                    values: r.words(n, i64::from_le_bytes)?,
                    present,
                }),
                2 => BlockColumn::Float(Typed {
                    values: r.words(n, f64::from_le_bytes)?,
                    present,
                }),
                3 => BlockColumn::Bool(Typed {
                    values: r.take(n)?.iter().map(|v| *v != 0).collect(),
                    present,
                }),
                4 => {
                    let offsets = r.quads(n + 1)?;
                    let end = *offsets.last().unwrap_or(&0) as usize;
                    if offsets.windows(2).any(|w| w[0] > w[1]) {
                        return Err(RowError(format!("column {c}: text offsets go back")));
                    }
                    let data = String::from_utf8(r.take(end)?.to_vec())
                        .map_err(|_| RowError(format!("column {c}: text is not UTF-8")))?;
                    if offsets.iter().any(|o| !data.is_char_boundary(*o as usize)) {
                        return Err(RowError(format!(
                            "column {c}: a text offset splits a character"
                        )));
                    }
                    BlockColumn::Str {
                        offsets,
                        data,
                        present,
                    }
                }
                5 => BlockColumn::Pos(Typed {
                    values: r.words(3 * n, i64::from_le_bytes)?,
                    present,
                }),
                6 => BlockColumn::Id(Typed {
                    values: r.words(n, u64::from_le_bytes)?,
                    present,
                }),
                t => return Err(RowError(format!("column {c}: unknown type tag {t}"))),
            });
        }
        if r.at != b.len() {
            return Err(RowError(format!(
                "{} bytes after the block's last column",
                b.len() - r.at
            )));
        }
        Ok(Self {
            ids,
            created,
            deleted,
            superceded,
            valid,
            columns,
        })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RowError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| RowError(format!("block truncated at byte {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RowError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn words<T>(&mut self, n: usize, f: impl Fn([u8; 8]) -> T) -> Result<Vec<T>, RowError> {
        let s = self.take(
            n.checked_mul(8)
                .ok_or_else(|| RowError("overflow".into()))?,
        )?;
        Ok(s.chunks_exact(8)
            .map(|w| f(w.try_into().unwrap_or([0; 8])))
            .collect())
    }

    fn quads(&mut self, n: usize) -> Result<Vec<u32>, RowError> {
        let s = self.take(
            n.checked_mul(4)
                .ok_or_else(|| RowError("overflow".into()))?,
        )?;
        Ok(s.chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap_or([0; 4])))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        (0..5u64)
            .map(|i| Row {
                id: 100 + i,
                created: 1_700_000_000_000 + i as i64,
                deleted: (i == 3).then_some(1_800_000_000_000),
                superceded_id: (i == 3).then_some(999),
                valid: i != 3,
                values: vec![
                    Value::Pos([i as i64, 2 * i as i64, -(i as i64)]),
                    if i == 1 {
                        Value::Null
                    } else {
                        Value::Id(7 + i)
                    },
                    Value::Float(i as f64 / 2.0),
                    Value::Str(["a", "", "ünï", "x", "yz"][i as usize].into()),
                    if i == 4 {
                        Value::Null
                    } else {
                        Value::Bool(i % 2 == 0)
                    },
                    Value::Int(-(i as i64)),
                    Value::Null,
                ],
            })
            .collect()
    }

    #[test]
    fn rows_round_trip_through_columns_and_bytes() {
        let rows = rows();
        let block = RowBlock::from_rows(&rows).unwrap();
        assert_eq!(block.len(), 5);
        assert!(matches!(block.columns[6], BlockColumn::Null));
        let back = RowBlock::decode(&block.to_bytes()).unwrap();
        assert_eq!(back, block);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(&back.row(i), r);
        }
        let empty = RowBlock::from_rows(&[]).unwrap();
        assert_eq!(RowBlock::decode(&empty.to_bytes()).unwrap(), empty);
    }

    #[test]
    fn mixed_columns_and_bad_bytes_are_refused() {
        let mut rows = rows();
        rows[2].values[5] = Value::Float(1.0);
        let e = RowBlock::from_rows(&rows).unwrap_err().to_string();
        assert!(
            e.contains("column 5 holds values of two types (row 102)"),
            "{e}"
        );
        let bytes = RowBlock::from_rows(&self::rows()).unwrap().to_bytes();
        for cut in [0, 1, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(RowBlock::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = RowBlock::decode(&longer).unwrap_err().to_string();
        assert!(e.contains("1 bytes after"), "{e}");
        let mut huge = bytes;
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = RowBlock::decode(&huge).unwrap_err().to_string();
        assert!(e.contains("cannot fit"), "{e}");
    }
}

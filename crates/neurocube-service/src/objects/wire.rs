//! The wire forms of objects: a request's conflict option, uploads (JSON,
//! NDJSON, Arrow) read into rows and voxel lists, voxel lists, and dense
//! masks.

use std::collections::BTreeMap;

use arrow_array::{Array, ArrayRef};
use bytes::Bytes;
use neurocube_core::{Box3, DType, labels};
use serde_json::value::RawValue;
use serde_json::{Map, Value as J};

use super::invalid;
use crate::annotations::UploadFormat;
use crate::error::{Result, ServiceError};

/// OCP's conflict options of a label write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Conflict {
    /// Take every voxel, whatever it held (the default).
    #[default]
    Overwrite,
    /// Take only voxels that hold no label (or this object's).
    Preserve,
    /// Refuse the whole write (409) if any voxel holds another object.
    Exception,
}

impl Conflict {
    /// From `?conflict=` (`except` is OCP's short form of `exception`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "overwrite" => Ok(Self::Overwrite),
            "preserve" => Ok(Self::Preserve),
            "exception" | "except" => Ok(Self::Exception),
            other => Err(ServiceError::field(
                "conflict",
                format!("unknown conflict option '{other}': use overwrite, preserve or exception"),
            )),
        }
    }
}

/// An object as uploaded: its row's values and its voxels.
#[derive(Clone, Debug, Default)]
pub struct ObjectInput {
    /// Metadata (columns of the table's schema, and optionally `id`).
    pub metadata: Map<String, J>,
    /// Voxels `[x, y, z]` at level 0.
    pub voxels: Vec<[u64; 3]>,
}

/// Parse an objects upload: a JSON object (one object), a JSON array or
/// `{"objects": [...]}`, NDJSON (one object per line), or Arrow IPC (one
/// object per row). Each object holds its metadata columns, optionally
/// `id`, and `voxels`: `[[x, y, z], ...]` (in Arrow a list of lists).
///
/// Voxel lists are read straight into coordinates (they are most of the
/// bytes); the other fields become JSON values for the row checks.
pub fn parse_objects(format: UploadFormat, body: &Bytes) -> Result<Vec<ObjectInput>> {
    if format == UploadFormat::Arrow {
        return crate::annotations::upload::arrow_objects(body, "voxels")?
            .into_iter()
            .enumerate()
            .map(|(i, (metadata, voxels))| {
                let voxels = match voxels {
                    None => Vec::new(),
                    Some((a, row)) => arrow_voxels(a.as_ref(), row)
                        .map_err(|reason| invalid(i, "voxels", reason))?,
                };
                Ok(ObjectInput { metadata, voxels })
            })
            .collect();
    }
    // One typed pass; a body it refuses is read again slowly for the
    // message (which object, which field, why).
    if let Some(objects) = parse_fast(format, body) {
        return Ok(objects);
    }
    parse_slow(format, body)
}

/// An object read in one pass: `voxels` typed, the rest as JSON values.
struct Wire(ObjectInput);

impl<'de> serde::Deserialize<'de> for Wire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Wire;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Wire, M::Error> {
                let mut o = ObjectInput::default();
                while let Some(k) = m.next_key::<String>()? {
                    if k == "voxels" {
                        o.voxels = m.next_value::<Option<Vec<[u64; 3]>>>()?.unwrap_or_default();
                    } else {
                        let v: J = m.next_value()?;
                        o.metadata.insert(k, v);
                    }
                }
                Ok(Wire(o))
            }
        }
        d.deserialize_map(V)
    }
}

fn parse_fast(format: UploadFormat, body: &[u8]) -> Option<Vec<ObjectInput>> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    let wires: Vec<Wire> = match (format, first) {
        (UploadFormat::Json, b'[') => serde_json::from_slice(body).ok()?,
        (UploadFormat::Json, b'{') => {
            let one: Wire = serde_json::from_slice(body).ok()?;
            if one.0.metadata.contains_key("objects") {
                return None;
            }
            vec![one]
        }
        (UploadFormat::Ndjson, _) => body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(serde_json::from_slice)
            .collect::<serde_json::Result<_>>()
            .ok()?,
        _ => return None,
    };
    Some(wires.into_iter().map(|w| w.0).collect())
}

fn parse_slow(format: UploadFormat, body: &[u8]) -> Result<Vec<ObjectInput>> {
    let text = std::str::from_utf8(body).map_err(|e| ServiceError::InvalidBody {
        format: "json",
        reason: format!("the body is not UTF-8: {e}"),
    })?;
    let bad_json = |format: &'static str, e: serde_json::Error| ServiceError::InvalidBody {
        format,
        reason: format!("invalid JSON: {e}"),
    };
    let raws: Vec<&RawValue> = match format {
        UploadFormat::Json => {
            let top: &RawValue = serde_json::from_str(text).map_err(|e| bad_json("json", e))?;
            match top.get().trim_start().as_bytes().first() {
                Some(b'[') => serde_json::from_str(top.get()).map_err(|e| bad_json("json", e))?,
                Some(b'{') => {
                    let fields: Fields<'_> =
                        serde_json::from_str(top.get()).map_err(|e| bad_json("json", e))?;
                    match fields.get("objects") {
                        Some(list) if fields.len() == 1 => serde_json::from_str(list.get())
                            .map_err(|_| ServiceError::InvalidBody {
                                format: "json",
                                reason: "\"objects\" must hold an array of objects".into(),
                            })?,
                        _ => vec![top],
                    }
                }
                _ => {
                    return Err(ServiceError::InvalidBody {
                        format: "json",
                        reason: "send an object, an array of objects or {\"objects\": [...]}"
                            .into(),
                    });
                }
            }
        }
        UploadFormat::Ndjson => {
            let mut out = Vec::new();
            for (i, line) in text.split('\n').enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                out.push(
                    serde_json::from_str(line).map_err(|e| ServiceError::InvalidBody {
                        format: "ndjson",
                        reason: format!("line {}: invalid JSON: {e}", i + 1),
                    })?,
                );
            }
            out
        }
        UploadFormat::Csv | UploadFormat::Arrow => {
            return Err(ServiceError::InvalidBody {
                format: "objects",
                reason: "objects are uploaded as JSON, NDJSON or Arrow (each with its \"voxels\")"
                    .into(),
            });
        }
    };
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let fields: Fields<'_> = serde_json::from_str(raw.get())
                .map_err(|_| invalid(i, "", "an object must be a JSON object".into()))?;
            let mut metadata = Map::new();
            let mut voxels = Vec::new();
            for (k, v) in fields {
                if k == "voxels" {
                    voxels = match serde_json::from_str::<Option<Vec<[u64; 3]>>>(v.get()) {
                        Ok(list) => list.unwrap_or_default(),
                        // The slow path, for its message.
                        Err(_) => {
                            let value: J = serde_json::from_str(v.get())
                                .map_err(|e| invalid(i, "voxels", e.to_string()))?;
                            voxel_list(&value).map_err(|reason| invalid(i, "voxels", reason))?
                        }
                    };
                } else {
                    let value: J =
                        serde_json::from_str(v.get()).map_err(|e| invalid(i, &k, e.to_string()))?;
                    metadata.insert(k, value);
                }
            }
            Ok(ObjectInput { metadata, voxels })
        })
        .collect()
}

/// The fields of a JSON object, their values unparsed.
type Fields<'a> = BTreeMap<String, &'a RawValue>;

/// `[[x, y, z], ...]` of non-negative integers.
pub fn voxel_list(v: &J) -> std::result::Result<Vec<[u64; 3]>, String> {
    let J::Array(items) = v else {
        return Err("voxels must be a list of [x, y, z] voxel coordinates".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(k, item)| {
            let bad = || {
                format!("voxel {k} is {item}: each voxel is [x, y, z], three non-negative integers")
            };
            let J::Array(c) = item else { return Err(bad()) };
            if c.len() != 3 {
                return Err(bad());
            }
            let mut out = [0u64; 3];
            for (a, x) in c.iter().enumerate() {
                out[a] = x.as_u64().ok_or_else(bad)?;
            }
            Ok(out)
        })
        .collect()
}

/// Integers of an Arrow array, any integer type, read as voxel coordinates.
enum Coords<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

impl<'a> Coords<'a> {
    fn of(a: &'a dyn Array) -> Option<Self> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{
            Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
            UInt64Type,
        };
        use arrow_schema::DataType as D;
        Some(match a.data_type() {
            D::Int8 => Self::I8(a.as_primitive::<Int8Type>().values()),
            D::Int16 => Self::I16(a.as_primitive::<Int16Type>().values()),
            D::Int32 => Self::I32(a.as_primitive::<Int32Type>().values()),
            D::Int64 => Self::I64(a.as_primitive::<Int64Type>().values()),
            D::UInt8 => Self::U8(a.as_primitive::<UInt8Type>().values()),
            D::UInt16 => Self::U16(a.as_primitive::<UInt16Type>().values()),
            D::UInt32 => Self::U32(a.as_primitive::<UInt32Type>().values()),
            D::UInt64 => Self::U64(a.as_primitive::<UInt64Type>().values()),
            _ => return None,
        })
    }

    /// The value at `k`, if it is a non-negative integer.
    fn get(&self, k: usize) -> Option<u64> {
        match self {
            Self::I8(v) => u64::try_from(*v.get(k)?).ok(),
            Self::I16(v) => u64::try_from(*v.get(k)?).ok(),
            Self::I32(v) => u64::try_from(*v.get(k)?).ok(),
            Self::I64(v) => u64::try_from(*v.get(k)?).ok(),
            Self::U8(v) => v.get(k).map(|c| u64::from(*c)),
            Self::U16(v) => v.get(k).map(|c| u64::from(*c)),
            Self::U32(v) => v.get(k).map(|c| u64::from(*c)),
            Self::U64(v) => v.get(k).copied(),
        }
    }
}

/// Row `row` of an Arrow `voxels` column, read straight into coordinates:
/// a list (or large list) of voxels, each a list or a fixed-size list of
/// three non-negative integers of any integer type. A null row is no
/// voxels.
pub fn arrow_voxels(a: &dyn Array, row: usize) -> std::result::Result<Vec<[u64; 3]>, String> {
    use arrow_array::cast::AsArray;
    use arrow_schema::DataType as D;
    const SHAPE: &str = "voxels must be a list of [x, y, z] voxel coordinates (a list of lists or of fixed-size lists of 3 integers)";
    if a.is_null(row) {
        return Ok(Vec::new());
    }
    let voxels = match a.data_type() {
        D::List(_) => a.as_list::<i32>().value(row),
        D::LargeList(_) => a.as_list::<i64>().value(row),
        _ => return Err(SHAPE.into()),
    };
    // Each voxel's coordinates: the child array and the range of each.
    let (child, starts): (&ArrayRef, Vec<(usize, usize)>) = match voxels.data_type() {
        D::FixedSizeList(_, n) => {
            let l = voxels.as_fixed_size_list();
            let n = usize::try_from(*n).unwrap_or(0);
            (
                l.values(),
                (0..l.len()).map(|k| (l.value_offset_at(k), n)).collect(),
            )
        }
        D::List(_) => {
            let l = voxels.as_list::<i32>();
            let o = l.value_offsets();
            (
                l.values(),
                (0..l.len())
                    .map(|k| (o[k] as usize, (o[k + 1] - o[k]) as usize))
                    .collect(),
            )
        }
        _ => return Err(SHAPE.into()),
    };
    let coords = Coords::of(child.as_ref()).ok_or_else(|| SHAPE.to_string())?;
    let has_nulls = child.null_count() > 0;
    starts
        .iter()
        .enumerate()
        .map(|(k, &(start, len))| {
            let bad = || format!("voxel {k}: each voxel is [x, y, z], three non-negative integers");
            if len != 3 || voxels.is_null(k) {
                return Err(bad());
            }
            let mut out = [0u64; 3];
            for (axis, c) in out.iter_mut().enumerate() {
                if has_nulls && child.is_null(start + axis) {
                    return Err(bad());
                }
                *c = coords.get(start + axis).ok_or_else(bad)?;
            }
            Ok(out)
        })
        .collect()
}

/// The voxels of a dense mask: those holding `id` (0: not the object's);
/// any other value is refused.
pub fn mask_voxels(bbox: &Box3, dtype: DType, data: &[u8], id: u64) -> Result<Vec<[u64; 3]>> {
    let elem = dtype.size();
    let s = bbox.shape();
    let mut out = Vec::new();
    for (i, v) in data.chunks_exact(elem).enumerate() {
        let l = labels::label_of(v);
        if l == 0 {
            continue;
        }
        let i = i as u64;
        let voxel = [
            bbox.start[0] + i % s[0],
            bbox.start[1] + (i / s[0]) % s[1],
            bbox.start[2] + i / (s[0] * s[1]),
        ];
        if l != id {
            return Err(ServiceError::InvalidBody {
                format: "mask",
                reason: format!(
                    "voxel {voxel:?} holds {l}: a mask of object {id} holds {id} where the object is and 0 elsewhere"
                ),
            });
        }
        out.push(voxel);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{
        FixedSizeListBuilder, Float64Builder, Int16Builder, Int32Builder, LargeListBuilder,
        ListBuilder, UInt64Builder,
    };

    use super::*;

    const A: [[u64; 3]; 2] = [[1, 2, 3], [70_000, 5, 6]];

    #[test]
    fn arrow_voxel_columns_of_every_shape_read_into_coordinates() {
        // list<fixed_size_list<uint64, 3>>, two rows (the second empty)
        // and a null third.
        let mut b = ListBuilder::new(FixedSizeListBuilder::new(UInt64Builder::new(), 3));
        for v in A {
            b.values().values().append_slice(&v);
            b.values().append(true);
        }
        b.append(true);
        b.append(true);
        b.append(false);
        let a = b.finish();
        assert_eq!(arrow_voxels(&a, 0).unwrap(), A);
        assert_eq!(arrow_voxels(&a, 1).unwrap(), Vec::<[u64; 3]>::new());
        assert_eq!(arrow_voxels(&a, 2).unwrap(), Vec::<[u64; 3]>::new());
        // A slice of it, as a batch in a stream may be.
        let sliced = a.slice(0, 1);
        assert_eq!(arrow_voxels(&sliced, 0).unwrap(), A);
        // list<list<int32>> (pyarrow's from [[x, y, z], ...]), read at the
        // second row.
        let mut b = ListBuilder::new(ListBuilder::new(Int32Builder::new()));
        b.values().values().append_value(9);
        b.values().append(true);
        b.append(true);
        for v in A {
            for c in v {
                b.values().values().append_value(c as i32);
            }
            b.values().append(true);
        }
        b.append(true);
        let a = b.finish();
        assert_eq!(arrow_voxels(&a, 1).unwrap(), A);
        // The first row's voxel has one coordinate: the JSON path's reason.
        let e = arrow_voxels(&a, 0).unwrap_err();
        assert!(e.starts_with("voxel 0:"), "{e}");
        // large_list<fixed_size_list<int16, 3>> with a negative coordinate.
        let mut b = LargeListBuilder::new(FixedSizeListBuilder::new(Int16Builder::new(), 3));
        b.values().values().append_slice(&[1, 2, 3]);
        b.values().append(true);
        b.values().values().append_slice(&[4, -5, 6]);
        b.values().append(true);
        b.append(true);
        let a = b.finish();
        let e = arrow_voxels(&a, 0).unwrap_err();
        assert!(e.starts_with("voxel 1:"), "{e}");
        // A null coordinate.
        let mut b = ListBuilder::new(FixedSizeListBuilder::new(UInt64Builder::new(), 3));
        b.values().values().append_value(1);
        b.values().values().append_null();
        b.values().values().append_value(3);
        b.values().append(true);
        b.append(true);
        let e = arrow_voxels(&b.finish(), 0).unwrap_err();
        assert!(e.starts_with("voxel 0:"), "{e}");
        // Floats, and a column that is no list at all.
        let mut b = ListBuilder::new(FixedSizeListBuilder::new(Float64Builder::new(), 3));
        b.values().values().append_slice(&[1.0, 2.0, 3.0]);
        b.values().append(true);
        b.append(true);
        let e = arrow_voxels(&b.finish(), 0).unwrap_err();
        assert!(e.starts_with("voxels must be a list of [x, y, z]"), "{e}");
        let flat: ArrayRef = Arc::new(arrow_array::UInt64Array::from(vec![1u64, 2, 3]));
        let e = arrow_voxels(flat.as_ref(), 0).unwrap_err();
        assert!(e.starts_with("voxels must be a list of [x, y, z]"), "{e}");
    }
}

//! Rows of annotation tables: typed values, the system columns every row
//! has, parsing values from JSON and text (checked against the column
//! type), and the compact binary form rows are stored in.
//!
//! Stored form (little-endian): version `1`, `id` u64, `created` i64 ms,
//! `deleted` i64 ms (`i64::MIN`: none), `superceded_id` u64 (0: none),
//! `valid` u8, the number of values u16, then per value a tag byte and its
//! bytes: 0 null; 1 i64; 2 f64; 3 bool u8; 4 text u32 length + UTF-8;
//! 5 position 3 × i64; 6 u64.

use super::schema::ColumnType;

/// A value of a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Absent.
    Null,
    /// i64.
    Int(i64),
    /// f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// text (also enum values).
    Str(String),
    /// `[x, y, z]` voxels.
    Pos([i64; 3]),
    /// u64 id.
    Id(u64),
}

/// A row: system columns and one value per schema column.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Row id (unique in its table; never reused).
    pub id: u64,
    /// When it was written (ms since the epoch).
    pub created: i64,
    /// When it was deleted or superseded (ms), if it was.
    pub deleted: Option<i64>,
    /// The row that replaced it, if an update did.
    pub superceded_id: Option<u64>,
    /// Not deleted or superseded.
    pub valid: bool,
    /// Values, one per schema column.
    pub values: Vec<Value>,
}

/// A stored row that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stored row is corrupt: {0}")]
pub struct RowError(pub String);

impl Row {
    /// Whether the row existed and was not deleted at `t` (ms).
    #[must_use]
    pub fn valid_at(&self, t: i64) -> bool {
        self.created <= t && self.deleted.is_none_or(|d| d > t)
    }

    /// Append the stored form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(1);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.deleted.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&self.superceded_id.unwrap_or(0).to_le_bytes());
        out.push(u8::from(self.valid));
        out.extend_from_slice(&(self.values.len() as u16).to_le_bytes());
        for v in &self.values {
            match v {
                Value::Null => out.push(0),
                Value::Int(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Value::Float(f) => {
                    out.push(2);
                    out.extend_from_slice(&f.to_le_bytes());
                }
                Value::Bool(b) => {
                    out.push(3);
                    out.push(u8::from(*b));
                }
                Value::Str(s) => {
                    out.push(4);
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Value::Pos(p) => {
                    out.push(5);
                    for c in p {
                        out.extend_from_slice(&c.to_le_bytes());
                    }
                }
                Value::Id(i) => {
                    out.push(6);
                    out.extend_from_slice(&i.to_le_bytes());
                }
            }
        }
    }

    /// The stored form as a new buffer.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + 16 * self.values.len());
        self.encode(&mut v);
        v
    }

    /// Decode a stored row.
    pub fn decode(b: &[u8]) -> Result<Row, RowError> {
        let mut r = Reader { b, at: 0 };
        let version = r.u8()?;
        if version != 1 {
            return Err(RowError(format!("unknown row format version {version}")));
        }
        let id = r.u64()?;
        let created = r.i64()?;
        let deleted = Some(r.i64()?).filter(|d| *d != i64::MIN);
        let superceded_id = Some(r.u64()?).filter(|s| *s != 0);
        let valid = r.u8()? != 0;
        let n = r.u16()?;
        let mut values = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            values.push(match r.u8()? {
                0 => Value::Null,
                1 => Value::Int(r.i64()?),
                2 => Value::Float(f64::from_le_bytes(r.take::<8>()?)),
                3 => Value::Bool(r.u8()? != 0),
                4 => {
                    let len = r.u32()? as usize;
                    let s = r.slice(len)?;
                    Value::Str(
                        String::from_utf8(s.to_vec())
                            .map_err(|_| RowError("text is not UTF-8".into()))?,
                    )
                }
                5 => Value::Pos([r.i64()?, r.i64()?, r.i64()?]),
                6 => Value::Id(r.u64()?),
                t => return Err(RowError(format!("unknown value tag {t}"))),
            });
        }
        Ok(Row {
            id,
            created,
            deleted,
            superceded_id,
            valid,
            values,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn slice(&mut self, n: usize) -> Result<&[u8], RowError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| RowError(format!("truncated at byte {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RowError> {
        let s = self.slice(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, RowError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, RowError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, RowError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, RowError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, RowError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
}

/// Longest text value accepted.
pub const MAX_TEXT: usize = 64 << 10;

fn int_from_f64(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

impl Value {
    /// A value of type `kind` from JSON (`null` is [`Value::Null`]); the
    /// error says what was expected.
    pub fn from_json(v: &serde_json::Value, kind: &ColumnType) -> Result<Value, String> {
        use serde_json::Value as J;
        if v.is_null() {
            return Ok(Value::Null);
        }
        let got = || match v {
            J::String(s) if s.len() > 40 => format!("\"{}…\"", &s[..s.floor_char_boundary(40)]),
            other => {
                let t = other.to_string();
                if t.len() > 40 {
                    format!("{}…", &t[..t.floor_char_boundary(40)])
                } else {
                    t
                }
            }
        };
        match kind {
            ColumnType::Int => match v {
                J::Number(n) => n
                    .as_i64()
                    .or_else(|| n.as_f64().and_then(int_from_f64))
                    .map(Value::Int)
                    .ok_or_else(|| format!("expected an integer, got {}", got())),
                J::String(s) => s
                    .trim()
                    .parse()
                    .map(Value::Int)
                    .map_err(|_| format!("expected an integer, got {}", got())),
                _ => Err(format!("expected an integer, got {}", got())),
            },
            ColumnType::Id => match v {
                J::Number(n) => n
                    .as_u64()
                    .or_else(|| {
                        n.as_f64()
                            .and_then(int_from_f64)
                            .and_then(|i| u64::try_from(i).ok())
                    })
                    .map(Value::Id)
                    .ok_or_else(|| format!("expected a non-negative integer id, got {}", got())),
                J::String(s) => s
                    .trim()
                    .parse()
                    .map(Value::Id)
                    .map_err(|_| format!("expected a non-negative integer id, got {}", got())),
                _ => Err(format!("expected a non-negative integer id, got {}", got())),
            },
            ColumnType::Float => match v {
                J::Number(n) => n
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(Value::Float)
                    .ok_or_else(|| format!("expected a number, got {}", got())),
                J::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Float)
                    .ok_or_else(|| format!("expected a number, got {}", got())),
                _ => Err(format!("expected a number, got {}", got())),
            },
            ColumnType::Bool => match v {
                J::Bool(b) => Ok(Value::Bool(*b)),
                J::String(s) => parse_bool(s).map(Value::Bool).ok_or_else(|| {
                    format!("expected true or false (or \"t\"/\"f\"), got {}", got())
                }),
                _ => Err(format!("expected true or false, got {}", got())),
            },
            ColumnType::String => match v {
                J::String(s) if s.len() <= MAX_TEXT => Ok(Value::Str(s.clone())),
                J::String(s) => Err(format!(
                    "text of {} bytes is longer than {MAX_TEXT}",
                    s.len()
                )),
                _ => Err(format!("expected text, got {}", got())),
            },
            ColumnType::Enum(values) => match v {
                J::String(s) if values.contains(s) => Ok(Value::Str(s.clone())),
                _ => Err(format!("expected one of {values:?}, got {}", got())),
            },
            ColumnType::Position => match v {
                J::Array(a) if a.len() == 3 => {
                    let mut p = [0i64; 3];
                    for (i, c) in a.iter().enumerate() {
                        p[i] = c
                            .as_i64()
                            .or_else(|| c.as_f64().and_then(int_from_f64))
                            .ok_or_else(|| {
                                format!("expected a position [x, y, z] of integers, got {}", got())
                            })?;
                    }
                    Ok(Value::Pos(p))
                }
                _ => Err(format!(
                    "expected a position [x, y, z] of integers, got {}",
                    got()
                )),
            },
        }
    }

    /// A value of type `kind` from text (CSV); empty text is null.
    /// Positions are `[x, y, z]`, `x,y,z` or `x y z`.
    pub fn from_text(s: &str, kind: &ColumnType) -> Result<Value, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("null") || t == "NaN" {
            return Ok(Value::Null);
        }
        match kind {
            ColumnType::Position => {
                let inner = t
                    .trim_start_matches(['[', '('])
                    .trim_end_matches([']', ')']);
                let parts: Vec<&str> = inner.split([',', ' ']).filter(|p| !p.is_empty()).collect();
                let bad = || format!("expected a position [x, y, z] of integers, got '{t}'");
                if parts.len() != 3 {
                    return Err(bad());
                }
                let mut p = [0i64; 3];
                for (i, c) in parts.iter().enumerate() {
                    p[i] = c
                        .parse::<i64>()
                        .ok()
                        .or_else(|| c.parse::<f64>().ok().and_then(int_from_f64))
                        .ok_or_else(bad)?;
                }
                Ok(Value::Pos(p))
            }
            ColumnType::String | ColumnType::Enum(_) => {
                Value::from_json(&serde_json::Value::String(s.to_string()), kind)
            }
            _ => Value::from_json(&serde_json::Value::String(t.to_string()), kind),
        }
    }

    /// The value as JSON.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Int(i) => (*i).into(),
            Value::Float(f) => (*f).into(),
            Value::Bool(b) => (*b).into(),
            Value::Str(s) => s.clone().into(),
            Value::Pos(p) => serde_json::json!(p),
            Value::Id(i) => (*i).into(),
        }
    }

    /// The id, if this is one.
    #[must_use]
    pub fn as_id(&self) -> Option<u64> {
        match self {
            Value::Id(i) => Some(*i),
            _ => None,
        }
    }

    /// The position, if this is one.
    #[must_use]
    pub fn as_pos(&self) -> Option<[i64; 3]> {
        match self {
            Value::Pos(p) => Some(*p),
            _ => None,
        }
    }
}

/// `true`/`false`, `t`/`f`, `1`/`0`, `yes`/`no` (any case).
#[must_use]
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "1" | "yes" => Some(true),
        "f" | "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_round_trip() {
        let r = Row {
            id: 864_691_135_533_713_769,
            created: 1_700_000_000_123,
            deleted: Some(1_700_000_001_000),
            superceded_id: Some(77),
            valid: false,
            values: vec![
                Value::Pos([211_448, -409_744, 801_440]),
                Value::Id(72_063_160_986_635_724),
                Value::Null,
                Value::Float(2956.5),
                Value::Str("23P — ünïcode".into()),
                Value::Bool(true),
                Value::Int(-5),
            ],
        };
        let b = r.to_bytes();
        assert_eq!(Row::decode(&b).unwrap(), r);
        assert!(Row::decode(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(Row::decode(&bad).unwrap_err().0.contains("version 9"));
        let fresh = Row {
            deleted: None,
            superceded_id: None,
            valid: true,
            ..r
        };
        assert_eq!(Row::decode(&fresh.to_bytes()).unwrap(), fresh);
        assert!(fresh.valid_at(1_700_000_000_123) && !fresh.valid_at(1_699_999_999_999));
    }

    #[test]
    fn values_are_checked_against_their_type() {
        let id = ColumnType::Id;
        assert_eq!(
            Value::from_json(&json!(864_691_135_533_713_769u64), &id).unwrap(),
            Value::Id(864_691_135_533_713_769)
        );
        assert_eq!(
            Value::from_json(&json!("864691135533713769"), &id).unwrap(),
            Value::Id(864_691_135_533_713_769)
        );
        assert!(
            Value::from_json(&json!(-1), &id)
                .unwrap_err()
                .contains("non-negative integer id, got -1")
        );
        assert!(Value::from_json(&json!(1.5), &ColumnType::Int).is_err());
        assert_eq!(
            Value::from_json(&json!(2.0), &ColumnType::Int).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            Value::from_json(&json!("t"), &ColumnType::Bool).unwrap(),
            Value::Bool(true)
        );
        assert!(Value::from_json(&json!("maybe"), &ColumnType::Bool).is_err());
        assert_eq!(
            Value::from_json(&json!([1, 2.0, 3]), &ColumnType::Position).unwrap(),
            Value::Pos([1, 2, 3])
        );
        assert!(Value::from_json(&json!([1, 2]), &ColumnType::Position).is_err());
        let e = ColumnType::Enum(vec!["a".into()]);
        assert!(
            Value::from_json(&json!("b"), &e)
                .unwrap_err()
                .contains("one of [\"a\"]")
        );
        assert_eq!(
            Value::from_text("[4, 5, 6]", &ColumnType::Position).unwrap(),
            Value::Pos([4, 5, 6])
        );
        assert_eq!(
            Value::from_text("4 5 6", &ColumnType::Position).unwrap(),
            Value::Pos([4, 5, 6])
        );
        assert_eq!(
            Value::from_text("", &ColumnType::Float).unwrap(),
            Value::Null
        );
        assert_eq!(
            Value::from_text("2.5", &ColumnType::Float).unwrap(),
            Value::Float(2.5)
        );
        assert!(Value::from_text("NaNx", &ColumnType::Float).is_err());
        assert!(Value::from_json(&json!(f64::MAX), &ColumnType::Float).is_ok());
    }
}

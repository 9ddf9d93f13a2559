//! CAVE's query filters, parsed against a schema into typed conditions and
//! evaluated on rows. All conditions are ANDed; a null value satisfies no
//! condition (SQL's rule). Spatial boxes are inclusive at both corners, in
//! the table's voxels (CAVE's `&&&` on `ST_3DMakeBox`).

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value as J};

use super::row::{Row, Value, parse_bool};
use super::schema::{ColumnType, Schema};

/// The filter fields of a query body, as CAVE names them: each maps a
/// column to a value (a list for `in`/`notin`, `[[x0,y0,z0],[x1,y1,z1]]`
/// for `spatial`, a pattern for `regex`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Filters {
    /// column IN values.
    #[serde(default)]
    pub filter_in_dict: Option<Map<String, J>>,
    /// column NOT IN values.
    #[serde(default)]
    pub filter_out_dict: Option<Map<String, J>>,
    /// Alias of `filter_out_dict` (what caveclient sends).
    #[serde(default)]
    pub filter_notin_dict: Option<Map<String, J>>,
    /// column = value.
    #[serde(default)]
    pub filter_equal_dict: Option<Map<String, J>>,
    /// column > value.
    #[serde(default)]
    pub filter_greater_dict: Option<Map<String, J>>,
    /// column < value.
    #[serde(default)]
    pub filter_less_dict: Option<Map<String, J>>,
    /// column >= value.
    #[serde(default)]
    pub filter_greater_equal_dict: Option<Map<String, J>>,
    /// column <= value.
    #[serde(default)]
    pub filter_less_equal_dict: Option<Map<String, J>>,
    /// position inside `[[x0,y0,z0],[x1,y1,z1]]` (inclusive).
    #[serde(default)]
    pub filter_spatial_dict: Option<Map<String, J>>,
    /// text matches a regular expression.
    #[serde(default)]
    pub filter_regex_dict: Option<Map<String, J>>,
}

/// Which column a condition reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    /// The row id.
    Id,
    /// `valid`.
    Valid,
    /// A schema column.
    Data(usize),
}

/// A set of values for `in`/`notin`.
#[derive(Clone, Debug, PartialEq)]
pub enum Set {
    /// Ids.
    Ids(HashSet<u64>),
    /// Integers.
    Ints(HashSet<i64>),
    /// Texts.
    Strs(HashSet<String>),
    /// Booleans.
    Bools(Vec<bool>),
    /// Floats.
    Floats(Vec<f64>),
}

impl Set {
    fn contains(&self, v: &Value) -> bool {
        match (self, v) {
            (Set::Ids(s), Value::Id(i)) => s.contains(i),
            (Set::Ints(s), Value::Int(i)) => s.contains(i),
            (Set::Strs(s), Value::Str(t)) => s.contains(t),
            (Set::Bools(s), Value::Bool(b)) => s.contains(b),
            (Set::Floats(s), Value::Float(f)) => s.contains(f),
            _ => false,
        }
    }

    /// The ids of an id set, sorted (for index lookups).
    #[must_use]
    pub fn sorted_ids(&self) -> Option<Vec<u64>> {
        match self {
            Set::Ids(s) => {
                let mut v: Vec<u64> = s.iter().copied().collect();
                v.sort_unstable();
                Some(v)
            }
            _ => None,
        }
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Set::Ids(s) => s.len(),
            Set::Ints(s) => s.len(),
            Set::Strs(s) => s.len(),
            Set::Bools(s) => s.len(),
            Set::Floats(s) => s.len(),
        }
    }

    /// No values.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A comparison.
#[derive(Clone, Debug)]
pub enum Op {
    /// In a set.
    In(Set),
    /// Not in a set.
    NotIn(Set),
    /// Equal.
    Eq(Value),
    /// Greater.
    Gt(Value),
    /// Less.
    Lt(Value),
    /// Greater or equal.
    Ge(Value),
    /// Less or equal.
    Le(Value),
    /// Position inside an inclusive box.
    Within([i64; 3], [i64; 3]),
    /// Text matching a pattern.
    Regex(regex::Regex),
}

/// One condition.
#[derive(Clone, Debug)]
pub struct Condition {
    /// Column.
    pub col: Col,
    /// Its name, for messages.
    pub name: String,
    /// Comparison.
    pub op: Op,
}

/// All conditions of a query, ANDed.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// The conditions.
    pub conditions: Vec<Condition>,
}

/// A filter that cannot be applied: which field and column, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    /// The filter field (`filter_in_dict`, ...).
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// Most values in one `in`/`notin` list.
pub const MAX_LIST: usize = 1_000_000;

fn column_of(schema: &Schema, name: &str) -> Option<(Col, ColumnType)> {
    match name {
        "id" => Some((Col::Id, ColumnType::Id)),
        "valid" => Some((Col::Valid, ColumnType::Bool)),
        _ => schema
            .column(name)
            .map(|i| (Col::Data(i), schema.columns[i].kind.clone())),
    }
}

fn scalar(field: &'static str, name: &str, v: &J, kind: &ColumnType) -> Result<Value, FilterError> {
    if matches!(kind, ColumnType::Position) {
        return Err(FilterError {
            field,
            message: format!(
                "'{name}' is a position: filter it with filter_spatial_dict {{\"{name}\": [[x0, y0, z0], [x1, y1, z1]]}}"
            ),
        });
    }
    match Value::from_json(v, kind) {
        Ok(Value::Null) => Err(FilterError {
            field,
            message: format!("'{name}': null is not a value to compare with"),
        }),
        Ok(x) => Ok(x),
        Err(e) => Err(FilterError {
            field,
            message: format!("'{name}': {e}"),
        }),
    }
}

fn set(field: &'static str, name: &str, v: &J, kind: &ColumnType) -> Result<Set, FilterError> {
    let items: Vec<&J> = match v {
        J::Array(a) => a.iter().collect(),
        // One value given where a list is expected: a list of one.
        other => vec![other],
    };
    if items.len() > MAX_LIST {
        return Err(FilterError {
            field,
            message: format!(
                "'{name}' lists {} values; at most {MAX_LIST} per query (split the list)",
                items.len()
            ),
        });
    }
    let vals = items
        .into_iter()
        .map(|x| scalar(field, name, x, kind))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match kind {
        ColumnType::Id => Set::Ids(vals.iter().filter_map(Value::as_id).collect()),
        ColumnType::Int => Set::Ints(
            vals.iter()
                .filter_map(|v| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect(),
        ),
        ColumnType::Bool => Set::Bools(
            vals.iter()
                .filter_map(|v| match v {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect(),
        ),
        ColumnType::Float => Set::Floats(
            vals.iter()
                .filter_map(|v| match v {
                    Value::Float(f) => Some(*f),
                    _ => None,
                })
                .collect(),
        ),
        ColumnType::String | ColumnType::Enum(_) | ColumnType::Position => Set::Strs(
            vals.into_iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s),
                    _ => None,
                })
                .collect(),
        ),
    })
}

fn corner(v: &J) -> Option<[i64; 3]> {
    let a = v.as_array().filter(|a| a.len() == 3)?;
    let mut p = [0i64; 3];
    for (i, c) in a.iter().enumerate() {
        p[i] = c.as_i64().or_else(|| {
            c.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        })?;
    }
    Some(p)
}

impl Filter {
    /// Parse the filter fields of a query against a table's schema.
    pub fn parse(f: &Filters, schema: &Schema) -> Result<Self, FilterError> {
        let mut conditions = Vec::new();
        let fields: [(&'static str, &Option<Map<String, J>>); 10] = [
            ("filter_in_dict", &f.filter_in_dict),
            ("filter_out_dict", &f.filter_out_dict),
            ("filter_notin_dict", &f.filter_notin_dict),
            ("filter_equal_dict", &f.filter_equal_dict),
            ("filter_greater_dict", &f.filter_greater_dict),
            ("filter_less_dict", &f.filter_less_dict),
            ("filter_greater_equal_dict", &f.filter_greater_equal_dict),
            ("filter_less_equal_dict", &f.filter_less_equal_dict),
            ("filter_spatial_dict", &f.filter_spatial_dict),
            ("filter_regex_dict", &f.filter_regex_dict),
        ];
        for (field, map) in fields {
            let Some(map) = map else { continue };
            for (name, v) in map {
                let (col, kind) = column_of(schema, name).ok_or_else(|| FilterError {
                    field,
                    message: format!(
                        "table has no column '{name}'; its columns are id, valid, {}",
                        schema
                            .columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
                let op = match field {
                    "filter_in_dict" => Op::In(set(field, name, v, &kind)?),
                    "filter_out_dict" | "filter_notin_dict" => {
                        Op::NotIn(set(field, name, v, &kind)?)
                    }
                    "filter_equal_dict" => Op::Eq(scalar(field, name, v, &kind)?),
                    "filter_greater_dict" => Op::Gt(ordered(field, name, v, &kind)?),
                    "filter_less_dict" => Op::Lt(ordered(field, name, v, &kind)?),
                    "filter_greater_equal_dict" => Op::Ge(ordered(field, name, v, &kind)?),
                    "filter_less_equal_dict" => Op::Le(ordered(field, name, v, &kind)?),
                    "filter_spatial_dict" => {
                        if kind != ColumnType::Position {
                            return Err(FilterError {
                                field,
                                message: format!("'{name}' is not a position column"),
                            });
                        }
                        let bad = || FilterError {
                            field,
                            message: format!(
                                "'{name}' needs a box [[x0, y0, z0], [x1, y1, z1]] of integers, in the table's voxels"
                            ),
                        };
                        let pair = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
                        let (lo, hi) = (
                            corner(&pair[0]).ok_or_else(bad)?,
                            corner(&pair[1]).ok_or_else(bad)?,
                        );
                        if (0..3).any(|a| lo[a] >= hi[a]) {
                            return Err(FilterError {
                                field,
                                message: format!(
                                    "'{name}' box {lo:?}..{hi:?} is empty or inverted: each lower corner coordinate must be below the upper one"
                                ),
                            });
                        }
                        Op::Within(lo, hi)
                    }
                    _ => {
                        if !matches!(kind, ColumnType::String | ColumnType::Enum(_)) {
                            return Err(FilterError {
                                field,
                                message: format!("'{name}' is not a text column"),
                            });
                        }
                        let pattern = v.as_str().ok_or_else(|| FilterError {
                            field,
                            message: format!("'{name}' needs a regular expression as text"),
                        })?;
                        let re = regex::RegexBuilder::new(pattern)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| FilterError {
                                field,
                                message: format!("'{name}': bad regular expression: {e}"),
                            })?;
                        Op::Regex(re)
                    }
                };
                conditions.push(Condition {
                    col,
                    name: name.clone(),
                    op,
                });
            }
        }
        Ok(Self { conditions })
    }

    /// Whether a row satisfies every condition.
    #[must_use]
    pub fn matches(&self, row: &Row) -> bool {
        self.conditions.iter().all(|c| {
            let owned;
            let v = match c.col {
                Col::Id => {
                    owned = Value::Id(row.id);
                    &owned
                }
                Col::Valid => {
                    owned = Value::Bool(row.valid);
                    &owned
                }
                Col::Data(i) => match row.values.get(i) {
                    Some(v) => v,
                    None => return false,
                },
            };
            if matches!(v, Value::Null) {
                return false;
            }
            match &c.op {
                Op::In(s) => s.contains(v),
                Op::NotIn(s) => !s.contains(v),
                Op::Eq(x) => compare(v, x) == Some(std::cmp::Ordering::Equal),
                Op::Gt(x) => compare(v, x) == Some(std::cmp::Ordering::Greater),
                Op::Lt(x) => compare(v, x) == Some(std::cmp::Ordering::Less),
                Op::Ge(x) => compare(v, x).is_some_and(std::cmp::Ordering::is_ge),
                Op::Le(x) => compare(v, x).is_some_and(std::cmp::Ordering::is_le),
                Op::Within(lo, hi) => v
                    .as_pos()
                    .is_some_and(|p| (0..3).all(|a| lo[a] <= p[a] && p[a] <= hi[a])),
                Op::Regex(re) => match v {
                    Value::Str(s) => re.is_match(s),
                    _ => false,
                },
            }
        })
    }
}

fn ordered(
    field: &'static str,
    name: &str,
    v: &J,
    kind: &ColumnType,
) -> Result<Value, FilterError> {
    if matches!(kind, ColumnType::Bool) {
        return Err(FilterError {
            field,
            message: format!("'{name}' is true or false: compare it with filter_equal_dict"),
        });
    }
    scalar(field, name, v, kind)
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Id(x), Value::Id(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Parse a boolean filter value the way CAVE's clients send it.
#[must_use]
pub fn bool_value(v: &J) -> Option<bool> {
    match v {
        J::Bool(b) => Some(*b),
        J::String(s) => parse_bool(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn synapse_row(id: u64, pre: u64, post: u64, pos: [i64; 3], size: f64) -> Row {
        Row {
            id,
            created: 0,
            deleted: None,
            superceded_id: None,
            valid: true,
            values: vec![
                Value::Pos(pos),
                Value::Id(pre + 1000),
                Value::Id(pre),
                Value::Pos(pos),
                Value::Id(post + 1000),
                Value::Id(post),
                Value::Null,
                Value::Float(size),
            ],
        }
    }

    fn parse(v: serde_json::Value) -> Result<Filter, FilterError> {
        let f: Filters = serde_json::from_value(v).unwrap();
        Filter::parse(&f, &Schema::builtin("synapse").unwrap())
    }

    #[test]
    fn caves_filters_select_what_sql_would() {
        let rows: Vec<Row> = (0..50)
            .map(|i| synapse_row(i, i % 5, i % 7, [i as i64, 2 * i as i64, 3], i as f64))
            .collect();
        let ids = |f: &Filter| -> Vec<u64> {
            rows.iter().filter(|r| f.matches(r)).map(|r| r.id).collect()
        };
        let f = parse(json!({"filter_in_dict": {"pre_pt_root_id": [1, "2"]}, "filter_equal_dict": {"post_pt_root_id": 3}})).unwrap();
        let want: Vec<u64> = (0..50)
            .filter(|i| [1, 2].contains(&(i % 5)) && i % 7 == 3)
            .collect();
        assert_eq!(ids(&f), want);
        let f = parse(json!({"filter_notin_dict": {"pre_pt_root_id": [0, 1, 2, 3]}, "filter_greater_equal_dict": {"size": 40}})).unwrap();
        assert_eq!(ids(&f), vec![44, 49]);
        let f =
            parse(json!({"filter_out_dict": {"id": [1]}, "filter_less_dict": {"id": 3}})).unwrap();
        assert_eq!(ids(&f), vec![0, 2]);
        // Inclusive at both corners.
        let f =
            parse(json!({"filter_spatial_dict": {"pre_pt_position": [[10, 20, 0], [12, 24, 3]]}}))
                .unwrap();
        assert_eq!(ids(&f), vec![10, 11, 12]);
        // ctr_pt is null in every row: nothing matches, as in SQL.
        let f =
            parse(json!({"filter_spatial_dict": {"ctr_pt_position": [[0, 0, 0], [99, 99, 99]]}}))
                .unwrap();
        assert!(ids(&f).is_empty());
        let f = parse(json!({"filter_equal_dict": {"valid": "t"}})).unwrap();
        assert_eq!(ids(&f).len(), 50);
    }

    #[test]
    fn bad_filters_name_the_problem() {
        let e = parse(json!({"filter_in_dict": {"nope": [1]}})).unwrap_err();
        assert_eq!(e.field, "filter_in_dict");
        assert!(
            e.message.starts_with(
                "table has no column 'nope'; its columns are id, valid, pre_pt_position"
            ),
            "{e}"
        );
        let e = parse(json!({"filter_equal_dict": {"pre_pt_root_id": "abc"}})).unwrap_err();
        assert!(e.message.contains("non-negative integer id"), "{e}");
        let e = parse(json!({"filter_spatial_dict": {"pre_pt_position": [[10, 0, 0], [5, 9, 9]]}}))
            .unwrap_err();
        assert!(e.message.contains("empty or inverted"), "{e}");
        let e = parse(json!({"filter_equal_dict": {"pre_pt_position": [1, 2, 3]}})).unwrap_err();
        assert!(
            e.message.contains("filter it with filter_spatial_dict"),
            "{e}"
        );
        let e = parse(json!({"filter_regex_dict": {"size": "a.*"}})).unwrap_err();
        assert!(e.message.contains("not a text column"), "{e}");
        let s = Schema::builtin("cell_type_reference").unwrap();
        let f: Filters =
            serde_json::from_value(json!({"filter_regex_dict": {"cell_type": "(unclosed"}}))
                .unwrap();
        assert!(
            Filter::parse(&f, &s)
                .unwrap_err()
                .message
                .contains("bad regular expression")
        );
        let f: Filters =
            serde_json::from_value(json!({"filter_regex_dict": {"cell_type": "^23"}})).unwrap();
        let f = Filter::parse(&f, &s).unwrap();
        let row = |t: &str| Row {
            id: 1,
            created: 0,
            deleted: None,
            superceded_id: None,
            valid: true,
            values: vec![Value::Id(5), Value::Null, Value::Str(t.into())],
        };
        assert!(f.matches(&row("23P")) && !f.matches(&row("4P")));
    }
}

//! Declared schemas of annotation tables (DataJoint's explicit, typed
//! tables, with CAVE's column names): the built-in ones (`synapse`,
//! `nucleus`, `point`, cell types, proofreading status) and user-defined
//! ones. A schema is declared with *fields*; a field of type `point` (a
//! spatial point, bound to the segmentation or not) expands into CAVE's
//! flattened columns `{p}_position`, `{p}_supervoxel_id`, `{p}_root_id`.

use serde::{Deserialize, Serialize};

/// Type of a declared field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum FieldType {
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// Boolean (`true`/`false`, also `"t"`/`"f"` in filters and uploads).
    Bool,
    /// UTF-8 text.
    String,
    /// One of a fixed list of strings.
    Enum {
        /// The allowed values.
        values: Vec<String>,
    },
    /// A position `[x, y, z]` in the table's voxels.
    Position,
    /// A 64-bit unsigned id (segment, supervoxel, or another row's).
    Id,
    /// A spatial point: `{name}_position`; if `bound`, also
    /// `{name}_supervoxel_id` and `{name}_root_id`, looked up in the
    /// table's segmentation.
    Point {
        /// Whether the point is bound to the segmentation.
        #[serde(default = "yes")]
        bound: bool,
    },
}

fn yes() -> bool {
    true
}

/// A declared field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Name (a point's prefix, e.g. `pre_pt`).
    pub name: String,
    /// Type.
    #[serde(flatten)]
    pub kind: FieldType,
    /// Rows must give it (points: their position).
    #[serde(default)]
    pub required: bool,
}

/// How a stored column is typed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// i64.
    Int,
    /// f64.
    Float,
    /// bool.
    Bool,
    /// text.
    String,
    /// one of `values`.
    Enum(Vec<String>),
    /// `[x, y, z]` i64 voxels.
    Position,
    /// u64.
    Id,
}

/// What a column is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Plain data.
    Data,
    /// The position of a point (index into `Schema::points`).
    PointPosition(usize),
    /// The supervoxel id under a bound point.
    Supervoxel(usize),
    /// The root id under a bound point.
    Root(usize),
    /// A reference table's `target_id`.
    Target,
}

/// A stored (flattened) column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Name as users see it (`pre_pt_position`, `size`, ...).
    pub name: String,
    /// Type.
    pub kind: ColumnType,
    /// Rows must give a value.
    pub required: bool,
    /// What it is for.
    pub role: Role,
}

/// A spatial point of a schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PointSpec {
    /// Prefix (`pre_pt`).
    pub name: String,
    /// Bound to the segmentation.
    pub bound: bool,
    /// Column index of its position.
    pub position: usize,
    /// Column indices of its supervoxel and root ids (bound points).
    pub ids: Option<(usize, usize)>,
}

/// A declared schema: its name, fields, and the flattened columns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schema {
    /// Schema name (`synapse`, or the table's name for a user schema).
    pub name: String,
    /// The declaration.
    pub fields: Vec<Field>,
    /// A reference table (`target_id` into another table).
    pub reference: bool,
    /// Stored columns, in order (system columns `id`, `created`, `deleted`,
    /// `superceded_id`, `valid` are not listed: every row has them).
    pub columns: Vec<Column>,
    /// Its points.
    pub points: Vec<PointSpec>,
}

/// RAMON's fields common to every object kind, then the kind's own.
fn ramon(mut own: Vec<Field>) -> Vec<Field> {
    let f = |name: &str, kind: FieldType| Field {
        name: name.into(),
        kind,
        required: false,
    };
    let mut v = vec![
        f("author", FieldType::String),
        f("confidence", FieldType::Float),
        f("status", FieldType::Int),
        f("kvpairs", FieldType::String),
    ];
    v.append(&mut own);
    v
}

/// Why a declaration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// Names every row has.
pub const SYSTEM_COLUMNS: [&str; 5] = ["id", "created", "deleted", "superceded_id", "valid"];

/// Most fields a schema may declare.
pub const MAX_FIELDS: usize = 64;

fn valid_column_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Schema {
    /// Build a schema from its fields (checked: names, duplicates, enums).
    pub fn declare(name: &str, fields: Vec<Field>, reference: bool) -> Result<Self, SchemaError> {
        if fields.len() > MAX_FIELDS {
            return Err(SchemaError(format!(
                "a schema declares at most {MAX_FIELDS} fields, not {}",
                fields.len()
            )));
        }
        let mut columns = Vec::new();
        let mut points = Vec::new();
        if reference {
            columns.push(Column {
                name: "target_id".into(),
                kind: ColumnType::Id,
                required: true,
                role: Role::Target,
            });
        }
        for f in &fields {
            if !valid_column_name(&f.name) {
                return Err(SchemaError(format!(
                    "field name '{}' is invalid: use 1 to 64 lowercase letters, digits or '_', starting with a letter or '_'",
                    f.name
                )));
            }
            let plain = |kind| Column {
                name: f.name.clone(),
                kind,
                required: f.required,
                role: Role::Data,
            };
            match &f.kind {
                FieldType::Int => columns.push(plain(ColumnType::Int)),
                FieldType::Float => columns.push(plain(ColumnType::Float)),
                FieldType::Bool => columns.push(plain(ColumnType::Bool)),
                FieldType::String => columns.push(plain(ColumnType::String)),
                FieldType::Position => columns.push(plain(ColumnType::Position)),
                FieldType::Id => columns.push(plain(ColumnType::Id)),
                FieldType::Enum { values } => {
                    if values.is_empty() || values.len() > usize::from(u16::MAX) {
                        return Err(SchemaError(format!(
                            "enum field '{}' needs 1 to 65535 values",
                            f.name
                        )));
                    }
                    columns.push(plain(ColumnType::Enum(values.clone())));
                }
                FieldType::Point { bound } => {
                    let p = points.len();
                    let position = columns.len();
                    columns.push(Column {
                        name: format!("{}_position", f.name),
                        kind: ColumnType::Position,
                        required: f.required,
                        role: Role::PointPosition(p),
                    });
                    let ids = if *bound {
                        let sv = columns.len();
                        columns.push(Column {
                            name: format!("{}_supervoxel_id", f.name),
                            kind: ColumnType::Id,
                            required: false,
                            role: Role::Supervoxel(p),
                        });
                        columns.push(Column {
                            name: format!("{}_root_id", f.name),
                            kind: ColumnType::Id,
                            required: false,
                            role: Role::Root(p),
                        });
                        Some((sv, sv + 1))
                    } else {
                        None
                    };
                    points.push(PointSpec {
                        name: f.name.clone(),
                        bound: *bound,
                        position,
                        ids,
                    });
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for c in &columns {
            if SYSTEM_COLUMNS.contains(&c.name.as_str()) || !seen.insert(c.name.as_str()) {
                return Err(SchemaError(format!(
                    "column '{}' is declared twice or is a column every row has ({})",
                    c.name,
                    SYSTEM_COLUMNS.join(", ")
                )));
            }
        }
        Ok(Self {
            name: name.to_string(),
            fields,
            reference,
            columns,
            points,
        })
    }

    /// A built-in schema by name.
    #[must_use]
    pub fn builtin(name: &str) -> Option<Self> {
        let f = |name: &str, kind: FieldType, required: bool| Field {
            name: name.into(),
            kind,
            required,
        };
        let bound = || FieldType::Point { bound: true };
        let unbound = || FieldType::Point { bound: false };
        let (fields, reference) = match name {
            // CAVE's SynapseSchema.
            "synapse" => (
                vec![
                    f("pre_pt", bound(), true),
                    f("post_pt", bound(), true),
                    f("ctr_pt", unbound(), false),
                    f("size", FieldType::Float, false),
                ],
                false,
            ),
            // CAVE's NucleusDetection.
            "nucleus" | "nucleus_detection" => (
                vec![
                    f("pt", bound(), true),
                    f("volume", FieldType::Float, false),
                    f("bb_start", unbound(), false),
                    f("bb_end", unbound(), false),
                ],
                false,
            ),
            "point" | "bound_point" => (vec![f("pt", bound(), true)], false),
            // CAVE's CellTypeLocal and CellTypeReference.
            "cell_type_local" => (
                vec![
                    f("pt", bound(), true),
                    f("classification_system", FieldType::String, false),
                    f("cell_type", FieldType::String, true),
                ],
                false,
            ),
            "cell_type_reference" => (
                vec![
                    f("classification_system", FieldType::String, false),
                    f("cell_type", FieldType::String, true),
                ],
                true,
            ),
            // CAVE's ProofreadingStatusAndStrategy, and as a reference table.
            "proofreading_status_and_strategy" => (
                vec![
                    f("pt", bound(), true),
                    f("valid_id", FieldType::Int, false),
                    f("status_dendrite", FieldType::Bool, false),
                    f("status_axon", FieldType::Bool, false),
                    f("strategy_dendrite", FieldType::String, false),
                    f("strategy_axon", FieldType::String, false),
                ],
                false,
            ),
            "proofreading_status_reference" => (
                vec![
                    f("status_dendrite", FieldType::Bool, false),
                    f("status_axon", FieldType::Bool, false),
                    f("strategy_dendrite", FieldType::String, false),
                    f("strategy_axon", FieldType::String, false),
                ],
                true,
            ),
            // OCP's RAMON objects: rows whose id is also their label in an
            // annotation channel (docs/objects.md). Every kind has RAMON's
            // author, confidence, status and key-value pairs (a JSON object).
            "ramon_synapse" => (
                ramon(vec![
                    f("weight", FieldType::Float, false),
                    f("synapse_type", FieldType::Int, false),
                    f("presegment", FieldType::Id, false),
                    f("postsegment", FieldType::Id, false),
                    f("centroid", unbound(), false),
                ]),
                false,
            ),
            "ramon_seed" => (
                ramon(vec![
                    f("pt", unbound(), false),
                    f("parent", FieldType::Id, false),
                    f("cubelocation", FieldType::Int, false),
                    f("source", FieldType::Id, false),
                ]),
                false,
            ),
            "ramon_segment" => (
                ramon(vec![
                    f("segmentclass", FieldType::Int, false),
                    f("neuron", FieldType::Id, false),
                    f("parentseed", FieldType::Id, false),
                ]),
                false,
            ),
            // A neuron's segments are the segments whose `neuron` is its id
            // (RAMON: derived, not settable).
            "ramon_neuron" => (ramon(Vec::new()), false),
            "ramon_organelle" => (
                ramon(vec![
                    f("organelleclass", FieldType::Int, false),
                    f("centroid", unbound(), false),
                    f("segment", FieldType::Id, false),
                    f("parentseed", FieldType::Id, false),
                ]),
                false,
            ),
            _ => return None,
        };
        Self::declare(name, fields, reference).ok()
    }

    /// Names of the built-in schemas.
    pub const BUILTIN: [&'static str; 12] = [
        "synapse",
        "nucleus",
        "point",
        "cell_type_local",
        "cell_type_reference",
        "proofreading_status_and_strategy",
        "proofreading_status_reference",
        "ramon_synapse",
        "ramon_seed",
        "ramon_segment",
        "ramon_neuron",
        "ramon_organelle",
    ];

    /// Whether a built-in schema name is one of RAMON's object kinds, whose
    /// rows own voxels in an annotation channel.
    #[must_use]
    pub fn is_object_schema(name: &str) -> bool {
        name.starts_with("ramon_") && Self::BUILTIN.contains(&name)
    }

    /// Index of a stored column by name.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The root-id columns of the bound points, in point order (a synapse
    /// table's pre, then post).
    #[must_use]
    pub fn root_columns(&self) -> Vec<usize> {
        self.points
            .iter()
            .filter_map(|p| p.ids.map(|(_, r)| r))
            .collect()
    }

    /// Whether any point is bound to the segmentation.
    #[must_use]
    pub fn has_bound_points(&self) -> bool {
        self.points.iter().any(|p| p.bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_flattens_to_caves_columns() {
        let s = Schema::builtin("synapse").unwrap();
        let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "pre_pt_position",
                "pre_pt_supervoxel_id",
                "pre_pt_root_id",
                "post_pt_position",
                "post_pt_supervoxel_id",
                "post_pt_root_id",
                "ctr_pt_position",
                "size"
            ]
        );
        assert_eq!(s.points.len(), 3);
        assert_eq!(s.points[1].ids, Some((4, 5)));
        assert!(s.points[2].ids.is_none());
        assert!(s.columns[0].required && !s.columns[6].required);
        let r = Schema::builtin("cell_type_reference").unwrap();
        assert_eq!(r.columns[0].name, "target_id");
        assert!(r.reference);
        for n in Schema::BUILTIN {
            assert!(Schema::builtin(n).is_some(), "{n}");
        }
    }

    #[test]
    fn user_schemas_are_checked() {
        let field = |name: &str, kind: FieldType| Field {
            name: name.into(),
            kind,
            required: false,
        };
        let ok = Schema::declare(
            "mine",
            vec![
                field("score", FieldType::Float),
                field(
                    "kind",
                    FieldType::Enum {
                        values: vec!["a".into(), "b".into()],
                    },
                ),
                field("soma", FieldType::Point { bound: true }),
            ],
            false,
        )
        .unwrap();
        assert_eq!(ok.column("soma_root_id"), Some(4));
        let dup = Schema::declare(
            "x",
            vec![
                field("a_position", FieldType::Position),
                field("a", FieldType::Point { bound: false }),
            ],
            false,
        );
        assert!(
            dup.unwrap_err()
                .0
                .contains("'a_position' is declared twice")
        );
        assert!(Schema::declare("x", vec![field("valid", FieldType::Bool)], false).is_err());
        assert!(Schema::declare("x", vec![field("Bad Name", FieldType::Int)], false).is_err());
        let json: Vec<Field> = serde_json::from_str(
            r#"[{"name": "score", "type": "float", "required": true},
                {"name": "pt", "type": "point"},
                {"name": "k", "type": "enum", "values": ["x"]}]"#,
        )
        .unwrap();
        let s = Schema::declare("j", json, false).unwrap();
        assert!(s.points[0].bound);
        assert!(s.columns[0].required);
    }
}

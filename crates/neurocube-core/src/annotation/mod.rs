//! Annotation tables as pure data: declared schemas with CAVE's column
//! names, rows and their stored form, and CAVE's query filters.
//!
//! ```
//! use neurocube_core::annotation::{Filter, Filters, Row, Schema, Value};
//! let schema = Schema::builtin("synapse").unwrap();
//! let filters: Filters =
//!     serde_json::from_str(r#"{"filter_equal_dict": {"post_pt_root_id": 7}}"#).unwrap();
//! let filter = Filter::parse(&filters, &schema).unwrap();
//! let mut values = vec![Value::Null; schema.columns.len()];
//! values[schema.column("post_pt_root_id").unwrap()] = Value::Id(7);
//! let row = Row { id: 1, created: 0, deleted: None, superceded_id: None, valid: true, values };
//! assert!(filter.matches(&row));
//! assert_eq!(Row::decode(&row.to_bytes()).unwrap(), row);
//! ```

pub mod block;
mod filter;
pub mod precomputed;
mod row;
mod schema;

pub use filter::{Col, Condition, Filter, FilterError, Filters, MAX_LIST, Op, Set, bool_value};
pub use row::{MAX_TEXT, Row, RowError, Value, parse_bool};
pub use schema::{
    Column, ColumnType, Field, FieldType, MAX_FIELDS, PointSpec, Role, SYSTEM_COLUMNS, Schema,
    SchemaError,
};

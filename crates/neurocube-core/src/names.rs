//! Validated names of datasets, channels and tables, parsed once at the
//! edge (URL segments, JSON bodies) so that everything behind it holds a
//! name that can exist.
//!
//! ```
//! use neurocube_core::names::{ChannelName, DatasetName};
//! let ds = DatasetName::parse("kasthuri11").unwrap();
//! assert_eq!(ds.as_str(), "kasthuri11");
//! assert!(ChannelName::parse("v1").is_err()); // reserved: it starts other URLs
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Words that cannot name a dataset, channel or table: they are the first
/// segment of other URLs, now or planned.
pub const RESERVED: &[&str] = &[
    "v1",
    "ocp",
    "ca",
    "sd",
    "nd",
    "metrics",
    "health",
    "viewer",
    "catmaid",
    "api",
    "static",
    "tiles",
    "tile",
    "info",
    "jobs",
    "graph",
    "neuroglancer",
    "precomputed",
    "boss",
    "docs",
    "admin",
    "favicon.ico",
];

/// Words that cannot name a dataset only: CAVE's services start with them
/// (`/materialize/...`), while channels are often called `segmentation`.
pub const RESERVED_DATASET: &[&str] = &["materialize", "schema", "segmentation"];

/// Longest name.
pub const MAX_NAME_LEN: usize = 64;

/// A name that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Wrong characters or length.
    #[error(
        "{what} name '{name}' is invalid: use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"
    )]
    Invalid {
        /// `dataset`, `channel` or `table`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A reserved word.
    #[error("{what} name '{name}' is reserved (it starts other URLs); choose another")]
    Reserved {
        /// `dataset`, `channel` or `table`.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

impl NameError {
    /// The name given.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            NameError::Invalid { name, .. } | NameError::Reserved { name, .. } => name,
        }
    }

    /// What it was to name.
    #[must_use]
    pub fn what(&self) -> &'static str {
        match self {
            NameError::Invalid { what, .. } | NameError::Reserved { what, .. } => what,
        }
    }
}

/// Names: 1–64 of `A-Z a-z 0-9 _ -`, starting with a letter or digit, not reserved.
pub fn validate_name(name: &str, what: &'static str) -> Result<(), NameError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || !first_ok {
        return Err(NameError::Invalid {
            what,
            name: name.to_string(),
        });
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.contains(&lower.as_str())
        || (what == "dataset" && RESERVED_DATASET.contains(&lower.as_str()))
    {
        return Err(NameError::Reserved {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// What this names, for messages.
            pub const WHAT: &'static str = $what;

            /// Parse and validate.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                validate_name(s, $what).map(|()| Self(s.to_string()))
            }

            /// The name.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                validate_name(&s, $what).map(|()| Self(s))
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// The name of a dataset (OCP "token", CAVE "datastack").
    DatasetName,
    "dataset"
);
name_type!(
    /// The name of a channel of a dataset.
    ChannelName,
    "channel"
);
name_type!(
    /// The name of an annotation table of a dataset.
    TableName,
    "table"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(DatasetName::parse("kasthuri11").is_ok());
        assert!(DatasetName::parse("a-b_c").is_ok());
        // CAVE's service prefixes cannot name datasets, but can name channels.
        assert!(DatasetName::parse("materialize").is_err());
        assert!(DatasetName::parse("Segmentation").is_err());
        assert!(ChannelName::parse("segmentation").is_ok());
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "_x",
            "x.y",
            "v1",
            "Metrics",
            "viewer",
            &"x".repeat(65),
        ] {
            assert!(DatasetName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            DatasetName::parse("ocp").unwrap_err().to_string(),
            "dataset name 'ocp' is reserved (it starts other URLs); choose another"
        );
        assert_eq!(
            ChannelName::parse("a b").unwrap_err().to_string(),
            "channel name 'a b' is invalid: use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"
        );
    }

    #[test]
    fn json_names_are_checked() {
        let n: TableName = serde_json::from_str("\"synapses\"").unwrap();
        assert_eq!(n, "synapses");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"synapses\"");
        assert!(serde_json::from_str::<TableName>("\"no/slash\"").is_err());
    }
}

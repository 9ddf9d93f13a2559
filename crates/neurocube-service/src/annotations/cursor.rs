//! Page tokens: where a query stopped, as an opaque string a client hands
//! back to resume.

use bytes::Bytes;
use neurocube_store::SortRange;

use crate::error::{Result, ServiceError};

/// Where a query stopped: the position in the plan, and the last sort key
/// read there (empty: none yet).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Index of the key, id chunk or block.
    pub k: u64,
    /// Last sort key returned at that position (a slice of the row's key:
    /// every row carries one, so it is not copied).
    pub after: Bytes,
}

impl Cursor {
    /// As an opaque page token.
    #[must_use]
    pub fn token(&self) -> String {
        let mut s = format!("{:016x}", self.k);
        for b in &self.after {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// From a page token.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            ServiceError::field(
                "page_token",
                format!("page token '{s}' is not one this server gave; start without it"),
            )
        };
        if s.len() < 16 || s.len() > 16 + 64 || !s.len().is_multiple_of(2) || !s.is_ascii() {
            return Err(bad());
        }
        let k = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())?;
        let after = (16..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        Ok(Self {
            k,
            after: Bytes::from(after),
        })
    }

    pub(super) fn at(k: u64) -> Self {
        Self {
            k,
            after: Bytes::new(),
        }
    }
}

/// Sort keys after `after` (all of them when it is empty).
pub(super) fn after_range(after: &[u8]) -> SortRange {
    if after.is_empty() {
        return SortRange::all();
    }
    let mut start = after.to_vec();
    start.push(0);
    SortRange {
        start: Some(Bytes::from(start)),
        end: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let c = Cursor {
            k: 7,
            after: Bytes::from_static(&[0, 1, 0xfe, 0xff]),
        };
        assert_eq!(c.token(), "000000000000000700 01feff".replace(' ', ""));
        assert_eq!(Cursor::parse(&c.token()).unwrap(), c);
        assert_eq!(
            Cursor::parse(&Cursor::at(3).token()).unwrap(),
            Cursor::at(3)
        );
        for bad in [
            "",
            "12",
            "000000000000000700f",
            "00000000000000zz",
            "0000000000000007gg",
        ] {
            let e = Cursor::parse(bad).unwrap_err().to_string();
            assert!(e.contains("is not one this server gave"), "{bad}: {e}");
        }
        assert!(Cursor::parse(&format!("{:016x}{}", 1, "ab".repeat(33))).is_err());
    }
}

//! Neuroglancer's precomputed annotation encoding: one annotation is its
//! float32 geometry (a point's x y z, a line's two points), its float32
//! properties, then per relationship a uint32 count and the uint64 ids;
//! a list of annotations (spatial cells, relationship entries) is a uint64
//! count, every geometry-and-properties body, then every uint64 id. All
//! little-endian; properties here are float32 only, so no padding is needed.

/// One annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotation {
    /// Its id.
    pub id: u64,
    /// Point: 3 values; line: 6.
    pub geometry: Vec<f32>,
    /// float32 properties, in the `info`'s order.
    pub properties: Vec<f32>,
    /// Related segment ids, per relationship of the `info`.
    pub related: Vec<Vec<u64>>,
}

fn body(a: &Annotation, out: &mut Vec<u8>) {
    for v in a.geometry.iter().chain(&a.properties) {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// One annotation as `by_id` serves it: body, then its relationships.
#[must_use]
pub fn encode_one(a: &Annotation) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * (a.geometry.len() + a.properties.len()) + 16);
    body(a, &mut out);
    for ids in &a.related {
        out.extend_from_slice(&u32::try_from(ids.len()).unwrap_or(u32::MAX).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    out
}

/// A list of annotations as spatial cells and relationship entries serve it.
#[must_use]
pub fn encode_many(list: &[Annotation]) -> Vec<u8> {
    let per = list
        .first()
        .map_or(0, |a| 4 * (a.geometry.len() + a.properties.len()) + 8);
    let mut out = Vec::with_capacity(8 + per * list.len());
    out.extend_from_slice(&(list.len() as u64).to_le_bytes());
    for a in list {
        body(a, &mut out);
    }
    for a in list {
        out.extend_from_slice(&a.id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u64) -> Annotation {
        Annotation {
            id,
            geometry: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            properties: vec![0.5],
            related: vec![vec![7], vec![]],
        }
    }

    #[test]
    fn one_annotation_is_its_body_then_its_relationships() {
        let b = encode_one(&line(9));
        assert_eq!(b.len(), 28 + 4 + 8 + 4);
        assert_eq!(f32::from_le_bytes(b[20..24].try_into().unwrap()), 6.0);
        assert_eq!(f32::from_le_bytes(b[24..28].try_into().unwrap()), 0.5);
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 0);
    }

    #[test]
    fn a_list_is_a_count_the_bodies_then_the_ids() {
        let b = encode_many(&[line(9), line(11)]);
        assert_eq!(b.len(), 8 + 2 * 28 + 2 * 8);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(b[64..72].try_into().unwrap()), 9);
        assert_eq!(u64::from_le_bytes(b[72..80].try_into().unwrap()), 11);
        assert_eq!(encode_many(&[]), 0u64.to_le_bytes());
    }
}

//! Morton (Z-order) codes of chunk indices: 21 bits per axis, x at bit 0,
//! y at bit 1, z at bit 2 (the OCP/BossDB `zindex` layout), so chunks near in
//! space are near in key order.

/// Largest chunk index per axis that a Morton code can hold.
pub const MAX_INDEX: u64 = (1 << 21) - 1;

fn spread(v: u64) -> u64 {
    let mut x = v & MAX_INDEX;
    x = (x | (x << 32)) & 0x001f_0000_0000_ffff;
    x = (x | (x << 16)) & 0x001f_0000_ff00_00ff;
    x = (x | (x << 8)) & 0x100f_00f0_0f00_f00f;
    x = (x | (x << 4)) & 0x10c3_0c30_c30c_30c3;
    x = (x | (x << 2)) & 0x1249_2492_4924_9249;
    x
}

fn compact(v: u64) -> u64 {
    let mut x = v & 0x1249_2492_4924_9249;
    x = (x ^ (x >> 2)) & 0x10c3_0c30_c30c_30c3;
    x = (x ^ (x >> 4)) & 0x100f_00f0_0f00_f00f;
    x = (x ^ (x >> 8)) & 0x001f_0000_ff00_00ff;
    x = (x ^ (x >> 16)) & 0x001f_0000_0000_ffff;
    x = (x ^ (x >> 32)) & MAX_INDEX;
    x
}

/// Morton code of a chunk index `[x, y, z]` (each at most [`MAX_INDEX`]).
#[must_use]
pub fn encode(idx: [u64; 3]) -> u64 {
    debug_assert!(idx.iter().all(|&v| v <= MAX_INDEX));
    spread(idx[0]) | (spread(idx[1]) << 1) | (spread(idx[2]) << 2)
}

/// The chunk index `[x, y, z]` of a Morton code.
#[must_use]
pub fn decode(code: u64) -> [u64; 3] {
    [compact(code), compact(code >> 1), compact(code >> 2)]
}

/// Morton code of the super-block (cube of `2^bits` chunks per axis) that
/// holds a chunk: dropping the low `3·bits` bits divides each axis by `2^bits`.
#[must_use]
pub fn super_block(code: u64, bits: u32) -> u64 {
    code >> (3 * bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_codes() {
        assert_eq!(encode([0, 0, 0]), 0);
        assert_eq!(encode([1, 0, 0]), 1);
        assert_eq!(encode([0, 1, 0]), 2);
        assert_eq!(encode([0, 0, 1]), 4);
        assert_eq!(encode([3, 3, 3]), 63);
        assert_eq!(encode([MAX_INDEX; 3]), (1 << 63) - 1);
        assert_eq!(super_block(encode([5, 6, 7]), 2), encode([1, 1, 1]));
    }

    proptest! {
        #[test]
        fn round_trip(x in 0..=MAX_INDEX, y in 0..=MAX_INDEX, z in 0..=MAX_INDEX) {
            prop_assert_eq!(decode(encode([x, y, z])), [x, y, z]);
        }

        #[test]
        fn super_block_is_index_divided(x in 0..=MAX_INDEX, y in 0..=MAX_INDEX, z in 0..=MAX_INDEX) {
            prop_assert_eq!(super_block(encode([x, y, z]), 2), encode([x / 4, y / 4, z / 4]));
        }
    }
}

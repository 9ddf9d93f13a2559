//! The numpy `.npy` format (versions 1.0, 2.0 and 3.0 read; 1.0 written),
//! C order only, little-endian.

use crate::dtype::DType;
use crate::error::NpyError;

const MAGIC: &[u8] = b"\x93NUMPY";

/// The header of an npy array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost axis first (for volumes: z, y, x).
    pub shape: Vec<u64>,
}

/// The npy v1.0 header for an array (magic, version, length, dict, padding).
#[must_use]
pub fn header(dtype: DType, shape: &[u64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.npy_descr(),
        shape_txt
    );
    // The whole header (10 bytes of preamble + dict + '\n') is padded to 64 bytes.
    let total = (10 + dict.len() + 1).div_ceil(64) * 64;
    while 10 + dict.len() + 1 < total {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Parse an npy file: its header and the byte offset where data starts.
pub fn parse(buf: &[u8]) -> Result<(NpyHeader, usize), NpyError> {
    if buf.len() < 10 || &buf[..6] != MAGIC {
        return Err(NpyError::NotNpy);
    }
    let (len, start): (usize, usize) = match buf[6] {
        1 => (u16::from_le_bytes([buf[8], buf[9]]) as usize, 10),
        2 | 3 if buf.len() >= 12 => (
            u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize,
            12,
        ),
        v => return Err(NpyError::Version { major: v }),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or(NpyError::Truncated)?;
    let text = std::str::from_utf8(&buf[start..end])
        .map_err(|_| NpyError::BadHeader("not text".into()))?;
    let descr = dict_value(text, "descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = DType::from_npy_descr(descr).ok_or_else(|| NpyError::DType(descr.to_string()))?;
    match dict_value(text, "fortran_order")? {
        "False" => {}
        "True" => return Err(NpyError::FortranOrder),
        v => return Err(NpyError::BadHeader(format!("fortran_order is {v}"))),
    }
    let shape_txt = dict_value(text, "shape")?;
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| NpyError::BadHeader(format!("shape {shape_txt}")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| NpyError::BadHeader(format!("shape {shape_txt}")))?;
    Ok((NpyHeader { dtype, shape }, end))
}

/// The text of one value of the header dict (`'key': value`), up to its delimiter.
fn dict_value<'a>(text: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let missing = || NpyError::BadHeader(format!("no '{key}' in header"));
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))
        .ok_or_else(missing)?;
    let rest = text[at + key.len() + 2..].trim_start();
    let rest = rest.strip_prefix(':').ok_or_else(missing)?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .ok_or_else(missing)?;
    Ok(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parses_back() {
        for t in DType::ALL {
            let h = header(t, &[16, 128, 128]);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(h[h.len() - 1], b'\n');
            let (p, off) = parse(&h).unwrap();
            assert_eq!(off, h.len());
            assert_eq!(
                p,
                NpyHeader {
                    dtype: t,
                    shape: vec![16, 128, 128]
                }
            );
        }
    }

    #[test]
    fn numpy_written_headers_parse() {
        // Exactly what numpy 1.x/2.x writes for np.zeros((2,3,4), np.uint16).
        let dict = "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 3, 4), }";
        let mut buf = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{dict:<117}\n");
        buf.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        buf.extend_from_slice(padded.as_bytes());
        let (h, off) = parse(&buf).unwrap();
        assert_eq!(h.shape, vec![2, 3, 4]);
        assert_eq!(h.dtype, DType::Uint16);
        assert_eq!(off, 128);
        assert_eq!(parse(&header(DType::Uint8, &[7])).unwrap().0.shape, vec![7]);
    }

    #[test]
    fn bad_files_are_refused() {
        assert_eq!(parse(b"PK\x03\x04 zip file"), Err(NpyError::NotNpy));
        let mut h = header(DType::Uint8, &[1, 2, 3]);
        h.truncate(20);
        assert_eq!(parse(&h), Err(NpyError::Truncated));
        let replace = |h: Vec<u8>, from: &str, to: &str| -> Vec<u8> {
            let at = h
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap();
            let mut out = h.clone();
            out[at..at + from.len()].copy_from_slice(to.as_bytes());
            out
        };
        let fortran = replace(header(DType::Uint8, &[1, 2, 3]), "False", "True ");
        assert_eq!(parse(&fortran).unwrap_err(), NpyError::FortranOrder);
        let i16 = replace(header(DType::Uint16, &[1]), "<u2", "<i2");
        assert_eq!(parse(&i16).unwrap_err(), NpyError::DType("<i2".into()));
    }
}

//! The OCP data-URL grammar, parsed into typed requests before any handler
//! runs. Ranges are half-open `a,b` in the voxel grid of the level.
//!
//! ```text
//! /{ds}/{ch}/{npy|raw|blosc}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/
//! /{ds}/{ch}/{chunks|ids}/{level}/{x0,x1}/{y0,y1}/{z0,z1}/
//! /{ds}/{ch}/xy/{level}/{x0,x1}/{y0,y1}/{z}/
//! /{ds}/{ch}/xz/{level}/{x0,x1}/{y}/{z0,z1}/
//! /{ds}/{ch}/yz/{level}/{x}/{y0,y1}/{z0,z1}/
//! ```

use neurocube_core::geometry::AXES;
use neurocube_core::{Box3, ChannelName, DatasetName};
use neurocube_service::VolumeBox;
use neurocube_service::encoding::Encoding;
use neurocube_service::slice::Plane;

use crate::error::{ApiError, ApiResult};

/// What a data URL asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataKind {
    /// A 3-D cutout in a wire encoding.
    Cutout(Encoding),
    /// A 2-D slice image.
    Slice(Plane),
    /// The box's stored chunks as they are (a chunk stream, docs/chunks.md).
    Chunks,
    /// The labels present in the box (OCP's `ids`).
    Ids,
}

/// A parsed data URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRequest {
    /// Cutout or slice.
    pub kind: DataKind,
    /// Dataset, channel, level and box (one voxel thick across a slice's plane).
    pub target: VolumeBox,
}

fn range(s: &str, axis: usize) -> Result<(u64, u64), String> {
    range_with(s, axis, ',')
}

fn range_with(s: &str, axis: usize, sep: char) -> Result<(u64, u64), String> {
    let bad = || {
        format!(
            "malformed {} range '{s}': use {0}0{sep}{0}1 (two integers, half-open)",
            AXES[axis]
        )
    };
    let (a, b) = s.split_once(sep).ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn single(s: &str, axis: usize) -> Result<(u64, u64), String> {
    let bad = || format!("malformed {} coordinate '{s}': use one integer", AXES[axis]);
    let v: u64 = s.parse().map_err(|_| bad())?;
    Ok((v, v.checked_add(1).ok_or_else(bad)?))
}

/// A BOSS cutout's resolution and `x0:x1`, `y0:y1`, `z0:z1` ranges.
pub fn boss_box(res: &str, ranges: [&str; 3]) -> Result<(u8, Box3), String> {
    let level: u8 = res
        .parse()
        .map_err(|_| format!("resolution '{res}' must be a level number from 0 to 255"))?;
    let mut start = [0; 3];
    let mut end = [0; 3];
    for (i, r) in ranges.iter().enumerate() {
        (start[i], end[i]) = range_with(r, i, ':')?;
    }
    let b = Box3::new(start, end).map_err(|e| e.to_string())?;
    Ok((level, b))
}

/// Parse the seven segments after the prefix.
pub fn parse(segments: [&str; 7]) -> ApiResult<DataRequest> {
    let [ds, ch, fmt, level, a, b, c] = segments;
    let dataset = DatasetName::parse(ds)?;
    let channel = ChannelName::parse(ch)?;
    let (kind, level, bbox) = parse_box([fmt, level, a, b, c]).map_err(ApiError::path)?;
    Ok(DataRequest {
        kind,
        target: VolumeBox {
            dataset,
            channel,
            level,
            bbox,
        },
    })
}

/// Parse format, level and the three ranges.
fn parse_box(segments: [&str; 5]) -> Result<(DataKind, u8, Box3), String> {
    let [fmt, level, a, b, c] = segments;
    let kind = if let Some(e) = Encoding::parse(fmt) {
        DataKind::Cutout(e)
    } else if fmt == "chunks" {
        DataKind::Chunks
    } else if fmt == "ids" {
        DataKind::Ids
    } else if let Some(p) = Plane::parse(fmt) {
        DataKind::Slice(p)
    } else {
        return Err(format!(
            "unknown format '{fmt}': use npy, raw or blosc for cutouts, chunks for stored chunks, ids for the labels in a box, xy, xz or yz for slices"
        ));
    };
    let level: u8 = level
        .parse()
        .map_err(|_| format!("level '{level}' is not a level number (0, 1, 2, ...)"))?;
    let (x, y, z) = match kind {
        DataKind::Cutout(_) | DataKind::Chunks | DataKind::Ids => {
            (range(a, 0)?, range(b, 1)?, range(c, 2)?)
        }
        DataKind::Slice(Plane::Xy) => (range(a, 0)?, range(b, 1)?, single(c, 2)?),
        DataKind::Slice(Plane::Xz) => (range(a, 0)?, single(b, 1)?, range(c, 2)?),
        DataKind::Slice(Plane::Yz) => (single(a, 0)?, range(b, 1)?, range(c, 2)?),
    };
    let bbox = Box3::new([x.0, y.0, z.0], [x.1, y.1, z.1]).map_err(|e| e.to_string())?;
    Ok((kind, level, bbox))
}

/// Parse `?window=lo,hi`.
pub fn window(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("malformed window '{s}': use window=lo,hi with numbers, lo < hi");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Err(bad());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_url_parses() {
        let r = parse([
            "kasthuri11",
            "image",
            "xy",
            "0",
            "9000,9500",
            "12000,12500",
            "50",
        ])
        .unwrap();
        assert_eq!(r.kind, DataKind::Slice(Plane::Xy));
        assert_eq!(r.target.dataset, "kasthuri11");
        assert_eq!(
            r.target.bbox,
            Box3::new([9000, 12000, 50], [9500, 12500, 51]).unwrap()
        );
    }

    #[test]
    fn cutouts_and_other_planes() {
        let r = parse(["d", "c", "npy", "2", "0,10", "5,6", "7,9"]).unwrap();
        assert_eq!(
            (r.kind, r.target.level),
            (DataKind::Cutout(Encoding::Npy), 2)
        );
        assert_eq!(r.target.bbox.shape(), [10, 1, 2]);
        let xz = parse(["d", "c", "xz", "0", "0,10", "5", "7,9"]).unwrap();
        assert_eq!(xz.target.bbox, Box3::new([0, 5, 7], [10, 6, 9]).unwrap());
        let yz = parse(["d", "c", "yz", "0", "3", "0,4", "7,9"]).unwrap();
        assert_eq!(yz.target.bbox, Box3::new([3, 0, 7], [4, 4, 9]).unwrap());
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let e = |s: [&str; 7]| parse(s).unwrap_err().to_string();
        assert_eq!(
            e(["d", "c", "tiff", "0", "0,1", "0,1", "0,1"]),
            "unknown format 'tiff': use npy, raw or blosc for cutouts, chunks for stored chunks, ids for the labels in a box, xy, xz or yz for slices"
        );
        assert_eq!(
            e(["d", "c", "npy", "x", "0,1", "0,1", "0,1"]),
            "level 'x' is not a level number (0, 1, 2, ...)"
        );
        assert_eq!(
            e(["d", "c", "npy", "0", "0-1", "0,1", "0,1"]),
            "malformed x range '0-1': use x0,x1 (two integers, half-open)"
        );
        assert_eq!(
            e(["d", "c", "npy", "0", "0,1", "9,3", "0,1"]),
            "empty or inverted y range 9,3: the end must be greater than the start"
        );
        assert_eq!(
            e(["d", "c", "xy", "0", "0,1", "0,1", "1,2"]),
            "malformed z coordinate '1,2': use one integer"
        );
        assert!(e(["d", "c", "npy", "0", "-1,1", "0,1", "0,1"]).contains("malformed x range"));
        assert!(
            e(["d", "c", "xy", "0", "0,1", "0,1", "18446744073709551615"])
                .contains("malformed z coordinate")
        );
        assert_eq!(
            e(["d.x", "c", "npy", "0", "0,1", "0,1", "0,1"]),
            "dataset name 'd.x' is invalid: use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit"
        );
    }

    #[test]
    fn windows() {
        assert_eq!(window("10,200").unwrap(), (10.0, 200.0));
        assert!(window("200,10").is_err());
        assert!(window("a,b").is_err());
    }
}

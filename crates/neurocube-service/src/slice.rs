//! Slices: one voxel thick planes of a level, rendered to PNG or JPEG.

use bytes::Bytes;
use neurocube_core::meta::ChannelType;
use neurocube_core::render::{self, ImageFormat, Shading, Slice};

use crate::error::{Result, ServiceError};
use crate::volume::Target;

/// The plane of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plane {
    /// Rows y, columns x.
    Xy,
    /// Rows z, columns x.
    Xz,
    /// Rows z, columns y.
    Yz,
}

impl Plane {
    /// Parse the URL word.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xy" => Some(Plane::Xy),
            "xz" => Some(Plane::Xz),
            "yz" => Some(Plane::Yz),
            _ => None,
        }
    }
}

/// How to render.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenderOptions {
    /// PNG or JPEG.
    pub format: ImageFormat,
    /// Intensity window for image channels.
    pub window: Option<(f64, f64)>,
}

/// Width and height of the image of a one-voxel-thick box on a plane.
fn image_size(plane: Plane, t: &Target) -> (u64, u64) {
    let s = t.bbox.shape();
    match plane {
        Plane::Xy => (s[0], s[1]),
        Plane::Xz => (s[0], s[2]),
        Plane::Yz => (s[1], s[2]),
    }
}

/// The image's width and height, or the error of a slice too large to draw.
pub(crate) fn image_dims(plane: Plane, t: &Target) -> Result<(u32, u32)> {
    let (w, h) = image_size(plane, t);
    match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(ServiceError::InvalidBox {
            reason: format!("a {w}x{h} image is too large"),
        }),
    }
}

/// Render the voxels of a one-voxel-thick box (C order, as `image_dims`
/// accepted it) as an image.
pub(crate) async fn render_slice(
    plane: Plane,
    t: &Target,
    data: Vec<u8>,
    opts: RenderOptions,
) -> Result<Bytes> {
    let (width, height) = image_dims(plane, t)?;
    let dtype = t.dtype();
    let shading = match t.rc.channel.meta.kind {
        ChannelType::Segmentation => Shading::Pseudocolor,
        ChannelType::Image => Shading::Gray {
            window: opts.window,
        },
    };
    let img = tokio::task::spawn_blocking(move || {
        render::render(
            &Slice {
                data: &data,
                dtype,
                width,
                height,
            },
            shading,
            opts.format,
        )
    })
    .await?
    .map_err(|e| match e {
        // The one rendering failure a request causes: a JPEG over 65,500 px.
        neurocube_core::error::RenderError::TooLarge { .. } => ServiceError::InvalidBox {
            reason: e.to_string(),
        },
        other => ServiceError::Internal {
            during: "encoding a slice",
            reason: other.to_string(),
        },
    })?;
    Ok(Bytes::from(img))
}

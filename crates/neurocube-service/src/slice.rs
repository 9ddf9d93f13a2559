//! Slices: one voxel thick planes of a level, rendered to PNG or JPEG.

use bytes::Bytes;
use neurocube_core::meta::ChannelType;
use neurocube_core::render::{self, ImageFormat, Shading, Slice};

use crate::error::{Result, ServiceError};
use crate::volume::{Target, Volumes};

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

impl Volumes {
    /// Render a slice (the target's box is one voxel thick across `plane`).
    pub async fn slice(&self, plane: Plane, t: Target, opts: RenderOptions) -> Result<Bytes> {
        let (w, h) = image_size(plane, &t);
        let (width, height) = match (u32::try_from(w), u32::try_from(h)) {
            (Ok(w), Ok(h)) => (w, h),
            _ => {
                return Err(ServiceError::InvalidBox {
                    reason: format!("a {w}x{h} image is too large"),
                });
            }
        };
        let dtype = t.dtype();
        let shading = match t.rc.channel.meta.kind {
            ChannelType::Segmentation => Shading::Pseudocolor,
            ChannelType::Image => Shading::Gray {
                window: opts.window,
            },
        };
        let data = self.read_all(t).await?;
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
}

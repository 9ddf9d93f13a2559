//! Slices to images: 8- or 16-bit grayscale PNG for image channels,
//! pseudocolor RGBA PNG for segmentation, JPEG on request, with an optional
//! intensity window. PNG uses `png`'s `Fast` (fdeflate) setting: the
//! `Balanced` default is ten times slower and tiles must be video-rate.

use crate::dtype::DType;
use crate::error::RenderError;

/// Output image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Lossless PNG.
    Png,
    /// JPEG at the given quality (1..=100).
    Jpeg(u8),
}

impl ImageFormat {
    /// MIME type.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg(_) => "image/jpeg",
        }
    }
}

/// How voxel values become pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shading {
    /// Grayscale; `window` maps `lo..hi` onto 0..255. Without a window, uint8
    /// stays 8-bit, uint16 becomes a 16-bit PNG, wider types are scaled from
    /// the slice's own min..max to 8 bits.
    Gray {
        /// Optional intensity window.
        window: Option<(f64, f64)>,
    },
    /// Each label hashed to a colour; label 0 is transparent.
    Pseudocolor,
}

/// A 2-D slice: `height` rows of `width` voxels of `dtype`, little-endian, row-major.
#[derive(Debug)]
pub struct Slice<'a> {
    /// Voxel bytes.
    pub data: &'a [u8],
    /// Voxel type.
    pub dtype: DType,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

impl Slice<'_> {
    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let size = self.dtype.size();
        let dtype = self.dtype;
        self.data.chunks_exact(size).map(move |c| match dtype {
            DType::Uint8 => f64::from(c[0]),
            DType::Uint16 => f64::from(u16::from_le_bytes([c[0], c[1]])),
            DType::Uint32 => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DType::Uint64 => u64::from_le_bytes(c.try_into().unwrap_or_default()) as f64,
            DType::Float32 => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        })
    }

    fn labels(&self) -> impl Iterator<Item = u64> + '_ {
        let size = self.dtype.size();
        self.data.chunks_exact(size).map(move |c| {
            let mut b = [0u8; 8];
            b[..size.min(8)].copy_from_slice(&c[..size.min(8)]);
            u64::from_le_bytes(b)
        })
    }
}

/// The RGBA colour of a segment label (0 → transparent). Stable across
/// releases so that users and tests can rely on it.
#[must_use]
pub fn label_color(label: u64) -> [u8; 4] {
    if label == 0 {
        return [0, 0, 0, 0];
    }
    // splitmix64 finaliser: neighbouring labels get unrelated colours.
    let mut z = label.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Keep colours bright enough to see over dark EM.
    [
        (z as u8) | 0x40,
        ((z >> 8) as u8) | 0x40,
        ((z >> 16) as u8) | 0x40,
        255,
    ]
}

enum Pixels {
    Gray8(Vec<u8>),
    Gray16(Vec<u8>),
    Rgba(Vec<u8>),
}

fn shade(slice: &Slice<'_>, shading: Shading) -> Result<Pixels, RenderError> {
    Ok(match shading {
        Shading::Pseudocolor => Pixels::Rgba(slice.labels().flat_map(label_color).collect()),
        Shading::Gray {
            window: Some((lo, hi)),
        } => {
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                return Err(RenderError::BadWindow { lo, hi });
            }
            let span = hi - lo;
            Pixels::Gray8(
                slice
                    .values()
                    .map(|v| ((v - lo) * 255.0 / span).clamp(0.0, 255.0).round() as u8)
                    .collect(),
            )
        }
        Shading::Gray { window: None } => match slice.dtype {
            DType::Uint8 => Pixels::Gray8(slice.data.to_vec()),
            // PNG stores 16-bit samples big-endian.
            DType::Uint16 => Pixels::Gray16(
                slice
                    .data
                    .chunks_exact(2)
                    .flat_map(|c| [c[1], c[0]])
                    .collect(),
            ),
            _ => {
                let (lo, hi) = slice
                    .values()
                    .filter(|v| v.is_finite())
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                        (a.min(v), b.max(v))
                    });
                let (lo, hi) = if hi > lo {
                    (lo, hi)
                } else {
                    (lo.min(0.0), lo.max(0.0) + 1.0)
                };
                return shade(
                    slice,
                    Shading::Gray {
                        window: Some((lo, hi)),
                    },
                );
            }
        },
    })
}

/// Render a slice to an encoded image.
pub fn render(
    slice: &Slice<'_>,
    shading: Shading,
    format: ImageFormat,
) -> Result<Vec<u8>, RenderError> {
    let pixels = shade(slice, shading)?;
    match format {
        ImageFormat::Png => encode_png(&pixels, slice.width, slice.height),
        ImageFormat::Jpeg(q) => {
            let high_bytes: Vec<u8>;
            let pixels = match &pixels {
                Pixels::Gray8(d) => PixelsRef::Gray8(d),
                // JPEG has no 16-bit baseline: keep the high byte (PNG's
                // 16-bit samples are big-endian).
                Pixels::Gray16(d) => {
                    high_bytes = d.chunks_exact(2).map(|c| c[0]).collect();
                    PixelsRef::Gray8(&high_bytes)
                }
                Pixels::Rgba(d) => PixelsRef::Rgba(d),
            };
            encode_jpeg(pixels, slice.width, slice.height, q)
        }
    }
}

fn encode_png(pixels: &Pixels, width: u32, height: u32) -> Result<Vec<u8>, RenderError> {
    let (color, depth, data) = match pixels {
        Pixels::Gray8(d) => (png::ColorType::Grayscale, png::BitDepth::Eight, d),
        Pixels::Gray16(d) => (png::ColorType::Grayscale, png::BitDepth::Sixteen, d),
        Pixels::Rgba(d) => (png::ColorType::Rgba, png::BitDepth::Eight, d),
    };
    let err = |e: png::EncodingError| RenderError::Encode {
        format: "PNG",
        width,
        height,
        reason: e.to_string(),
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(color);
    enc.set_depth(depth);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().map_err(err)?;
    w.write_image_data(data).map_err(err)?;
    w.finish().map_err(err)?;
    Ok(out)
}

/// A grayscale JPEG of `width` × `height` 8-bit pixels, rows top to bottom.
pub fn jpeg_gray(
    data: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, RenderError> {
    encode_jpeg(PixelsRef::Gray8(data), width, height, quality)
}

/// Pixels to encode, borrowed.
enum PixelsRef<'a> {
    Gray8(&'a [u8]),
    Rgba(&'a [u8]),
}

/// libjpeg's largest image side (`JPEG_MAX_DIMENSION`).
const JPEG_MAX_SIDE: u32 = 65_500;

thread_local! {
    /// One libjpeg-turbo compressor per thread, kept between images: making
    /// one allocates its tables and buffers.
    static JPEG: std::cell::RefCell<Option<turbojpeg::Compressor>> =
        const { std::cell::RefCell::new(None) };
}

/// JPEG by libjpeg-turbo (its SIMD code when NASM was there at build time:
/// about 2.7x `jpeg-encoder`'s speed with AVX2 on EM slices, BENCHMARKS.md).
/// Colour images are 4:2:0 below quality 90 and 4:4:4 from 90 up.
fn encode_jpeg(
    pixels: PixelsRef<'_>,
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, RenderError> {
    if width == 0 || height == 0 || width > JPEG_MAX_SIDE || height > JPEG_MAX_SIDE {
        return Err(RenderError::TooLarge {
            format: "JPEG",
            width: width.into(),
            height: height.into(),
        });
    }
    let (data, format, subsamp) = match pixels {
        PixelsRef::Gray8(d) => (d, turbojpeg::PixelFormat::GRAY, turbojpeg::Subsamp::Gray),
        PixelsRef::Rgba(d) => (
            d,
            turbojpeg::PixelFormat::RGBA,
            if quality < 90 {
                turbojpeg::Subsamp::Sub2x2
            } else {
                turbojpeg::Subsamp::None
            },
        ),
    };
    let (w, h) = (width as usize, height as usize);
    let image = turbojpeg::Image {
        pixels: data,
        width: w,
        pitch: w * format.size(),
        height: h,
        format,
    };
    let encoded = JPEG.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match &mut *slot {
            Some(c) => c,
            None => slot.insert(turbojpeg::Compressor::new()?),
        };
        compressor.set_quality(i32::from(quality.clamp(1, 100)))?;
        compressor.set_subsamp(subsamp)?;
        compressor.compress_to_vec(image)
    });
    encoded.map_err(|e| RenderError::Encode {
        format: "JPEG",
        width,
        height,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_png(bytes: &[u8]) -> (png::OutputInfo, Vec<u8>) {
        let mut r = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    #[test]
    fn gray8_png_round_trips() {
        let data: Vec<u8> = (0..=255).collect();
        let s = Slice {
            data: &data,
            dtype: DType::Uint8,
            width: 16,
            height: 16,
        };
        let (info, px) =
            decode_png(&render(&s, Shading::Gray { window: None }, ImageFormat::Png).unwrap());
        assert_eq!(
            (info.width, info.height, info.color_type, info.bit_depth),
            (16, 16, png::ColorType::Grayscale, png::BitDepth::Eight)
        );
        assert_eq!(px, data);
    }

    #[test]
    fn gray16_png_is_big_endian_sixteen_bit() {
        let vals: [u16; 4] = [0, 1, 0x1234, 65535];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let s = Slice {
            data: &data,
            dtype: DType::Uint16,
            width: 2,
            height: 2,
        };
        let (info, px) =
            decode_png(&render(&s, Shading::Gray { window: None }, ImageFormat::Png).unwrap());
        assert_eq!(info.bit_depth, png::BitDepth::Sixteen);
        let back: Vec<u16> = px
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(back, vals);
    }

    #[test]
    fn window_maps_and_clamps() {
        let data: Vec<u8> = [100u16, 200, 300, 50]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s = Slice {
            data: &data,
            dtype: DType::Uint16,
            width: 4,
            height: 1,
        };
        let (_, px) = decode_png(
            &render(
                &s,
                Shading::Gray {
                    window: Some((100.0, 300.0)),
                },
                ImageFormat::Png,
            )
            .unwrap(),
        );
        assert_eq!(px, vec![0, 128, 255, 0]);
        assert!(
            render(
                &s,
                Shading::Gray {
                    window: Some((5.0, 5.0))
                },
                ImageFormat::Png
            )
            .is_err()
        );
    }

    #[test]
    fn pseudocolor_is_transparent_for_background() {
        let data: Vec<u8> = [0u64, 7, 7, 9]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s = Slice {
            data: &data,
            dtype: DType::Uint64,
            width: 2,
            height: 2,
        };
        let (info, px) = decode_png(&render(&s, Shading::Pseudocolor, ImageFormat::Png).unwrap());
        assert_eq!(info.color_type, png::ColorType::Rgba);
        assert_eq!(&px[0..4], &[0, 0, 0, 0]);
        assert_eq!(&px[4..8], &label_color(7));
        assert_eq!(&px[4..8], &px[8..12]);
        assert_ne!(&px[8..12], &px[12..16]);
    }

    fn decode_jpeg(bytes: &[u8]) -> image::DynamicImage {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap()
    }

    #[test]
    fn jpeg_gray_decodes_to_the_slice() {
        // A smooth ramp: JPEG at quality 95 keeps it within a few levels.
        let (w, h) = (70u32, 33u32);
        let data: Vec<u8> = (0..w * h).map(|i| ((i % w) * 3 + (i / w)) as u8).collect();
        let s = Slice {
            data: &data,
            dtype: DType::Uint8,
            width: w,
            height: h,
        };
        let j = render(&s, Shading::Gray { window: None }, ImageFormat::Jpeg(95)).unwrap();
        assert_eq!(&j[..2], &[0xFF, 0xD8]);
        let img = decode_jpeg(&j);
        assert_eq!((img.width(), img.height()), (w, h));
        assert_eq!(img.color(), image::ColorType::L8);
        let px = img.to_luma8().into_raw();
        let worst = px
            .iter()
            .zip(&data)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 4, "largest error {worst}");
        // The same bytes again from the thread's kept compressor.
        assert_eq!(
            render(&s, Shading::Gray { window: None }, ImageFormat::Jpeg(95)).unwrap(),
            j
        );
    }

    #[test]
    fn jpeg_of_labels_is_colour_and_16_bit_keeps_the_high_byte() {
        let labels: Vec<u8> = (0..32u32 * 32)
            .flat_map(|i| u32::from(i >= 512).to_le_bytes())
            .collect();
        let s = Slice {
            data: &labels,
            dtype: DType::Uint32,
            width: 32,
            height: 32,
        };
        let img = decode_jpeg(&render(&s, Shading::Pseudocolor, ImageFormat::Jpeg(95)).unwrap());
        assert_eq!(img.color(), image::ColorType::Rgb8);
        let px = img.to_rgb8();
        let want = label_color(1);
        let got = px.get_pixel(16, 24).0;
        for k in 0..3 {
            assert!(got[k].abs_diff(want[k]) <= 6, "{got:?} vs {want:?}");
        }
        let wide: Vec<u8> = (0..16u16 * 16)
            .flat_map(|_| 0x9a10u16.to_le_bytes())
            .collect();
        let s = Slice {
            data: &wide,
            dtype: DType::Uint16,
            width: 16,
            height: 16,
        };
        let img = decode_jpeg(
            &render(&s, Shading::Gray { window: None }, ImageFormat::Jpeg(95)).unwrap(),
        );
        assert!(img.to_luma8().iter().all(|&v| v.abs_diff(0x9a) <= 1));
    }

    #[test]
    fn jpeg_too_large_is_refused() {
        let e = jpeg_gray(&[0u8; 4], 1, 70_000, 85).unwrap_err();
        assert!(e.to_string().contains("JPEG"), "{e}");
    }
}

//! The connectivity matrix as a PNG heatmap ordered by cell type, like the
//! `sns.heatmap(..., cmap="gray_r")` plots of the MICrONS notebooks, with
//! cell-type bands and a legend.
//!
//! Layout: a title on top; the caption "postsynaptic (columns)" above the top
//! band strip, "presynaptic (rows)" (reading upwards) left of the left band
//! strip; the matrix square, framed, with light gray separator lines between
//! type groups (drawn only over empty cells, so no synapse is hidden); on
//! the right a legend of the cell types (swatch, label, node count) and a
//! color bar from 1 to the largest count. Text uses the public-domain 8×8
//! bitmap font of `font8x8`, scaled ×2 once the matrix is 400 pixels or more.
//! Output is deterministic RGB8.

use super::GraphEncodeError;
use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};
use std::collections::HashMap;

/// Most nodes [`connectivity_png`] draws.
pub const MAX_NODES: usize = 8192;
/// Largest accepted [`HeatmapOptions::max_side`].
pub const MAX_SIDE: u32 = 8192;
/// Colors of the cell types, in order of first appearance, cycled when
/// there are more types: matplotlib's tab20 without its two grays.
#[rustfmt::skip]
pub const PALETTE: [[u8; 3]; 18] = [
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207], [174, 199, 232],
    [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148],
    [247, 182, 210], [219, 219, 141], [158, 218, 229],
];
/// Color of the nodes without a cell type (label "").
pub const UNKNOWN_COLOR: [u8; 3] = [127, 127, 127];
/// Label drawn for nodes without a cell type.
pub const UNKNOWN_LABEL: &str = "unknown";

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
/// Separator lines between type groups.
const SEPARATOR: [u8; 3] = [200, 200, 200];
/// Frames of the matrix and the color bar.
const FRAME: [u8; 3] = [150, 150, 150];
/// Gray level of the weakest connection, the strongest being 0 (black).
const LIGHTEST: f64 = 230.0;
/// Longest label drawn in the legend, in characters.
const LABEL_CHARS: usize = 32;
/// Longest title drawn, in characters.
const TITLE_CHARS: usize = 120;

/// Options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeatmapOptions {
    /// Most pixels of the matrix square, e.g. 1024 (1..=[`MAX_SIDE`]); the
    /// square is smaller when `max_side` is not a multiple of the node
    /// count, and larger (one pixel per node) when there are more nodes.
    pub max_side: u32,
    /// Title drawn on top (none when empty).
    pub title: String,
}

impl Default for HeatmapOptions {
    fn default() -> Self {
        HeatmapOptions {
            max_side: 1024,
            title: String::new(),
        }
    }
}

/// Where things were drawn, for callers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeatmapLayout {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Matrix square: left edge; node i occupies pixels [x0 + i*cell, x0 + (i+1)*cell).
    pub matrix_x0: u32,
    /// Matrix square: top edge; node i occupies rows [y0 + i*cell, y0 + (i+1)*cell).
    pub matrix_y0: u32,
    /// Pixels per node (at least 1).
    pub cell: u32,
    /// Side of the matrix square: `cell` × node count.
    pub side: u32,
    /// Thickness of the band strips.
    pub band_width: u32,
    /// The left band (rows) spans x in [band_left_x0, band_left_x0 + band_width).
    pub band_left_x0: u32,
    /// The top band (columns) spans y in [band_top_y0, band_top_y0 + band_width).
    pub band_top_y0: u32,
    /// One entry per run of nodes of one cell type in drawing order: (label as
    /// drawn, "unknown" for "", first node index, end node index exclusive,
    /// RGB color). A type whose nodes are not contiguous has several
    /// entries, all of its color.
    pub bands: Vec<(String, usize, usize, [u8; 3])>,
    /// Left edge of the legend (type swatches, then the color bar).
    pub legend_x0: u32,
    /// Top edge of the legend.
    pub legend_y0: u32,
}

/// `labels[i]`: cell type of node i (nodes already ordered by the caller: grouped by type, "" for unknown, drawn as "unknown");
/// `cells`: (row = pre index, col = post index, synapse count > 0).
///
/// A cell's gray is `230 × (1 − ln(1+count) / ln(1+max))`: black for the
/// largest count, light gray for a single synapse when the largest is
/// large; cells with count 0 stay white; a cell listed twice shows the
/// larger count. Each type's color is [`PALETTE`] in order of first
/// appearance ([`UNKNOWN_COLOR`] for ""). The image of [`MAX_NODES`] nodes
/// is about 8.6k × 8.3k pixels (≈ 210 MB of RGB while drawing).
///
/// # Errors
/// [`GraphEncodeError::TooManyNodes`] over [`MAX_NODES`] nodes,
/// [`GraphEncodeError::BadSide`] for `max_side` 0 or over [`MAX_SIDE`],
/// [`GraphEncodeError::CellOutOfRange`] for a cell naming a node index not
/// below `labels.len()`, [`GraphEncodeError::Png`] if encoding fails.
pub fn connectivity_png(
    labels: &[String],
    cells: &[(u32, u32, u64)],
    opts: &HeatmapOptions,
) -> Result<(Vec<u8>, HeatmapLayout), GraphEncodeError> {
    let n = labels.len();
    if n > MAX_NODES {
        return Err(GraphEncodeError::TooManyNodes {
            nodes: n,
            max: MAX_NODES,
        });
    }
    if opts.max_side == 0 || opts.max_side > MAX_SIDE {
        return Err(GraphEncodeError::BadSide {
            max_side: opts.max_side,
            max: MAX_SIDE,
        });
    }
    if let Some(&(row, col, _)) = cells.iter().find(|c| c.0.max(c.1) as usize >= n) {
        return Err(GraphEncodeError::CellOutOfRange { row, col, nodes: n });
    }
    let (bands, types) = group(labels);
    // n <= MAX_NODES, so these fit in u32.
    let nodes = n as u32;
    let cell = opts.max_side.checked_div(nodes).unwrap_or(1).max(1);
    let side = cell * nodes;

    // Geometry, scaled with the text.
    let s = if side >= 400 { 2 } else { 1 };
    let margin = 8 * s;
    let glyph_px = 8 * s;
    let title_scale = s + 1;
    let band_width = 10 * s;
    let gap = 3 * s;
    let caption_gap = 4 * s;
    let line_h = glyph_px + 4 * s;

    let title = shorten(&opts.title, TITLE_CHARS);
    // The title's line, if any.
    let title_h = (8 * title_scale + margin) * u32::from(!title.is_empty());
    let caption_top_y = margin + title_h;
    let band_top_y0 = caption_top_y + glyph_px + caption_gap;
    let matrix_y0 = band_top_y0 + band_width + gap;
    let caption_left_x = margin;
    let band_left_x0 = caption_left_x + glyph_px + caption_gap;
    let matrix_x0 = band_left_x0 + band_width + gap;
    let legend_x0 = matrix_x0 + side + 3 * margin;
    let legend_y0 = matrix_y0;

    // Legend lines: heading, one line per type (capped), color bar.
    let max_entries = (side / line_h).max(16) as usize;
    let mut entries: Vec<([u8; 3], String)> = types
        .iter()
        .map(|t| {
            (
                t.color,
                format!("{} ({})", shorten(&t.label, LABEL_CHARS), t.nodes),
            )
        })
        .collect();
    if entries.is_empty() {
        entries.push((WHITE, "(no nodes)".to_string()));
    } else if entries.len() > max_entries {
        let more = entries.len() - (max_entries - 1);
        entries.truncate(max_entries - 1);
        entries.push((WHITE, format!("... {more} more types")));
    }
    let swatch_dx = glyph_px + 3 * s;
    let bar_heading_y = legend_y0 + (entries.len() as u32 + 1) * line_h + 2 * margin;
    let bar_y0 = bar_heading_y + line_h;
    let bar_h = 96 * s;
    let bar_w = 2 * glyph_px;
    let max_count = cells.iter().map(|c| c.2).max().unwrap_or(0);
    let max_label = max_count.max(1).to_string();
    let bar_label_x = legend_x0 + bar_w + caption_gap;
    let legend_w = entries
        .iter()
        .map(|(_, t)| swatch_dx + text_width(t, s))
        .chain([
            text_width("cell types", s),
            text_width("synapses", s),
            bar_w + caption_gap + text_width(&max_label, s),
        ])
        .max()
        .unwrap_or(0);
    let legend_bottom = bar_y0 + bar_h + 1;

    let col_caption = "postsynaptic (columns)";
    let col_caption_w = text_width(col_caption, s);
    let col_caption_x = matrix_x0 + side.saturating_sub(col_caption_w) / 2;
    let row_caption = "presynaptic (rows)";
    let row_caption_l = text_width(row_caption, s);
    let row_caption_top = matrix_y0 + side.saturating_sub(row_caption_l) / 2;
    let row_caption_bottom = row_caption_top + row_caption_l;
    let title_w = text_width(&title, title_scale);

    let width = (legend_x0 + legend_w + margin)
        .max(col_caption_x + col_caption_w + margin)
        .max(2 * margin + title_w);
    let height = (matrix_y0 + side + 1)
        .max(row_caption_bottom)
        .max(legend_bottom)
        + margin;

    let mut img = Canvas::new(width, height);
    if n > 0 {
        // A one-pixel frame around the matrix.
        img.fill(matrix_x0 - 1, matrix_y0 - 1, side + 2, side + 2, FRAME);
        img.fill(matrix_x0, matrix_y0, side, side, WHITE);
    }
    // Cells; a repeated cell keeps its darker (larger) count.
    for &(row, col, count) in cells {
        if count == 0 {
            continue;
        }
        let level = gray(count, max_count);
        let (x, y) = (matrix_x0 + col * cell, matrix_y0 + row * cell);
        if img.get(x, y)[0] > level {
            img.fill(x, y, cell, cell, [level; 3]);
        }
    }
    // Separators between groups, over empty cells only.
    for &(_, start, _, _) in bands.iter().skip(1) {
        let at = start as u32 * cell;
        for t in 0..side {
            img.set_if_white(matrix_x0 + at, matrix_y0 + t, SEPARATOR);
            img.set_if_white(matrix_x0 + t, matrix_y0 + at, SEPARATOR);
        }
    }
    for &(_, start, end, color) in &bands {
        let (from, len) = (start as u32 * cell, (end - start) as u32 * cell);
        img.fill(band_left_x0, matrix_y0 + from, band_width, len, color);
        img.fill(matrix_x0 + from, band_top_y0, len, band_width, color);
    }
    // Text.
    if !title.is_empty() {
        img.text((width - title_w) / 2, margin, &title, title_scale, BLACK);
    }
    img.text(col_caption_x, caption_top_y, col_caption, s, BLACK);
    img.text_up(caption_left_x, row_caption_bottom, row_caption, s, BLACK);
    // Legend.
    img.text(legend_x0, legend_y0, "cell types", s, BLACK);
    for (i, (color, text)) in entries.iter().enumerate() {
        let y = legend_y0 + (i as u32 + 1) * line_h;
        // Lines without a type get a white (invisible) swatch.
        img.fill(legend_x0, y, glyph_px, glyph_px, *color);
        img.text(legend_x0 + swatch_dx, y, text, s, BLACK);
    }
    img.text(legend_x0, bar_heading_y, "synapses", s, BLACK);
    // The bar runs from the largest count (top) to 1 (bottom), linear in log(1+count).
    let lowest = 2f64.ln() / (max_count.max(1) as f64).ln_1p();
    img.fill(legend_x0 - 1, bar_y0 - 1, bar_w + 2, bar_h + 2, FRAME);
    for t in 0..bar_h {
        let frac = 1.0 - f64::from(t) / f64::from(bar_h - 1);
        let v = lowest + (1.0 - lowest) * frac;
        let level = (LIGHTEST * (1.0 - v)).round() as u8;
        img.fill(legend_x0, bar_y0 + t, bar_w, 1, [level; 3]);
    }
    img.text(bar_label_x, bar_y0, &max_label, s, BLACK);
    img.text(bar_label_x, bar_y0 + bar_h - glyph_px, "1", s, BLACK);

    let layout = HeatmapLayout {
        width,
        height,
        matrix_x0,
        matrix_y0,
        cell,
        side,
        band_width,
        band_left_x0,
        band_top_y0,
        bands,
        legend_x0,
        legend_y0,
    };
    Ok((img.encode()?, layout))
}

/// A run of nodes of one type: (label as drawn, first, end, color).
type Band = (String, usize, usize, [u8; 3]);

/// One distinct cell type.
struct CellType {
    /// The label as drawn.
    label: String,
    color: [u8; 3],
    nodes: usize,
}

/// Runs of equal labels (the bands) and the distinct types in order of
/// first appearance, with their colors and node counts.
fn group(labels: &[String]) -> (Vec<Band>, Vec<CellType>) {
    let mut types: Vec<CellType> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut bands = Vec::new();
    let mut known = 0;
    let mut start = 0;
    for i in 1..=labels.len() {
        if i < labels.len() && labels[i] == labels[start] {
            continue;
        }
        let raw = &labels[start];
        let label = if raw.is_empty() { UNKNOWN_LABEL } else { raw };
        let at = match index.get(raw.as_str()) {
            Some(&at) => at,
            None => {
                let color = if raw.is_empty() {
                    UNKNOWN_COLOR
                } else {
                    known += 1;
                    PALETTE[(known - 1) % PALETTE.len()]
                };
                types.push(CellType {
                    label: label.to_string(),
                    color,
                    nodes: 0,
                });
                index.insert(raw.as_str(), types.len() - 1);
                types.len() - 1
            }
        };
        types[at].nodes += i - start;
        bands.push((label.to_string(), start, i, types[at].color));
        start = i;
    }
    (bands, types)
}

/// The gray level of a count: 0 (black) for `max`, up to 230 for the
/// weakest; 255 (white) for 0.
fn gray(count: u64, max: u64) -> u8 {
    if count == 0 {
        return 255;
    }
    let v = ((count as f64).ln_1p() / (max.max(count) as f64).ln_1p()).min(1.0);
    (LIGHTEST * (1.0 - v)).round() as u8
}

/// At most `max` characters of `s`, ending in "..." when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
        out.push_str("...");
        out
    }
}

/// Width in pixels of `text` at `scale`.
fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 8 * scale
}

/// The 8×8 glyph of a character: one byte per row, bit 0 the leftmost
/// pixel; ASCII and Latin-1, "?" for the rest.
fn glyph(c: char) -> [u8; 8] {
    let code = c as u32;
    match code {
        0x20..=0x7E => BASIC_LEGACY[code as usize],
        0xA0..=0xFF => LATIN_LEGACY[(code - 0xA0) as usize],
        _ => BASIC_LEGACY[usize::from(b'?')],
    }
}

/// The set pixels of `text` in the font: (along the text, across it from the top).
fn dots(text: &str) -> impl Iterator<Item = (u32, u32)> + '_ {
    text.chars().enumerate().flat_map(|(k, c)| {
        let rows = glyph(c);
        (0..64u32)
            .filter(move |i| rows[(i / 8) as usize] & (1 << (i % 8)) != 0)
            .map(move |i| (k as u32 * 8 + i % 8, i / 8))
    })
}

/// An RGB8 image being drawn; drawing outside it is clipped.
struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Canvas {
        Canvas {
            width,
            height,
            rgb: vec![255; width as usize * height as usize * 3],
        }
    }

    fn at(&self, x: u32, y: u32) -> Option<usize> {
        (x < self.width && y < self.height)
            .then(|| (y as usize * self.width as usize + x as usize) * 3)
    }

    fn get(&self, x: u32, y: u32) -> [u8; 3] {
        self.at(x, y)
            .map_or(WHITE, |i| [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]])
    }

    fn set_if_white(&mut self, x: u32, y: u32, color: [u8; 3]) {
        if let Some(i) = self.at(x, y)
            && self.rgb[i..i + 3] == WHITE
        {
            self.rgb[i..i + 3].copy_from_slice(&color);
        }
    }

    fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, color: [u8; 3]) {
        let x1 = x.saturating_add(w).min(self.width);
        let y1 = y.saturating_add(h).min(self.height);
        if x >= x1 {
            return;
        }
        for yy in y..y1 {
            let row = (yy as usize * self.width as usize + x as usize) * 3;
            for px in self.rgb[row..row + (x1 - x) as usize * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&color);
            }
        }
    }

    /// Text left to right, its top-left corner at (x, y).
    fn text(&mut self, x: u32, y: u32, text: &str, scale: u32, color: [u8; 3]) {
        for (along, across) in dots(text) {
            self.fill(x + along * scale, y + across * scale, scale, scale, color);
        }
    }

    /// Text reading upwards (turned a quarter left), its left edge at x and
    /// its first character's bottom at `bottom`.
    fn text_up(&mut self, x: u32, bottom: u32, text: &str, scale: u32, color: [u8; 3]) {
        for (along, across) in dots(text) {
            if let Some(y) = bottom.checked_sub((along + 1) * scale) {
                self.fill(x + across * scale, y, scale, scale, color);
            }
        }
    }

    fn encode(&self) -> Result<Vec<u8>, GraphEncodeError> {
        let (width, height) = (self.width, self.height);
        let err = |e: png::EncodingError| GraphEncodeError::Png {
            width,
            height,
            reason: e.to_string(),
        };
        let mut out = Vec::with_capacity(self.rgb.len() / 8 + 1024);
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut w = enc.write_header().map_err(err)?;
        w.write_image_data(&self.rgb).map_err(err)?;
        w.finish().map_err(err)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GraphEncodeError as E;

    /// A PNG decoded back into a canvas (RGB8).
    fn decode(png: &[u8]) -> Canvas {
        let mut r = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut rgb = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut rgb).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        rgb.truncate(info.buffer_size());
        let (width, height) = (info.width, info.height);
        Canvas { width, height, rgb }
    }

    impl Canvas {
        /// The pixel at the middle of matrix cell (row, col).
        fn cell(&self, l: &HeatmapLayout, row: u32, col: u32) -> [u8; 3] {
            let half = l.cell / 2;
            self.get(
                l.matrix_x0 + col * l.cell + half,
                l.matrix_y0 + row * l.cell + half,
            )
        }

        /// Whether some pixel in [x0, x1) × [y0, y1) is black.
        fn dark_in(&self, x0: u32, y0: u32, x1: u32, y1: u32) -> bool {
            (y0..y1).any(|y| (x0..x1).any(|x| self.get(x, y) == BLACK))
        }
    }

    fn bands(b: &[Band]) -> Vec<(&str, usize, usize, [u8; 3])> {
        b.iter()
            .map(|(t, s, e, c)| (t.as_str(), *s, *e, *c))
            .collect()
    }

    /// Four types (one unknown) of 60 nodes and a random-ish matrix, with
    /// (5, 40) the single strongest cell.
    fn sample() -> (Vec<String>, Vec<(u32, u32, u64)>) {
        let mut labels = Vec::new();
        for (label, count) in [("23P", 25), ("BC", 12), ("", 8), ("MC", 15)] {
            labels.extend(std::iter::repeat_n(label.to_string(), count));
        }
        let (mut cells, mut state) = (Vec::new(), 12345u64);
        for row in 0..60u32 {
            for col in 0..60u32 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let r = state >> 33;
                if r.is_multiple_of(5) && row != col && (row, col) != (5, 40) {
                    cells.push((row, col, 1 + (r >> 8) % 20));
                }
            }
        }
        cells.push((5, 40, 120));
        (labels, cells)
    }

    fn opts(max_side: u32) -> HeatmapOptions {
        HeatmapOptions {
            max_side,
            title: "Connectivity of 60 neurons".to_string(),
        }
    }

    #[test]
    fn layout_matches_the_image() {
        let (labels, cells) = sample();
        let (png, l) = connectivity_png(&labels, &cells, &opts(600)).unwrap();
        let img = decode(&png);
        assert_eq!((img.width, img.height), (l.width, l.height));
        assert_eq!((l.cell, l.side), (10, 600));
        assert!(l.matrix_x0 + l.side < l.legend_x0 && l.legend_x0 < l.width);
        assert!(l.matrix_y0 + l.side < l.height);
        let expected = vec![
            ("23P", 0, 25, PALETTE[0]),
            ("BC", 25, 37, PALETTE[1]),
            ("unknown", 37, 45, UNKNOWN_COLOR),
            ("MC", 45, 60, PALETTE[2]),
        ];
        assert_eq!(bands(&l.bands), expected);
        for &(_, start, end, color) in &l.bands {
            let mid = (start + end) as u32 * l.cell / 2;
            let across = l.band_width / 2;
            assert_eq!(img.get(l.band_left_x0 + across, l.matrix_y0 + mid), color);
            assert_eq!(img.get(l.matrix_x0 + mid, l.band_top_y0 + across), color);
        }
        // Connected cells are gray, darker than white empty ones; the
        // strongest is black and the darkest.
        let connected: std::collections::HashSet<(u32, u32)> =
            cells.iter().map(|&(r, c, _)| (r, c)).collect();
        let empty = (0..60).find(|&c| !connected.contains(&(25, c))).unwrap();
        assert_eq!(img.cell(&l, 25, empty), WHITE);
        assert_eq!(img.cell(&l, 5, 40), BLACK);
        for &(r, c, _) in &cells {
            let p = img.cell(&l, r, c);
            assert!(
                p[0] == p[1] && p[1] == p[2] && p[0] <= LIGHTEST as u8,
                "({r}, {c}) is {p:?}"
            );
            assert!((r, c) == (5, 40) || p[0] > 0);
        }
        let weak = cells.iter().find(|c| c.2 == 1).unwrap();
        let strong = cells.iter().find(|c| c.2 == 20).unwrap();
        assert!(img.cell(&l, strong.0, strong.1)[0] < img.cell(&l, weak.0, weak.1)[0]);
        // Separators: on the first pixel row of each group, over empty cells.
        let x = l.matrix_x0 + empty * l.cell + 4;
        assert_eq!(img.get(x, l.matrix_y0 + 25 * l.cell), SEPARATOR);
        assert_eq!(img.get(x, l.matrix_y0 + 25 * l.cell + 1), WHITE);
        // The title and the legend hold text; the first legend swatch.
        assert!(img.dark_in(0, 0, l.width, l.band_top_y0));
        assert!(img.dark_in(l.legend_x0, l.legend_y0, l.width, l.height));
        assert_eq!(img.get(l.legend_x0 + 4, l.legend_y0 + 24 + 4), PALETTE[0]);
    }

    #[test]
    fn cell_size_follows_max_side() {
        let (labels, cells) = sample();
        let a = connectivity_png(&labels, &cells, &opts(300)).unwrap();
        assert_eq!(a, connectivity_png(&labels, &cells, &opts(300)).unwrap());
        assert_eq!((a.1.cell, a.1.side), (5, 300));
        let labels = vec!["a".to_string(); 7];
        let (_, l) = connectivity_png(&labels, &[], &HeatmapOptions::default()).unwrap();
        assert_eq!((l.cell, l.side), (146, 1022));
        let labels = vec!["a".to_string(); 300];
        let (png, l) = connectivity_png(&labels, &[(299, 0, 3)], &opts(100)).unwrap();
        assert_eq!((l.cell, l.side), (1, 300));
        assert_eq!(decode(&png).get(l.matrix_x0, l.matrix_y0 + 299), BLACK);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let err = connectivity_png(&vec![String::new(); 8193], &[], &opts(1024)).unwrap_err();
        assert!(matches!(err, E::TooManyNodes { .. }));
        let msg = err.to_string();
        assert!(msg.contains("8192") && msg.contains("8193") && msg.contains("format=npz"));
        let labels = vec!["a".to_string(); 3];
        for max_side in [0, MAX_SIDE + 1] {
            let err = connectivity_png(&labels, &[], &opts(max_side)).unwrap_err();
            assert!(matches!(err, E::BadSide { .. }));
        }
        let err = connectivity_png(&labels, &[(0, 3, 1)], &opts(100)).unwrap_err();
        assert!(
            err.to_string()
                .contains("(row 0, column 3) is outside the 3×3 matrix")
        );
    }

    #[test]
    fn no_nodes_gives_a_small_image_with_a_legend() {
        let (png, l) = connectivity_png(&[], &[], &opts(1024)).unwrap();
        let img = decode(&png);
        assert_eq!((img.width, img.height), (l.width, l.height));
        assert!(l.width < 600 && l.height < 400, "{}×{}", l.width, l.height);
        assert_eq!((l.side, l.cell, l.bands.len()), (0, 1, 0));
        assert!(img.dark_in(l.legend_x0, l.legend_y0, l.width, l.height));
    }

    #[test]
    fn types_keep_one_color_when_split() {
        let (got, types) = group(&["a", "a", "b", "", "a", "x"].map(String::from));
        let (a, b, x) = (PALETTE[0], PALETTE[1], PALETTE[2]);
        let expected = vec![
            ("a", 0, 2, a),
            ("b", 2, 3, b),
            ("unknown", 3, 4, UNKNOWN_COLOR),
            ("a", 4, 5, a),
            ("x", 5, 6, x),
        ];
        assert_eq!(bands(&got), expected);
        let counts: Vec<(&str, usize)> =
            types.iter().map(|t| (t.label.as_str(), t.nodes)).collect();
        assert_eq!(counts, [("a", 3), ("b", 1), ("unknown", 1), ("x", 1)]);
        // More types than colors cycle the palette; more than legend lines still draw.
        let many: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        assert_eq!(group(&many).0[18].3, PALETTE[0]);
        let (png, l) = connectivity_png(&many, &[(0, 1, 1)], &opts(100)).unwrap();
        assert_eq!((l.bands.len(), decode(&png).height), (20, l.height));
    }

    #[test]
    fn gray_scale_and_text() {
        assert_eq!((gray(0, 10), gray(10, 10), gray(1, 1)), (255, 0, 0));
        assert!(gray(1, 1000) > gray(2, 1000));
        assert!(gray(1, 1000) <= LIGHTEST as u8);
        assert_eq!(
            (shorten("abcdef", 5).as_str(), shorten("abc", 5).as_str()),
            ("ab...", "abc")
        );
        assert_eq!(glyph('é'), LATIN_LEGACY[0xE9 - 0xA0]);
        assert_eq!(glyph('\u{4e00}'), glyph('?'));
        assert_eq!(text_width("abc", 2), 48);
        assert_eq!(
            dots("-").collect::<Vec<_>>(),
            (0..6).map(|x| (x, 3)).collect::<Vec<_>>()
        );
    }

    /// Writes /tmp/heatmap_sample.png to look at:
    /// `cargo test -p neurocube-core graph::heatmap -- --ignored`.
    #[test]
    #[ignore = "writes /tmp/heatmap_sample.png for a look"]
    fn write_sample_png() {
        let (labels, cells) = sample();
        let (png, _) = connectivity_png(&labels, &cells, &opts(600)).unwrap();
        let path = std::env::temp_dir().join("heatmap_sample.png");
        std::fs::write(&path, png).unwrap();
        let (png, _) = connectivity_png(&[], &[], &opts(1024)).unwrap();
        std::fs::write(std::env::temp_dir().join("heatmap_empty.png"), png).unwrap();
        println!("wrote {} and heatmap_empty.png", path.display());
    }
}

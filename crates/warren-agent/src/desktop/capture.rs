//! Screenshots straight from the X server: one GetImage request, the pixels converted to RGB and
//! encoded as PNG with fast compression. (ImageMagick's `import` did the same in 50-100 ms, most
//! of it its own start-up; this takes a few milliseconds plus the encoding.)

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt, ImageFormat, ImageOrder};
use x11rb::rust_connection::RustConnection;

use super::x::DISPLAY;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot reach the display: {0}")]
    Display(String),
    #[error("the region {0} lies outside the {1}x{2} screen")]
    Outside(String, u16, u16),
    #[error("the display's pixel format is not supported ({0})")]
    Format(String),
    #[error("PNG encoding failed: {0}")]
    Encode(String),
}

/// A rectangle in screen coordinates.
#[derive(Debug, Clone, Copy)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

fn display_err(e: impl std::fmt::Display) -> CaptureError {
    CaptureError::Display(e.to_string())
}

/// The screen, or `area` of it, as PNG, enlarged `scale` times (each pixel a square of pixels:
/// OCR reads screen text, drawn for 96 dpi, far better at twice the size; a letter touching a
/// window border is otherwise lost). Blocking: call from `spawn_blocking`.
pub fn screen_png(area: Option<Rect>, scale: u32) -> Result<Vec<u8>, CaptureError> {
    let (conn, screen_num) = RustConnection::connect(Some(DISPLAY)).map_err(display_err)?;
    let setup = conn.setup();
    let screen = &setup.roots[screen_num];
    let (sw, sh) = (screen.width_in_pixels, screen.height_in_pixels);
    let r = area.unwrap_or(Rect {
        x: 0,
        y: 0,
        width: i64::from(sw),
        height: i64::from(sh),
    });
    if r.x < 0
        || r.y < 0
        || r.width <= 0
        || r.height <= 0
        || r.x + r.width > i64::from(sw)
        || r.y + r.height > i64::from(sh)
    {
        return Err(CaptureError::Outside(
            format!("{}x{}+{}+{}", r.width, r.height, r.x, r.y),
            sw,
            sh,
        ));
    }
    // In range of the screen's u16 size, checked above.
    let (x, y, w, h) = (r.x as i16, r.y as i16, r.width as u16, r.height as u16);
    let image = xproto::get_image(&conn, ImageFormat::Z_PIXMAP, screen.root, x, y, w, h, !0)
        .map_err(display_err)?
        .reply()
        .map_err(display_err)?;
    let bpp = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == image.depth)
        .map(|f| f.bits_per_pixel)
        .unwrap_or(0);
    let visual = screen
        .allowed_depths
        .iter()
        .flat_map(|d| d.visuals.iter())
        .find(|v| v.visual_id == image.visual)
        .ok_or_else(|| CaptureError::Format("unknown visual".into()))?;
    if bpp != 32 || setup.image_byte_order != ImageOrder::LSB_FIRST {
        return Err(CaptureError::Format(format!(
            "{bpp} bits per pixel, {:?}",
            setup.image_byte_order
        )));
    }
    let rgb = to_rgb(
        &image.data,
        [visual.red_mask, visual.green_mask, visual.blue_mask],
    );
    let (w, h) = (u32::from(w), u32::from(h));
    if scale > 1 {
        return encode(&enlarge(&rgb, w, scale), w * scale, h * scale);
    }
    encode(&rgb, w, h)
}

/// Packed RGB rows of `width` pixels, each pixel repeated `scale` times across and down.
fn enlarge(rgb: &[u8], width: u32, scale: u32) -> Vec<u8> {
    let (width, scale) = (width as usize, scale as usize);
    let mut out = Vec::with_capacity(rgb.len() * scale * scale);
    for row in rgb.chunks_exact(width * 3) {
        let start = out.len();
        for px in row.chunks_exact(3) {
            for _ in 0..scale {
                out.extend_from_slice(px);
            }
        }
        let wide = out[start..].to_vec();
        for _ in 1..scale {
            out.extend_from_slice(&wide);
        }
    }
    out
}

/// 32-bit pixels (little-endian) to packed RGB, by the visual's channel masks.
fn to_rgb(data: &[u8], masks: [u32; 3]) -> Vec<u8> {
    let shifts = masks.map(|m| m.trailing_zeros());
    let mut rgb = Vec::with_capacity(data.len() / 4 * 3);
    for px in data.chunks_exact(4) {
        let v = u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
        for c in 0..3 {
            rgb.push(((v & masks[c]) >> shifts[c]) as u8);
        }
    }
    rgb
}

fn encode(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, CaptureError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc
            .write_header()
            .map_err(|e| CaptureError::Encode(e.to_string()))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| CaptureError::Encode(e.to_string()))?;
    }
    Ok(out)
}

/// Where window `id` is on screen (its client area), clipped to the screen.
pub fn window_rect(id: u32) -> Result<Rect, CaptureError> {
    let (conn, screen_num) = RustConnection::connect(Some(DISPLAY)).map_err(display_err)?;
    let screen = &conn.setup().roots[screen_num];
    let (sw, sh) = (
        i64::from(screen.width_in_pixels),
        i64::from(screen.height_in_pixels),
    );
    let geo = conn
        .get_geometry(id)
        .map_err(display_err)?
        .reply()
        .map_err(display_err)?;
    let pos = conn
        .translate_coordinates(id, screen.root, 0, 0)
        .map_err(display_err)?
        .reply()
        .map_err(display_err)?;
    let (x0, y0) = (i64::from(pos.dst_x).max(0), i64::from(pos.dst_y).max(0));
    let x1 = (i64::from(pos.dst_x) + i64::from(geo.width)).min(sw);
    let y1 = (i64::from(pos.dst_y) + i64::from(geo.height)).min(sh);
    Ok(Rect {
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_follow_the_visual_masks() {
        // BGRX as Xvnc sends depth 24: blue, green, red, padding.
        let data = [0x10, 0x20, 0x30, 0x00, 0xff, 0x00, 0x00, 0x00];
        let rgb = to_rgb(&data, [0x00ff_0000, 0x0000_ff00, 0x0000_00ff]);
        assert_eq!(rgb, vec![0x30, 0x20, 0x10, 0x00, 0x00, 0xff]);
    }

    #[test]
    fn enlarging_repeats_each_pixel_across_and_down() {
        let rgb = [1, 1, 1, 2, 2, 2];
        let big = enlarge(&rgb, 2, 2);
        assert_eq!(
            big,
            vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
        );
    }

    #[test]
    fn encodes_a_png_of_the_given_size() {
        let png = encode(&[0u8; 4 * 3 * 2], 4, 2).expect("encode");
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(u32::from_be_bytes([png[16], png[17], png[18], png[19]]), 4);
        assert_eq!(u32::from_be_bytes([png[20], png[21], png[22], png[23]]), 2);
    }
}

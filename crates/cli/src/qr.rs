//! QR codes: drawn in the terminal, written as PNG, and read back from photos and screenshots.

use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context, Result};
use dp2ptcs_types::limits::{MAX_QR_IMAGE_FILE_LEN, MAX_QR_IMAGE_SIDE};
use image::{GrayImage, ImageFormat, Luma};
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

use crate::fsutil::read_limited;

/// Pixels per QR module in PNG output: large enough for a phone camera at arm's length.
const PNG_MODULE_PX: u32 = 8;

fn encode(text: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .context("the text is too long for a QR code")
}

/// The QR code as text for a terminal, two modules per character cell, with a quiet zone.
///
/// Drawn dark-on-light (the light modules are full blocks), which scans on both light and dark
/// terminal themes.
pub(crate) fn to_terminal(text: &str) -> Result<String> {
    let code = encode(text)?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// The QR code as a PNG file's bytes.
pub(crate) fn to_png(text: &str) -> Result<Vec<u8>> {
    let code = encode(text)?;
    let img: GrayImage = code
        .render::<Luma<u8>>()
        .module_dimensions(PNG_MODULE_PX, PNG_MODULE_PX)
        .quiet_zone(true)
        .build();
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .context("cannot encode the PNG")?;
    Ok(out.into_inner())
}

/// Why an image did not yield a QR code's text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("{0} is not a PNG or JPEG image this program can read: {1}")]
    NotAnImage(String, String),
    #[error("{0} is too large ({1}x{2} pixels, at most {MAX_QR_IMAGE_SIDE} per side)")]
    TooLarge(String, u32, u32),
    #[error("no QR code found in {0}")]
    NoCode(String),
    #[error("found a QR code in {0} but could not read it (blurred, cut off or damaged?)")]
    Unreadable(String),
}

/// Reads the text of the first readable QR code in a PNG or JPEG file.
pub(crate) fn scan_file(path: &Path) -> Result<String> {
    let shown = path.display().to_string();
    let bytes = read_limited(path, MAX_QR_IMAGE_FILE_LEN)?;
    Ok(scan_bytes(&bytes, &shown)?)
}

/// Reads the text of the first readable QR code in an image held in memory.
pub(crate) fn scan_bytes(bytes: &[u8], shown: &str) -> Result<String, ScanError> {
    let not_image = |e: &dyn std::fmt::Display| ScanError::NotAnImage(shown.into(), e.to_string());
    let format = image::guess_format(bytes).map_err(|e| not_image(&e))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(not_image(&format!("it is {format:?}")));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_QR_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_QR_IMAGE_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits.clone());
    let (w, h) = reader.into_dimensions().map_err(|e| not_image(&e))?;
    if w > MAX_QR_IMAGE_SIDE || h > MAX_QR_IMAGE_SIDE {
        return Err(ScanError::TooLarge(shown.into(), w, h));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let gray = reader.decode().map_err(|e| not_image(&e))?.into_luma8();

    let mut saw_code = false;
    // Dark-mode screenshots show light modules on dark: try the inverted image as well.
    for invert in [false, true] {
        let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
            gray.width() as usize,
            gray.height() as usize,
            |x, y| {
                let v = gray.get_pixel(x as u32, y as u32).0[0];
                if invert {
                    255 - v
                } else {
                    v
                }
            },
        );
        for grid in prepared.detect_grids() {
            saw_code = true;
            if let Ok((_, text)) = grid.decode() {
                return Ok(text);
            }
        }
    }
    Err(if saw_code {
        ScanError::Unreadable(shown.into())
    } else {
        ScanError::NoCode(shown.into())
    })
}

/// Writes a QR code PNG to `path` atomically (readable by all: it holds only public data).
pub(crate) fn write_png(path: &Path, text: &str) -> Result<()> {
    let png = to_png(text)?;
    crate::fsutil::write_atomic(path, &png, 0o644)
}

/// Refuses an output path that is an existing directory, with a clear message.
pub(crate) fn check_output_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{} is a directory; give a file name such as {}/qr.png",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_through_our_scanner() {
        let text = "dp2ptcs://contact?v=1&key=abc";
        let png = to_png(text).unwrap();
        assert_eq!(scan_bytes(&png, "mem").unwrap(), text);
    }

    #[test]
    fn inverted_codes_are_read() {
        let text = "DP2PTCS-SN:1:ABC";
        let png = to_png(text).unwrap();
        let mut img = image::load_from_memory(&png).unwrap().into_luma8();
        image::imageops::invert(&mut img);
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        assert_eq!(scan_bytes(&out.into_inner(), "mem").unwrap(), text);
    }

    #[test]
    fn jpeg_photos_are_read() {
        let text = "dp2ptcs://contact?v=1&key=jpeg";
        let png = to_png(text).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        let mut out = Cursor::new(Vec::new());
        img.to_rgb8().write_to(&mut out, ImageFormat::Jpeg).unwrap();
        assert_eq!(scan_bytes(&out.into_inner(), "mem").unwrap(), text);
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            scan_bytes(b"not an image", "f"),
            Err(ScanError::NotAnImage(..))
        ));
        let blank = GrayImage::from_pixel(64, 64, Luma([255]));
        let mut out = Cursor::new(Vec::new());
        blank.write_to(&mut out, ImageFormat::Png).unwrap();
        assert!(matches!(
            scan_bytes(&out.into_inner(), "f"),
            Err(ScanError::NoCode(_))
        ));
        // A PNG header that claims an enormous image is refused before decoding.
        let mut huge = Cursor::new(Vec::new());
        GrayImage::from_pixel(1, 1, Luma([0]))
            .write_to(&mut huge, ImageFormat::Png)
            .unwrap();
        let mut bytes = huge.into_inner();
        bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes()); // IHDR width
        assert!(scan_bytes(&bytes, "f").is_err());
    }

    #[test]
    fn terminal_rendering_has_a_quiet_zone() {
        let t = to_terminal("x").unwrap();
        let first = t.lines().next().unwrap();
        assert!(first.chars().all(|c| c == '█'), "{first:?}");
    }
}

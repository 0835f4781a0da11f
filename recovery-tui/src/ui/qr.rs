//! A QR code drawn with half-block characters: each character cell holds
//! two modules, one above the other, so modules come out square on a
//! console font. Light modules are drawn, dark ones left black, so the code
//! reads correctly on a black background.

use qrcode::{Color, EcLevel, QrCode};

/// Modules of light margin around the code; scanners need some.
const QUIET_ZONE: usize = 2;

/// The text lines of a QR code of `data`, or `None` if it cannot be encoded.
pub fn half_block_lines(data: &str) -> Option<Vec<String>> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    let light = |x: usize, y: usize| -> bool {
        if x < QUIET_ZONE || y < QUIET_ZONE || x >= width + QUIET_ZONE || y >= width + QUIET_ZONE {
            return true;
        }
        colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Light
    };
    let mut lines = Vec::with_capacity(size.div_ceil(2));
    for y in (0..size).step_by(2) {
        let line = (0..size)
            .map(|x| {
                let top = light(x, y);
                let bottom = y + 1 >= size || light(x, y + 1);
                match (top, bottom) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                }
            })
            .collect();
        lines.push(line);
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_fits_in_a_square_of_half_blocks() {
        let note = "reliquary-audit/appliance-0123456789abcdef\n14\nq3Pn3KXwq5p6WvXb0rkQ8Ww1pF4x0iC9Zf9f6m7qW7E=\n\n\u{2014} reliquary-audit/appliance-0123456789abcdef AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345==\n";
        let lines = half_block_lines(note).expect("encodes");
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert_eq!(lines.len(), width.div_ceil(2));
        // The quiet zone is light all round.
        assert!(lines[0].chars().all(|c| c == '█'));
        assert!(width <= 70, "a checkpoint needs {width} columns");
    }
}

//! The Linux console's default VGA font holds only code page 437. Under
//! `TERM=linux` every drawn cell is brought into it: arrows become ASCII,
//! fine bar steps become `#`, and anything else unknown becomes `?`, so
//! tty1 of a real stick never shows a blank box.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

/// The 128 characters of code page 437 above ASCII, in code order.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»\
░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀\
αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// Whether the console font can draw `c`.
pub fn is_cp437(c: char) -> bool {
    (' '..='~').contains(&c) || CP437_HIGH.contains(c)
}

/// The console-safe stand-in for a character outside CP437.
pub fn substitute(c: char) -> char {
    match c {
        c if is_cp437(c) => c,
        '←' | '◂' | '◀' => '<',
        '→' | '▸' | '▶' | '›' => '>',
        '↑' | '▴' => '^',
        '↓' | '▾' => 'v',
        '…' => '.',
        '•' => '-',
        '—' | '–' => '-',
        '▁' | '▂' | '▃' | '▅' | '▆' | '▇' | '▉' | '▊' | '▋' | '▍' | '▎' | '▏' => {
            '#'
        }
        '✓' => '+',
        '✗' => 'x',
        _ => '?',
    }
}

/// Text with its non-CP437 characters replaced; `…` becomes `...`.
pub fn text(s: &str) -> String {
    s.replace('…', "...").chars().map(substitute).collect()
}

/// A key's name in ASCII: arrow glyphs become words.
pub fn key_name(key: &str) -> String {
    match key {
        "↑↓" => "Up/Down".to_string(),
        "←/→" => "Left/Right".to_string(),
        other => text(other),
    }
}

/// Replaces every cell of `area` the console font cannot draw.
pub fn fix_buffer(area: Rect, buf: &mut Buffer) {
    for y in area.top()..area.bottom() {
        for x in area.left()..area.right() {
            let Some(cell) = buf.cell_mut((x, y)) else {
                continue;
            };
            let symbol = cell.symbol();
            if symbol.chars().all(is_cp437) {
                continue;
            }
            let fixed: String = symbol.chars().map(substitute).collect();
            cell.set_symbol(&fixed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_the_128_high_characters() {
        assert_eq!(CP437_HIGH.chars().count(), 128);
        assert!(is_cp437('█') && is_cp437('▀') && is_cp437('│') && is_cp437('°'));
        assert!(!is_cp437('▸') && !is_cp437('…') && !is_cp437('▁'));
        assert_eq!(text("a → b … ▁▇"), "a > b ... ##");
        assert_eq!(key_name("↑↓"), "Up/Down");
    }
}

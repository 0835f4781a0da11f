//! A small A4 text layout on `pdf-writer`: headings, label/value rows with
//! wrapping, plain lines and a QR code, flowing onto new pages as needed.
//!
//! The one font is DejaVu Sans, shipped in `appliance/assets/fonts/` with its
//! licence and embedded whole (unmodified, as its licence asks) as a simple
//! TrueType font in WinAnsi encoding, so text extracts as text. Text that
//! must be copied exactly (a signed note) is set in Courier, one of the
//! standard PDF fonts, so each of its lines fits one printed line.

use std::collections::HashMap;

use pdf_writer::types::FontFlags;
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use qrcode::{Color, EcLevel, QrCode};

/// DejaVu Sans 2.37 (Bitstream Vera licence, see DejaVu-LICENSE next to it).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT_NAME: &[u8] = b"DejaVuSans";

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 48.0;
const LABEL_WIDTH: f32 = 130.0;
const BODY_SIZE: f32 = 8.0;
const LEADING: f32 = 9.8;
/// The advance of every glyph of Courier, the PDF's standard monospace
/// font, in em (its metrics are fixed by the PDF specification).
const MONO_ADVANCE: f32 = 0.6;

/// Why a document could not be laid out.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the embedded font does not parse: {0}")]
    Font(String),
}

/// Builds a document top to bottom.
pub struct Layout {
    metrics: Metrics,
    /// Finished pages, compressed at once so a long review stays small in
    /// memory.
    done: Vec<Vec<u8>>,
    pages: Vec<Content>,
    y: f32,
    title: String,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("title", &self.title)
            .field("pages", &(self.done.len() + self.pages.len()))
            .finish_non_exhaustive()
    }
}

impl Layout {
    pub fn new(title: &str) -> Result<Self, PdfError> {
        let mut layout = Self {
            metrics: Metrics::load()?,
            done: Vec::new(),
            pages: Vec::new(),
            y: 0.0,
            title: title.to_string(),
        };
        layout.new_page();
        Ok(layout)
    }

    /// The document title in large type.
    pub fn title(&mut self, text: &str) {
        self.space_for(24.0);
        self.y -= 16.0;
        self.text_at(MARGIN, self.y, 16.0, text);
        self.y -= 10.0;
    }

    /// A section heading with a rule under it.
    pub fn heading(&mut self, text: &str) {
        self.space_for(LEADING * 3.0);
        self.y -= 5.0 + 10.0;
        self.text_at(MARGIN, self.y, 10.0, text);
        let y = self.y - 3.0;
        let page = self.page();
        page.set_line_width(0.5);
        page.move_to(MARGIN, y);
        page.line_to(PAGE_WIDTH - MARGIN, y);
        page.stroke();
        self.y -= 4.0;
    }

    /// A label and its value, the value wrapped in its column.
    pub fn field(&mut self, label: &str, value: &str) {
        let lines = self.wrap(value, PAGE_WIDTH - 2.0 * MARGIN - LABEL_WIDTH, BODY_SIZE);
        for (i, line) in lines.iter().enumerate() {
            self.space_for(LEADING);
            self.y -= LEADING;
            if i == 0 {
                self.text_at(MARGIN, self.y, BODY_SIZE, label);
            }
            self.text_at(MARGIN + LABEL_WIDTH, self.y, BODY_SIZE, line);
        }
    }

    /// A paragraph over the full width.
    pub fn paragraph(&mut self, text: &str) {
        for line in self.wrap(text, PAGE_WIDTH - 2.0 * MARGIN, BODY_SIZE) {
            self.space_for(LEADING);
            self.y -= LEADING;
            self.text_at(MARGIN, self.y, BODY_SIZE, &line);
        }
    }

    /// Lines of text with a QR code of `data` to their right. Returns false
    /// (and draws only the text) if `data` is too long for a QR code.
    pub fn text_with_qr(&mut self, lines: &[String], data: &str, size: f32) -> bool {
        let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok();
        let text_width = PAGE_WIDTH - 2.0 * MARGIN - size - 8.0;
        let lines: Vec<String> = lines
            .iter()
            .flat_map(|l| self.wrap(l, text_width, BODY_SIZE))
            .collect();
        let height = (LEADING * lines.len() as f32).max(if code.is_some() { size } else { 0.0 });
        self.space_for(height + 4.0);
        let top = self.y - 4.0;
        for (i, line) in lines.iter().enumerate() {
            let y = top - LEADING * (i as f32 + 1.0);
            self.text_at(MARGIN, y, BODY_SIZE, line);
        }
        let Some(code) = code else {
            self.y = top - height;
            return false;
        };
        let width = code.width();
        let colors = code.to_colors();
        let module = size / (width as f32 + 8.0);
        let x0 = PAGE_WIDTH - MARGIN - size + 4.0 * module;
        let y0 = top - 4.0 * module;
        let page = self.page();
        page.save_state();
        page.set_fill_gray(0.0);
        for (i, color) in colors.iter().enumerate() {
            if *color == Color::Dark {
                let (x, y) = ((i % width) as f32, (i / width) as f32);
                page.rect(x0 + x * module, y0 - (y + 1.0) * module, module, module);
            }
        }
        page.fill_nonzero();
        page.restore_state();
        self.y = top - height;
        true
    }

    /// A full-width black band with the text in large white type: what a
    /// reader must not miss, such as RESTORE FAILED.
    pub fn banner(&mut self, text: &str) {
        let size = 14.0;
        let lines = self.wrap(text, PAGE_WIDTH - 2.0 * MARGIN - 12.0, size);
        let height = 8.0 + lines.len() as f32 * (size + 3.0);
        self.space_for(height + 6.0);
        self.y -= 6.0;
        let top = self.y;
        let page = self.page();
        page.save_state();
        page.set_fill_gray(0.0);
        page.rect(MARGIN, top - height, PAGE_WIDTH - 2.0 * MARGIN, height);
        page.fill_nonzero();
        page.restore_state();
        for (i, line) in lines.iter().enumerate() {
            let y = top - 4.0 - (i as f32 + 1.0) * (size + 3.0) + 3.0;
            let bytes = encode_win_ansi(line);
            let page = self.page();
            page.save_state();
            page.set_fill_gray(1.0);
            page.begin_text();
            page.set_font(Name(b"F1"), size);
            page.set_text_matrix([1.0, 0.0, 0.0, 1.0, MARGIN + 6.0, y]);
            page.show(Str(&bytes));
            page.end_text();
            page.restore_state();
        }
        self.y = top - height;
    }

    /// Lines that must be copied exactly (a signed note), one printed line
    /// each, in a monospace font at the largest size up to the body size
    /// at which the longest fits the full width.
    pub fn exact_lines(&mut self, lines: &[String]) {
        let longest = lines
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(1)
            .max(1);
        let width = PAGE_WIDTH - 2.0 * MARGIN;
        let size = (width / (longest as f32 * MONO_ADVANCE)).min(BODY_SIZE);
        let leading = size * 1.25;
        for line in lines {
            self.space_for(leading);
            self.y -= leading;
            let bytes = encode_win_ansi(line);
            let y = self.y;
            let page = self.page();
            page.begin_text();
            page.set_font(Name(b"F2"), size);
            page.set_text_matrix([1.0, 0.0, 0.0, 1.0, MARGIN, y]);
            page.show(Str(&bytes));
            page.end_text();
        }
    }

    /// Vertical space.
    pub fn gap(&mut self, points: f32) {
        self.y -= points;
    }

    /// The finished PDF.
    pub fn finish(self) -> Vec<u8> {
        let mut pdf = Pdf::new();
        let mut next = 1;
        let mut alloc = || {
            let r = Ref::new(next);
            next += 1;
            r
        };
        let catalog = alloc();
        let tree = alloc();
        let info = alloc();
        let font = alloc();
        let descriptor = alloc();
        let font_file = alloc();
        let mono = alloc();
        let mut done = self.done;
        done.extend(
            self.pages
                .into_iter()
                .map(|c| miniz_oxide::deflate::compress_to_vec_zlib(&c.finish(), 6)),
        );
        let page_count = done.len();
        let page_ids: Vec<(Ref, Ref, Ref)> = (0..page_count)
            .map(|_| (alloc(), alloc(), alloc()))
            .collect();

        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids(page_ids.iter().map(|(p, _, _)| *p))
            .count(page_count as i32);
        pdf.document_info(info)
            .title(TextStr(&self.title))
            .producer(TextStr(concat!("reliquary ", env!("CARGO_PKG_VERSION"))));

        let m = &self.metrics;
        {
            let mut dict = pdf.indirect(font).dict();
            dict.pair(Name(b"Type"), Name(b"Font"));
            dict.pair(Name(b"Subtype"), Name(b"TrueType"));
            dict.pair(Name(b"BaseFont"), Name(FONT_NAME));
            dict.pair(Name(b"FirstChar"), 32);
            dict.pair(Name(b"LastChar"), 255);
            dict.insert(Name(b"Widths"))
                .array()
                .items((32..=255u8).map(|c| m.widths[usize::from(c)]));
            dict.pair(Name(b"FontDescriptor"), descriptor);
            dict.pair(Name(b"Encoding"), Name(b"WinAnsiEncoding"));
        }
        pdf.font_descriptor(descriptor)
            .name(Name(FONT_NAME))
            .flags(FontFlags::NON_SYMBOLIC)
            .bbox(m.bbox)
            .italic_angle(0.0)
            .ascent(m.ascent)
            .descent(m.descent)
            .cap_height(m.cap_height)
            .stem_v(80.0)
            .font_file2(font_file);
        // Courier is one of the 14 standard fonts every PDF reader has.
        pdf.type1_font(mono)
            .base_font(Name(b"Courier"))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(FONT, 6);
        pdf.stream(font_file, &compressed)
            .filter(Filter::FlateDecode)
            .pair(Name(b"Length1"), FONT.len() as i32);

        for (i, (body, (page_id, content_id, footer_id))) in
            done.into_iter().zip(&page_ids).enumerate()
        {
            // Page numbers, so a printed review can be checked for completeness.
            let footer = format!("page {} of {page_count}", i + 1);
            let mut content = Content::new();
            content.begin_text();
            content.set_font(Name(b"F1"), 7.0);
            content.set_text_matrix([1.0, 0.0, 0.0, 1.0, PAGE_WIDTH - MARGIN - 50.0, 24.0]);
            content.show(Str(&encode_win_ansi(&footer)));
            content.end_text();
            let mut page = pdf.page(*page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
            page.parent(tree);
            page.contents_array([*content_id, *footer_id]);
            page.resources()
                .fonts()
                .pair(Name(b"F1"), font)
                .pair(Name(b"F2"), mono);
            page.finish();
            pdf.stream(*content_id, &body).filter(Filter::FlateDecode);
            pdf.stream(*footer_id, &content.finish());
        }
        pdf.finish()
    }

    fn new_page(&mut self) {
        if let Some(finished) = self.pages.pop() {
            self.done.push(miniz_oxide::deflate::compress_to_vec_zlib(
                &finished.finish(),
                6,
            ));
        }
        self.pages.push(Content::new());
        self.y = PAGE_HEIGHT - MARGIN;
    }

    fn space_for(&mut self, height: f32) {
        if self.y - height < MARGIN {
            self.new_page();
        }
    }

    fn page(&mut self) -> &mut Content {
        if self.pages.is_empty() {
            self.new_page();
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    fn text_at(&mut self, x: f32, y: f32, size: f32, text: &str) {
        let bytes = encode_win_ansi(text);
        let page = self.page();
        page.begin_text();
        page.set_font(Name(b"F1"), size);
        page.set_text_matrix([1.0, 0.0, 0.0, 1.0, x, y]);
        page.show(Str(&bytes));
        page.end_text();
    }

    /// Breaks `text` into lines no wider than `width` points: at spaces,
    /// and inside words longer than a line. Newlines are kept.
    fn wrap(&self, text: &str, width: f32, size: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split(' ') {
                let candidate = if line.is_empty() {
                    word.to_string()
                } else {
                    format!("{line} {word}")
                };
                if self.metrics.width(&candidate, size) <= width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                for c in word.chars() {
                    line.push(c);
                    if self.metrics.width(&line, size) > width {
                        line.pop();
                        lines.push(std::mem::take(&mut line));
                        line.push(c);
                    }
                }
            }
            lines.push(line);
        }
        lines
    }
}

/// Glyph widths (in 1/1000 em) of the WinAnsi codes and the font box.
#[derive(Debug)]
struct Metrics {
    widths: [f32; 256],
    bbox: Rect,
    ascent: f32,
    descent: f32,
    cap_height: f32,
}

impl Metrics {
    fn load() -> Result<Self, PdfError> {
        let face = ttf_parser::Face::parse(FONT, 0).map_err(|e| PdfError::Font(e.to_string()))?;
        let scale = 1000.0 / f32::from(face.units_per_em());
        let unicode: HashMap<u8, char> = (32..=255u8).map(|b| (b, decode_win_ansi(b))).collect();
        let mut widths = [0.0; 256];
        for (byte, c) in unicode {
            let advance = face
                .glyph_index(c)
                .and_then(|g| face.glyph_hor_advance(g))
                .unwrap_or(0);
            widths[usize::from(byte)] = f32::from(advance) * scale;
        }
        let b = face.global_bounding_box();
        Ok(Self {
            widths,
            bbox: Rect::new(
                f32::from(b.x_min) * scale,
                f32::from(b.y_min) * scale,
                f32::from(b.x_max) * scale,
                f32::from(b.y_max) * scale,
            ),
            ascent: f32::from(face.ascender()) * scale,
            descent: f32::from(face.descender()) * scale,
            cap_height: face
                .capital_height()
                .map_or(730.0, |h| f32::from(h) * scale),
        })
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        encode_win_ansi(text)
            .iter()
            .map(|b| self.widths[usize::from(*b)])
            .sum::<f32>()
            * size
            / 1000.0
    }
}

/// The WinAnsi code of each character; characters outside it become `?`.
fn encode_win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' | '\u{a0}'..='\u{ff}' => c as u8,
            '\u{2014}' => 0x97,
            '\u{2013}' => 0x96,
            '\u{2026}' => 0x85,
            '\u{2018}' => 0x91,
            '\u{2019}' => 0x92,
            '\u{201c}' => 0x93,
            '\u{201d}' => 0x94,
            '\u{2022}' => 0x95,
            '\u{20ac}' => 0x80,
            _ => b'?',
        })
        .collect()
}

/// The character of a WinAnsi code (the codes [`encode_win_ansi`] uses).
fn decode_win_ansi(byte: u8) -> char {
    match byte {
        0x97 => '\u{2014}',
        0x96 => '\u{2013}',
        0x85 => '\u{2026}',
        0x91 => '\u{2018}',
        0x92 => '\u{2019}',
        0x93 => '\u{201c}',
        0x94 => '\u{201d}',
        0x95 => '\u{2022}',
        0x80 => '\u{20ac}',
        b => char::from(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_are_broken_and_lines_fit() {
        let layout = Layout::new("t").expect("font");
        let hex = "ab".repeat(64);
        let lines = layout.wrap(&format!("sig {hex}"), 200.0, BODY_SIZE);
        assert!(lines.len() > 1);
        assert_eq!(lines.concat().replace(' ', ""), format!("sig{hex}"));
        for l in &lines {
            assert!(layout.metrics.width(l, BODY_SIZE) <= 200.0, "{l}");
        }
    }

    #[test]
    fn the_em_dash_of_a_checkpoint_survives_encoding() {
        assert_eq!(encode_win_ansi("a\u{2014}b"), vec![b'a', 0x97, b'b']);
        assert_eq!(decode_win_ansi(0x97), '\u{2014}');
        assert_eq!(encode_win_ansi("\u{25b8}"), b"?");
    }
}

//! A pure parser for `/proc/self/mountinfo` (see proc(5)).

use std::ffi::OsString;
use std::io::{self, BufRead, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use super::DevNum;

/// Lines longer than this are refused rather than buffered without bound.
const MAX_LINE: u64 = 64 * 1024;

/// One mount, as the kernel describes it in `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's unique id.
    pub mount_id: u32,
    /// The id of the parent mount.
    pub parent_id: u32,
    /// The `st_dev` of files on this mount (`major:minor`).
    pub devnum: DevNum,
    /// The directory of the file system mounted here (bind mounts).
    pub root: PathBuf,
    /// Where it is mounted, with octal escapes decoded.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// The file-system type (`ext4`, `ntfs3`).
    pub fs_type: String,
    /// The mount source (`/dev/sda1`), with octal escapes decoded.
    pub source: PathBuf,
}

/// A `mountinfo` stream that could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    #[error("could not read mountinfo line {line}")]
    Read { line: usize, source: io::Error },
    #[error("mountinfo line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("mountinfo line {line} is malformed: {reason}")]
    Malformed { line: usize, reason: &'static str },
}

/// Parses a whole `mountinfo` stream. Blank lines are skipped; any other line
/// that does not parse is an error naming its (1-based) line number.
pub fn parse_mountinfo<R: BufRead>(mut reader: R) -> Result<Vec<MountEntry>, MountinfoError> {
    let mut entries = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        line += 1;
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| MountinfoError::Read { line, source })?;
        if n == 0 {
            return Ok(entries);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if n as u64 > MAX_LINE {
            return Err(MountinfoError::LineTooLong { line });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        entries
            .push(parse_line(&buf).map_err(|reason| MountinfoError::Malformed { line, reason })?);
    }
}

/// Parses one line: `id parent maj:min root mountpoint options [optional...]
/// - fstype source superoptions`.
fn parse_line(line: &[u8]) -> Result<MountEntry, &'static str> {
    let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
    let mut next = |what| fields.next().ok_or(what);
    let mount_id = parse_u32(next("missing mount id")?).ok_or("bad mount id")?;
    let parent_id = parse_u32(next("missing parent id")?).ok_or("bad parent id")?;
    let devnum = DevNum::parse(&text(next("missing major:minor")?)).ok_or("bad major:minor")?;
    let root = unescape(next("missing root")?);
    let mount_point = unescape(next("missing mount point")?);
    let options = text(next("missing mount options")?);
    // Optional fields (shared:N, master:N, ...) run up to a lone "-".
    loop {
        if next("missing the \"-\" separator")? == b"-" {
            break;
        }
    }
    let fs_type = text(next("missing file-system type")?);
    let source = unescape(next("missing mount source")?);
    Ok(MountEntry {
        mount_id,
        parent_id,
        devnum,
        root,
        mount_point,
        options,
        fs_type,
        source,
    })
}

fn parse_u32(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

/// Decodes the kernel's `\NNN` octal escapes (space, tab, newline, backslash).
/// A backslash not followed by three octal digits is kept as it is.
fn unescape(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(&[a, b, c]) = field.get(i + 1..i + 4) {
                let octal = |d: u8| (b'0'..=b'7').contains(&d).then(|| u32::from(d - b'0'));
                if let (Some(a), Some(b), Some(c)) = (octal(a), octal(b), octal(c)) {
                    if let Ok(byte) = u8::try_from(a * 64 + b * 8 + c) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
95 27 8:2 / /media/My\\040Disk rw,nosuid master:3 shared:7 - ntfs3 /dev/sda2 rw,uid=0
96 27 8:3 /sub /mnt/bind rw - ext4 /dev/sda3 rw
";

    #[test]
    fn parses_fields_optional_tags_and_escapes() {
        let m = parse_mountinfo(SAMPLE.as_bytes()).expect("parse");
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[1].devnum,
            DevNum {
                major: 254,
                minor: 0
            }
        );
        assert_eq!(m[1].mount_point, PathBuf::from("/"));
        assert_eq!(m[1].source, PathBuf::from("/dev/vda"));
        assert_eq!(m[2].mount_point, PathBuf::from("/media/My Disk"));
        assert_eq!(m[2].fs_type, "ntfs3");
        assert_eq!(m[2].mount_id, 95);
        assert_eq!(m[2].parent_id, 27);
        assert_eq!(m[3].root, PathBuf::from("/sub"));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for (input, line) in [
            ("22 27 0:21 / /proc rw,relatime proc proc rw\n", 1),
            (
                "\n27 1 254:0 / / rw - ext4 /dev/vda rw\nx 1 254:0 / / rw - ext4 a b\n",
                3,
            ),
            ("27 1 254 / / rw - ext4 /dev/vda rw\n", 1),
            ("27 1 254:0 / / rw -\n", 1),
            ("27", 1),
        ] {
            match parse_mountinfo(input.as_bytes()) {
                Err(MountinfoError::Malformed { line: l, .. }) => assert_eq!(l, line, "{input:?}"),
                other => panic!("{input:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn odd_escapes_and_non_utf8_do_not_panic() {
        let input = b"1 1 8:1 / /a\\\\b\\0\\777\\12x\xff rw - ext4 /dev/x\\ rw\n";
        let m = parse_mountinfo(&input[..]).expect("parse");
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            m[0].mount_point.as_os_str().as_bytes(),
            b"/a\\\\b\\0\\777\\12x\xff"
        );
        assert_eq!(m[0].source, PathBuf::from("/dev/x\\"));
    }

    #[test]
    fn over_long_line_is_refused() {
        let long = format!("1 1 8:1 / /{} rw - ext4 /dev/x rw\n", "a".repeat(70_000));
        assert!(matches!(
            parse_mountinfo(long.as_bytes()),
            Err(MountinfoError::LineTooLong { line: 1 })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and a byte-rotated variant.
        let bytes = SAMPLE.as_bytes();
        for end in 0..bytes.len() {
            let _ = parse_mountinfo(&bytes[..end]);
            let rotated: Vec<u8> = bytes[..end]
                .iter()
                .map(|b| b.wrapping_add(end as u8))
                .collect();
            let _ = parse_mountinfo(&rotated[..]);
        }
    }
}

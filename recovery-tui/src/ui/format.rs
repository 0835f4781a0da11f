//! Numbers and times as the technician reads them.

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `256.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A disk size as the label on the drive says it: decimal GB, plus binary.
pub fn disk_size(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1} GB ({})", n as f64 / 1e9, bytes(n))
    } else {
        bytes(n)
    }
}

/// A Unix time (seconds) as `2026-03-01 08:00 UTC`.
pub fn date_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// A Unix time (seconds) as `2026-03-01`.
pub fn date(unix: i64) -> String {
    date_time(unix).chars().take(10).collect()
}

/// Seconds as `m:ss` or `h:mm:ss`.
pub fn duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The first `n` characters of `text`, ending in `...` when cut: three
/// ASCII dots, which every console font draws.
pub fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(n.saturating_sub(3)).collect();
        out.push_str("...");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_times_and_durations() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(256 << 20), "256.0 MiB");
        assert_eq!(disk_size(480_103_981_056), "480.1 GB (447.1 GiB)");
        assert_eq!(date_time(1_772_352_000), "2026-03-01 08:00 UTC");
        assert_eq!(date(1_772_352_000), "2026-03-01");
        assert_eq!(duration(75), "1:15");
        assert_eq!(duration(3_725), "1:02:05");
        assert_eq!(clip("abcdefgh", 6), "abc...");
    }
}

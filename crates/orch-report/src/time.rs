//! Times and durations as reports show them.

use chrono::{DateTime, FixedOffset};

/// Parses an RFC 3339 time as records store it.
pub(crate) fn parse(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text.trim()).ok()
}

/// A time for people: `2026-11-21 20:16:00 UTC` (or the record's text when it does not parse).
pub(crate) fn display(text: &str) -> String {
    match parse(text) {
        Some(t) if t.offset().local_minus_utc() == 0 => {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        }
        Some(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => text.to_owned(),
    }
}

/// Milliseconds from `from` to `to` (0 when `to` is earlier).
pub(crate) fn millis_between(from: &DateTime<FixedOffset>, to: &DateTime<FixedOffset>) -> u64 {
    u64::try_from(to.signed_duration_since(*from).num_milliseconds()).unwrap_or(0)
}

/// A duration for people: `850ms`, `4.2s`, `3m 04s`, `1h 02m`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let tenths = ms.saturating_add(50) / 100;
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else if ms < 3_600_000 {
        let s = ms.saturating_add(500) / 1_000;
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        let m = ms.saturating_add(30_000) / 60_000;
        format!("{}h {:02}m", m / 60, m % 60)
    }
}

/// A byte size for people: `512 B`, `4.0 KiB`, `12.3 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision loss is fine for display.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        for (ms, text) in [
            (0, "0ms"),
            (850, "850ms"),
            (1_000, "1.0s"),
            (4_249, "4.2s"),
            (59_949, "59.9s"),
            (184_000, "3m 04s"),
            (3_720_000, "1h 02m"),
        ] {
            assert_eq!(duration(ms), text, "{ms}");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(4096), "4.0 KiB");
        assert_eq!(size(5 * 1024 * 1024 + 300 * 1024), "5.3 MiB");
    }

    #[test]
    fn times_display_in_utc_or_with_offset() {
        assert_eq!(
            display("2026-11-21T20:16:00.123Z"),
            "2026-11-21 20:16:00 UTC"
        );
        assert_eq!(
            display("2026-11-21T20:16:00+02:00"),
            "2026-11-21 20:16:00 +02:00"
        );
        assert_eq!(display("not a time"), "not a time");
        let a = parse("2026-11-21T20:16:00Z").unwrap();
        let b = parse("2026-11-21T20:16:01.5Z").unwrap();
        assert_eq!(millis_between(&a, &b), 1_500);
        assert_eq!(millis_between(&b, &a), 0);
    }
}

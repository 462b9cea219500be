//! Times and durations as reports show them.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, NaiveDate};

/// Parses an RFC 3339 time as records store it.
pub(crate) fn parse(text: &str) -> Option<DateTime<FixedOffset>> {
    utc_millis(text).or_else(|| DateTime::parse_from_rfc3339(text.trim()).ok())
}

/// The time `text` is when it is written the way orch writes times,
/// `2026-11-21T20:16:00.123Z` (UTC, milliseconds, no leap second): read without a parser.
/// Any other text is for [`DateTime::parse_from_rfc3339`].
fn utc_millis(text: &str) -> Option<DateTime<FixedOffset>> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let second = num(17, 19)?;
    if second > 59 {
        // A leap second: chrono's reader knows what to make of it.
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let t = date.and_hms_milli_opt(num(11, 13)?, num(14, 16)?, second, num(20, 23)?)?;
    Some(t.and_utc().fixed_offset())
}

/// `text` as JUnit XML writes a time (`%Y-%m-%dT%H:%M:%S%.3f%:z`, as quick-junit does:
/// `2026-11-21T20:16:00.123+00:00`), appended to `out`; false when it is not a time.
pub(crate) fn push_junit(out: &mut String, text: &str) -> bool {
    if utc_millis(text).is_some() {
        out.push_str(&text[..23]);
        out.push_str("+00:00");
        return true;
    }
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(t) => {
            let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3f%:z"));
            true
        }
        Err(_) => false,
    }
}

/// Seconds with three decimals, as JUnit XML writes durations (`{:.3}` of the seconds as
/// quick-junit writes them), appended to `out`.
pub(crate) fn push_seconds(out: &mut String, ms: u64) {
    // Below 10^12 ms (31 years) the float's error is far below the last decimal: the
    // digits are exact.
    if ms < 1_000_000_000_000 {
        push_u64(out, ms / 1000);
        out.push('.');
        push_three_digits(out, ms % 1000);
    } else {
        let secs = std::time::Duration::from_millis(ms).as_secs_f64();
        let _ = write!(out, "{secs:.3}");
    }
}

/// A time for people: `2026-11-21 20:16:00 UTC` (or the record's text when it does not parse).
pub(crate) fn display(text: &str) -> String {
    let mut out = String::with_capacity(23);
    push_display(&mut out, text);
    out
}

/// [`display`], appended to `out`.
pub(crate) fn push_display(out: &mut String, text: &str) {
    if utc_millis(text).is_some() {
        out.push_str(&text[..10]);
        out.push(' ');
        out.push_str(&text[11..19]);
        out.push_str(" UTC");
        return;
    }
    match parse(text) {
        Some(t) if t.offset().local_minus_utc() == 0 => {
            let _ = write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S UTC"));
        }
        Some(t) => {
            let _ = write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S %:z"));
        }
        None => out.push_str(text),
    }
}

/// Milliseconds from `from` to `to` (0 when `to` is earlier).
pub(crate) fn millis_between(from: &DateTime<FixedOffset>, to: &DateTime<FixedOffset>) -> u64 {
    u64::try_from(to.signed_duration_since(*from).num_milliseconds()).unwrap_or(0)
}

/// A duration for people: `850ms`, `4.2s`, `3m 04s`, `1h 02m`.
pub(crate) fn duration(ms: u64) -> String {
    let mut out = String::with_capacity(8);
    push_duration(&mut out, ms);
    out
}

/// [`duration`], appended to `out`.
pub(crate) fn push_duration(out: &mut String, ms: u64) {
    if ms < 1_000 {
        push_u64(out, ms);
        out.push_str("ms");
    } else if ms < 60_000 {
        let tenths = ms.saturating_add(50) / 100;
        push_u64(out, tenths / 10);
        out.push('.');
        push_u64(out, tenths % 10);
        out.push('s');
    } else if ms < 3_600_000 {
        let s = ms.saturating_add(500) / 1_000;
        push_u64(out, s / 60);
        out.push_str("m ");
        push_two_digits(out, s % 60);
        out.push('s');
    } else {
        let m = ms.saturating_add(30_000) / 60_000;
        push_u64(out, m / 60);
        out.push_str("h ");
        push_two_digits(out, m % 60);
        out.push('m');
    }
}

/// Appends `n` in decimal (as `{n}` writes it).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit: below 10.
        #[allow(clippy::cast_possible_truncation)]
        let d = (n % 10) as u8;
        digits[at] = b'0' + d;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// Appends `n`, below 1000, as three digits (as `{n:03}` writes it).
pub(crate) fn push_three_digits(out: &mut String, n: u64) {
    if n < 100 {
        out.push('0');
    }
    push_two_digits(out, n);
}

/// Appends `n`, below 100, as two digits (as `{n:02}` writes it).
fn push_two_digits(out: &mut String, n: u64) {
    if n < 10 {
        out.push('0');
    }
    push_u64(out, n);
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
    fn numbers_are_written_as_format_writes_them() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values: Vec<u64> = (0..2_000).chain([u64::MAX, 10_u64.pow(19)]).collect();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for n in values {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
            let old = if n < 1_000 {
                format!("{n}ms")
            } else if n < 60_000 {
                let tenths = n.saturating_add(50) / 100;
                format!("{}.{}s", tenths / 10, tenths % 10)
            } else if n < 3_600_000 {
                let s = n.saturating_add(500) / 1_000;
                format!("{}m {:02}s", s / 60, s % 60)
            } else {
                let m = n.saturating_add(30_000) / 60_000;
                format!("{}h {:02}m", m / 60, m % 60)
            };
            assert_eq!(duration(n), old, "{n}");
            if n < 1000 {
                out.clear();
                push_three_digits(&mut out, n);
                assert_eq!(out, format!("{n:03}"));
            }
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(4096), "4.0 KiB");
        assert_eq!(size(5 * 1024 * 1024 + 300 * 1024), "5.3 MiB");
    }

    /// The fast paths against chrono: reading, JUnit's format and the display form.
    #[test]
    fn times_written_by_orch_read_as_chrono_reads_them() {
        let chrono_display = |text: &str| match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(t) if t.offset().local_minus_utc() == 0 => {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            }
            Ok(t) => t.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
            Err(_) => text.to_owned(),
        };
        for text in [
            "2026-11-21T20:16:00.123Z",
            "2026-02-28T23:59:59.999Z",
            "2024-02-29T00:00:00.000Z",
            "2026-02-29T00:00:00.000Z",
            "1900-02-29T00:00:00.000Z",
            "2000-02-29T12:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-00-10T00:00:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T23:60:00.000Z",
            "2016-12-31T23:59:60.000Z",
            "2016-12-31T23:59:60.500Z",
            "0000-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "2026-01-01t00:00:00.000z",
            "2026-01-01T00:00:00.000+02:00",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.5Z",
            " 2026-01-01T00:00:00.000Z ",
            "2026-01-01T00:00:00.00xZ",
            "+026-01-01T00:00:00.000Z",
            "2026-01-01 00:00:00.000Z",
            "",
            "not a time",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text.trim()).ok();
            assert_eq!(parse(text), chrono, "{text:?}");
            let mut junit = String::new();
            let written = push_junit(&mut junit, text);
            assert_eq!(
                written.then_some(junit),
                chrono.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()),
                "{text:?}"
            );
            assert_eq!(display(text), chrono_display(text), "{text:?}");
        }
    }

    #[test]
    fn junit_seconds_are_quick_junits() {
        let mut values: Vec<u64> = (0..5_000).collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x % 1_000_000_000_000);
            values.push(x >> (x % 64));
        }
        values.extend([
            999_999_999_999,
            1_000_000_000_000,
            1_152_921_504_606_846_977,
            u64::MAX,
        ]);
        for ms in values {
            let mut ours = String::new();
            push_seconds(&mut ours, ms);
            let theirs = format!("{:.3}", std::time::Duration::from_millis(ms).as_secs_f64());
            assert_eq!(ours, theirs, "{ms}");
        }
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

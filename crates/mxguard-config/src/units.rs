//! Durations (`"5m"`) and sizes (`"25MB"`) as written in the configuration.

use std::time::Duration;

/// Parses a duration: a non-negative integer immediately followed by one of
/// the units `ms`, `s`, `m`, `h`, `d` (for example `"500ms"`, `"5m"`, `"36d"`,
/// `"0s"`).
///
/// A bare number is refused because it is ambiguous (seconds? minutes?), and
/// so is anything else (`"5 minutes"`, `"1.5h"`, `"5M"`). Units are
/// case-sensitive. The error is a sentence meant to be shown to the
/// administrator after the key it belongs to.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like \"5m\" (units ms, s, m, h, d), got {s:?}");
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err(bad());
    }
    if unit.is_empty() {
        return Err(format!(
            "expected a duration like \"5m\" (units ms, s, m, h, d), got {s:?}: \
             a bare number is ambiguous, add a unit (\"{s}s\" for seconds)"
        ));
    }
    let n: u64 = digits.parse().map_err(|_| too_large(s))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(|| too_large(s))?;
    Ok(Duration::from_millis(millis))
}

/// Parses a size in bytes: a non-negative integer with an optional unit,
/// `B`, `KB`, `MB`, `GB` (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of
/// 1024), case-insensitive (`"25MB"`, `"512kib"`, `"1000"`). A bare number
/// is a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("expected a size like \"25MB\", got {s:?} (units B, KB, MB, GB, KiB, MiB, GiB)");
    let (digits, unit) = split_number(s);
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| too_large(s))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(multiplier).ok_or_else(|| too_large(s))
}

/// Splits `s` into its leading ASCII digits and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn too_large(s: &str) -> String {
    format!("{s:?} is too large")
}

/// Formats a duration the way the configuration writes it, with the largest
/// unit that divides it exactly (`"5m"`, `"1500ms"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms == 0 {
        "0s".to_string()
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, u64)] = &[
            ("0s", 0),
            ("0ms", 0),
            ("500ms", 500),
            ("1s", 1_000),
            ("5m", 300_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("36d", 36 * 86_400_000),
            ("007s", 7_000),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(*millis)),
                "{text}"
            );
        }
        let bad = [
            "",
            "s",
            "5",
            "300",
            "5 minutes",
            "5 m",
            " 5m",
            "5m ",
            "5M",
            "5S",
            "1.5h",
            "-1s",
            "+1s",
            "5min",
            "5sec",
            "1h30m",
            "5mss",
            "ms",
            "0x10s",
            "5µs",
            "٣s",
            "99999999999999999999s",
            "999999999999999999d",
        ];
        for text in bad {
            assert!(parse_duration(text).is_err(), "{text:?} should be refused");
        }
        assert_eq!(
            parse_duration("5 minutes").unwrap_err(),
            r#"expected a duration like "5m" (units ms, s, m, h, d), got "5 minutes""#
        );
        assert!(
            parse_duration("300")
                .unwrap_err()
                .contains("bare number is ambiguous")
        );
        assert!(
            parse_duration("999999999999999999d")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1000", 1000),
            ("10B", 10),
            ("10b", 10),
            ("1KB", 1_000),
            ("1kb", 1_000),
            ("25MB", 25_000_000),
            ("25mb", 25_000_000),
            ("25Mb", 25_000_000),
            ("2GB", 2_000_000_000),
            ("1KiB", 1_024),
            ("1kib", 1_024),
            ("1MiB", 1_048_576),
            ("1GIB", 1_073_741_824),
            ("16777216", 16_777_216),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(*bytes), "{text}");
        }
        let bad = [
            "",
            "MB",
            "25XB",
            "25 MB",
            "1.5MB",
            "-1",
            "25M",
            "25K",
            "1TB",
            "25MBs",
            "ten",
            "99999999999999999999",
            "99999999999GB",
        ];
        for text in bad {
            assert!(parse_size(text).is_err(), "{text:?} should be refused");
        }
        assert_eq!(
            parse_size("25XB").unwrap_err(),
            r#"expected a size like "25MB", got "25XB" (units B, KB, MB, GB, KiB, MiB, GiB)"#
        );
    }

    #[test]
    fn formatting_durations() {
        for (text, expected) in [
            ("300s", "5m"),
            ("1500ms", "1500ms"),
            ("0ms", "0s"),
            ("48h", "2d"),
        ] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), expected);
        }
    }
}

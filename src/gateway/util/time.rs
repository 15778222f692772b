//! The UTC calendar and duration spellings (no date crate in the wasm builds).

pub const DAY_MS: u64 = 86_400_000;

/// Whether a memo entry `age_ms` old, trusted for `ttl_ms`, is due to be read again (after a
/// response, while requests keep using it): from half its life on. Requests at a steady pace
/// of at least one per TTL (or never more than half the TTL apart, whatever the pace) then
/// always find it memoized — with a window of only the last second, a request every 3 s under
/// a 5 s TTL found the memo expired every other time. The trust bound stays `ttl_ms` after
/// the read.
pub fn refresh_due(age_ms: u64, ttl_ms: u64) -> bool {
    age_ms >= ttl_ms / 2
}

/// Days since 1970-01-01 of a unix time in ms.
pub fn days_of(ms: u64) -> i64 {
    (ms / DAY_MS) as i64
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// `YYYY-MM-DD`. Digits placed by hand for years 0-9999 (a request names its day two or
/// three times; `format!` cost ~1,300 instructions a call where code is built for size).
pub fn day_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    let Ok(year @ 0..=9999) = u32::try_from(y) else { return format!("{y:04}-{m:02}-{d:02}") };
    // Bytes, not chars: no UTF-8 encoding per push.
    let digit = |n: u32| b'0' + (n % 10) as u8;
    let text = [digit(year / 1000), digit(year / 100), digit(year / 10), digit(year), b'-'];
    let text = [text, [digit(m / 10), digit(m), b'-', digit(d / 10), digit(d)]].concat();
    // ASCII digits and dashes: always UTF-8.
    String::from_utf8(text).unwrap_or_default()
}

/// Parses a strict `YYYY-MM-DD` into a day number.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    // Reject dates like 2026-02-30 by round-tripping.
    (civil_from_days(days) == (i64::from(y), m, d)).then_some(days)
}

/// First day (day number) of the month after the one containing `days`.
pub fn next_month_start(days: i64) -> i64 {
    let (y, m, _) = civil_from_days(days);
    if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    }
}

/// OpenAI's reset spelling: `250ms`, `7s`, `6m0s`, `1h2m3s`; whole seconds are rounded up.
pub fn duration_string(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec}s"),
        (h, min, sec) => format!("{h}h{min}m{sec}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(day_string(0), "1970-01-01");
        assert_eq!(day_string(days_of(1_700_000_000_000)), "2023-11-14");
        for days in [-1000, 0, 59, 60, 365, 11_016, 19_782, 20_000, 50_000] {
            assert_eq!(parse_day(&day_string(days)), Some(days));
        }
        for days in (-800_000..3_000_000).step_by(997).chain([-719_528, -719_529, 2_932_896, 2_932_897]) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(day_string(days), format!("{y:04}-{m:02}-{d:02}"), "{days}");
        }
        assert_eq!(parse_day("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        for bad in ["2023-02-29", "2024-13-01", "2024-1-01", "2024-01-00", "20240101xx", "abcd-ef-gh", "+024-01-01"] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert_eq!(next_month_start(days_from_civil(2024, 12, 31)), days_from_civil(2025, 1, 1));
        assert_eq!(next_month_start(days_from_civil(2024, 2, 1)), days_from_civil(2024, 3, 1));
    }
}

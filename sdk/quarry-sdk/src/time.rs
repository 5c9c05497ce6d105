//! Timestamps: event and finding times are milliseconds since the Unix epoch
//! (UTC). The guest has no clock; these helpers only convert.

/// One second in milliseconds.
pub const SECOND_MS: i64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Formats `ms` (milliseconds since the Unix epoch) as RFC 3339 in UTC with
/// millisecond precision, for example `2023-09-25T20:39:50.822Z`.
///
/// ```
/// assert_eq!(quarry_sdk::time::format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / HOUR_MS,
        in_day % HOUR_MS / MINUTE_MS,
        in_day % MINUTE_MS / SECOND_MS,
        in_day % SECOND_MS,
    )
}

/// Parses an RFC 3339 time (`2023-09-25T20:39:50.822397Z`,
/// `2023-09-25 22:39:50+02:00`) into milliseconds since the Unix epoch.
///
/// Fractions finer than a millisecond are truncated. The error says what was
/// expected, so it can be passed on to the hunter as is.
///
/// ```
/// use quarry_sdk::time::parse_rfc3339_ms;
/// assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Ok(1_500));
/// assert!(parse_rfc3339_ms("yesterday").is_err());
/// ```
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let invalid = || format!("`{text}` is not an RFC 3339 time such as `2023-09-25T20:39:50.822Z`");
    // Every valid time is ASCII; checking first makes the byte-index slicing
    // below safe for any input.
    if !text.is_ascii() {
        return Err(invalid());
    }
    let bytes = text.as_bytes();
    // Fixed-width part: `YYYY-MM-DDTHH:MM:SS`.
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(invalid());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let digits = &text[range];
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().map_err(|_| invalid())
        } else {
            Err(invalid())
        }
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // 60 is a leap second; it is folded into the next minute.
        || second > 60
    {
        return Err(invalid());
    }

    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        for (digit, scale) in fraction.bytes().take(digits.min(3)).zip([100, 10, 1]) {
            millis += i64::from(digit - b'0') * scale;
        }
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(invalid()),
            };
            let hours = number_in(rest, 1..3).ok_or_else(invalid)?;
            let minutes = number_in(rest, 4..6).ok_or_else(invalid)?;
            if hours > 23 || minutes > 59 {
                return Err(invalid());
            }
            sign * (hours * 60 + minutes)
        }
        _ => return Err(invalid()),
    };

    let days = days_from_civil(year, month, day);
    Ok(
        days * DAY_MS + hour * HOUR_MS + minute * MINUTE_MS + second * SECOND_MS + millis
            - offset_minutes * MINUTE_MS,
    )
}

fn number_in(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let digits = text.get(range)?;
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's `days_from_civil` / `civil_from_days`: exact for the whole
// proleptic Gregorian calendar, with no tables and no loops.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_evtx_system_time() {
        assert_eq!(
            parse_rfc3339_ms("2023-09-25T20:39:50.822397Z"),
            Ok(1_695_674_390_822)
        );
    }

    #[test]
    fn parses_offsets_and_space_separator() {
        assert_eq!(
            parse_rfc3339_ms("2023-09-25 22:39:50+02:00"),
            parse_rfc3339_ms("2023-09-25T20:39:50Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2023-09-25T15:09:50.5-05:30"),
            Ok(1_695_674_390_500)
        );
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2023-09-25",
            "2023-09-25T20:39:50",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-09-25T24:00:00Z",
            "2023-09-25T20:39:50.Z",
            "2023-09-25T20:39:50+0200",
            "2023-09-25T20:39:5xZ",
        ] {
            let error = parse_rfc3339_ms(bad).expect_err(bad);
            assert!(error.contains("RFC 3339"), "{error}");
        }
        assert!(parse_rfc3339_ms("2024-02-29T00:00:00Z").is_ok());
    }

    #[test]
    fn format_round_trips() {
        for ms in [
            0,
            1_695_674_390_822,
            -1,
            951_782_400_000, // 2000-02-29
            253_402_300_799_999,
        ] {
            let text = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&text), Ok(ms), "{text}");
        }
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339_ms(1_695_674_390_822),
            "2023-09-25T20:39:50.822Z"
        );
    }
}

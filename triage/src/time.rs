//! Durations and dates as the config writes them, and the one transcendental
//! function triage needs (exponential decay), computed with `+ - * /` only so
//! that every replica gets bit-identical results whatever its libm.

/// One second in milliseconds.
pub const SECOND_MS: i64 = 1_000;
/// One minute in milliseconds.
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
/// One hour in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// One week in milliseconds.
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// Parses `90s`, `15m`, `1h`, `1h30m`, `30d`, `2w`, `500ms` into milliseconds.
/// A bare number is refused: the unit is what makes a config readable.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let hint = "write a number and a unit, like `90s`, `15m`, `1h`, `1h30m`, `30d` or `2w`";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    let bytes = t.as_bytes();
    let mut total: i64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("`{t}` is not a duration; {hint}"));
        }
        let number: i64 = t[start..i]
            .parse()
            .map_err(|_| format!("`{t}` is too long a duration"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &t[unit_start..i] {
            "ms" => 1,
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            "w" => WEEK_MS,
            "" => return Err(format!("`{t}` has a number without a unit; {hint}")),
            other => return Err(format!("unknown unit `{other}` in `{t}`; {hint}")),
        };
        total = number
            .checked_mul(unit)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("`{t}` is too long a duration"))?;
    }
    Ok(total)
}

/// Writes milliseconds the way [`parse_duration`] reads them (`1h30m`).
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    // Weeks only when the whole duration is weeks: `30d` reads better than `4w2d`.
    let weeks = if rest.is_multiple_of(WEEK_MS as u64) {
        WEEK_MS as u64
    } else {
        u64::MAX
    };
    for (unit, name) in [
        (weeks, "w"),
        (DAY_MS as u64, "d"),
        (HOUR_MS as u64, "h"),
        (MINUTE_MS as u64, "m"),
        (SECOND_MS as u64, "s"),
        (1, "ms"),
    ] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

/// Parses `2026-06-30` (midnight UTC) or `2026-06-30T12:00:00Z` into
/// milliseconds since the Unix epoch.
pub fn parse_date(text: &str) -> Result<i64, String> {
    let hint = "write a UTC date like `2026-06-30` or `2026-06-30T12:00:00Z`";
    let t = text.trim();
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, rest)) => (d, Some(rest)),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(format!("`{t}` is not a date; {hint}"));
    };
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (Some(year), Some(month), Some(day)) = (num(y, 4), num(m, 2), num(d, 2)) else {
        return Err(format!("`{t}` is not a date; {hint}"));
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(format!("`{t}` is not a calendar date; {hint}"));
    }
    let mut ms = days_from_civil(year, month, day) * DAY_MS;
    if let Some(time) = time {
        let time = time
            .strip_suffix(['Z', 'z'])
            .ok_or_else(|| format!("`{t}`: give times in UTC, ending in `Z`; {hint}"))?;
        let parts: Vec<&str> = time.split(':').collect();
        let [h, mi, s] = parts.as_slice() else {
            return Err(format!("`{t}` has no valid time of day; {hint}"));
        };
        let (Some(h), Some(mi), Some(s)) = (num(h, 2), num(mi, 2), num(s, 2)) else {
            return Err(format!("`{t}` has no valid time of day; {hint}"));
        };
        if h > 23 || mi > 59 || s > 59 {
            return Err(format!("`{t}` has no valid time of day; {hint}"));
        }
        ms += h * HOUR_MS + mi * MINUTE_MS + s * SECOND_MS;
    }
    Ok(ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2^-x` for `x >= 0`, from `+ - * /` and exact power-of-two scaling only,
/// so replicas on different platforms compute the same bits (libm's `exp`
/// and `powf` are not required to be correctly rounded).
pub fn exp2_neg(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x >= 1074.0 {
        return 0.0;
    }
    let whole = x.floor();
    let frac = x - whole;
    // 2^-frac = e^(-frac * ln 2), frac * ln 2 in [0, 0.7): the Taylor series
    // converges to full precision within 20 terms.
    let y = -frac * std::f64::consts::LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=20 {
        term = term * y / f64::from(n);
        sum += term;
    }
    // Halving is exact (until subnormals, where it rounds deterministically).
    let mut out = sum;
    let mut k = whole as u32;
    while k > 0 {
        let step = k.min(60);
        out /= (1u64 << step) as f64;
        k -= step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_units_and_refuse_bare_numbers() {
        assert_eq!(parse_duration("1h"), Ok(HOUR_MS));
        assert_eq!(parse_duration("1h30m"), Ok(HOUR_MS + 30 * MINUTE_MS));
        assert_eq!(parse_duration("30d"), Ok(30 * DAY_MS));
        assert_eq!(parse_duration("2w"), Ok(14 * DAY_MS));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert!(parse_duration("10").unwrap_err().contains("without a unit"));
        assert!(
            parse_duration("1y")
                .unwrap_err()
                .contains("unknown unit `y`")
        );
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(format_duration(30 * DAY_MS), "30d");
        assert_eq!(format_duration(14 * DAY_MS), "2w");
        assert_eq!(format_duration(90 * MINUTE_MS), "1h30m");
        for ms in [
            HOUR_MS,
            90 * MINUTE_MS,
            30 * DAY_MS,
            1_500,
            0,
            15 * DAY_MS + 1,
        ] {
            assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
        }
    }

    #[test]
    fn dates_are_utc_and_checked() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2026-06-30"), Ok(1_782_777_600_000));
        assert_eq!(
            parse_date("2026-06-30T12:00:01Z"),
            Ok(1_782_777_600_000 + 12 * HOUR_MS + 1_000)
        );
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("2024-02-29").is_ok());
        assert!(
            parse_date("2026-06-30T12:00:00")
                .unwrap_err()
                .contains("UTC")
        );
        assert!(parse_date("30/06/2026").is_err());
    }

    #[test]
    fn exp2_neg_matches_powers_of_two() {
        assert_eq!(exp2_neg(0.0), 1.0);
        assert_eq!(exp2_neg(1.0), 0.5);
        assert_eq!(exp2_neg(3.0), 0.125);
        assert!((exp2_neg(0.5) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
        assert!((exp2_neg(2.25) - 2f64.powf(-2.25)).abs() < 1e-15);
        assert_eq!(exp2_neg(5000.0), 0.0);
        assert_eq!(exp2_neg(-1.0), 1.0);
    }
}

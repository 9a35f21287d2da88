//! `PgTimestamp`: a PostgreSQL `timestamptz` as `pgoutput` sends it.
//!
//! The wire form is an `Int64` of microseconds since the PostgreSQL epoch, 2000-01-01 00:00:00
//! UTC (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>);
//! `i64::MAX` and `i64::MIN` are PostgreSQL's `infinity` and `-infinity`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since 2000-01-01 00:00:00 UTC: a commit, prepare or abort time.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

/// Seconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
const POSTGRES_EPOCH_UNIX_SECS: i64 = 946_684_800;
const MICROS_PER_SEC: i128 = 1_000_000;
const SECS_PER_DAY: i128 = 86_400;

impl PgTimestamp {
    /// 2000-01-01 00:00:00 UTC.
    pub const POSTGRES_EPOCH: PgTimestamp = PgTimestamp(0);
    /// PostgreSQL's `infinity` (`DT_NOEND`).
    pub const INFINITY: PgTimestamp = PgTimestamp(i64::MAX);
    /// PostgreSQL's `-infinity` (`DT_NOBEGIN`).
    pub const NEG_INFINITY: PgTimestamp = PgTimestamp(i64::MIN);

    /// Microseconds since the Unix epoch, in a type wide enough that it cannot overflow.
    fn unix_micros(self) -> i128 {
        i128::from(self.0) + i128::from(POSTGRES_EPOCH_UNIX_SECS) * MICROS_PER_SEC
    }

    /// The same instant as a [`SystemTime`], or `None` when it is one of the infinities or lies
    /// outside what `SystemTime` can represent on this platform.
    pub fn to_system_time(self) -> Option<SystemTime> {
        if self == Self::INFINITY || self == Self::NEG_INFINITY {
            return None;
        }
        let micros = self.unix_micros();
        let magnitude = Duration::from_micros(u64::try_from(micros.unsigned_abs()).ok()?);
        if micros >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// The instant of a [`SystemTime`], truncated to microseconds, or `None` when it is out of
    /// PostgreSQL's range.
    pub fn from_system_time(time: SystemTime) -> Option<PgTimestamp> {
        let unix_micros = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i128::try_from(after.as_micros()).ok()?,
            Err(before) => {
                // Round towards the past, as truncating a negative instant must.
                let d = before.duration();
                let whole = i128::try_from(d.as_micros()).ok()?;
                let partial = i128::from(d.subsec_nanos() % 1_000 != 0);
                -(whole + partial)
            }
        };
        let pg = unix_micros - i128::from(POSTGRES_EPOCH_UNIX_SECS) * MICROS_PER_SEC;
        i64::try_from(pg).ok().map(PgTimestamp)
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>): shift the epoch to
/// 0000-03-01 so that leap days fall at the end of a year, then split into 400-year eras.
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i128::from(month <= 2);
    // Both are in range by construction; the fallbacks are never taken.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

impl fmt::Display for PgTimestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-24T02:28:05.123456Z`;
    /// `infinity` and `-infinity` as PostgreSQL prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::INFINITY {
            return f.write_str("infinity");
        }
        if *self == Self::NEG_INFINITY {
            return f.write_str("-infinity");
        }
        let micros = self.unix_micros();
        let secs = micros.div_euclid(MICROS_PER_SEC);
        let frac = micros.rem_euclid(MICROS_PER_SEC);
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
            sod / 3_600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

impl fmt::Debug for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTimestamp({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PgTimestamp from Unix seconds and microseconds.
    fn at(unix_secs: i64, micros: i64) -> PgTimestamp {
        PgTimestamp((unix_secs - POSTGRES_EPOCH_UNIX_SECS) * 1_000_000 + micros)
    }

    #[test]
    fn displays_known_instants() {
        let cases = [
            (PgTimestamp(0), "2000-01-01T00:00:00.000000Z"),
            (PgTimestamp(-1), "1999-12-31T23:59:59.999999Z"),
            (at(0, 0), "1970-01-01T00:00:00.000000Z"),
            (at(1_795_487_285, 123_456), "2026-11-24T02:28:05.123456Z"),
            (at(1_709_251_199, 1), "2024-02-29T23:59:59.000001Z"),
            (at(-2_203_891_200, 0), "1900-03-01T00:00:00.000000Z"),
            (at(4_107_585_600, 500_000), "2100-03-01T12:00:00.500000Z"),
            (
                PgTimestamp(86_400_000_000 * 59),
                "2000-02-29T00:00:00.000000Z",
            ),
            (PgTimestamp::INFINITY, "infinity"),
            (PgTimestamp::NEG_INFINITY, "-infinity"),
        ];
        for (ts, text) in cases {
            assert_eq!(ts.to_string(), text, "{}", ts.0);
        }
    }

    #[test]
    fn extremes_do_not_panic() {
        for v in [i64::MAX - 1, i64::MIN + 1, i64::MAX / 2, i64::MIN / 2] {
            let _ = PgTimestamp(v).to_string();
            let _ = PgTimestamp(v).to_system_time();
        }
        assert_eq!(PgTimestamp::INFINITY.to_system_time(), None);
    }

    #[test]
    fn system_time_round_trip() {
        for ts in [
            PgTimestamp(0),
            PgTimestamp(-1),
            at(0, 0),
            at(-5, -7),
            at(1_795_487_285, 123_456),
        ] {
            let st = ts.to_system_time().unwrap();
            assert_eq!(PgTimestamp::from_system_time(st), Some(ts));
        }
        assert_eq!(
            PgTimestamp(0).to_system_time().unwrap(),
            UNIX_EPOCH + Duration::from_secs(946_684_800)
        );
        // Truncation goes towards the past on both sides of the Unix epoch.
        let before = UNIX_EPOCH - Duration::from_nanos(1_500);
        assert_eq!(PgTimestamp::from_system_time(before), Some(at(0, -2)));
        let after = UNIX_EPOCH + Duration::from_nanos(1_500);
        assert_eq!(PgTimestamp::from_system_time(after), Some(at(0, 1)));
    }
}

//! The arithmetic of limits, pure and clock-free (the caller passes "now"): a sliding minute
//! window over two fixed minutes, UTC day and month indexes, and the waits until a count
//! fits again.
//!
//! A sliding window counts the current minute whole and the previous one weighted by the
//! share of it still inside the last 60 s: at 15 s into a minute, 75 % of the previous
//! minute counts. So the allowance refills gradually, not all at once on the minute.

/// Milliseconds in a minute.
pub const MINUTE_MS: u64 = 60_000;
/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// Minute index since the Unix epoch.
pub fn minute(now_ms: u64) -> u64 {
    now_ms / MINUTE_MS
}

/// Day index since the Unix epoch (UTC).
pub fn day(now_ms: u64) -> u64 {
    now_ms / DAY_MS
}

/// Month index since January 1970 (UTC calendar months).
pub fn month(now_ms: u64) -> u64 {
    let (y, m, _) = civil(day(now_ms));
    (y - 1970) * 12 + (m - 1)
}

/// (year, month 1–12, day 1–31) of a day index.
pub fn civil(days: u64) -> (u64, u64, u64) {
    let (y, m, d) = beacon_config::calendar::civil(days as i64);
    (y as u64, u64::from(m), u64::from(d))
}

/// Day index of the first day of a month index.
pub fn month_start_day(month: u64) -> u64 {
    beacon_config::calendar::days_from_civil(1970 + (month / 12) as i64, (month % 12) as u32 + 1, 1)
        as u64
}

/// Seconds from `now_ms` to the next UTC midnight (at least 1).
pub fn secs_to_next_day(now_ms: u64) -> u64 {
    ((day(now_ms) + 1) * DAY_MS - now_ms).div_ceil(1000).max(1)
}

/// Seconds from `now_ms` to the first instant of the next UTC month (at least 1).
pub fn secs_to_next_month(now_ms: u64) -> u64 {
    let next = month_start_day(month(now_ms) + 1) * DAY_MS;
    (next.saturating_sub(now_ms)).div_ceil(1000).max(1)
}

/// The sliding-window count: all of `current`, and the part of `previous` still inside the
/// last 60 s.
pub fn sliding(now_ms: u64, current: u64, previous: u64) -> u64 {
    let into = now_ms % MINUTE_MS;
    // previous × (60 s − into) / 60 s, rounded up: never under-count.
    current + (previous * (MINUTE_MS - into)).div_ceil(MINUTE_MS)
}

/// Seconds until `need` more fit under `limit` if nothing new arrives (at least 1): the
/// previous minute's weight decays linearly to zero at the next minute; the current
/// minute's count becomes the previous one then.
pub fn secs_until_fits(now_ms: u64, current: u64, previous: u64, need: u64, limit: u64) -> u64 {
    let fits = |t: u64| -> bool {
        let m_now = minute(now_ms);
        let (cur, prev) = if minute(t) == m_now {
            (current, previous)
        } else if minute(t) == m_now + 1 {
            (0, current)
        } else {
            (0, 0)
        };
        sliding(t, cur, prev) + need <= limit
    };
    // Whole seconds, up to the two minutes after which everything counted now is gone.
    let mut secs = 1;
    while secs < 120 && !fits(now_ms + secs * 1000) {
        secs += 1;
    }
    secs
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_796_601_600_000; // 2026-12-07T00:00:00Z

    #[test]
    fn calendar_edges_are_utc() {
        assert_eq!(civil(day(T0)), (2026, 12, 7));
        assert_eq!(civil(0), (1970, 1, 1));
        // 2028 is a leap year.
        let feb29 = month_start_day(month(T0) + 14) + 28;
        assert_eq!(civil(feb29), (2028, 2, 29));
        assert_eq!(civil(month_start_day(month(T0))), (2026, 12, 1));
        assert_eq!(civil(month_start_day(month(T0) + 1)), (2027, 1, 1));
        // One millisecond before midnight: 1 s to the next day, same day index.
        let late = T0 + DAY_MS - 1;
        assert_eq!(day(late), day(T0));
        assert_eq!(secs_to_next_day(late), 1);
        assert_eq!(day(late + 1), day(T0) + 1);
        assert_eq!(secs_to_next_day(T0), 86_400);
        // December 7 → January 1: 25 days.
        assert_eq!(secs_to_next_month(T0), 25 * 86_400);
        assert_eq!(month(T0 + 25 * DAY_MS), month(T0) + 1);
        assert_eq!(month(T0 + 25 * DAY_MS - 1), month(T0));
        for m in 1..1200 {
            let first = month_start_day(m);
            assert_eq!(civil(first).2, 1, "month {m}");
            assert_eq!(month(first * DAY_MS), m);
            assert_eq!(month(first * DAY_MS - 1), m - 1);
        }
    }

    #[test]
    fn the_sliding_window_refills_gradually() {
        // 10 requests in the previous minute, none in this one.
        assert_eq!(
            sliding(T0, 0, 10),
            10,
            "at the minute, all of the previous counts"
        );
        assert_eq!(sliding(T0 + 15_000, 0, 10), 8, "75 % of 10, rounded up");
        assert_eq!(sliding(T0 + 30_000, 0, 10), 5);
        assert_eq!(sliding(T0 + 59_999, 0, 10), 1, "never under-counted");
        assert_eq!(sliding(T0 + 30_000, 3, 10), 8);
        // Limit 10, 10 used in this minute: the next fits once the minute is over and 10 %
        // of it has slid out — 6 s into the next minute.
        assert_eq!(secs_until_fits(T0, 10, 0, 1, 10), 66);
        // Limit 10, previous minute full, now 30 s in: 5 counted; one more fits at once
        // (at the next whole second).
        assert_eq!(secs_until_fits(T0 + 30_000, 0, 10, 1, 10), 1);
        // A request larger than the limit never fits: capped at two minutes.
        assert_eq!(secs_until_fits(T0, 0, 0, 11, 10), 120);
    }
}

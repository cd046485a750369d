//! Wall-clock time as the gateway writes it: RFC 3339, UTC, whole seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// Formats seconds since the epoch as an RFC 3339 UTC timestamp (civil-from-days, Howard Hinnant).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// When something last happened, read and written without a lock: milliseconds after the
/// stamp was made, in an atomic. On tokio's clock, so tests with paused time control it.
pub struct Stamp {
    epoch: tokio::time::Instant,
    at_ms: std::sync::atomic::AtomicU64,
}

impl Stamp {
    /// A stamp that last happened now.
    pub fn new() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            at_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// It happened now.
    pub fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.at_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since it last happened.
    pub fn elapsed(&self) -> std::time::Duration {
        let at = self.at_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.epoch
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(at))
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}

//! The wall clock, read here and nowhere else. Code that decides with time
//! (token checks, session policy) takes `now` as a parameter; the callers
//! that read the clock get it from here, or from `Services::clock` where
//! tests need to move time.

/// A source of the current instant in unix seconds; plain function pointers
/// so that a test can swap in a fixed or advancing one.
pub type Clock = fn() -> i64;

/// Seconds since the Unix epoch (0 if the system clock is set before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch (0 if the system clock is set before
/// it), for bookkeeping finer than a second.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let (s, ms) = (unix_now(), unix_now_ms());
        // After 2020, and the two readings within a second of each other.
        assert!(s > 1_577_836_800, "{s}");
        assert!((ms / 1000).abs_diff(s as u64) <= 1, "{s} {ms}");
    }
}

//! The wall clock, read in one place.
//!
//! pulse-core never reads the clock: time reaches it as a value. The runtime reads it here,
//! for the demo's live events, `now` on the wall-clock mode, checkpoint and rollup times,
//! so that a test or a replay can see every place that does.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in epoch milliseconds (0 on a clock set before 1970).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

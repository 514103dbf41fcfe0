//! The module's two clocks: monotonic milliseconds for deadlines and durations, and Unix
//! milliseconds for reports, logs and the admin listing. Any thread.

use once_cell::sync::Lazy;
use std::time::Instant;

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Monotonic milliseconds since the module was first used. Any thread.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Milliseconds since the Unix epoch (for reports and admin output).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

//! Rate limiting for log lines a guest can provoke at will: a guest that triggers a
//! warning in a loop must not flood the log (or fill the disk behind it).
//!
//! Two layers: `LogLimit`, which the device models put in front of their own warnings, and
//! `RateLimitedLogger`, which the binary installs around its logger so that lines logged
//! inside the crates Vessel builds on (virtio-queue logs an `error!` for every kick of a
//! broken queue) are limited the same way, per place in the code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines let through per window; the rest are counted and reported with the next one.
pub const LINES_PER_WINDOW: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(1);

/// One source of repeated lines: how many went out in the current window and how many
/// were held back since the last line that went out.
#[derive(Debug)]
struct Budget {
    window_start: Instant,
    sent: u32,
    suppressed: u64,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Budget { window_start: now, sent: 0, suppressed: 0 }
    }

    /// Some(lines held back before this one) when this occurrence should be logged.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.sent = 0;
        }
        if self.sent < LINES_PER_WINDOW {
            self.sent += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// At most `LINES_PER_WINDOW` lines a second from one place; what was held back is counted
/// into the next line that goes out.
#[derive(Debug)]
pub struct LogLimit(Mutex<Budget>);

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit(Mutex::new(Budget::new(Instant::now())))
    }
}

impl LogLimit {
    /// Some(occurrences held back before this one) when this occurrence should be logged.
    pub fn allow(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).allow(Instant::now())
    }
}

/// What to add to a line after `n` similar ones were held back ("" when none were).
pub fn held_back(n: u64) -> String {
    if n == 0 { String::new() } else { format!(" ({n} similar lines held back)") }
}

/// Most distinct places tracked; past that, lines from new places share one budget.
const MAX_PLACES: usize = 4096;

/// A logger that passes at most `LINES_PER_WINDOW` lines a second from each place in the
/// code (module and line) at warning level or below to `inner`, and says how many it held
/// back. Info and debug lines pass untouched (they are off unless asked for).
pub struct RateLimitedLogger<L> {
    inner: L,
    budgets: Mutex<HashMap<(String, u32), Budget>>,
}

impl<L: log::Log> RateLimitedLogger<L> {
    pub fn new(inner: L) -> Self {
        RateLimitedLogger { inner, budgets: Mutex::new(HashMap::new()) }
    }
}

impl<L: log::Log> log::Log for RateLimitedLogger<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        if record.level() > log::Level::Warn {
            return self.inner.log(record);
        }
        let held_back = {
            let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
            let mut key =
                (record.module_path().unwrap_or("").to_string(), record.line().unwrap_or(0));
            if budgets.len() >= MAX_PLACES && !budgets.contains_key(&key) {
                key = (String::new(), 0);
            }
            let now = Instant::now();
            match budgets.entry(key).or_insert_with(|| Budget::new(now)).allow(now) {
                Some(n) => n,
                None => return,
            }
        };
        if held_back == 0 {
            return self.inner.log(record);
        }
        self.inner.log(
            &log::Record::builder()
                .args(format_args!("{}{}", record.args(), self::held_back(held_back)))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_few_lines_a_second_then_a_count() {
        let start = Instant::now();
        let mut budget = Budget::new(start);
        let logged = (0..10_000).filter(|_| budget.allow(start).is_some()).count();
        assert_eq!(logged, LINES_PER_WINDOW as usize, "within one second");
        // The next window lets lines through again, the first with the count held back.
        let later = start + WINDOW;
        assert_eq!(budget.allow(later), Some(10_000 - u64::from(LINES_PER_WINDOW)));
        assert_eq!(budget.allow(later), Some(0));
        assert!(LogLimit::default().allow().is_some());
    }

    struct Counting(Arc<AtomicU64>, Arc<Mutex<Vec<String>>>);
    impl log::Log for Counting {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0.fetch_add(1, Ordering::Relaxed);
            self.1.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    #[test]
    fn the_logger_limits_each_place_on_its_own() {
        use log::Log;
        let (count, lines) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
        let logger = RateLimitedLogger::new(Counting(count.clone(), lines.clone()));
        let record = |line: u32, level: log::Level| {
            logger.log(
                &log::Record::builder()
                    .args(format_args!("queue not ready"))
                    .level(level)
                    .module_path(Some("virtio_queue::queue"))
                    .line(Some(line))
                    .build(),
            )
        };
        for _ in 0..100_000 {
            record(314, log::Level::Error);
        }
        for _ in 0..10 {
            record(368, log::Level::Error);
            record(1, log::Level::Debug);
        }
        assert_eq!(count.load(Ordering::Relaxed), 2 * u64::from(LINES_PER_WINDOW) + 10);
    }
}

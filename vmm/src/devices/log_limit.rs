//! Rate limiting for warnings a guest can provoke at will.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets the first few occurrences of a repeated event through, then every 1000th, so a
/// guest that triggers a warning in a loop cannot flood the log.
#[derive(Default)]
pub struct LogLimit(AtomicU64);

impl LogLimit {
    /// Some(count so far) when this occurrence should be logged.
    pub fn allow(&self) -> Option<u64> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        (n < 16 || n.is_multiple_of(1000)).then_some(n + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_few_then_rarely() {
        let limit = LogLimit::default();
        let logged = (0..10_000).filter(|_| limit.allow().is_some()).count();
        assert_eq!(logged, 16 + 9); // 0..16, then 1000, 2000, ... 9000
    }
}

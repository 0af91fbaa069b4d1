//! Locking shared by every part of the VMM.

use std::sync::{Mutex, MutexGuard};

/// Locks a device or shared state, recovering from a poisoned lock: a device that
/// panicked once must not take the whole machine down with it on the next access.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

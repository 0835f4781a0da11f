//! I/O plumbing shared by capture, verify, restore and check: the memory
//! budget their chunk-sized buffers share, the gate that keeps work within
//! it, and the zero test. System calls stay in [`crate::sys`].

use std::sync::{Condvar, Mutex};

/// The most bytes of chunk-sized buffers one stage of a command holds at
/// once, whatever the chunk size, the number of cores or the number of
/// targets: with the process's own few MiB, every command stays within
/// 256 MiB of peak RSS.
pub const BUFFER_BUDGET_BYTES: usize = 192 << 20;

/// How many workers, each holding `per_worker` bytes of buffers, fit in
/// the budget: at least one (a 64 MiB chunk must still be read), at most
/// `wanted`.
pub fn workers_within_budget(per_worker: usize, wanted: usize) -> usize {
    (BUFFER_BUDGET_BYTES / per_worker.max(1)).clamp(1, wanted.max(1))
}

/// A counting semaphore: at most `permits` holders at once, the others
/// wait. Used where work is spread by someone else (rayon, one thread per
/// target) and only its concurrency can be bounded.
#[derive(Debug)]
pub struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    pub fn new(permits: usize) -> Self {
        Self {
            free: Mutex::new(permits.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a permit; it is given back when the guard drops.
    pub fn enter(&self) -> GatePermit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        GatePermit { gate: self }
    }
}

/// A permit of a [`Gate`].
#[derive(Debug)]
pub struct GatePermit<'a> {
    gate: &'a Gate,
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        let mut free = self.gate.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.gate.freed.notify_one();
    }
}

/// Branch-light zero test that the compiler vectorises.
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(256)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_budget_always_allows_one_worker_and_never_more_than_wanted() {
        assert_eq!(workers_within_budget(64 << 20, 16), 3);
        assert_eq!(workers_within_budget(128 << 20, 16), 1);
        assert_eq!(workers_within_budget(1 << 30, 16), 1);
        assert_eq!(workers_within_budget(1 << 20, 4), 4);
        assert_eq!(workers_within_budget(0, 0), 1);
    }

    #[test]
    fn a_gate_holds_no_more_than_its_permits_at_once() {
        let gate = Gate::new(2);
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let _permit = gate.enter();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn zero_test_finds_a_single_set_bit_anywhere() {
        let mut bytes = vec![0u8; 4099];
        assert!(is_zero(&bytes));
        for at in [0, 255, 256, 4098] {
            bytes[at] = 1;
            assert!(!is_zero(&bytes), "{at}");
            bytes[at] = 0;
        }
    }
}

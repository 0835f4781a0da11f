//! I/O plumbing shared by capture, verify, restore and check: the memory
//! budget their chunk-sized buffers share, the gate that keeps work within
//! it, the one reader that reads with O_DIRECT where it can, and the zero
//! test. System calls stay in [`crate::sys`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

use crate::sys;

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

/// Reads a file with O_DIRECT where its file system allows it: bytes read
/// once have no use for the page cache, and copying them through it costs
/// a good part of a core. The direct handle is the very file (reopened
/// through `/proc`, never by path). Where a direct read fails (a file
/// system without O_DIRECT, a misaligned buffer or offset, the file's
/// ragged end), the same bytes are read buffered.
#[derive(Debug)]
pub struct DirectReader<'a> {
    buffered: &'a File,
    direct: Option<File>,
}

impl<'a> DirectReader<'a> {
    pub fn new(file: &'a File) -> Self {
        Self {
            buffered: file,
            direct: sys::reopen_direct(file),
        }
    }

    /// Fills `buf` from `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if let Some(direct) = &self.direct {
            if direct.read_exact_at(buf, offset).is_ok() {
                return Ok(());
            }
        }
        self.buffered.read_exact_at(buf, offset)
    }

    /// Reads at least the first `min` bytes of `buf` from `offset`: a
    /// direct read may fill the whole of an aligned `buf`, stopping early
    /// only at the end of the file; a buffered one reads just `min`.
    pub fn read_at_least(&self, buf: &mut [u8], offset: u64, min: usize) -> std::io::Result<()> {
        if let Some(direct) = &self.direct {
            if read_at_least(direct, buf, offset, min).is_ok() {
                return Ok(());
            }
        }
        self.buffered.read_exact_at(&mut buf[..min], offset)
    }
}

/// Fills `buf` from `offset` until at least `min` bytes are in, stopping
/// early only at the end of the file.
fn read_at_least(file: &File, buf: &mut [u8], offset: u64, min: usize) -> std::io::Result<()> {
    let mut done = 0;
    while done < min {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    fn the_direct_reader_reads_aligned_and_misaligned_ranges_alike() {
        // Where the temporary directory allows O_DIRECT, aligned reads go
        // direct and misaligned ones are refused there and read buffered;
        // elsewhere all are read buffered.
        let mut file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 % 251) as u8).collect();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        let reader = DirectReader::new(&file);
        let mut aligned = sys::AlignedBuf::new(8192, 4096).unwrap();
        reader
            .read_exact_at(&mut aligned.as_mut_slice()[..4096], 4096)
            .unwrap();
        assert_eq!(&aligned.as_slice()[..4096], &bytes[4096..8192]);
        let mut odd = vec![0u8; 1000];
        reader.read_exact_at(&mut odd, 3).unwrap();
        assert_eq!(odd, &bytes[3..1003]);
        // At the file's end a whole aligned window is asked for and the
        // wanted bytes arrive.
        reader
            .read_at_least(aligned.as_mut_slice(), 8192, 4000)
            .unwrap();
        assert_eq!(&aligned.as_slice()[..4000], &bytes[8192..12192]);
        assert!(reader.read_at_least(&mut odd, 12000, 1000).is_err());
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

//! One aligned-buffer type for `O_DIRECT` I/O.
//!
//! `O_DIRECT` needs the buffer address, the length and the file offset to be
//! multiples of the device's logical sector size (or of the file system's
//! direct-I/O alignment). `Vec<u8>` guarantees none of that, so this type
//! owns an allocation with a power-of-two alignment and a length that is a
//! multiple of it. Modelled on cloud-hypervisor's `block/src/aligned_buffer.rs`.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

/// A wrong alignment or length for an [`AlignedBuf`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlignError {
    #[error("the buffer alignment {align} is not a power of two")]
    NotPowerOfTwo { align: usize },
    #[error("the buffer length {len} is not a multiple of its alignment {align}")]
    LengthNotMultiple { len: usize, align: usize },
    #[error("a buffer of {len} bytes aligned to {align} is too large to allocate")]
    TooLarge { len: usize, align: usize },
}

/// A zero-initialised heap buffer whose address is aligned to a power of two
/// and whose length is a multiple of that alignment.
pub struct AlignedBuf {
    /// Valid for `len` bytes when `len > 0`; a dangling but aligned pointer
    /// when `len == 0` (nothing is allocated then).
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

impl AlignedBuf {
    /// Allocates `len` zero bytes aligned to `align`.
    pub fn new(len: usize, align: usize) -> Result<Self, AlignError> {
        let layout = checked_layout(len, align)?;
        Ok(AlignedBuf {
            ptr: allocate_zeroed(layout),
            len,
            align,
        })
    }

    /// Allocates the smallest buffer aligned to `align` that holds at least
    /// `min_len` bytes (the length is rounded up to a multiple of `align`).
    pub fn with_min_len(min_len: usize, align: usize) -> Result<Self, AlignError> {
        Self::new(round_up(min_len, align)?, align)
    }

    /// The length in bytes (a multiple of [`alignment`](Self::alignment)).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The alignment of the address and the length, in bytes.
    pub fn alignment(&self) -> usize {
        self.align
    }

    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for reads of `len` initialised bytes (the
        // allocation was zeroed) or is dangling-but-aligned with `len == 0`,
        // and the borrow of `self` keeps it alive and unaliased by writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The contents, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the exclusive borrow of `self`
        // guarantees no other reference to the bytes exists.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Sets every byte to zero.
    pub fn fill_zero(&mut self) {
        self.as_mut_slice().fill(0);
    }

    /// Changes the length, keeping the alignment. Bytes up to the shorter of
    /// the two lengths are kept; new bytes are zero.
    pub fn resize(&mut self, new_len: usize) -> Result<(), AlignError> {
        if new_len == self.len {
            return Ok(());
        }
        let mut new = AlignedBuf::new(new_len, self.align)?;
        let keep = new_len.min(self.len);
        new.as_mut_slice()[..keep].copy_from_slice(&self.as_slice()[..keep]);
        *self = new;
        Ok(())
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // The layout was accepted when the buffer was allocated.
        if let Ok(layout) = Layout::from_size_align(self.len, self.align) {
            // SAFETY: `ptr` was returned by `alloc_zeroed` with exactly this
            // layout and has not been freed (drop runs once).
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

// SAFETY: the buffer owns its allocation exclusively (like `Vec<u8>`), and
// shared access only hands out `&[u8]`, so it may move between threads and be
// shared by reference.
unsafe impl Send for AlignedBuf {}
// SAFETY: see `Send`; `&AlignedBuf` only allows reads.
unsafe impl Sync for AlignedBuf {}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("align", &self.align)
            .finish_non_exhaustive()
    }
}

fn checked_layout(len: usize, align: usize) -> Result<Layout, AlignError> {
    if !align.is_power_of_two() {
        return Err(AlignError::NotPowerOfTwo { align });
    }
    if len % align != 0 {
        return Err(AlignError::LengthNotMultiple { len, align });
    }
    Layout::from_size_align(len, align).map_err(|_| AlignError::TooLarge { len, align })
}

fn round_up(len: usize, align: usize) -> Result<usize, AlignError> {
    if !align.is_power_of_two() {
        return Err(AlignError::NotPowerOfTwo { align });
    }
    len.checked_next_multiple_of(align)
        .ok_or(AlignError::TooLarge { len, align })
}

fn allocate_zeroed(layout: Layout) -> NonNull<u8> {
    if layout.size() == 0 {
        // No allocation for an empty buffer; an address equal to the
        // alignment is non-null and aligned, which is all a 0-length slice needs.
        return NonNull::new(std::ptr::without_provenance_mut(layout.align()))
            .unwrap_or(NonNull::dangling());
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { alloc::alloc_zeroed(layout) };
    NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_and_length_are_aligned() {
        for align in [512, 4096, 65536] {
            let buf = AlignedBuf::new(3 * align, align).expect("allocate");
            assert_eq!(buf.as_slice().as_ptr() as usize % align, 0);
            assert_eq!(buf.len(), 3 * align);
            assert_eq!(buf.alignment(), align);
            assert!(buf.as_slice().iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn rejects_bad_alignment_and_length() {
        assert_eq!(
            AlignedBuf::new(4096, 3000).expect_err("not a power of two"),
            AlignError::NotPowerOfTwo { align: 3000 }
        );
        assert_eq!(
            AlignedBuf::new(4097, 4096).expect_err("ragged length"),
            AlignError::LengthNotMultiple {
                len: 4097,
                align: 4096
            }
        );
        assert_eq!(
            AlignedBuf::new(0, 0).expect_err("zero alignment"),
            AlignError::NotPowerOfTwo { align: 0 }
        );
    }

    #[test]
    fn huge_lengths_fail_without_overflow() {
        let align = 1 << 12;
        let len = usize::MAX - (align - 1);
        assert!(matches!(
            AlignedBuf::new(len, align),
            Err(AlignError::TooLarge { .. })
        ));
        assert!(matches!(
            AlignedBuf::with_min_len(usize::MAX, align),
            Err(AlignError::TooLarge { .. })
        ));
    }

    #[test]
    fn with_min_len_rounds_up() {
        let buf = AlignedBuf::with_min_len(5000, 4096).expect("allocate");
        assert_eq!(buf.len(), 8192);
        let empty = AlignedBuf::with_min_len(0, 4096).expect("allocate");
        assert!(empty.is_empty());
        assert_eq!(empty.as_slice().as_ptr() as usize % 4096, 0);
    }

    #[test]
    fn resize_keeps_prefix_and_zero_fills() {
        let mut buf = AlignedBuf::new(1024, 512).expect("allocate");
        buf.as_mut_slice().fill(7);
        buf.resize(2048).expect("grow");
        assert!(buf.as_slice()[..1024].iter().all(|b| *b == 7));
        assert!(buf.as_slice()[1024..].iter().all(|b| *b == 0));
        assert_eq!(buf.as_slice().as_ptr() as usize % 512, 0);
        buf.resize(512).expect("shrink");
        assert_eq!(buf.as_slice(), &[7; 512][..]);
        assert_eq!(
            buf.resize(700),
            Err(AlignError::LengthNotMultiple {
                len: 700,
                align: 512
            })
        );
        buf.fill_zero();
        assert!(buf.as_slice().iter().all(|b| *b == 0));
        buf.resize(0).expect("empty");
        assert!(buf.is_empty());
    }

    #[test]
    fn moves_across_threads() {
        let mut buf = AlignedBuf::new(4096, 4096).expect("allocate");
        buf.as_mut_slice()[0] = 1;
        let back = std::thread::spawn(move || buf).join().expect("thread");
        assert_eq!(back.as_slice()[0], 1);
    }
}

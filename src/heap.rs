//! The C heap, tuned for training: glibc hands blocks over 128 KiB (up to 32 MiB, as it
//! adapts) back to the kernel on free and maps fresh, zeroed pages for the next one.
//! An epoch allocates and frees the same few dozen multi-megabyte tensors each time,
//! so on the CPU that churn is page faults every epoch (BENCHMARKS.md has the share).
//! Keeping freed blocks in the heap turns them into plain reuse.

/// Keeps every block up to glibc's largest mmap threshold (32 MiB) in the heap, and
/// the heap's freed top from being trimmed: its size stays at its peak until exit.
/// Process-wide and idempotent; elsewhere than glibc it does nothing.
pub(crate) fn keep_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; any value is accepted or refused.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

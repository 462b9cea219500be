//! How the C library's allocator gives memory back to the system.

/// Fixes glibc's mmap threshold at 128 KiB: a block of 128 KiB or more gets pages of its
/// own, returned to the system when it is freed, and the heap's free top is returned once
/// it passes 128 KiB.
///
/// glibc starts there but raises both limits to the size of the largest block freed so far
/// (up to 32 MiB), to spare later allocations their system calls. orch frees its largest
/// blocks when a file is loaded (the file's spec, moved into the pipeline) and when a run
/// ends (the pipeline, before the reports are written): with the limits raised, each
/// report built its view on the heap beside what the ones before had freed, and the peak
/// RSS of a 10,000-phase run was 2 MB higher (`benches/delivery_speed.sh` measures it).
/// Setting the threshold turns the raising off. The blocks it concerns are made a few
/// times per run (the pipeline's nodes, the engine's tables, a report's view), never per
/// phase.
pub(crate) fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: `mallopt` sets one of the allocator's parameters under its own lock; it
        // touches no memory of ours.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        }
    }
}

//! Plain Rust loops over tensors on the CPU: their elements as slices, and the parts
//! of a loop on libtorch's own threads.
//!
//! libtorch runs its parallel kernels
//! on an OpenMP team (libgomp, which it loads), whose threads spin for a while after
//! each kernel waiting for the next: a loop on threads of its own competes with them
//! for the cores (BENCHMARKS.md measures it). So a loop's parts run as one more OpenMP
//! parallel region on that same team, through libgomp's entry point `GOMP_parallel`,
//! found in the process at run time. Where there is none (a libtorch without OpenMP),
//! the parts run in order on the calling thread.

use std::ffi::{c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tch::{Device, Kind, Tensor};

/// A contiguous CPU tensor's elements.
pub(crate) fn elements<T: tch::kind::Element>(t: &Tensor) -> &[T] {
    assert!(t.device() == Device::Cpu && t.kind() == T::KIND && t.is_contiguous(), "a contiguous CPU tensor");
    if t.numel() == 0 {
        return &[]; // libtorch gives an empty tensor a null data pointer, which no slice may have
    }
    // SAFETY: the tensor is contiguous, of T, on the CPU, and borrowed for the slice's life.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}

/// A CPU tensor `[…, len]` as rows of `len` elements evenly spaced in memory (a
/// contiguous tensor, or a `narrow` of its last dimension): its elements from the first
/// row's start to the last row's end, and the distance between rows' starts. `None` for
/// any other layout.
pub(crate) fn even_rows<T: tch::kind::Element>(t: &Tensor) -> Option<(&[T], usize)> {
    assert!(t.device() == Device::Cpu && t.kind() == T::KIND, "a CPU tensor of the loop's kind");
    let (size, strides) = (t.size(), t.stride());
    let dims = size.len();
    let len = *size.last()?;
    let row_stride = if dims > 1 { strides[dims - 2] } else { len };
    // The last dimension contiguous, the rows evenly spaced and not overlapping, and
    // the dimensions before them nested without gaps.
    let nested = (0..dims.saturating_sub(2)).all(|i| strides[i] == strides[i + 1] * size[i + 1]);
    if (len > 1 && strides[dims - 1] != 1) || row_stride < len || !nested {
        return None;
    }
    let rows = size[..dims - 1].iter().product::<i64>();
    if rows == 0 || len == 0 {
        return Some((&[], row_stride as usize));
    }
    let span = ((rows - 1) * row_stride + len) as usize;
    // SAFETY: on the CPU, of T, and every element of the span lies in the tensor's
    // storage (rows evenly spaced from the first), borrowed for the slice's life.
    Some((unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, span) }, row_stride as usize))
}

/// Asks for `data`'s cache lines ahead of the loop that reads them (on x86-64; a no-op
/// elsewhere): for rows the hardware's prefetcher does not foresee, such as rows spaced
/// wider than they are long.
#[inline(always)]
pub(crate) fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: a prefetch reads nothing and cannot fault; the address is in `data`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr() as *const i8) };
    }
}

/// A new float32 CPU tensor whose elements are whatever its memory held, for a loop
/// that writes every one of them through [`elements_mut`].
pub(crate) fn empty(size: &[i64]) -> Tensor {
    Tensor::empty(size, (Kind::Float, Device::Cpu))
}

/// The elements of a new contiguous CPU tensor of T (from [`empty`], say),
/// to be written.
///
/// # Safety
/// Nothing else may read or write `t` while the slice lives.
pub(crate) unsafe fn elements_mut<T: tch::kind::Element>(t: &Tensor) -> &mut [T] {
    assert!(t.device() == Device::Cpu && t.kind() == T::KIND && t.is_contiguous(), "a contiguous CPU tensor");
    if t.numel() == 0 {
        return &mut []; // as in `elements`: no null pointer in a slice
    }
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel())
}

/// libgomp's entry points: `GOMP_parallel(body, data, threads, flags)`, and a thread's
/// place in its team and the team's size.
struct Gomp {
    parallel: unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> c_int,
    num_threads: unsafe extern "C" fn() -> c_int,
}

fn gomp() -> Option<&'static Gomp> {
    static GOMP: OnceLock<Option<Gomp>> = OnceLock::new();
    GOMP.get_or_init(|| {
        // libtorch's libgomp by name, loaded already (also where libtorch came in
        // through a library opened locally, as evcxr opens each cell); else any in the
        // global scope.
        // SAFETY: RTLD_NOLOAD only looks for a library already loaded.
        let loaded = unsafe { libc::dlopen(c"libgomp.so.1".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        let scope = if loaded.is_null() { libc::RTLD_DEFAULT } else { loaded };
        let find = |name: &CStr| {
            // SAFETY: dlsym only looks a name up among the loaded libraries.
            let symbol = unsafe { libc::dlsym(scope, name.as_ptr()) };
            (!symbol.is_null()).then_some(symbol)
        };
        let (parallel, thread_num, num_threads) =
            (find(c"GOMP_parallel")?, find(c"omp_get_thread_num")?, find(c"omp_get_num_threads")?);
        // SAFETY: these are libgomp's functions of these signatures (its ABI since GCC 4.9).
        unsafe {
            Some(Gomp {
                parallel: std::mem::transmute::<*mut c_void, _>(parallel),
                thread_num: std::mem::transmute::<*mut c_void, _>(thread_num),
                num_threads: std::mem::transmute::<*mut c_void, _>(num_threads),
            })
        }
    })
    .as_ref()
}

/// What each thread of the region runs: parts `me, me + team, …` of the loop.
struct Job<'a> {
    body: &'a (dyn Fn(usize) + Sync),
    parts: usize,
    panicked: AtomicBool,
    gomp: &'a Gomp,
}

extern "C" fn run_parts(data: *mut c_void) {
    // SAFETY: `data` is the Job that `for_each_part` handed GOMP_parallel, alive until it returns.
    let job = unsafe { &*(data as *const Job) };
    // SAFETY: called inside the parallel region libgomp runs.
    let (me, team) = unsafe { ((job.gomp.thread_num)() as usize, ((job.gomp.num_threads)() as usize).max(1)) };
    for part in (me..job.parts).step_by(team) {
        // No panic may unwind into C: note it, and raise it again after the region.
        if catch_unwind(AssertUnwindSafe(|| (job.body)(part))).is_err() {
            job.panicked.store(true, Ordering::Relaxed);
        }
    }
}

/// The number of parts to cut a loop into: one per libtorch thread.
pub(crate) fn parts() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// `body(0)`, …, `body(parts − 1)`, spread over libtorch's CPU threads; returns when
/// all are done. Each part must touch what no other part writes.
pub(crate) fn for_each_part(parts: usize, body: impl Fn(usize) + Sync) {
    let Some(gomp) = gomp().filter(|_| parts > 1) else {
        (0..parts).for_each(body);
        return;
    };
    let job = Job { body: &body, parts, panicked: AtomicBool::new(false), gomp };
    // SAFETY: run_parts reads the job only while GOMP_parallel runs, which returns
    // after every thread of the region has finished.
    unsafe { (gomp.parallel)(run_parts, &job as *const Job as *mut c_void, parts as c_uint, 0) };
    if job.panicked.load(Ordering::Relaxed) {
        panic!("a part of a parallel loop panicked");
    }
}

/// A loop to compile for the widest vectors the CPU has ([`widest`]). Its `run` must be
/// `#[inline(always)]`, so that it is compiled into each width's copy, and do the same
/// arithmetic at every width, so that the numbers do not depend on the CPU.
pub(crate) trait Vectorised {
    type Output;
    fn run(self) -> Self::Output;
}

/// `body.run()` compiled for the widest vectors the CPU has, chosen at run time:
/// AVX-512 or AVX2 with FMA on x86-64, else the baseline (where a loop's `mul_add` is
/// a call to the C library's `fma`: the same numbers, many times slower).
pub(crate) fn widest<L: Vectorised>(body: L) -> L::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(body) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(body) };
        }
    }
    body.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<L: Vectorised>(body: L) -> L::Output {
    body.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<L: Vectorised>(body: L) -> L::Output {
    body.run()
}

/// `body(part)` for each of `parts` (each owning what it writes), spread over
/// libtorch's CPU threads as [`for_each_part`] spreads them.
pub(crate) fn for_each_owned<T: Send>(parts: Vec<T>, body: impl Fn(T) + Sync) {
    let parts: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    for_each_part(parts.len(), |i| {
        let part = parts[i].lock().expect("one part, one thread").take().expect("each part runs once");
        body(part)
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn every_part_runs_once() {
        let runs: Vec<AtomicUsize> = (0..7).map(|_| AtomicUsize::new(0)).collect();
        for_each_part(7, |part| {
            runs[part].fetch_add(1, Ordering::Relaxed);
        });
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn libtorch_brings_libgomp_on_linux() {
        let _ = tch::get_num_threads();
        if cfg!(target_os = "linux") {
            assert!(gomp().is_some(), "no GOMP_parallel in the process: the loops run on one thread");
        }
    }

    /// Rows of a contiguous tensor and of a `narrow` of its last dimension are even;
    /// a transpose's, or a `narrow` that leaves gaps between blocks of rows, are not.
    #[test]
    fn even_rows_are_found_where_they_are() {
        let t = Tensor::arange(2 * 3 * 8, (Kind::Float, Device::Cpu)).view([2, 3, 8]);
        let (all, stride) = even_rows::<f32>(&t).unwrap();
        assert_eq!((all.len(), stride), (48, 8));
        let narrowed = t.narrow(2, 2, 5);
        let (some, stride) = even_rows::<f32>(&narrowed).unwrap();
        assert_eq!((some.len(), stride, some[0], some[8]), (5 * 8 + 5, 8, 2.0, 10.0));
        assert!(even_rows::<f32>(&t.transpose(1, 2)).is_none());
        assert!(even_rows::<f32>(&t.narrow(1, 0, 2)).is_none());
    }

    #[test]
    fn empty_tensors_give_empty_slices() {
        let t = empty(&[2, 0, 5]);
        assert!(elements::<f32>(&t).is_empty());
        // SAFETY: `t` is new and nothing else touches it.
        let written = unsafe { elements_mut::<f32>(&t) };
        assert!(written.is_empty() && !written.as_ptr().is_null());
    }

    #[test]
    #[should_panic(expected = "a part of a parallel loop panicked")]
    fn a_panic_in_a_part_comes_back() {
        for_each_part(2, |part| assert!(part == 0));
    }
}

//! CUDA graphs: an epoch's kernels captured once and then replayed, so that an epoch
//! on a GPU costs one launch instead of a few hundred. tch exposes no graphs or
//! streams; `cuda_graph.cpp` reaches libtorch's own `at::cuda::CUDAGraph` for them.
//!
//! Capture must run on a stream other than the default one, and so must the eager
//! warm-up before it: [`SideStream`] makes one current for as long as it lives.
//! [`GpuEpochs`] is how a trainer runs its epochs there.

use std::ffi::{c_char, c_int, c_void, CStr};

use tch::Tensor;

use crate::error::{Error, Result};

#[cfg(groklens_cuda)]
extern "C" {
    fn groklens_cuda_last_error() -> *const c_char;
    fn groklens_cuda_use_stream(device: c_int, side: c_int) -> c_int;
    fn groklens_cuda_graph_new(graph: *mut *mut c_void) -> c_int;
    fn groklens_cuda_graph_begin(graph: *mut c_void) -> c_int;
    fn groklens_cuda_graph_end(graph: *mut c_void) -> c_int;
    fn groklens_cuda_graph_replay(graph: *mut c_void) -> c_int;
    fn groklens_cuda_graph_free(graph: *mut c_void);
}

/// Without libtorch_cuda at build time there are no graphs: every call fails.
#[cfg(not(groklens_cuda))]
mod absent {
    use super::*;
    pub unsafe fn groklens_cuda_last_error() -> *const c_char {
        c"this groklens was built without libtorch_cuda".as_ptr()
    }
    pub unsafe fn groklens_cuda_use_stream(_: c_int, _: c_int) -> c_int {
        1
    }
    pub unsafe fn groklens_cuda_graph_new(_: *mut *mut c_void) -> c_int {
        1
    }
    pub unsafe fn groklens_cuda_graph_begin(_: *mut c_void) -> c_int {
        1
    }
    pub unsafe fn groklens_cuda_graph_end(_: *mut c_void) -> c_int {
        1
    }
    pub unsafe fn groklens_cuda_graph_replay(_: *mut c_void) -> c_int {
        1
    }
    pub unsafe fn groklens_cuda_graph_free(_: *mut c_void) {}
}
#[cfg(not(groklens_cuda))]
use absent::*;

/// The shim's status as a Result, with libtorch's message on failure.
fn check(what: &str, status: c_int) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    let message = unsafe { CStr::from_ptr(groklens_cuda_last_error()) }.to_string_lossy().into_owned();
    Err(Error::Torch(tch::TchError::Torch(format!("CUDA graph: {what}: {message}"))))
}

/// A non-default stream of a GPU, current for this thread while it lives (the device
/// is synchronised on the way in and out).
pub(crate) struct SideStream(c_int);

impl SideStream {
    pub fn new(device: usize) -> Result<Self> {
        // SAFETY: plain calls into libtorch, guarded against exceptions in the shim.
        check("side stream", unsafe { groklens_cuda_use_stream(device as c_int, 1) })?;
        Ok(SideStream(device as c_int))
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        // SAFETY: as in `new`. A failure here leaves the side stream current: harmless.
        let _ = unsafe { groklens_cuda_use_stream(self.0, 0) };
    }
}

/// A captured sequence of kernels.
pub(crate) struct Graph(*mut c_void);

impl Graph {
    /// Captures what `body` launches (on the current side stream) without running it.
    pub fn capture<T>(body: impl FnOnce() -> T) -> Result<(Graph, T)> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: the shim writes a fresh CUDAGraph pointer, owned by the Graph below.
        check("create", unsafe { groklens_cuda_graph_new(&mut raw) })?;
        let graph = Graph(raw);
        // SAFETY: `graph.0` is a live CUDAGraph until `graph` drops.
        check("begin capture", unsafe { groklens_cuda_graph_begin(graph.0) })?;
        let out = body();
        // SAFETY: as above.
        check("end capture", unsafe { groklens_cuda_graph_end(graph.0) })?;
        Ok((graph, out))
    }

    /// Launches the captured kernels again, on the current stream.
    pub fn replay(&self) -> Result<()> {
        // SAFETY: `self.0` is a live, captured CUDAGraph.
        check("replay", unsafe { groklens_cuda_graph_replay(self.0) })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from groklens_cuda_graph_new and is freed once.
        unsafe { groklens_cuda_graph_free(self.0) }
    }
}

/// How a trainer's epochs run on a GPU: eagerly for a few warm-up epochs (libtorch
/// and cuBLAS set up what they need, outside any capture), then one epoch is captured
/// as a graph and every later epoch replays it: one launch per epoch instead of a few
/// hundred. The graph reads and updates the weights and optimizer state in place and
/// writes the losses into one tensor. `GROKLENS_CUDA_GRAPHS=0` keeps every epoch eager.
pub(crate) struct GpuEpochs {
    state: State,
    /// Dropped last: the graph goes before the default stream comes back.
    _stream: SideStream,
}

enum State {
    Eager,
    WarmingUp(u32),
    Replaying(Graph, Tensor),
}

/// Eager epochs on a GPU before the capture.
const WARM_UP_EPOCHS: u32 = 3;

impl GpuEpochs {
    /// For training on GPU `device`; makes a side stream current for this thread.
    pub fn new(device: usize) -> Result<Self> {
        let graphs = std::env::var("GROKLENS_CUDA_GRAPHS").map_or(true, |v| v != "0");
        let state = if graphs { State::WarmingUp(0) } else { State::Eager };
        Ok(GpuEpochs { state, _stream: SideStream::new(device)? })
    }

    /// One epoch, of which `eager` launches the kernels and returns the losses.
    pub fn step(&mut self, mut eager: impl FnMut() -> Tensor) -> Result<Tensor> {
        match std::mem::replace(&mut self.state, State::Eager) {
            State::Eager => Ok(eager()),
            State::WarmingUp(done) if done < WARM_UP_EPOCHS => {
                self.state = State::WarmingUp(done + 1);
                Ok(eager())
            }
            State::WarmingUp(_) => {
                let (graph, losses) = Graph::capture(eager)?;
                self.replay(graph, losses)
            }
            State::Replaying(graph, losses) => self.replay(graph, losses),
        }
    }

    /// One epoch by the captured graph; its losses copied out before the next replay.
    fn replay(&mut self, graph: Graph, losses: Tensor) -> Result<Tensor> {
        graph.replay()?;
        let out = losses.copy();
        self.state = State::Replaying(graph, losses);
        Ok(out)
    }
}

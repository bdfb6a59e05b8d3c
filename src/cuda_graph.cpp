// CUDA graphs and streams for the trainer, from libtorch's own at::cuda::CUDAGraph
// (tch exposes neither). Every function returns 0 on success, or 1 with the message
// left for groklens_cuda_last_error: no C++ exception crosses into Rust.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <exception>
#include <string>

namespace {
thread_local std::string last_error;

template <typename F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}
}  // namespace

extern "C" {
const char* groklens_cuda_last_error() { return last_error.c_str(); }

// Waits for the device, then makes a stream from libtorch's pool (or, with side = 0,
// the default stream) the current stream of `device` for this thread.
int groklens_cuda_use_stream(int device, int side) {
  return guarded([&] {
    auto index = static_cast<c10::DeviceIndex>(device);
    c10::cuda::device_synchronize();
    c10::cuda::setCurrentCUDAStream(side ? c10::cuda::getStreamFromPool(false, index)
                                         : c10::cuda::getDefaultCUDAStream(index));
  });
}

int groklens_cuda_graph_new(void** graph) {
  return guarded([&] { *graph = new at::cuda::CUDAGraph(); });
}

// Hands the blocks cached by the eager epochs back first: the graph gets a memory
// pool of its own, and the two together ran out of memory for a stack of 256 runs.
int groklens_cuda_graph_begin(void* graph) {
  return guarded([&] {
    c10::cuda::CUDACachingAllocator::emptyCache();
    static_cast<at::cuda::CUDAGraph*>(graph)->capture_begin();
  });
}

int groklens_cuda_graph_end(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_end(); });
}

int groklens_cuda_graph_replay(void* graph) {
  return guarded([&] { static_cast<at::cuda::CUDAGraph*>(graph)->replay(); });
}

void groklens_cuda_graph_free(void* graph) { delete static_cast<at::cuda::CUDAGraph*>(graph); }
}

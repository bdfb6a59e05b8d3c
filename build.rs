//! Bakes the libtorch location into the binaries and tests (rpath), compiles
//! `src/cuda_graph.cpp` against libtorch's headers, and links libtorch_cuda explicitly
//! (the linker otherwise drops it under `--as-needed` from binaries that reference none
//! of its symbols, and CUDA is then never available).
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/cuda_graph.cpp");
    println!("cargo:rustc-check-cfg=cfg(groklens_cuda)");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = Path::new(&lib);
    if !lib.join("libtorch_cuda.so").exists() {
        return;
    }
    // The torch wheel's headers, the CUDA runtime's from its nvidia wheel, and the
    // compiler headers (`crt/`) that only triton's wheel carries.
    let include = lib.join("../include");
    let cuda_include = lib.join("../../nvidia/cu13/include");
    let crt_include = lib.join("../../triton/backends/nvidia/include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/cuda_graph.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&cuda_include)
        .include(&crt_include)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("groklens_cuda_graph");
    println!("cargo:rustc-cfg=groklens_cuda");
    // What the shim calls, for whatever links this crate (the notebooks too)...
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    // ...and for this crate's own binaries and tests even where nothing calls it.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
}

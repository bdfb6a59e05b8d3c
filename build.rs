//! Bakes the libtorch location into the binaries and tests (rpath), compiles
//! `src/cuda_graph.cpp` against libtorch's and CUDA's headers where it finds them, and
//! links libtorch_cuda explicitly (the linker otherwise drops it under `--as-needed`
//! from binaries that reference none of its symbols, and CUDA is then never available).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
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
    // What the shim calls, for whatever links this crate (the notebooks too), and for
    // this crate's own binaries and tests even where nothing calls it.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    let (Some(runtime), Some(crt)) = (find_header(lib, "cuda_runtime_api.h"), find_header(lib, "crt/host_defines.h"))
    else {
        println!(
            "cargo:warning=groklens: no CUDA headers found beside {} or under CUDA_HOME: \
             CUDA training will run without CUDA graphs",
            lib.display()
        );
        return;
    };
    let include = lib.join("../include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/cuda_graph.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(runtime)
        .include(crt)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("groklens_cuda_graph");
    println!("cargo:rustc-cfg=groklens_cuda");
}

/// The include folder that holds `header`: a CUDA install (`CUDA_HOME`, /usr/local/cuda)
/// or, for the pip wheel's libtorch, the nvidia-* and triton wheels beside torch (the
/// CUDA runtime's headers in `nvidia/cu*/include` or `nvidia/cuda_runtime/include`, the
/// compiler's `crt/` in triton's).
fn find_header(torch_lib: &Path, header: &str) -> Option<PathBuf> {
    let site_packages = torch_lib.join("../..");
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("include")).into_iter().collect();
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
        candidates.extend(entries.flatten().map(|e| e.path().join("include")));
    }
    candidates.push(site_packages.join("triton/backends/nvidia/include"));
    candidates.into_iter().find(|dir| dir.join(header).is_file())
}

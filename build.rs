//! Link libtorch so that the binary runs without `LD_LIBRARY_PATH` and keeps CUDA support, and
//! compile the C++ shims (`csrc/`: c10d, pinned memory, the op counter) against the same
//! libtorch's headers, and the fused neuron's CUDA source for the host (for the tests).
//!
//! torch-sys reports the libtorch library directory as `DEP_TCH_LIBTORCH_LIB`. We add it as an
//! rpath, and force `libtorch.so` (which pulls in `libtorch_cuda` on CUDA builds) to stay a
//! NEEDED library: with the default `--as-needed` the linker drops it because nothing references
//! it directly, and `tch::Cuda::is_available()` is then false even on a GPU machine.
//!
//! The shim gets Gloo when gloo's headers are found (Debian's `libgloo-dev`, or `GLOO_INCLUDE_DIR`)
//! and NCCL when libtorch has CUDA and the wheel's NCCL and CUDA runtime headers are beside it.
//! See libtorch.md.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE_DIR");
    println!("cargo:rerun-if-changed=/usr/include/gloo/config.h");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch directory; no rpath added");
        return;
    };
    let lib_dir = PathBuf::from(lib_dir);
    let cuda = lib_dir.join("libtorch_cuda.so").exists();
    compile_shim(&lib_dir, cuda);
    compile_host_kernels();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    if cuda {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}

fn compile_shim(lib_dir: &Path, cuda: bool) {
    let include = lib_dir.join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // libtorch is built with NDEBUG, and some of its classes (RecordFunction) have members only
        // without it: the shim must see the same layouts.
        .define("NDEBUG", None)
        .flag_if_supported("-w")
        .file("csrc/c10d_shim.cpp")
        .file("csrc/libtorch_extras.cpp");
    match gloo_headers() {
        Some(dir) => {
            build.include(dir).define("USE_C10D_GLOO", None).define("SNN_WITH_GLOO", None);
        }
        None => println!(
            "cargo:warning=gloo headers not found (install libgloo-dev or set GLOO_INCLUDE_DIR): multi-process training on CPU is disabled"
        ),
    }
    let nvidia = lib_dir.join("../../nvidia");
    // The wheel's CUDA runtime headers lack `crt/`, which triton's copy of the headers has.
    let nccl_headers = ["nccl/include", "cu13/include", "cuda_runtime/include", "../triton/backends/nvidia/include"]
        .iter()
        .map(|dir| nvidia.join(dir))
        .filter(|dir| dir.exists())
        .collect::<Vec<_>>();
    let has_nccl = nccl_headers.iter().any(|dir| dir.join("nccl.h").exists());
    if cuda && has_nccl {
        build.define("SNN_WITH_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        build.includes(&nccl_headers).file("csrc/c10d_nccl.cpp");
    } else if cuda {
        println!("cargo:warning=NCCL headers not found beside libtorch: multi-process training on CUDA is disabled");
    }
    build.compile("c10d_shim");
}

/// The fused neuron's and the recurrent layer's CUDA sources compiled for the host
/// (csrc/fused_lif_host.cpp, csrc/recurrent_step_host.cpp), which the tests run against the CPU
/// kernel and the libtorch ops: no contraction into fused multiply-adds and no fast-math, so that
/// each float32 operation rounds as the CUDA intrinsic does.
fn compile_host_kernels() {
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .file("csrc/fused_lif_host.cpp")
        .file("csrc/recurrent_step_host.cpp")
        .compile("fused_lif_host");
}

fn gloo_headers() -> Option<PathBuf> {
    let candidates = std::env::var_os("GLOO_INCLUDE_DIR").map(PathBuf::from).into_iter().chain([PathBuf::from("/usr/include")]);
    candidates.into_iter().find(|dir| dir.join("gloo/config.h").exists())
}

//! Link libtorch so that the binary runs without `LD_LIBRARY_PATH` and keeps CUDA support.
//!
//! torch-sys reports the libtorch library directory as `DEP_TCH_LIBTORCH_LIB`. We add it as an
//! rpath, and force `libtorch.so` (which pulls in `libtorch_cuda` on CUDA builds) to stay a
//! NEEDED library: with the default `--as-needed` the linker drops it because nothing references
//! it directly, and `tch::Cuda::is_available()` is then false even on a GPU machine.
//! See libtorch.md.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch directory; no rpath added");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    if std::path::Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}

//! Which NVRTC compiles our CUDA kernels, and the compile itself (docs/method.md, "Fused neurons";
//! libtorch.md, "NVRTC").
//!
//! The kernel must be compiled by the NVRTC of the CUDA version libtorch was built for
//! (`tch::utils::version_cudart`, e.g. 13000): its PTX is then one the driver that runs libtorch
//! accepts. We look for `libnvrtc.so.<major>`, in this order:
//! 1. beside the loaded libtorch, in the torch wheel's own dependencies: `nvidia/cu<major>/lib`
//!    (CUDA 13 wheels) or `nvidia/cuda_nvrtc/lib` (CUDA 12 wheels), and a libtorch archive's own
//!    hashed copy in its `lib/` (`libnvrtc-<hash>.so.<major>`);
//! 2. through the loader's search path, by that versioned name only.
//!
//! An unversioned `libnvrtc.so` (a system toolkit's, of any version) is never loaded, and a
//! library whose `nvrtcVersion` is not libtorch's major is refused. NVRTC is called through its
//! C API directly (`nvrtcCreateProgram`, `nvrtcCompileProgram`, `nvrtcGetPTX`, ...), so the library
//! used is the one chosen here.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Program = *mut c_void;
type Status = c_int;

/// The loaded NVRTC: where it came from, its version, and the functions we call.
pub struct Nvrtc {
    pub path: String,
    pub version: (i32, i32),
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
    ptx_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    ptx: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    log: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    destroy: unsafe extern "C" fn(*mut Program) -> Status,
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
}

/// The NVRTC for libtorch's CUDA version, loaded once; the error says what was tried.
pub fn loaded() -> Result<&'static Nvrtc, String> {
    static LOADED: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    LOADED.get_or_init(|| load_for_libtorch().map_err(|e| format!("{e:#}"))).as_ref().map_err(Clone::clone)
}

/// One line for run headers and the GPU check: the library and its version, or why there is none.
pub fn describe() -> String {
    match loaded() {
        Ok(nvrtc) => format!("NVRTC {}.{} from {}", nvrtc.version.0, nvrtc.version.1, nvrtc.path),
        Err(why) => format!("no NVRTC: {why}"),
    }
}

/// libtorch's CUDA major version, if it has CUDA.
pub fn libtorch_cuda_major() -> Option<i32> {
    tch::utils::has_cudart().then(|| tch::utils::version_cudart() as i32 / 1000).filter(|&major| major > 0)
}

fn load_for_libtorch() -> Result<Nvrtc> {
    let major = libtorch_cuda_major().context("this libtorch has no CUDA")?;
    let torch_lib = libtorch_dir();
    let mut tried = Vec::new();
    for candidate in candidates(torch_lib.as_deref(), major) {
        match open(&candidate, major) {
            Ok(nvrtc) => return Ok(nvrtc),
            Err(e) => tried.push(format!("{candidate}: {e:#}")),
        }
    }
    bail!("no usable libnvrtc.so.{major} for libtorch's CUDA {major} (tried {})", tried.join("; "))
}

/// The directory of the loaded `libtorch_cpu.so` (`<site-packages>/torch/lib` for a wheel).
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let library =
        maps.lines().filter_map(|line| line.split_whitespace().nth(5)).find(|path| path.ends_with("/libtorch_cpu.so"))?;
    Path::new(library).parent().map(Path::to_path_buf)
}

/// Where to look for CUDA `major`'s NVRTC, best first: the files that exist beside libtorch (wheel
/// layouts for CUDA 13 and 12, an archive's hashed copy), then the versioned name for the loader.
pub fn candidates(torch_lib: Option<&Path>, major: i32) -> Vec<String> {
    let versioned = format!("libnvrtc.so.{major}");
    let mut found = Vec::new();
    if let Some(lib) = torch_lib {
        if let Some(site) = lib.parent().and_then(Path::parent) {
            for dir in [format!("nvidia/cu{major}/lib"), "nvidia/cuda_nvrtc/lib".to_string()] {
                let path = site.join(dir).join(&versioned);
                if path.exists() {
                    found.push(path.display().to_string());
                }
            }
        }
        found.extend(hashed_copies(lib, major));
    }
    found.push(versioned);
    found
}

/// A libtorch archive's `lib/libnvrtc-<hash>.so.<major>[.minor]` (not its builtins).
fn hashed_copies(lib: &Path, major: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(lib) else {
        return Vec::new();
    };
    let mut copies: Vec<String> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libnvrtc-")
                && !name.starts_with("libnvrtc-builtins")
                && name.split(".so.").nth(1).is_some_and(|v| v.split('.').next() == Some(&major.to_string()))
        })
        .map(|path| path.display().to_string())
        .collect();
    copies.sort();
    copies
}

/// Loads one candidate (and its builtins library when it sits beside it) and checks its version.
fn open(candidate: &str, major: i32) -> Result<Nvrtc> {
    if let Some(dir) = Path::new(candidate).parent().filter(|d| !d.as_os_str().is_empty()) {
        preload_builtins(dir, major);
    }
    // SAFETY: loading NVRTC runs its initialisers, which are benign; the library is kept loaded for
    // the life of the process (leaked), so the function pointers below stay valid.
    let library: &'static libloading::Library = Box::leak(Box::new(unsafe { libloading::Library::new(candidate) }?));
    // SAFETY: each symbol is NVRTC's C function with the signature declared for it in `Nvrtc`.
    let nvrtc = unsafe {
        let version: libloading::Symbol<unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status> = library.get(b"nvrtcVersion")?;
        let (mut found_major, mut minor) = (0, 0);
        if version(&mut found_major, &mut minor) != 0 {
            bail!("nvrtcVersion failed");
        }
        if found_major != major {
            bail!("it is NVRTC {found_major}.{minor}, not libtorch's CUDA {major}");
        }
        Nvrtc {
            path: candidate.to_string(),
            version: (found_major, minor),
            create: *library.get(b"nvrtcCreateProgram")?,
            compile: *library.get(b"nvrtcCompileProgram")?,
            ptx_size: *library.get(b"nvrtcGetPTXSize")?,
            ptx: *library.get(b"nvrtcGetPTX")?,
            log_size: *library.get(b"nvrtcGetProgramLogSize")?,
            log: *library.get(b"nvrtcGetProgramLog")?,
            destroy: *library.get(b"nvrtcDestroyProgram")?,
            error_string: *library.get(b"nvrtcGetErrorString")?,
        }
    };
    Ok(nvrtc)
}

/// NVRTC opens `libnvrtc-builtins.so.<major>.<minor>` by name when it compiles; loading the copy
/// beside the chosen library first makes that name resolve to it.
fn preload_builtins(dir: &Path, major: i32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = "libnvrtc-builtins";
    for path in entries.filter_map(|entry| entry.ok().map(|e| e.path())) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(prefix) && name.contains(&format!(".so.{major}")) {
            // SAFETY: as for NVRTC itself; kept loaded for the life of the process.
            if let Ok(library) = unsafe { libloading::Library::new(&path) } {
                std::mem::forget(library);
            }
        }
    }
}

impl Nvrtc {
    /// Compiles CUDA source to PTX with the given options (e.g. `--fmad=false`).
    pub fn compile(&self, source: &str, name: &str, options: &[&str]) -> Result<String> {
        let (source, name) = (CString::new(source)?, CString::new(name)?);
        let options: Vec<CString> = options.iter().map(|o| CString::new(*o)).collect::<Result<_, _>>()?;
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut program: Program = std::ptr::null_mut();
        // SAFETY: the strings outlive the calls; `program` is created before use and destroyed once.
        unsafe {
            self.check((self.create)(&mut program, source.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null()))?;
            let compiled = self.check((self.compile)(program, pointers.len() as c_int, pointers.as_ptr()));
            let result =
                compiled.map_err(|e| anyhow!("{e}: {}", self.program_log(program))).and_then(|()| self.program_ptx(program));
            (self.destroy)(&mut program);
            result
        }
    }

    unsafe fn program_ptx(&self, program: Program) -> Result<String> {
        let mut size = 0usize;
        self.check((self.ptx_size)(program, &mut size))?;
        let mut buffer = vec![0 as c_char; size.max(1)];
        self.check((self.ptx)(program, buffer.as_mut_ptr()))?;
        Ok(CStr::from_ptr(buffer.as_ptr()).to_string_lossy().into_owned())
    }

    unsafe fn program_log(&self, program: Program) -> String {
        let mut size = 0usize;
        if (self.log_size)(program, &mut size) != 0 || size == 0 {
            return String::new();
        }
        let mut buffer = vec![0 as c_char; size];
        if (self.log)(program, buffer.as_mut_ptr()) != 0 {
            return String::new();
        }
        CStr::from_ptr(buffer.as_ptr()).to_string_lossy().into_owned()
    }

    fn check(&self, status: Status) -> Result<()> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: NVRTC returns a static string for any status.
        let text = unsafe { CStr::from_ptr((self.error_string)(status)) }.to_string_lossy().into_owned();
        bail!("NVRTC error {status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    /// The wheel layouts of CUDA 13 and 12 and a libtorch archive's hashed copy are found, best
    /// first; a bare `libnvrtc.so` never is, and another major's library is not a candidate.
    #[test]
    fn candidates_follow_the_wheel_layouts_of_each_cuda_version() {
        let root = std::env::temp_dir().join(format!("nvrtc-layouts-{}", std::process::id()));
        let cu13 = root.join("cu13/site");
        touch(&cu13.join("torch/lib/libtorch_cpu.so"));
        touch(&cu13.join("nvidia/cu13/lib/libnvrtc.so.13"));
        touch(&cu13.join("nvidia/cu13/lib/libnvrtc.so"));
        let found = candidates(Some(&cu13.join("torch/lib")), 13);
        assert_eq!(found, vec![cu13.join("nvidia/cu13/lib/libnvrtc.so.13").display().to_string(), "libnvrtc.so.13".into()]);
        let cu12 = root.join("cu12/site");
        touch(&cu12.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
        touch(&cu12.join("torch/lib/libnvrtc-672ee683.so.12"));
        touch(&cu12.join("torch/lib/libnvrtc-builtins-1234.so.12.8"));
        touch(&cu12.join("torch/lib/libnvrtc-99.so.11.2"));
        let found = candidates(Some(&cu12.join("torch/lib")), 12);
        assert_eq!(
            found,
            vec![
                cu12.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12").display().to_string(),
                cu12.join("torch/lib/libnvrtc-672ee683.so.12").display().to_string(),
                "libnvrtc.so.12".into()
            ]
        );
        assert_eq!(candidates(None, 13), vec!["libnvrtc.so.13".to_string()]);
        std::fs::remove_dir_all(root).unwrap();
    }

    /// This machine's torch wheel is a CUDA build: its own NVRTC is the one loaded, with
    /// libtorch's major version.
    #[test]
    fn the_wheels_own_nvrtc_is_loaded() {
        let major = libtorch_cuda_major().expect("the .venv torch wheel has CUDA");
        let nvrtc = loaded().unwrap();
        assert_eq!(nvrtc.version.0, major);
        assert!(nvrtc.path.starts_with('/') && nvrtc.path.ends_with(&format!("libnvrtc.so.{major}")), "{}", nvrtc.path);
        assert!(describe().contains(&nvrtc.path));
    }

    #[test]
    fn compile_errors_carry_nvrtc_s_log() {
        let error = format!("{:#}", loaded().unwrap().compile("__global__ void broken( {", "broken.cu", &[]).unwrap_err());
        assert!(error.contains("NVRTC error") && error.contains("broken.cu"), "{error}");
    }
}

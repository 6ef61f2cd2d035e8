//! The fused neuron's CUDA source, compiled for the host, under AddressSanitizer
//! (`csrc/fused_lif_asan.cpp`): every charge mode, output and gradient variant, several lengths and
//! ragged grids, on buffers of exactly the size the kernels may touch. A clean run says the
//! kernels index only inside them; a planted off-by-one (one neuron more than the buffers hold)
//! must be caught, so the check is known to bite.

mod common;

use common::{repo, scratch};
use std::process::Command;

/// Compiles the driver with ASan (and `defines`), runs it, and returns (exit status, output).
fn asan_run(defines: &[&str]) -> (Option<i32>, String) {
    let dir = scratch(&format!("asan-{}", defines.len()));
    let binary = dir.join("fused_lif_asan");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let csrc = repo().join("csrc");
    let build = common::run(
        Command::new(&compiler)
            .args(["-std=c++17", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-ffp-contract=off"])
            .args(defines)
            .arg("-I")
            .arg(&csrc)
            .arg(csrc.join("fused_lif_asan.cpp"))
            .arg("-o")
            .arg(&binary),
    );
    assert!(build.status.success(), "{compiler} -fsanitize=address failed:\n{}", String::from_utf8_lossy(&build.stderr));
    let checked = common::run(Command::new(&binary).env("ASAN_OPTIONS", "detect_leaks=1"));
    (checked.status.code(), format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr)))
}

#[test]
fn the_kernels_stay_inside_their_buffers_under_address_sanitizer() {
    let (status, text) = asan_run(&[]);
    assert_eq!(status, Some(0), "{text}");
    assert!(text.contains("576 cases ran") && !text.contains("AddressSanitizer"), "{text}");
}

#[test]
fn address_sanitizer_catches_a_planted_overflow() {
    let (status, text) = asan_run(&["-DPLANT_OVERFLOW"]);
    assert_ne!(status, Some(0), "{text}");
    assert!(text.contains("heap-buffer-overflow"), "{text}");
}

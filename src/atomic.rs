//! Atomic file output: write beside the target under a temporary name, then rename, so that a
//! reader never sees a partly written file and a failed write leaves the old file in place.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Calls `write` with a temporary path in the target's directory, then renames it to `path`.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temporary = temporary_path(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let result = write(&temporary).and_then(|()| {
        std::fs::rename(&temporary, path).with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Writes bytes atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |temporary| Ok(std::fs::write(temporary, bytes)?))
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("snn-delays-atomic-{}", std::process::id()));
        let path = dir.join("out.txt");
        write_bytes(&path, b"old").unwrap();
        let failed = write_with(&path, |temporary| {
            std::fs::write(temporary, b"partial")?;
            anyhow::bail!("disk full")
        });
        assert!(format!("{:#}", failed.unwrap_err()).contains("out.txt"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

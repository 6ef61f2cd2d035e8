//! Atomic file output: write beside the target under a temporary name, flush it to disk, rename,
//! then flush the directory, so that a reader never sees a partly written file, a failed write
//! leaves the old file in place, and a power cut leaves the old file or the new one.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Calls `write` with a temporary path in the target's directory, then renames it to `path`.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temporary = temporary_path(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let result = write(&temporary).and_then(|()| {
        std::fs::File::open(&temporary)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot flush {}", temporary.display()))?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("cannot move {} to {}", temporary.display(), path.display()))?;
        sync_directory(path);
        Ok(())
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

/// Flushes the directory entry of a renamed file (best effort: some file systems refuse).
fn sync_directory(path: &Path) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
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

//! Atomic file output: write beside the target under a temporary name, flush it to disk, rename,
//! then flush the directory, so that a reader never sees a partly written file, a failed write
//! leaves the old file in place, and a power cut leaves the old file or the new one.
//!
//! Only a regular file (or a path to none) is replaced that way; through a symbolic link, the file
//! it points at is. A named pipe or a character device (`/dev/stdout`, `/dev/null`) is written
//! through instead, once the whole output is ready in a temporary file, so that a reader of the
//! pipe receives the whole file and the device node stays. A directory or any other kind of file
//! is refused.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// What an output path names.
enum Target {
    /// A regular file, or nothing yet: replaced by a rename.
    File(PathBuf),
    /// A named pipe or a character device: written through.
    Stream,
}

fn target_of(path: &Path) -> Result<Target> {
    let kind = match std::fs::metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::File(path.to_path_buf())),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if kind.is_file() {
        let real = std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))?;
        Ok(Target::File(real))
    } else if kind.is_fifo() || kind.is_char_device() {
        Ok(Target::Stream)
    } else if kind.is_dir() {
        bail!("{} is a directory: give the path of a file to write", path.display())
    } else {
        bail!("{} is neither a regular file, a named pipe nor a character device: refusing to write to it", path.display())
    }
}

/// Calls `write` with a temporary path, then moves the result to `path`: by a rename beside it,
/// or, for a pipe or a character device, by copying it through.
pub fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let result = match target_of(path)? {
        Target::File(file) => replace(&file, write),
        Target::Stream => write_through(path, write),
    };
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn replace(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
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
    result
}

/// Writes the whole output to a temporary file in the system's temporary directory, then copies
/// it into the pipe or device `path`.
fn write_through(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temporary = std::env::temp_dir().join(format!("snn-delays{}", temporary_name(path)));
    let result = write(&temporary).and_then(|()| {
        let mut source = std::fs::File::open(&temporary).with_context(|| format!("cannot read {}", temporary.display()))?;
        let mut sink = std::fs::OpenOptions::new().write(true).open(path)?;
        std::io::copy(&mut source, &mut sink)?;
        Ok(())
    });
    let _ = std::fs::remove_file(&temporary);
    result
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
    path.with_file_name(temporary_name(path))
}

/// `.<name>.tmp-<pid>`.
fn temporary_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}.tmp-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("snn-delays-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = scratch("failed");
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

    /// A reader of a named pipe receives the whole output, and the pipe stays a pipe.
    #[test]
    fn a_named_pipe_is_written_through() {
        let dir = scratch("pipe");
        let pipe = dir.join("model.pipe");
        assert!(std::process::Command::new("mkfifo").arg(&pipe).status().unwrap().success());
        let reader = {
            let pipe = pipe.clone();
            std::thread::spawn(move || std::fs::read(pipe).unwrap())
        };
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        write_bytes(&pipe, &bytes).unwrap();
        assert_eq!(reader.join().unwrap(), bytes);
        assert!(std::fs::metadata(&pipe).unwrap().file_type().is_fifo());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_is_refused_and_left_alone() {
        let dir = scratch("directory");
        std::fs::write(dir.join("inside"), b"kept").unwrap();
        let error = format!("{:#}", write_bytes(&dir, b"new").unwrap_err());
        assert!(error.contains("is a directory") && error.contains(&*dir.to_string_lossy()), "{error}");
        assert_eq!(std::fs::read(dir.join("inside")).unwrap(), b"kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Through a symbolic link the file it points at is replaced; the link stays.
    #[test]
    fn a_link_is_followed() {
        let dir = scratch("link");
        let (file, link) = (dir.join("real.json"), dir.join("link.json"));
        std::fs::write(&file, b"old").unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_bytes(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Device nodes are written through, never renamed over (checked without writing to one).
    #[test]
    fn a_character_device_is_a_stream() {
        assert!(matches!(target_of(Path::new("/dev/null")).unwrap(), Target::Stream));
        assert!(matches!(target_of(Path::new("/no/such/file")).unwrap(), Target::File(_)));
    }
}

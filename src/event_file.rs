//! TensorBoard event files, written by us so that an I/O error (a full disk) is an error, not a
//! panic. The format is TensorFlow's record file: per record, the data's length (u64, little
//! endian), the length's masked CRC32C, the data (a serialised `Event` protobuf), and the data's
//! masked CRC32C, where `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`. The first event
//! carries `file_version = "brain.Event:2"`.

use anyhow::{Context, Result};
use protobuf::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::Summary;

/// An open event file.
pub struct EventFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventFile {
    /// Creates `events.out.tfevents.<seconds>.<host>.<pid>` in `dir`.
    pub fn create_in(dir: &Path) -> Result<EventFile> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        let name = format!("events.out.tfevents.{}.{}.{}", wall_time() as u64, host.trim(), std::process::id());
        EventFile::create_at(&dir.join(name))
    }

    /// Creates the event file at `path` and writes its version record.
    pub fn create_at(path: &Path) -> Result<EventFile> {
        let file = File::create(path).with_context(|| format!("cannot create TensorBoard event file {}", path.display()))?;
        let mut events = EventFile { path: path.to_path_buf(), out: BufWriter::new(file) };
        let mut version = Event::new();
        version.set_wall_time(wall_time());
        version.set_file_version("brain.Event:2".to_string());
        events.write(&version)?;
        Ok(events)
    }

    /// Appends a summary at `step`.
    pub fn add(&mut self, summary: Summary, step: usize) -> Result<()> {
        let mut event = Event::new();
        event.set_wall_time(wall_time());
        event.set_step(step as i64);
        event.set_summary(summary);
        self.write(&event)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("cannot write TensorBoard events to {}", self.path.display()))
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        let data = event.write_to_bytes().context("cannot serialise a TensorBoard event")?;
        let length = (data.len() as u64).to_le_bytes();
        let record = [&length[..], &masked_crc(&length).to_le_bytes(), &data, &masked_crc(&data).to_le_bytes()].concat();
        self.out.write_all(&record).with_context(|| format!("cannot write TensorBoard events to {}", self.path.display()))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82f63b78), bit by bit through a 256-entry table.
fn crc32c(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            *entry = (0..8).fold(i as u32, |c, _| if c & 1 == 1 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 });
        }
        table
    });
    !bytes.iter().fold(!0u32, |crc, &b| table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    /// A full disk (/dev/full) is an error naming the file, not a panic.
    #[test]
    fn a_full_disk_is_an_error() {
        let failed = EventFile::create_at(Path::new("/dev/full")).and_then(|mut events| events.flush());
        let message = format!("{:#}", failed.expect_err("writing to /dev/full fails"));
        assert!(message.contains("/dev/full"), "{message}");
    }
}

//! SHD/SSC spike files (docs/method.md §5.1): HDF5 with variable-length `spikes/times` (float16 or
//! float32 seconds), variable-length integer `spikes/units`, integer `labels`, and optional
//! `extra/keys`. Each file is read once into two flat arrays (times as raw float16 bits or f32,
//! units as u16) with per-sample offsets, so a full SSC train split stays small in memory.
//!
//! Float16 times are kept as their raw bits and turned into milliseconds (`fp16(1000·t)`, §5.2)
//! through a lookup table while framing, in parallel. Every sample is checked: units in `0..700`, times finite and non-negative, labels in
//! `0..classes`, matching lengths, at least one event. Unsorted times are sorted (with a warning).
//! `NAME.h5.gz` and `NAME.h5.zip`, as downloaded, are decompressed once beside the original.

use super::frames::{Frames, Framing, Integration, TimePrecision};
use crate::atomic;
use crate::config::RAW_CHANNELS;
use anyhow::{bail, ensure, Context, Result};
use half::f16;
use hdf5::types::{FloatSize, TypeDescriptor, VarLenArray};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Samples read per HDF5 call, to bound the transient memory of variable-length reads.
const READ_CHUNK: usize = 2048;

/// The latest spike time accepted, in seconds. SHD and SSC samples last about 1 s; a time far
/// beyond this is almost always a file written in milliseconds, and would make millions of frames.
pub const MAX_SPIKE_SECONDS: f32 = 60.0;

#[derive(Debug)]
enum Times {
    Half(Vec<u16>),
    Single(Vec<f32>),
}

/// One split file, held compactly in memory.
#[derive(Debug)]
pub struct SpikeFile {
    pub path: PathBuf,
    times: Times,
    units: Vec<u16>,
    offsets: Vec<usize>,
    pub labels: Vec<i64>,
    pub keys: Vec<String>,
    /// The sample with the latest spike, and that time in seconds.
    pub latest: (usize, f32),
}

impl SpikeFile {
    /// Opens `NAME.h5`, or decompresses `NAME.h5.gz` / `NAME.h5.zip` beside it first.
    pub fn open_split(dir: &Path, name: &str, classes: usize) -> Result<SpikeFile> {
        let path = locate(dir, name)?;
        SpikeFile::open(&path, classes)
    }

    pub fn open(path: &Path, classes: usize) -> Result<SpikeFile> {
        let file = hdf5::File::open(path).with_context(|| format!("{} is not a readable HDF5 file", path.display()))?;
        let dataset = |name: &str| file.dataset(name).with_context(|| format!("{}: missing dataset `{name}`", path.display()));
        let times_set = dataset("spikes/times")?;
        let units_set = dataset("spikes/units")?;
        let labels_set = dataset("labels")?;
        let label_type = labels_set.dtype()?.to_descriptor()?;
        ensure!(
            matches!(label_type, TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)),
            "{}: `labels` must be integers, got {label_type:?}",
            path.display()
        );
        let labels: Vec<i64> =
            labels_set.read_raw().with_context(|| format!("{}: cannot read `labels` as integers", path.display()))?;
        let count = times_set.size();
        ensure!(
            units_set.size() == count && labels.len() == count,
            "{}: `spikes/times`, `spikes/units` and `labels` hold {count}, {} and {} samples",
            path.display(),
            units_set.size(),
            labels.len()
        );
        let precision = time_precision(&times_set).with_context(|| format!("{}: `spikes/times`", path.display()))?;
        let unit_type = units_set.dtype()?.to_descriptor()?;
        check_unit_type(path, &units_set, &unit_type)?;
        let native_units = matches!(
            &unit_type,
            TypeDescriptor::VarLenArray(inner) if **inner == TypeDescriptor::Unsigned(hdf5::types::IntSize::U2)
        );
        let times = match precision {
            TimePrecision::Half => Times::Half(Vec::new()),
            TimePrecision::Single => Times::Single(Vec::new()),
        };
        let mut reader = Reader { path, times, units: Vec::new(), offsets: vec![0], latest: (0, 0.0) };
        for start in (0..count).step_by(READ_CHUNK) {
            let range = start..(start + READ_CHUNK).min(count);
            match (precision, native_units) {
                (TimePrecision::Half, true) => reader.read::<f16, u16>(&times_set, &units_set, range)?,
                (TimePrecision::Half, false) => reader.read::<f16, i32>(&times_set, &units_set, range)?,
                (TimePrecision::Single, true) => reader.read::<f32, u16>(&times_set, &units_set, range)?,
                (TimePrecision::Single, false) => reader.read::<f32, i32>(&times_set, &units_set, range)?,
            }
        }
        check_labels(path, &labels, classes)?;
        let keys = read_keys(&file);
        Ok(SpikeFile {
            path: path.to_path_buf(),
            times: reader.times,
            units: reader.units,
            offsets: reader.offsets,
            labels,
            keys,
            latest: reader.latest,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn precision(&self) -> TimePrecision {
        match self.times {
            Times::Half(_) => TimePrecision::Half,
            Times::Single(_) => TimePrecision::Single,
        }
    }

    /// Number of events of sample `index`.
    pub fn event_count(&self, index: usize) -> usize {
        self.offsets[index + 1] - self.offsets[index]
    }

    /// The spike times of sample `index`, in ms (`fp(1000·t)`).
    pub fn times_ms(&self, index: usize) -> Vec<f32> {
        let range = self.offsets[index]..self.offsets[index + 1];
        match &self.times {
            Times::Half(bits) => {
                let table = half_ms_table();
                bits[range].iter().map(|&b| table[b as usize]).collect()
            }
            Times::Single(values) => values[range].iter().map(|&t| t * 1000.0).collect(),
        }
    }

    /// The spike times of sample `index`, in seconds as stored.
    pub fn times_seconds(&self, index: usize) -> Vec<f64> {
        let range = self.offsets[index]..self.offsets[index + 1];
        match &self.times {
            Times::Half(bits) => bits[range].iter().map(|&b| f64::from(f16::from_bits(b))).collect(),
            Times::Single(values) => values[range].iter().map(|&t| f64::from(t)).collect(),
        }
    }

    /// The frames of sample `index`.
    pub fn frames(&self, index: usize, framing: &Framing) -> Frames {
        let units = &self.units[self.offsets[index]..self.offsets[index + 1]];
        match framing.integration {
            Integration::Digitize => framing.digitized(&self.times_seconds(index), units),
            Integration::Grid | Integration::Paper2023 => framing.frames(&self.times_ms(index), units, self.precision()),
        }
    }
}

/// Accumulates validated samples into the flat arrays.
struct Reader<'a> {
    path: &'a Path,
    times: Times,
    units: Vec<u16>,
    offsets: Vec<usize>,
    latest: (usize, f32),
}

impl Reader<'_> {
    /// Reads samples `range` in the file's own element types, checks them and appends them.
    fn read<T: SpikeTime, U>(&mut self, times: &hdf5::Dataset, units: &hdf5::Dataset, range: std::ops::Range<usize>) -> Result<()>
    where
        U: hdf5::H5Type + Copy + Into<i64>,
    {
        let all_times = times.read_slice_1d::<VarLenArray<T>, _>(range.clone())?;
        let all_units = units.read_slice_1d::<VarLenArray<U>, _>(range.clone())?;
        let events: usize = all_units.iter().map(|u| u.len()).sum();
        self.units.reserve(events);
        T::reserve(&mut self.times, events);
        for (sample, (times, units)) in range.zip(all_times.iter().zip(&all_units)) {
            let (times, units) = (times.as_slice(), units.as_slice());
            let (sorted, last) = check_sample(self.path, sample, times, units)?;
            if last > self.latest.1 {
                self.latest = (sample, last);
            }
            if sorted {
                T::extend(&mut self.times, times.iter().copied());
                self.units.extend(units.iter().map(|&u| u.into() as u16));
            } else {
                eprintln!("warning: {} sample {sample}: spike times are not sorted; sorting them", self.path.display());
                let mut order: Vec<usize> = (0..times.len()).collect();
                order.sort_by(|&a, &b| times[a].seconds().total_cmp(&times[b].seconds()));
                T::extend(&mut self.times, order.iter().map(|&i| times[i]));
                self.units.extend(order.iter().map(|&i| units[i].into() as u16));
            }
            self.offsets.push(self.units.len());
        }
        Ok(())
    }
}

/// A stored spike-time type: float16 (kept as bits) or float32 seconds.
trait SpikeTime: hdf5::H5Type + Copy {
    fn seconds(self) -> f32;
    /// Finite and not negative.
    fn valid(self) -> bool;
    /// A key that orders valid times as their values.
    fn order_key(self) -> u32;
    fn reserve(times: &mut Times, additional: usize);
    fn extend(times: &mut Times, values: impl Iterator<Item = Self>);
}

impl SpikeTime for f16 {
    fn seconds(self) -> f32 {
        self.to_f32()
    }
    fn valid(self) -> bool {
        self.to_bits() < 0x7c00 || self.to_bits() == 0x8000
    }
    fn order_key(self) -> u32 {
        (self.to_bits() & 0x7fff) as u32
    }
    fn reserve(times: &mut Times, additional: usize) {
        if let Times::Half(bits) = times {
            bits.reserve(additional);
        }
    }
    fn extend(times: &mut Times, values: impl Iterator<Item = Self>) {
        if let Times::Half(bits) = times {
            bits.extend(values.map(f16::to_bits));
        }
    }
}

impl SpikeTime for f32 {
    fn seconds(self) -> f32 {
        self
    }
    fn valid(self) -> bool {
        self >= 0.0 && self.is_finite()
    }
    fn order_key(self) -> u32 {
        (self + 0.0).to_bits()
    }
    fn reserve(times: &mut Times, additional: usize) {
        if let Times::Single(values) = times {
            values.reserve(additional);
        }
    }
    fn extend(times: &mut Times, values: impl Iterator<Item = Self>) {
        if let Times::Single(stored) = times {
            stored.extend(values);
        }
    }
}

/// `fp16(1000·t)` in ms for every float16 bit pattern `t` (seconds), built once.
fn half_ms_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| TimePrecision::Half.round(f16::from_bits(b).to_f32() * 1000.0)).collect())
}

/// Units must be stored as integers: a float `spikes/units` is refused, naming the first sample
/// whose unit is not a whole number when there is one.
fn check_unit_type(path: &Path, units: &hdf5::Dataset, unit_type: &TypeDescriptor) -> Result<()> {
    let TypeDescriptor::VarLenArray(inner) = unit_type else {
        bail!("{}: `spikes/units` must be variable-length arrays of integers, got {unit_type:?}", path.display());
    };
    if matches!(**inner, TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)) {
        return Ok(());
    }
    let first_fraction = matches!(**inner, TypeDescriptor::Float(_))
        .then(|| units.read_1d::<VarLenArray<f64>>().ok())
        .flatten()
        .and_then(|samples| {
            samples
                .iter()
                .enumerate()
                .find_map(|(sample, values)| values.iter().find(|v| v.fract() != 0.0 || !v.is_finite()).map(|&v| (sample, v)))
        });
    match first_fraction {
        Some((sample, value)) => {
            bail!("{}: sample {sample}: unit {value} is not a whole number (`spikes/units` holds {inner:?})", path.display())
        }
        None => bail!("{}: `spikes/units` must hold integers, got {inner:?}", path.display()),
    }
}

/// Validates one sample in a single pass; returns whether its times are sorted, and the latest.
fn check_sample<T: SpikeTime, U: Copy + Into<i64>>(path: &Path, sample: usize, times: &[T], units: &[U]) -> Result<(bool, f32)> {
    let at = || format!("{} sample {sample}", path.display());
    ensure!(!times.is_empty(), "{}: the sample has no events", at());
    ensure!(times.len() == units.len(), "{}: {} times but {} units", at(), times.len(), units.len());
    let mut sorted = true;
    let mut previous = 0u32;
    let mut latest = (0u32, 0usize);
    for (i, (&time, &unit)) in times.iter().zip(units).enumerate() {
        if !time.valid() {
            bail!("{}: event {i} has time {}, expected a finite non-negative number of seconds", at(), time.seconds());
        }
        let u: i64 = unit.into();
        if !(0..RAW_CHANNELS as i64).contains(&u) {
            bail!("{}: event {i} has unit {u}, expected 0..{}", at(), RAW_CHANNELS - 1);
        }
        let key = time.order_key();
        sorted &= key >= previous;
        previous = key;
        if key > latest.0 {
            latest = (key, i);
        }
    }
    let latest_seconds = times[latest.1].seconds();
    ensure!(
        latest_seconds <= MAX_SPIKE_SECONDS,
        "{}: event {} is at {latest_seconds} s, beyond {MAX_SPIKE_SECONDS} s; spike times must be in seconds \
         (a file written in milliseconds looks like this)",
        at(),
        latest.1
    );
    Ok((sorted, latest_seconds))
}

fn check_labels(path: &Path, labels: &[i64], classes: usize) -> Result<()> {
    if let Some((sample, label)) = labels.iter().enumerate().find(|(_, &l)| !(0..classes as i64).contains(&l)) {
        bail!("{} sample {sample}: label {label} is outside 0..{} (config key `n_outputs`)", path.display(), classes - 1);
    }
    Ok(())
}

fn time_precision(dataset: &hdf5::Dataset) -> Result<TimePrecision> {
    match dataset.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenArray(inner) => match *inner {
            TypeDescriptor::Float(FloatSize::U2) => Ok(TimePrecision::Half),
            TypeDescriptor::Float(FloatSize::U4) | TypeDescriptor::Float(FloatSize::U8) => Ok(TimePrecision::Single),
            other => bail!("expected variable-length float times, got elements of {other:?}"),
        },
        other => bail!("expected variable-length float times, got {other:?}"),
    }
}

fn read_keys(file: &hdf5::File) -> Vec<String> {
    let Ok(dataset) = file.dataset("extra/keys") else { return Vec::new() };
    if let Ok(keys) = dataset.read_raw::<hdf5::types::VarLenUnicode>() {
        return keys.iter().map(|k| k.as_str().to_string()).collect();
    }
    dataset.read_raw::<hdf5::types::VarLenAscii>().map(|k| k.iter().map(|k| k.as_str().to_string()).collect()).unwrap_or_default()
}

/// Finds `NAME.h5` in `dir`, decompressing `NAME.h5.gz` or `NAME.h5.zip` into it when needed.
pub fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(format!("{name}.h5"));
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.h5.gz"));
    let zip = dir.join(format!("{name}.h5.zip"));
    if gz.is_file() {
        eprintln!("decompressing {} (once)", gz.display());
        let mut decoder = flate2::read::GzDecoder::new(std::fs::File::open(&gz)?);
        atomic::write_with(&plain, |temporary| copy_into(&mut decoder, temporary))
            .with_context(|| format!("cannot decompress {}", gz.display()))?;
    } else if zip.is_file() {
        eprintln!("extracting {} (once)", zip.display());
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip)?)
            .with_context(|| format!("{} is not a zip archive", zip.display()))?;
        let inner = format!("{name}.h5");
        let mut entry = archive.by_name(&inner).with_context(|| format!("{} holds no `{inner}`", zip.display()))?;
        atomic::write_with(&plain, |temporary| copy_into(&mut entry, temporary))
            .with_context(|| format!("cannot extract {}", zip.display()))?;
    } else {
        bail!("dataset file {} not found (nor .h5.gz or .h5.zip)", plain.display());
    }
    Ok(plain)
}

fn copy_into(reader: &mut impl Read, path: &Path) -> Result<()> {
    let mut out = std::fs::File::create(path)?;
    std::io::copy(reader, &mut out)?;
    out.sync_all()?;
    Ok(())
}

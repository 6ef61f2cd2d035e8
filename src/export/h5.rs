//! Small helpers for the HDF5 exports: files and groups without modification times (an export
//! is the same bytes each time), scalar strings and numbers, and N-d arrays written from
//! row-major data, as h5py reads them.

use anyhow::{Context, Result};
use hdf5::types::VarLenUnicode;
use hdf5::{File, Group, H5Type};
use std::path::Path;

/// Creates `path` with no modification times in its objects, so that the same content gives
/// the same bytes.
pub fn create_file(path: &Path) -> Result<File> {
    File::with_options()
        .with_fcpl(|plist| plist.obj_track_times(false))
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// A group without a modification time.
pub fn group(parent: &Group, name: &str) -> Result<Group> {
    Ok(parent.create_group_builder().obj_track_times(false).create(name)?)
}

/// A scalar UTF-8 string (h5py reads it as `bytes`).
pub fn string(group: &Group, name: &str, value: &str) -> Result<()> {
    let value: VarLenUnicode = value.parse()?;
    group.new_dataset::<VarLenUnicode>().create(name)?.write_scalar(&value)?;
    Ok(())
}

/// A scalar number.
pub fn scalar<T: H5Type>(group: &Group, name: &str, value: T) -> Result<()> {
    group.new_dataset::<T>().create(name)?.write_scalar(&value)?;
    Ok(())
}

/// An array of `shape` from row-major `data`; when large, byte-shuffled and deflate-compressed
/// at level 9 in one chunk (any HDF5 reader, h5py included, reads it as it is).
pub fn array<T: H5Type>(group: &Group, name: &str, shape: &[usize], data: &[T]) -> Result<()> {
    let builder = group.new_dataset::<T>().shape(shape);
    let builder = if data.len() >= COMPRESS_FROM { builder.chunk(shape).shuffle().deflate(9) } else { builder };
    builder.create(name)?.write_raw(data)?;
    Ok(())
}

/// Arrays of at least this many values are compressed.
const COMPRESS_FROM: usize = 4096;

/// An `(N, 2)` array of strings (NIR's edges).
pub fn string_pairs(group: &Group, name: &str, pairs: &[(String, String)]) -> Result<()> {
    let flat: Vec<VarLenUnicode> =
        pairs.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]).map(str::parse).collect::<Result<_, _>>()?;
    array(group, name, &[pairs.len(), 2], &flat)
}

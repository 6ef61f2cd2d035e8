//! Small helpers for the HDF5 exports: scalar strings and numbers, and N-d arrays written from
//! row-major data, as h5py reads them.

use anyhow::Result;
use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type};

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

/// An array of `shape` from row-major `data`, gzip-compressed when large (as `nir.write` does).
pub fn array<T: H5Type>(group: &Group, name: &str, shape: &[usize], data: &[T]) -> Result<()> {
    let builder = group.new_dataset::<T>().shape(shape);
    let builder = if data.len() >= COMPRESS_FROM { builder.chunk(shape).deflate(4) } else { builder };
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

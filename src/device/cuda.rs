//! What the CUDA driver says about a device: which physical GPU a `cuda:N` is (name, UUID as
//! `nvidia-smi -L` prints it, PCI address, and its entry of `CUDA_VISIBLE_DEVICES`), and how much
//! of its memory is free. Queried through the driver API (cudarc), on libtorch's primary context.

use anyhow::{anyhow, Result};
use cudarc::driver::{sys::CUdevice_attribute as Attribute, CudaContext};

/// A CUDA device as the run header names it.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub name: String,
    pub uuid: String,
    pub pci: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// The driver's description of CUDA device `index` (of those visible to this process).
pub fn info(index: usize) -> Result<GpuInfo> {
    std::panic::catch_unwind(|| query(index)).map_err(|_| anyhow!("the CUDA driver library (libcuda.so) could not be loaded"))?
}

fn query(index: usize) -> Result<GpuInfo> {
    let context = CudaContext::new(index).map_err(|e| anyhow!("cuda:{index}: {e:?}"))?;
    let attribute = |which| context.attribute(which).map_err(|e| anyhow!("cuda:{index}: {e:?}"));
    let pci = format!(
        "{:04x}:{:02x}:{:02x}.0",
        attribute(Attribute::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
        attribute(Attribute::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
        attribute(Attribute::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?
    );
    let uuid = context.uuid().map_err(|e| anyhow!("cuda:{index}: {e:?}"))?;
    let (free, total) = context.mem_get_info().map_err(|e| anyhow!("cuda:{index}: {e:?}"))?;
    Ok(GpuInfo {
        name: context.name().map_err(|e| anyhow!("cuda:{index}: {e:?}"))?,
        uuid: uuid_text(&uuid.bytes.map(|b| b as u8)),
        pci,
        free_bytes: free as u64,
        total_bytes: total as u64,
    })
}

/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as nvidia-smi writes a UUID.
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("GPU-{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The `CUDA_VISIBLE_DEVICES` entry that device `index` of this process is, when the variable is set.
pub fn visible_entry(visible_devices: Option<&str>, index: usize) -> Option<String> {
    visible_devices?.split(',').map(str::trim).filter(|s| !s.is_empty()).nth(index).map(str::to_string)
}

/// One line naming the physical GPU behind `cuda:index`, for run headers.
pub fn describe(index: usize) -> String {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let entry = visible_entry(visible.as_deref(), index).map_or(String::new(), |e| format!(", CUDA_VISIBLE_DEVICES entry {e}"));
    match info(index) {
        Ok(gpu) => format!("{} {} at PCI {}{entry}", gpu.name, gpu.uuid, gpu.pci),
        Err(e) => format!("unknown GPU ({e:#}){entry}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_visible_entries_read_as_nvidia_smi_writes_them() {
        let bytes: [u8; 16] = [0x8b, 0x2e, 0x71, 0x0c, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x02, 0x03, 0x04];
        assert_eq!(uuid_text(&bytes), "GPU-8b2e710c-1234-5678-9abc-def001020304");
        assert_eq!(visible_entry(Some("4,5, 7"), 2).as_deref(), Some("7"));
        assert_eq!(visible_entry(Some("GPU-ab"), 0).as_deref(), Some("GPU-ab"));
        assert_eq!(visible_entry(None, 0), None);
        assert_eq!(visible_entry(Some("3"), 1), None);
    }

    #[test]
    fn without_a_gpu_the_description_says_so() {
        if tch::Cuda::device_count() == 0 {
            assert!(info(0).is_err());
            assert!(describe(0).starts_with("unknown GPU"));
        }
    }
}

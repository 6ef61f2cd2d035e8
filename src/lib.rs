//! snn-delays: learning synaptic delays in spiking neural networks with dilated convolutions
//! with learnable spacings (Hammouamri, Khalfaoui-Hassani, Masquelier, ICLR 2024), on libtorch.
//!
//! The numerics follow the PyTorch reference (SNN-delays + SpikingJelly 2.0 + DCLS 0.1.1) as
//! described in `docs/method.md`; parity tests in `tests/` check them against those packages.

pub mod atomic;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod event_file;
pub mod export;
pub mod infer;
pub mod logging;
pub mod memory;
pub mod model;
pub mod op_count;
pub mod process;
pub mod progress;
pub mod train;

//! The DCLS-Delays spiking network: kernel construction, neurons, layers, the network and its loss.

pub mod dcls;
pub mod layers;
pub mod loss;
pub mod network;
pub mod neuron;

pub use network::{DropoutMasks, Network};

//! The DCLS-Delays spiking network: kernel construction, neurons, layers, the network and its loss.

pub mod dcls;
pub mod eval_form;
pub mod global_norm;
pub mod layers;
pub mod loss;
pub mod network;
pub mod neuron;
pub mod recurrent;
pub mod time_conv;

pub use global_norm::GlobalSum;
pub use network::{DropoutMasks, Network, Recording, TrainPass};

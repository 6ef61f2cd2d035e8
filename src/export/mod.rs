//! Writing a trained network for deployment (docs/method.md, "Deployment"), from its eval form:
//! - [`delays`]: our own format, the inference engine's input ([`recurrent_delays`] for
//!   recurrent-delay networks);
//! - [`netx`]: lava-dl's netx HDF5 (dense layers with per-synapse delays);
//! - [`nir`]: the Neuromorphic Intermediate Representation, with per-synapse delays expanded
//!   into one `Delay` and `Affine` branch per distinct delay.

pub mod delays;
mod h5;
pub mod netx;
pub mod nir;
pub mod recurrent_delays;

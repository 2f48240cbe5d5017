//! rvs control plane: the rvsd configuration file (see [`config`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod ctl;
pub mod metrics;

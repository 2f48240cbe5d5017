//! rvs control plane: the rvsd configuration file (see [`config`]), the control socket
//! ([`ctl`]), metrics ([`metrics`]) and real-server health checks ([`health`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod ctl;
pub mod deadline;
pub mod health;
pub mod metrics;

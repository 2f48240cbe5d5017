//! The control plane's runtime side: the control-socket protocol ([`proto`]), the client rvsadm
//! uses ([`client`]).

pub mod admin;
pub mod client;
pub mod model;
pub mod proto;
pub mod server;

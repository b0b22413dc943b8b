//! The pprof codec: wire types and conversion to and from [`crate::Profile`].

pub mod proto;

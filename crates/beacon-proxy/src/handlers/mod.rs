//! Request handlers, one module per route family.

pub mod chat;
pub mod models;
pub mod ops;
pub mod splice;

//! Request handlers: the metered pipeline shared by every API, and the unmetered routes.

pub mod metered;
pub mod models;
pub mod ops;
pub mod retrieval;
pub mod splice;

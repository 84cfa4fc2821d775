//! Access policy: what each identity may do on each store.
pub mod sql;

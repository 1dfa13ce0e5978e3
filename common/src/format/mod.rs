//! Output formats for SIEMs: a stored record as an OCSF event ([`ocsf`]) or an ECS document
//! ([`ecs`]). Each format keeps one mapping table per catalogue action, which the docs print
//! (`docs/formats.md`), and places every field of [`crate::schema::Field::ALL`] somewhere: a
//! field the format has no attribute for goes to its free-form part (OCSF `unmapped`, ECS
//! `labels`), never nowhere.

mod context;
pub mod ecs;
mod json;
pub mod ocsf;

pub use context::Context;

//! Where records come from besides OTLP: tailed files.

pub mod file;

//! Example apps that emit CodeStax audit events. See `src/bin/otel_audit_app.rs`.

#![forbid(unsafe_code)]

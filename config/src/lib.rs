//! Configuration (placeholder in this branch).

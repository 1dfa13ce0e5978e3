//! The agent (placeholder in this branch).

//! Example apps.

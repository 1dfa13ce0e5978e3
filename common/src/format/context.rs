//! What an output event says that a record does not: which product wrote it, and where.

/// The product and the collector that emit the events, for the formats' metadata. The product's
/// name must not be empty: OCSF names the product (and an Authentication event's `service`) by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The product's name (OCSF `metadata.product.name`, ECS `observer.product`).
    pub product_name: String,
    /// The product's vendor (OCSF `metadata.product.vendor_name`, ECS `observer.vendor`).
    pub vendor_name: String,
    /// The product's version (OCSF `metadata.product.version`, ECS `observer.version`).
    pub product_version: String,
    /// The collector's own id, if it has one (OCSF `metadata.reporter.uid`, ECS `observer.name`).
    pub collector_uid: Option<String>,
    /// The collector's host name (OCSF `metadata.reporter.hostname`, ECS `observer.hostname`).
    pub collector_host: Option<String>,
}

impl Context {
    /// CodeStax Audit at `version`, with no collector named.
    pub fn new(product_version: impl Into<String>) -> Context {
        Context {
            product_name: "CodeStax Audit".into(),
            vendor_name: "CodeStax".into(),
            product_version: product_version.into(),
            collector_uid: None,
            collector_host: None,
        }
    }

    /// The same context naming the collector that emits the events.
    pub fn with_collector(mut self, uid: Option<String>, host: Option<String>) -> Context {
        self.collector_uid = uid.filter(|s| !s.is_empty());
        self.collector_host = host.filter(|s| !s.is_empty());
        self
    }
}

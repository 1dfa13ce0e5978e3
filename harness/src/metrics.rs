//! Reading the Prometheus text the collector and the agent serve.

/// The sum of every sample in `text` whose name (with its labels, in the order the process
/// writes them) starts with `prefix`: `codestax_agent_file_lag_bytes`, or
/// `codestax_collector_records_rejected_total{receiver="owner",reason="id"}`.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_a_prefix_names() {
        let text = "# HELP x_total x\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4.5\nx_totals 9\n";
        assert_eq!(metric_sum(text, "x_total{"), 7.5);
        assert_eq!(metric_sum(text, "x_total{a=\"1\",b=\"3\"}"), 4.5);
        assert_eq!(metric_sum(text, "y"), 0.0);
    }
}

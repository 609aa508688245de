//! What the benchmarks that live in the integration tests share: how many runs
//! (`CUTOVER_BENCH_RUNS`, set by `cargo xtask bench ...`) and the summary they print.

/// Runs to measure: `$CUTOVER_BENCH_RUNS`, default 10.
pub fn runs() -> usize {
    std::env::var("CUTOVER_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10)
}

/// Median, 90th percentile, minimum and maximum of `values` (at least one), in that order.
pub fn summary(values: &[f64]) -> (f64, f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let last = v.len() - 1;
    (
        v[v.len() / 2],
        v[(v.len() * 9 / 10).min(last)],
        v[0],
        v[last],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_unsorted_values() {
        assert_eq!(summary(&[5.0, 1.0, 3.0, 2.0, 4.0]), (3.0, 5.0, 1.0, 5.0));
        assert_eq!(summary(&[7.0]), (7.0, 7.0, 7.0, 7.0));
    }
}

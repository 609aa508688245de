//! Comparing the new color with the live one: the Mann-Whitney U test, so a `compare`
//! metric needs no separate Kayenta service.
//!
//! # What it answers
//!
//! Given samples of a metric from the live color (the *baseline*, e.g. p99 latency every
//! 10 s from blue) and from the new color (the *candidate*, the same query against green),
//! is the candidate worse than the baseline, or could the difference be chance?
//!
//! # U
//!
//! Take every (baseline, candidate) pair of samples and count the pairs in which the
//! candidate sample is larger; a tie counts one half. That count is **U** (here always the
//! candidate's U). It runs from 0 (every candidate sample below every baseline sample) to
//! `n_baseline × n_candidate` (every one above); the baseline's U is the rest, so the two add
//! up to `n_baseline × n_candidate`. If both colors behave alike, U sits near the middle,
//! `n_baseline × n_candidate / 2`.
//!
//! # Why ranks
//!
//! U depends only on the order of the samples, not their size. So the test assumes no
//! particular shape (latencies are not normally distributed: they are skewed, with a long
//! tail), and one wild outlier (a 30 s timeout among 20 ms requests) moves U by at most one
//! sample's worth of pairs, where it would drag a mean or a t-test far off. Transforming all
//! samples by any increasing function (milliseconds to seconds, a logarithm) changes nothing.
//!
//! # p-value
//!
//! When both colors behave alike, U is approximately normal with mean `n_b·n_c/2` and
//! variance `n_b·n_c/12 · ((N+1) − Σ(t³−t)/(N(N−1)))`, where `N = n_b + n_c` and each `t` is
//! the size of a group of tied values (the *tie correction*: ties make U vary less). Because
//! U moves in steps of ½ and the normal curve is continuous, U is moved ½ toward the mean
//! before standardising (the *continuity correction*): `z = (U − mean ∓ ½) / sd`. The
//! p-value is the chance, if both colors behaved alike, of a U at least this far out in the
//! direction asked about:
//!
//! - [`Alternative::Greater`]: "the candidate is stochastically greater than the baseline"
//!   (its values tend to be larger) — *worse*, for latency or error rates.
//! - [`Alternative::Less`]: the candidate's values tend to be smaller — worse for throughput
//!   or a success ratio.
//! - [`Alternative::TwoSided`]: different either way.
//!
//! # Confidence
//!
//! With `confidence` 0.95, the candidate fails when `p < 1 − 0.95 = 0.05`: a difference this
//! large would arise by chance less than 5 % of the time. Higher confidence means fewer false
//! alarms and more real regressions missed. The normal approximation is poor with fewer than
//! about 8 samples per side, so [`judge`] calls such a comparison inconclusive (`min_samples`).

use statrs::distribution::{ContinuousCDF, Normal};

use super::verdict::MeasurementPhase;

/// What the test looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alternative {
    /// The candidate's values tend to be larger than the baseline's (worse latency, errors).
    Greater,
    /// The candidate's values tend to be smaller than the baseline's (worse throughput).
    Less,
    /// The candidate's values differ from the baseline's in either direction.
    TwoSided,
}

/// The outcome of a Mann-Whitney U test.
#[derive(Debug, Clone, PartialEq)]
pub struct UTest {
    /// The candidate's U: (baseline, candidate) pairs with the candidate larger, ties ½.
    pub u: f64,
    /// U standardised with tie and continuity corrections (positive: candidate larger).
    pub z: f64,
    /// Chance of a U this extreme, in the direction asked, if both colors behave alike.
    pub p_value: f64,
    /// Baseline samples used (NaN dropped).
    pub n_baseline: usize,
    /// Candidate samples used (NaN dropped).
    pub n_candidate: usize,
}

/// Runs the Mann-Whitney U test (normal approximation, tie and continuity corrected).
///
/// NaN samples are dropped first. Returns `None` when a side has no samples left, or when
/// every sample on both sides has the same value (U carries no information then, and the
/// variance is zero).
pub fn mann_whitney(
    baseline: &[f64],
    candidate: &[f64],
    alternative: Alternative,
) -> Option<UTest> {
    let baseline: Vec<f64> = baseline.iter().copied().filter(|x| !x.is_nan()).collect();
    let candidate: Vec<f64> = candidate.iter().copied().filter(|x| !x.is_nan()).collect();
    if baseline.is_empty() || candidate.is_empty() {
        return None;
    }
    let mut pooled: Vec<(f64, bool)> = baseline
        .iter()
        .map(|&x| (x, false))
        .chain(candidate.iter().map(|&x| (x, true)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pooled.first().map(|p| p.0) == pooled.last().map(|p| p.0) {
        return None;
    }

    // Ranks 1..=N, tied values sharing the mean of their ranks.
    let mut candidate_rank_sum = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < pooled.len() {
        // `==` rather than the sort order, so -0.0 and 0.0 tie.
        let end = start
            + pooled[start..]
                .iter()
                .take_while(|p| p.0 == pooled[start].0)
                .count();
        let rank = (start + 1 + end) as f64 / 2.0;
        let in_candidate = pooled[start..end].iter().filter(|p| p.1).count();
        candidate_rank_sum += rank * in_candidate as f64;
        let t = (end - start) as f64;
        tie_term += t * t * t - t;
        start = end;
    }

    let (n_b, n_c) = (baseline.len() as f64, candidate.len() as f64);
    let n = n_b + n_c;
    let u = candidate_rank_sum - n_c * (n_c + 1.0) / 2.0;
    let mean = n_b * n_c / 2.0;
    let variance = n_b * n_c / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    // Counts only, never NaN; zero when every sample ties (excluded above).
    if variance <= 0.0 {
        return None;
    }
    let sd = variance.sqrt();
    let d = u - mean;
    let normal = Normal::standard();
    let (z, p_value) = match alternative {
        Alternative::Greater => {
            let z = (d - 0.5) / sd;
            (z, normal.sf(z))
        }
        Alternative::Less => {
            let z = (d + 0.5) / sd;
            (z, normal.cdf(z))
        }
        Alternative::TwoSided => {
            let z = d.signum() * (d.abs() - 0.5).max(0.0) / sd;
            (z, (2.0 * normal.sf(z.abs())).min(1.0))
        }
    };
    Some(UTest {
        u,
        z,
        p_value: p_value.clamp(0.0, 1.0),
        n_baseline: baseline.len(),
        n_candidate: candidate.len(),
    })
}

/// Judges the candidate against the baseline: `Failed` when `p < 1 − confidence`.
///
/// `Inconclusive` when either side has fewer than `min_samples` samples (NaN not counted;
/// at least one is always required), or when `confidence` is not strictly between 0 and 1.
/// When every sample on both sides is equal there is no difference to find: `Successful`.
pub fn judge(
    baseline: &[f64],
    candidate: &[f64],
    alternative: Alternative,
    confidence: f64,
    min_samples: usize,
) -> MeasurementPhase {
    if !(confidence > 0.0 && confidence < 1.0) {
        return MeasurementPhase::Inconclusive;
    }
    let enough = |xs: &[f64]| xs.iter().filter(|x| !x.is_nan()).count() >= min_samples.max(1);
    if !enough(baseline) || !enough(candidate) {
        return MeasurementPhase::Inconclusive;
    }
    match mann_whitney(baseline, candidate, alternative) {
        Some(test) if test.p_value < 1.0 - confidence => MeasurementPhase::Failed,
        _ => MeasurementPhase::Successful,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use Alternative::{Greater, Less, TwoSided};
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Pairs with the candidate larger, ties ½: U by its definition, for checking.
    fn u_by_pairs(baseline: &[f64], candidate: &[f64]) -> f64 {
        let mut u = 0.0;
        for b in baseline {
            for c in candidate {
                if c > b {
                    u += 1.0;
                } else if c == b {
                    u += 0.5;
                }
            }
        }
        u
    }

    #[test]
    fn hand_computed_example_with_a_tie() {
        // Candidate 3 beats 1 and 2 and ties 3 (2.5 pairs); 6, 7, 8, 9 beat all five (20).
        // N = 10, mean 12.5, one tie of two: var = 25/12 · (11 − 6/90) = 22.777…
        let b = [1.0, 2.0, 3.0, 4.0, 5.0];
        let c = [3.0, 6.0, 7.0, 8.0, 9.0];
        let g = mann_whitney(&b, &c, Greater).unwrap();
        assert_eq!(g.u, 22.5);
        assert_eq!((g.n_baseline, g.n_candidate), (5, 5));
        assert!(
            close(g.z, 9.5 / 22.777_777_777_777_78_f64.sqrt(), 1e-12),
            "{g:?}"
        );
        assert!(close(g.z, 1.990_526_342_943_297_8, 1e-12), "{g:?}");
        assert!(close(g.p_value, 0.023_266_492_537_255_3, 1e-9), "{g:?}");
        let l = mann_whitney(&b, &c, Less).unwrap();
        assert!(close(l.p_value, 0.986_098_518_782_675_3, 1e-9), "{l:?}");
        let t = mann_whitney(&b, &c, TwoSided).unwrap();
        assert!(close(t.p_value, 0.046_532_985_074_510_6, 1e-9), "{t:?}");
    }

    #[test]
    fn hand_computed_example_without_ties() {
        // U = 1 + 3 + 4 + 4 = 12 of 16 pairs; mean 8, var 16·9/12 = 12.
        let b = [1.1, 2.3, 3.5, 7.0];
        let c = [2.0, 4.0, 8.0, 9.0];
        let g = mann_whitney(&b, &c, Greater).unwrap();
        assert_eq!(g.u, 12.0);
        assert!(close(g.z, 3.5 / 12f64.sqrt(), 1e-12), "{g:?}");
        assert!(close(g.p_value, 0.156_160_710_838_108, 1e-9), "{g:?}");
    }

    #[test]
    fn u_of_both_sides_adds_up_to_all_pairs() {
        let b = [5.0, 1.0, 9.0, 9.0, 2.5, 7.0];
        let c = [9.0, 3.0, 2.5, 8.0];
        let u_c = mann_whitney(&b, &c, Greater).unwrap().u;
        let u_b = mann_whitney(&c, &b, Greater).unwrap().u;
        assert_eq!(u_c, u_by_pairs(&b, &c));
        assert_eq!(u_b + u_c, 24.0);
    }

    #[test]
    fn nan_samples_are_dropped() {
        let b = [1.0, f64::NAN, 2.0, 3.0];
        let c = [f64::NAN, 4.0, 5.0];
        let t = mann_whitney(&b, &c, Greater).unwrap();
        assert_eq!((t.n_baseline, t.n_candidate, t.u), (3, 2, 6.0));
        assert_eq!(
            t,
            mann_whitney(&[1.0, 2.0, 3.0], &[4.0, 5.0], Greater).unwrap()
        );
    }

    #[test]
    fn nothing_to_test_is_none() {
        assert_eq!(mann_whitney(&[], &[1.0], Greater), None);
        assert_eq!(mann_whitney(&[1.0], &[], Greater), None);
        assert_eq!(mann_whitney(&[f64::NAN], &[1.0, 2.0], Greater), None);
        assert_eq!(mann_whitney(&[2.0, 2.0], &[2.0, 2.0, 2.0], TwoSided), None);
        assert_eq!(mann_whitney(&[0.0, -0.0], &[0.0], Greater), None);
    }

    #[test]
    fn infinities_are_ordinary_extremes() {
        let b = [1.0, 2.0, 3.0];
        let c = [4.0, f64::INFINITY, 5.0];
        assert_eq!(mann_whitney(&b, &c, Greater).unwrap().u, 9.0);
    }

    #[test]
    fn judge_table() {
        let base: Vec<f64> = (0..20).map(|i| 100.0 + f64::from(i)).collect();
        let slower: Vec<f64> = base.iter().map(|x| x + 50.0).collect();
        let faster: Vec<f64> = base.iter().map(|x| x - 50.0).collect();
        let same: Vec<f64> = base.iter().rev().copied().collect();
        use MeasurementPhase::{Failed, Inconclusive, Successful};
        /// Baseline, candidate, alternative, confidence, min samples, expected.
        type Row<'a> = (
            &'a [f64],
            &'a [f64],
            Alternative,
            f64,
            usize,
            MeasurementPhase,
        );
        let table: [Row; 13] = [
            (&base, &slower, Greater, 0.95, 8, Failed),
            (&base, &faster, Greater, 0.95, 8, Successful),
            (&base, &same, Greater, 0.95, 8, Successful),
            (&base, &faster, Less, 0.95, 8, Failed),
            (&base, &slower, Less, 0.95, 8, Successful),
            (&base, &slower, TwoSided, 0.95, 8, Failed),
            (&base, &faster, TwoSided, 0.95, 8, Failed),
            // Too few samples on either side.
            (&base[..5], &slower[..5], Greater, 0.95, 8, Inconclusive),
            (&base, &slower[..7], Greater, 0.95, 8, Inconclusive),
            (&[], &[], Greater, 0.95, 0, Inconclusive),
            // Nonsense confidence never passes.
            (&base, &same, Greater, f64::NAN, 8, Inconclusive),
            (&base, &same, Greater, 1.0, 8, Inconclusive),
            // All equal: nothing got worse.
            (&[0.0; 10], &[0.0; 10], Greater, 0.95, 8, Successful),
        ];
        for (i, (b, c, alt, conf, min, want)) in table.into_iter().enumerate() {
            assert_eq!(judge(b, c, alt, conf, min), want, "row {i}");
        }
    }

    #[test]
    fn nan_samples_do_not_count_toward_min_samples() {
        let mut b: Vec<f64> = (0..7).map(f64::from).collect();
        b.extend([f64::NAN; 5]);
        let c: Vec<f64> = (100..120).map(f64::from).collect();
        assert_eq!(
            judge(&b, &c, Greater, 0.95, 8),
            MeasurementPhase::Inconclusive
        );
        b.push(7.0);
        assert_eq!(judge(&b, &c, Greater, 0.95, 8), MeasurementPhase::Failed);
    }

    /// Samples on a coarse grid, so ties are common.
    fn samples(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec((-200i32..200).prop_map(f64::from), len)
    }

    fn alternative() -> impl Strategy<Value = Alternative> {
        prop_oneof![Just(Greater), Just(Less), Just(TwoSided)]
    }

    proptest! {
        #[test]
        fn p_value_is_a_probability(b in samples(1..40), c in samples(1..40), alt in alternative()) {
            if let Some(t) = mann_whitney(&b, &c, alt) {
                prop_assert!((0.0..=1.0).contains(&t.p_value), "{t:?}");
                prop_assert!(t.z.is_finite(), "{t:?}");
            }
        }

        #[test]
        fn u_counts_pairs_and_both_sides_add_up(b in samples(1..30), c in samples(1..30)) {
            if let (Some(bc), Some(cb)) = (mann_whitney(&b, &c, Greater), mann_whitney(&c, &b, Greater)) {
                prop_assert_eq!(bc.u, u_by_pairs(&b, &c));
                prop_assert_eq!(bc.u + cb.u, (b.len() * c.len()) as f64);
            }
        }

        #[test]
        fn a_large_shift_up_is_detected(b in samples(20..60), c in samples(20..60)) {
            let shifted: Vec<f64> = c.iter().map(|x| x + 1_000.0).collect();
            let t = mann_whitney(&b, &shifted, Greater).unwrap();
            prop_assert!(t.p_value < 0.01, "{t:?}");
            prop_assert_eq!(judge(&b, &shifted, Greater, 0.99, 8), MeasurementPhase::Failed);
            // And it is no evidence of the candidate being smaller.
            prop_assert!(mann_whitney(&b, &shifted, Less).unwrap().p_value > 0.99);
        }

        #[test]
        fn a_permutation_of_the_baseline_is_not_worse(
            (b, c) in samples(1..60).prop_flat_map(|b| (Just(b.clone()), Just(b).prop_shuffle()))
        ) {
            if let Some(t) = mann_whitney(&b, &c, Greater) {
                // Identical samples put U exactly at its mean, and the continuity
                // correction puts p above one half.
                prop_assert_eq!(t.u, (b.len() * b.len()) as f64 / 2.0);
                prop_assert!(t.p_value >= 0.5, "{t:?}");
                prop_assert_eq!(mann_whitney(&b, &c, TwoSided).unwrap().p_value, 1.0);
            }
            prop_assert_ne!(judge(&b, &c, Greater, 0.95, 1), MeasurementPhase::Failed);
        }

        #[test]
        fn an_increasing_transform_changes_nothing(
            b in samples(1..40),
            c in samples(1..40),
            alt in alternative(),
        ) {
            let original = mann_whitney(&b, &c, alt);
            for f in [|x: f64| 3.0 * x + 7.0, |x: f64| (x / 100.0).exp()] {
                let tb: Vec<f64> = b.iter().map(|&x| f(x)).collect();
                let tc: Vec<f64> = c.iter().map(|&x| f(x)).collect();
                prop_assert_eq!(&mann_whitney(&tb, &tc, alt), &original);
            }
        }

        #[test]
        fn swapping_sides_swaps_greater_and_less(b in samples(1..40), c in samples(1..40)) {
            let greater = mann_whitney(&b, &c, Greater);
            let less = mann_whitney(&c, &b, Less);
            prop_assert_eq!(greater.is_some(), less.is_some());
            if let (Some(g), Some(l)) = (greater, less) {
                prop_assert!(close(g.p_value, l.p_value, 1e-12), "{g:?} {l:?}");
                prop_assert!(close(g.z, -l.z, 1e-12), "{g:?} {l:?}");
            }
        }

        #[test]
        fn two_sided_is_twice_the_smaller_one_sided(b in samples(1..40), c in samples(1..40)) {
            if let (Some(g), Some(l), Some(t)) = (
                mann_whitney(&b, &c, Greater),
                mann_whitney(&b, &c, Less),
                mann_whitney(&b, &c, TwoSided),
            ) {
                let want = (2.0 * g.p_value.min(l.p_value)).min(1.0);
                prop_assert!(close(t.p_value, want, 1e-12), "{g:?} {l:?} {t:?}");
            }
        }
    }
}

//! Statistics for reports and A/B tests: Wilson intervals, the two-proportion test, verdicts
//! with a minimum sample and guardrails, deterministic variant assignment, and Thompson
//! sampling driven by caller-supplied uniform draws (this crate draws no random numbers).

use statrs::distribution::{Beta, ContinuousCDF, Normal};

/// Successes out of trials (e.g. positive replies out of delivered messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proportion {
    /// Trials that succeeded.
    pub successes: u64,
    /// All trials.
    pub trials: u64,
}

impl Proportion {
    /// A proportion; `successes` is clamped to `trials`, so a miscounted input cannot produce
    /// a rate above 1.
    pub fn new(successes: u64, trials: u64) -> Self {
        Self {
            successes: successes.min(trials),
            trials,
        }
    }

    /// The observed rate, or `None` without trials.
    pub fn rate(self) -> Option<f64> {
        (self.trials > 0).then(|| self.successes as f64 / self.trials as f64)
    }

    /// The Wilson score interval at the given confidence (e.g. 0.95), or `None` without
    /// trials. Unlike the normal approximation it stays inside [0, 1] and behaves for rates
    /// near 0, which is where reply and complaint rates live.
    pub fn wilson(self, confidence: f64) -> Option<Interval> {
        if self.trials == 0 {
            return None;
        }
        let z = z_for(confidence);
        let n = self.trials as f64;
        let p = self.successes as f64 / n;
        let z2 = z * z;
        let denom = 1.0 + z2 / n;
        let centre = (p + z2 / (2.0 * n)) / denom;
        let half = z * ((p * (1.0 - p) / n) + z2 / (4.0 * n * n)).sqrt() / denom;
        // The bounds always contain the observed rate: at 0 (or n) successes the lower (upper)
        // bound is exactly 0 (1), not a rounding error away from it.
        Some(Interval {
            low: (centre - half).clamp(0.0, p),
            high: (centre + half).clamp(p, 1.0),
        })
    }
}

/// A closed interval of rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The two-sided critical value of the standard normal for a confidence level.
fn z_for(confidence: f64) -> f64 {
    let confidence = confidence.clamp(0.5, 0.999_999);
    standard_normal().inverse_cdf(0.5 + confidence / 2.0)
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// The outcome of a two-proportion z-test (pooled variance) of `b` against `a`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TwoProportionTest {
    /// `rate(b) - rate(a)`.
    pub difference: f64,
    /// The z statistic (positive when `b` is higher).
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Tests whether `b`'s rate differs from `a`'s. `None` when either side has no trials, or
/// when both rates are 0 or both are 1 (no variance: nothing to test).
pub fn two_proportion_test(a: Proportion, b: Proportion) -> Option<TwoProportionTest> {
    let (ra, rb) = (a.rate()?, b.rate()?);
    let (na, nb) = (a.trials as f64, b.trials as f64);
    let pooled = (a.successes + b.successes) as f64 / (na + nb);
    let variance = pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb);
    if variance <= 0.0 {
        return None;
    }
    let z = (rb - ra) / variance.sqrt();
    let p_value = 2.0 * (1.0 - standard_normal().cdf(z.abs()));
    Some(TwoProportionTest {
        difference: rb - ra,
        z,
        p_value: p_value.clamp(0.0, 1.0),
    })
}

/// What one variant of an experiment achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantCounts {
    /// The variant's name.
    pub name: String,
    /// Messages delivered (the denominator of every rate).
    pub delivered: u64,
    /// The primary metric: positive replies or conversions (never raw replies, which reward
    /// "remove me" answers).
    pub wins: u64,
    /// Unsubscribes (a guardrail).
    pub unsubscribes: u64,
    /// Spam complaints (a guardrail).
    pub complaints: u64,
}

/// How an experiment is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExperimentRules {
    /// Delivered messages every variant needs before any verdict.
    pub min_sample: u64,
    /// Significance level of the comparison with the control (Bonferroni-corrected over the
    /// challengers).
    pub alpha: f64,
    /// Confidence of the reported intervals.
    pub confidence: f64,
}

impl Default for ExperimentRules {
    fn default() -> Self {
        Self {
            min_sample: 200,
            alpha: 0.05,
            confidence: 0.95,
        }
    }
}

/// The statistics of one variant, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantResult {
    /// The counts.
    pub counts: VariantCounts,
    /// Primary-metric rate and its interval (None before the first delivery).
    pub rate: Option<f64>,
    /// Wilson interval of the primary rate.
    pub interval: Option<Interval>,
    /// The test against the control (None for the control itself).
    pub versus_control: Option<TwoProportionTest>,
    /// Guardrails this variant breached, each with its figures.
    pub guardrail_breaches: Vec<String>,
}

/// The verdict on an experiment.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Some variant has fewer deliveries than the minimum sample.
    NeedsMoreData {
        /// The smallest variant and how many more it needs.
        variant: String,
        /// Deliveries still missing.
        missing: u64,
    },
    /// A challenger beats the control significantly without breaching a guardrail.
    Winner {
        /// The winning variant.
        variant: String,
    },
    /// The control beats every challenger significantly, or a challenger breached a
    /// guardrail and none won.
    ControlHolds,
    /// Enough data, no significant difference.
    NoDifference,
}

/// The verdict and per-variant figures of an experiment whose first variant is the control.
pub fn judge(variants: &[VariantCounts], rules: &ExperimentRules) -> (Verdict, Vec<VariantResult>) {
    let Some(control) = variants.first() else {
        return (Verdict::NoDifference, Vec::new());
    };
    let control_p = Proportion::new(control.wins, control.delivered);
    let challengers = variants.len().saturating_sub(1).max(1) as f64;
    let alpha = rules.alpha / challengers;
    let results: Vec<VariantResult> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = Proportion::new(v.wins, v.delivered);
            let versus_control = (i > 0).then(|| two_proportion_test(control_p, p)).flatten();
            let mut breaches = Vec::new();
            if i > 0 {
                for (label, mine, theirs) in [
                    ("unsubscribes", v.unsubscribes, control.unsubscribes),
                    ("complaints", v.complaints, control.complaints),
                ] {
                    let (a, b) = (
                        Proportion::new(theirs, control.delivered),
                        Proportion::new(mine, v.delivered),
                    );
                    if let Some(t) = two_proportion_test(a, b) {
                        if t.z > 0.0 && t.p_value < rules.alpha {
                            breaches.push(format!(
                                "{label}: {:.2}% vs control {:.2}% (p = {:.3})",
                                b.rate().unwrap_or(0.0) * 100.0,
                                a.rate().unwrap_or(0.0) * 100.0,
                                t.p_value
                            ));
                        }
                    }
                }
            }
            VariantResult {
                counts: v.clone(),
                rate: p.rate(),
                interval: p.wilson(rules.confidence),
                versus_control,
                guardrail_breaches: breaches,
            }
        })
        .collect();
    if let Some(short) = variants
        .iter()
        .filter(|v| v.delivered < rules.min_sample)
        .min_by_key(|v| v.delivered)
    {
        return (
            Verdict::NeedsMoreData {
                variant: short.name.clone(),
                missing: rules.min_sample - short.delivered,
            },
            results,
        );
    }
    let significant = |r: &VariantResult| r.versus_control.filter(|t| t.p_value < alpha);
    let winner = results
        .iter()
        .skip(1)
        .filter(|r| r.guardrail_breaches.is_empty())
        .filter_map(|r| significant(r).filter(|t| t.z > 0.0).map(|t| (r, t)))
        .max_by(|a, b| a.1.difference.total_cmp(&b.1.difference));
    let verdict = if let Some((r, _)) = winner {
        Verdict::Winner {
            variant: r.counts.name.clone(),
        }
    } else if results.len() > 1
        && results
            .iter()
            .skip(1)
            .all(|r| !r.guardrail_breaches.is_empty() || significant(r).is_some_and(|t| t.z < 0.0))
    {
        Verdict::ControlHolds
    } else {
        Verdict::NoDifference
    };
    (verdict, results)
}

/// Assigns a lead to a variant by a stable hash of (experiment, lead), honouring the weights
/// (e.g. `[50, 50]` or `[80, 20]`). The same inputs give the same variant in every process
/// and every run. Returns 0 when the weights are empty or all zero.
pub fn assign_variant(experiment: &str, lead_key: &str, weights: &[u32]) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return 0;
    }
    let hash = crate::stable_hash(&[b"variant", experiment.as_bytes(), lead_key.as_bytes()]);
    let point = (crate::unit_fraction(hash) * total as f64) as u64;
    let mut upto = 0;
    for (i, w) in weights.iter().enumerate() {
        upto += u64::from(*w);
        if point < upto {
            return i;
        }
    }
    weights.len() - 1
}

/// Thompson sampling: draws each variant's rate from its Beta(1 + wins, 1 + losses)
/// posterior by inverting the CDF at the caller's uniform draw (one per variant, in
/// `(0, 1)`), and returns the index of the highest draw. Deterministic for given draws.
pub fn thompson_choice(variants: &[VariantCounts], uniforms: &[f64]) -> usize {
    let mut best = (0, f64::MIN);
    for (i, (v, u)) in variants.iter().zip(uniforms).enumerate() {
        let wins = v.wins.min(v.delivered) as f64;
        let losses = v.delivered as f64 - wins;
        let draw = Beta::new(1.0 + wins, 1.0 + losses)
            .map(|b| b.inverse_cdf(u.clamp(1e-9, 1.0 - 1e-9)))
            .unwrap_or(0.0);
        if draw > best.1 {
            best = (i, draw);
        }
    }
    best.0
}

/// Bandit assignment of a new lead: with probability `floor × variants` the lead goes to a
/// variant picked uniformly (so every variant keeps at least `floor` of the new leads, however
/// badly it does); otherwise Thompson sampling over the variants' Beta posteriors picks it.
/// Every draw is a stable hash of (experiment, lead, …), so the same lead with the same counts
/// gets the same variant in every process and run. `floor` is clamped to `[0, 1 / variants]`.
pub fn bandit_choice(
    experiment: &str,
    lead_key: &str,
    variants: &[VariantCounts],
    floor: f64,
) -> usize {
    let k = variants.len();
    if k == 0 {
        return 0;
    }
    let floor = if floor.is_finite() {
        floor.clamp(0.0, 1.0 / k as f64)
    } else {
        0.0
    };
    let draw = |tag: &[u8], i: u64| {
        crate::unit_fraction(crate::stable_hash(&[
            b"bandit",
            tag,
            experiment.as_bytes(),
            lead_key.as_bytes(),
            &i.to_le_bytes(),
        ]))
    };
    let explore_share = floor * k as f64;
    let explore = draw(b"explore", 0);
    if explore < explore_share {
        return ((explore / explore_share * k as f64) as usize).min(k - 1);
    }
    let uniforms: Vec<f64> = (0..k as u64).map(|i| draw(b"arm", i)).collect();
    thompson_choice(variants, &uniforms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bounds_contain_the_rate_at_the_extremes() {
        for n in [1u64, 3, 7, 10, 49, 100, 1000] {
            let none = Proportion {
                successes: 0,
                trials: n,
            }
            .wilson(0.95)
            .unwrap();
            assert_eq!(none.low, 0.0, "n = {n}");
            assert!(none.high > 0.0);
            let all = Proportion {
                successes: n,
                trials: n,
            }
            .wilson(0.95)
            .unwrap();
            assert_eq!(all.high, 1.0, "n = {n}");
            assert!(all.low < 1.0);
        }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn wilson_matches_published_values() {
        // 10/100 at 95%: (0.0552, 0.1744), as in Newcombe (1998) and every statistics text.
        let i = Proportion::new(10, 100).wilson(0.95).unwrap();
        assert!(close(i.low, 0.0552, 1e-4), "{i:?}");
        assert!(close(i.high, 0.1744, 1e-4), "{i:?}");
        // 0/50 stays inside [0, 1] with a non-zero upper bound.
        let zero = Proportion::new(0, 50).wilson(0.95).unwrap();
        assert_eq!(zero.low, 0.0);
        assert!(close(zero.high, 0.0714, 1e-4), "{zero:?}");
        assert_eq!(Proportion::new(0, 0).wilson(0.95), None);
    }

    #[test]
    fn two_proportion_test_matches_hand_computation() {
        // 50/1000 vs 80/1000: pooled p = 0.065, se = 0.011024, z = 2.7213, p = 0.0065.
        let t = two_proportion_test(Proportion::new(50, 1000), Proportion::new(80, 1000)).unwrap();
        assert!(close(t.z, 2.7213, 1e-3), "{t:?}");
        assert!(close(t.p_value, 0.0065, 2e-4), "{t:?}");
        assert!(close(t.difference, 0.03, 1e-12));
        assert_eq!(
            two_proportion_test(Proportion::new(0, 10), Proportion::new(0, 10)),
            None
        );
        assert_eq!(
            two_proportion_test(Proportion::new(0, 0), Proportion::new(1, 10)),
            None
        );
    }

    fn variant(name: &str, delivered: u64, wins: u64, unsubscribes: u64) -> VariantCounts {
        VariantCounts {
            name: name.into(),
            delivered,
            wins,
            unsubscribes,
            complaints: 0,
        }
    }

    #[test]
    fn verdicts_need_the_minimum_sample_then_significance() {
        let rules = ExperimentRules::default();
        let (v, _) = judge(&[variant("A", 150, 5, 0), variant("B", 400, 40, 0)], &rules);
        assert_eq!(
            v,
            Verdict::NeedsMoreData {
                variant: "A".into(),
                missing: 50
            }
        );
        let (v, results) = judge(
            &[variant("A", 1000, 50, 2), variant("B", 1000, 80, 2)],
            &rules,
        );
        assert_eq!(
            v,
            Verdict::Winner {
                variant: "B".into()
            }
        );
        assert!(results[1].versus_control.unwrap().p_value < 0.01);
        let (v, _) = judge(
            &[variant("A", 1000, 50, 2), variant("B", 1000, 55, 2)],
            &rules,
        );
        assert_eq!(v, Verdict::NoDifference);
        let (v, _) = judge(
            &[variant("A", 1000, 80, 2), variant("B", 1000, 50, 2)],
            &rules,
        );
        assert_eq!(v, Verdict::ControlHolds);
    }

    #[test]
    fn a_challenger_that_drives_unsubscribes_never_wins() {
        let rules = ExperimentRules::default();
        let (v, results) = judge(
            &[variant("A", 1000, 50, 2), variant("B", 1000, 80, 30)],
            &rules,
        );
        assert_eq!(v, Verdict::ControlHolds);
        assert!(results[1].guardrail_breaches[0].starts_with("unsubscribes: 3.00%"));
    }

    #[test]
    fn bonferroni_correction_raises_the_bar_with_more_challengers() {
        // p ≈ 0.03 wins alone, but not against alpha/3 with three challengers.
        let rules = ExperimentRules::default();
        let pair = [variant("A", 1000, 50, 0), variant("B", 1000, 72, 0)];
        assert_eq!(
            judge(&pair, &rules).0,
            Verdict::Winner {
                variant: "B".into()
            }
        );
        let four = [
            variant("A", 1000, 50, 0),
            variant("B", 1000, 72, 0),
            variant("C", 1000, 50, 0),
            variant("D", 1000, 50, 0),
        ];
        assert_eq!(judge(&four, &rules).0, Verdict::NoDifference);
    }

    #[test]
    fn assignment_is_stable_and_follows_the_weights() {
        let a = assign_variant("subject-test", "lead-42", &[50, 50]);
        assert_eq!(a, assign_variant("subject-test", "lead-42", &[50, 50]));
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            counts[assign_variant("split", &format!("lead-{i}"), &[80, 20])] += 1;
        }
        assert!((7_700..8_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(assign_variant("x", "y", &[]), 0);
        assert_eq!(assign_variant("x", "y", &[0, 5]), 1);
    }

    #[test]
    fn thompson_sampling_favours_the_better_variant() {
        let variants = [variant("A", 500, 10, 0), variant("B", 500, 40, 0)];
        let mut picks_b = 0;
        for i in 0..1_000u64 {
            let u = |k: u64| {
                crate::unit_fraction(crate::stable_hash(&[&i.to_le_bytes(), &k.to_le_bytes()]))
            };
            if thompson_choice(&variants, &[u(0), u(1)]) == 1 {
                picks_b += 1;
            }
        }
        assert!(picks_b > 990, "B picked {picks_b} of 1000");
        // With no data both arms are equally likely.
        let fresh = [variant("A", 0, 0, 0), variant("B", 0, 0, 0)];
        assert_eq!(thompson_choice(&fresh, &[0.9, 0.1]), 0);
        assert_eq!(thompson_choice(&fresh, &[0.1, 0.9]), 1);
    }

    fn shares(variants: &[VariantCounts], floor: f64, leads: usize) -> Vec<f64> {
        let mut counts = vec![0usize; variants.len()];
        for i in 0..leads {
            counts[bandit_choice("intro#1", &format!("lead-{i}"), variants, floor)] += 1;
        }
        counts.iter().map(|c| *c as f64 / leads as f64).collect()
    }

    #[test]
    fn the_bandit_shifts_traffic_to_the_better_arm() {
        // Table: (A's wins, B's wins) of 400 sends each → B's least and most share of new leads.
        for (a_wins, b_wins, b_low, b_high) in [
            (20, 20, 0.40, 0.60), // equal results: an even split
            (10, 40, 0.90, 0.96), // B clearly better: B gets all but A's floor (5%)
            (40, 10, 0.04, 0.10), // A clearly better: B keeps its floor
            (20, 28, 0.55, 0.95), // B somewhat better: more than half, not everything
        ] {
            let v = [variant("a", 400, a_wins, 0), variant("b", 400, b_wins, 0)];
            let s = shares(&v, 0.05, 4_000);
            assert!(
                (b_low..=b_high).contains(&s[1]),
                "A {a_wins}/400, B {b_wins}/400: B share {:.3} not in {b_low}..{b_high}",
                s[1]
            );
        }
    }

    #[test]
    fn the_bandit_gives_every_arm_its_floor() {
        // A hopeless arm among three still gets about its floor of the new leads.
        let v = [
            variant("a", 2_000, 200, 0),
            variant("b", 2_000, 2, 0),
            variant("c", 2_000, 190, 0),
        ];
        let s = shares(&v, 0.1, 6_000);
        assert!((0.085..0.12).contains(&s[1]), "{s:?}");
        // Without a floor it starves.
        let s = shares(&v, 0.0, 6_000);
        assert!(s[1] < 0.005, "{s:?}");
        // A floor above 1/k is clamped: a uniform split.
        let s = shares(&v, 0.9, 6_000);
        for share in s {
            assert!((0.30..0.37).contains(&share), "{share}");
        }
    }

    #[test]
    fn the_bandit_is_deterministic_per_experiment_and_lead() {
        let v = [variant("a", 300, 12, 0), variant("b", 300, 18, 0)];
        for i in 0..200 {
            let lead = format!("lead-{i}");
            assert_eq!(
                bandit_choice("intro#1", &lead, &v, 0.1),
                bandit_choice("intro#1", &lead, &v.clone(), 0.1)
            );
        }
        // Another experiment draws independently: some leads land differently.
        let differs = (0..200)
            .filter(|i| {
                let lead = format!("lead-{i}");
                bandit_choice("intro#1", &lead, &v, 0.1) != bandit_choice("intro#2", &lead, &v, 0.1)
            })
            .count();
        assert!(differs > 20, "{differs}");
        assert_eq!(bandit_choice("x", "y", &[], 0.1), 0);
    }

    proptest::proptest! {
        #[test]
        fn bandit_choices_are_in_range_and_stable(
            wins in proptest::collection::vec((0u64..500, 0u64..500), 1..5),
            floor in 0.0f64..0.5,
            lead in 0u64..1_000_000,
        ) {
            let v: Vec<VariantCounts> = wins
                .iter()
                .enumerate()
                .map(|(i, (w, extra))| variant(&format!("v{i}"), w + extra, *w, 0))
                .collect();
            let key = lead.to_string();
            let pick = bandit_choice("p#1", &key, &v, floor);
            proptest::prop_assert!(pick < v.len());
            proptest::prop_assert_eq!(pick, bandit_choice("p#1", &key, &v, floor));
        }
    }
}

//! Statistics used by the comparison: rank tests, count tests, multiple
//! testing control and the special functions behind them.
//!
//! Everything here is plain `f64` arithmetic with no dependency, checked in
//! the unit tests against figures from SciPy (`scipy.stats`).
//!
//! * [`mann_whitney`]: the Mann–Whitney U test on per-run values (what
//!   benchstat uses), exact for small samples without ties. Caveat: with
//!   n runs per side the smallest two-sided p-value is `2 / C(2n, n)`
//!   (n = 5: 2/252 ≈ 0.0079), so it cannot reach a strict level with few runs.
//! * [`hodges_lehmann`]: the shift estimate and its distribution-free
//!   confidence interval that go with the U test.
//! * [`pooled_test`]: the test the gate decides on. Counts are pooled
//!   across runs and compared as rates (or shares) with a quasi-Poisson /
//!   quasi-binomial variance whose dispersion is estimated from the
//!   between-run scatter (never below 1, i.e. never below Poisson noise);
//!   with one run per side it is the exact conditional binomial test on
//!   the two counts.
//! * [`benjamini_hochberg`]: false-discovery-rate adjusted p-values.

/// Natural log of the gamma function (Lanczos, g = 7, n = 9; |rel err| < 1e-13).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection formula.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Complementary error function, `erfc(x) = Q(1/2, x²)` for `x >= 0`
/// (regularized upper incomplete gamma), with `erfc(-x) = 2 - erfc(x)`.
pub fn erfc(x: f64) -> f64 {
    if x >= 0.0 {
        inc_gamma_upper(0.5, x * x)
    } else {
        2.0 - inc_gamma_upper(0.5, x * x)
    }
}

/// Standard normal upper tail `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Standard normal CDF `P(Z <= z)`.
pub fn normal_cdf(z: f64) -> f64 {
    normal_sf(-z)
}

/// Standard normal quantile (Acklam's algorithm with one Halley step; ~1e-15).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let plow = 0.02425;
    let x = if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley refinement step.
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// Regularized incomplete beta function `I_x(a, b)`.
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Continued fraction for the incomplete beta (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Upper tail of Student's t distribution, `P(T > t)` with `df` degrees of freedom.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if !df.is_finite() || df > 1e7 {
        return normal_sf(t);
    }
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// Binomial upper tail `P(X >= k)` for `X ~ Bin(n, p)`.
pub fn binom_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    inc_beta(k as f64, (n - k + 1) as f64, p)
}

/// Binomial lower tail `P(X <= k)` for `X ~ Bin(n, p)`.
pub fn binom_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    1.0 - binom_sf(k + 1, n, p)
}

/// Regularized lower incomplete gamma `P(a, x)`.
pub fn inc_gamma_lower(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x < a + 1.0 {
        gamma_series(a, x)
    } else {
        1.0 - gamma_cf(a, x)
    }
}

/// Regularized upper incomplete gamma `Q(a, x) = 1 - P(a, x)`, computed
/// directly so that small tails keep their relative precision.
pub fn inc_gamma_upper(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < a + 1.0 {
        1.0 - gamma_series(a, x)
    } else {
        gamma_cf(a, x)
    }
}

/// Series for `P(a, x)` (converges fast for `x < a + 1`).
fn gamma_series(a: f64, x: f64) -> f64 {
    let mut ap = a;
    let mut sum = 1.0 / a;
    let mut del = sum;
    for _ in 0..100_000 {
        ap += 1.0;
        del *= x / ap;
        sum += del;
        if del.abs() < sum.abs() * 1e-16 {
            break;
        }
    }
    sum * (-x + a * x.ln() - ln_gamma(a)).exp()
}

/// Continued fraction for `Q(a, x)` (modified Lentz; `x >= a + 1`).
fn gamma_cf(a: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..100_000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x + a * x.ln() - ln_gamma(a)).exp() * h
}

/// Poisson upper tail `P(Y >= k)` for `Y ~ Poisson(mu)` (k may be fractional
/// after dispersion scaling; it is used as the gamma shape).
pub fn poisson_sf(k: f64, mu: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if mu <= 0.0 {
        return 0.0;
    }
    inc_gamma_lower(k, mu)
}

/// Result of [`mann_whitney`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the first sample (number of pairs with `a > b`, ties count 1/2).
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// True when the exact distribution was used (no ties, both n <= 25).
    pub exact: bool,
}

/// Number of arrangements giving each U for sample sizes (m, n); index = U.
fn u_distribution(m: usize, n: usize) -> Vec<f64> {
    // f[j][u] for the current m' and all n' <= n, built up over m'.
    // Recurrence: f(m, n, u) = f(m-1, n, u-n) + f(m, n-1, u).
    let max_u = m * n;
    // prev[nn] = distribution for (m'-1, nn)
    let mut prev: Vec<Vec<f64>> = (0..=n).map(|_| vec![1.0]).collect(); // m' = 0: U = 0 only
    for mm in 1..=m {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
        cur.push(vec![1.0]); // n' = 0: U = 0 only
        for nn in 1..=n {
            let len = mm * nn + 1;
            let mut d = vec![0.0; len];
            // f(mm, nn-1, u)
            for (u, v) in cur[nn - 1].iter().enumerate() {
                d[u] += v;
            }
            // f(mm-1, nn, u - nn)
            for (u, v) in prev[nn].iter().enumerate() {
                d[u + nn] += v;
            }
            cur.push(d);
        }
        prev = cur;
    }
    let d = prev.swap_remove(n);
    debug_assert_eq!(d.len(), max_u + 1);
    d
}

/// Mann–Whitney U test (two-sided), as `scipy.stats.mannwhitneyu(a, b,
/// alternative="two-sided")` with `method="auto"`: exact when there are no
/// ties and both samples are small, else the normal approximation with tie
/// and continuity correction. Returns `None` when either side is empty.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (m, n) = (a.len(), b.len());
    if m == 0 || n == 0 {
        return None;
    }
    // Ranks of the pooled sample with average ranks for ties.
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut has_ties = false;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        if t > 1.0 {
            has_ties = true;
            tie_term += t * t * t - t;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        rank_sum_a += avg_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (mf, nf) = (m as f64, n as f64);
    let u = rank_sum_a - mf * (mf + 1.0) / 2.0;
    let exact = !has_ties && m <= 25 && n <= 25;
    let p_value = if exact {
        let dist = u_distribution(m, n);
        let total: f64 = dist.iter().sum();
        let ui = u.round() as usize;
        let cdf: f64 = dist[..=ui].iter().sum::<f64>() / total;
        let sf: f64 = dist[ui..].iter().sum::<f64>() / total;
        (2.0 * cdf.min(sf)).min(1.0)
    } else {
        let mu = mf * nf / 2.0;
        let big_n = mf + nf;
        let var = mf * nf / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
        if var <= 0.0 {
            1.0
        } else {
            // scipy: U = max(U1, U2), z = (U - mu - 0.5) / sd, p = 2 * sf(z).
            let u_big = u.max(mf * nf - u);
            let z = (u_big - mu - 0.5) / var.sqrt();
            (2.0 * normal_sf(z)).min(1.0)
        }
    };
    Some(MannWhitney { u, p_value, exact })
}

/// Hodges–Lehmann estimate of the shift `b - a` with its distribution-free
/// confidence interval (Moses/Bauer): the interval between order statistics
/// of the pairwise differences picked from the exact U distribution.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ShiftEstimate {
    /// Median of all pairwise differences `b_j - a_i`.
    pub shift: f64,
    /// Lower confidence bound.
    pub low: f64,
    /// Upper confidence bound.
    pub high: f64,
    /// Confidence level actually achieved (discrete: at least the requested
    /// level when the samples allow it, else the widest interval, level 0).
    pub level: f64,
}

/// Hodges–Lehmann shift of `b` relative to `a` with an (at least) `level`
/// confidence interval. `None` when either side is empty.
pub fn hodges_lehmann(a: &[f64], b: &[f64], level: f64) -> Option<ShiftEstimate> {
    let (m, n) = (a.len(), b.len());
    if m == 0 || n == 0 {
        return None;
    }
    let mut d: Vec<f64> = Vec::with_capacity(m * n);
    for &x in a {
        for &y in b {
            d.push(y - x);
        }
    }
    d.sort_by(|x, y| x.total_cmp(y));
    let k = d.len();
    let shift = if k % 2 == 1 {
        d[k / 2]
    } else {
        (d[k / 2 - 1] + d[k / 2]) / 2.0
    };
    // Largest c with P(U <= c) <= (1 - level) / 2, from the exact distribution
    // (normal approximation for large samples).
    let alpha2 = (1.0 - level) / 2.0;
    let c: Option<usize> = if m <= 25 && n <= 25 {
        let dist = u_distribution(m, n);
        let total: f64 = dist.iter().sum();
        let mut acc = 0.0;
        let mut c = None;
        for (u, v) in dist.iter().enumerate() {
            acc += v / total;
            if acc <= alpha2 + 1e-12 {
                c = Some(u);
            } else {
                break;
            }
        }
        c
    } else {
        let mu = (m * n) as f64 / 2.0;
        let sd = ((m * n * (m + n + 1)) as f64 / 12.0).sqrt();
        let c = (mu - normal_quantile(1.0 - alpha2) * sd).floor();
        if c >= 0.0 {
            Some(c as usize)
        } else {
            None
        }
    };
    match c {
        Some(c) if c < k / 2 => {
            let achieved = if m <= 25 && n <= 25 {
                let dist = u_distribution(m, n);
                let total: f64 = dist.iter().sum();
                1.0 - 2.0 * dist[..=c].iter().sum::<f64>() / total
            } else {
                level
            };
            Some(ShiftEstimate {
                shift,
                low: d[c],
                high: d[k - 1 - c],
                level: achieved,
            })
        }
        _ => Some(ShiftEstimate {
            shift,
            low: d[0],
            high: d[k - 1],
            level: 0.0,
        }),
    }
}

/// Benjamini–Hochberg adjusted p-values (q-values), same order as the input.
/// NaN inputs are treated as 1.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    let val = |i: usize| if p[i].is_nan() { 1.0 } else { p[i] };
    idx.sort_by(|&x, &y| val(x).total_cmp(&val(y)));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in idx.iter().enumerate().rev() {
        let adj = val(i) * m as f64 / (rank + 1) as f64;
        running = running.min(adj);
        q[i] = running.min(1.0);
    }
    q
}

/// How the pooled test models a run's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountModel {
    /// Counts out of a total (`exposure` = the run's total count): binomial
    /// variance `mu (1 - mu / exposure)`.
    Share,
    /// Counts per unit of exposure (seconds, units of work): Poisson variance `mu`.
    Rate,
}

/// One run's observation for [`pooled_test`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCount {
    /// The count (in sample units: value / weight of one sample).
    pub count: f64,
    /// The exposure: total count for [`CountModel::Share`], seconds or units for [`CountModel::Rate`].
    pub exposure: f64,
}

/// Result of [`pooled_test`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PooledTest {
    /// Pooled baseline rate (share, or counts per exposure unit).
    pub rate_a: f64,
    /// Pooled candidate rate.
    pub rate_b: f64,
    /// Estimated dispersion (1 = pure sampling noise).
    pub phi: f64,
    /// Residual degrees of freedom behind `phi` (0 = assumed, one run per side).
    pub df: usize,
    /// Standard error of `rate_b - rate_a` under the null.
    pub se: f64,
    /// Two-sided p-value for `rate_b != rate_a`.
    pub p_value: f64,
}

/// Compare two groups of runs on a pooled rate.
///
/// With several runs on either side, the dispersion `phi` is the Pearson
/// statistic of the runs around their own group's pooled rate divided by its
/// degrees of freedom, floored at 1; the statistic is
/// `(rate_b - rate_a) / sqrt(phi * v0 * (1/E_a + 1/E_b))` with `v0` the null
/// variance per unit of exposure, referred to Student's t with the residual
/// degrees of freedom. With one run per
/// side (no dispersion estimate possible) it is the exact conditional
/// binomial test: `y_b | y_a + y_b ~ Bin(y_a + y_b, E_b / (E_a + E_b))`.
pub fn pooled_test(a: &[RunCount], b: &[RunCount], model: CountModel) -> Option<PooledTest> {
    pooled_test_moderated(a, b, model, None)
}

/// A dispersion prior shared by many entities (limma-style moderation).
///
/// Run-to-run variation is modelled as `Var(c) = v + kappa * mu²` (sampling
/// variance `v` plus a multiplicative jitter common to all functions);
/// `kappa` is estimated by the method of moments over every tested entity
/// ([`jitter_moments`]) and enters each entity's dispersion as a prior
/// worth `df` residual degrees of freedom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DispersionPrior {
    /// Squared coefficient of the common multiplicative jitter.
    pub kappa: f64,
    /// Prior degrees of freedom.
    pub df: f64,
}

/// Method-of-moments contributions `(numerator, denominator)` of one
/// entity to the common jitter `kappa = Σ num / Σ den` (see
/// [`DispersionPrior`]). `None` when a side has fewer than 2 runs.
pub fn jitter_moments(a: &[RunCount], b: &[RunCount], model: CountModel) -> Option<(f64, f64)> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (mut num, mut den) = (0.0, 0.0);
    for xs in [a, b] {
        let (y, e) = xs
            .iter()
            .fold((0.0, 0.0), |(c, e), r| (c + r.count, e + r.exposure));
        if e <= 0.0 {
            return None;
        }
        let r = y / e;
        let k = xs.len() as f64;
        for x in xs {
            let mu = r * x.exposure;
            let v = match model {
                CountModel::Share => mu * (1.0 - r).max(0.0),
                CountModel::Rate => mu,
            };
            num += (x.count - mu).powi(2) * k / (k - 1.0) - v;
            den += mu * mu;
        }
    }
    Some((num, den))
}

/// Common jitter `kappa` (see [`DispersionPrior`]) from entities observed
/// in one run per side, robust to a minority of real changes: the `kappa`
/// at which the median of the standardized squared differences equals the
/// median of χ²₁ (0.4549). Each item is (baseline run, candidate run).
/// Returns 0 with fewer than 10 entities or no excess scatter.
pub fn robust_kappa_single(items: &[(RunCount, RunCount)], model: CountModel) -> f64 {
    let mut terms: Vec<(f64, f64, f64)> = Vec::new(); // (d², sampling var, 2 r0²)
    for (a, b) in items {
        if a.exposure <= 0.0 || b.exposure <= 0.0 {
            continue;
        }
        let (ra, rb) = (a.count / a.exposure, b.count / b.exposure);
        let r0 = (a.count + b.count) / (a.exposure + b.exposure);
        let v0 = match model {
            CountModel::Share => r0 * (1.0 - r0).max(0.0),
            CountModel::Rate => r0,
        };
        let v = v0 * (1.0 / a.exposure + 1.0 / b.exposure);
        if v > 0.0 {
            terms.push(((rb - ra).powi(2), v, 2.0 * r0 * r0));
        }
    }
    if terms.len() < 10 {
        return 0.0;
    }
    const CHI2_1_MEDIAN: f64 = 0.454_936_423_119_572_8;
    let med = |k: f64| -> f64 {
        let z: Vec<f64> = terms.iter().map(|(d2, v, w)| d2 / (v + k * w)).collect();
        median(&z).unwrap_or(0.0)
    };
    if med(0.0) <= CHI2_1_MEDIAN {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if med(hi) > CHI2_1_MEDIAN {
        return hi;
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if med(mid) > CHI2_1_MEDIAN {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// [`pooled_test`] with an optional dispersion prior: the entity's
/// dispersion becomes `(df·phi_hat + d0·phi0) / (df + d0)` (floored at 1),
/// where `phi0 = 1 + kappa·Σmu²/Σv` is what the common jitter predicts for
/// this entity, and the t reference gets `df + d0` degrees of freedom.
pub fn pooled_test_moderated(
    a: &[RunCount],
    b: &[RunCount],
    model: CountModel,
    prior: Option<DispersionPrior>,
) -> Option<PooledTest> {
    let sum = |xs: &[RunCount]| -> (f64, f64) {
        xs.iter()
            .fold((0.0, 0.0), |(c, e), r| (c + r.count, e + r.exposure))
    };
    let (ya, ea) = sum(a);
    let (yb, eb) = sum(b);
    if ea <= 0.0 || eb <= 0.0 {
        return None;
    }
    let (ra, rb) = (ya / ea, yb / eb);
    let r0 = (ya + yb) / (ea + eb);
    let var_unit = |r: f64| match model {
        CountModel::Share => r * (1.0 - r).max(0.0),
        CountModel::Rate => r,
    };
    // Dispersion from within-group scatter.
    let mut pearson = 0.0;
    let mut df = 0usize;
    for (xs, r) in [(a, ra), (b, rb)] {
        if xs.len() >= 2 {
            df += xs.len() - 1;
            for x in xs {
                let mu = r * x.exposure;
                let v = var_unit(r) * x.exposure;
                if v > 0.0 {
                    pearson += (x.count - mu).powi(2) / v;
                }
            }
        }
    }
    let phi_hat = if df > 0 { pearson / df as f64 } else { 1.0 };
    let mut t_df = df as f64;
    let phi = match prior {
        Some(pr) if df > 0 && pr.df > 0.0 => {
            let (mut m2, mut vs) = (0.0, 0.0);
            for (xs, r) in [(a, ra), (b, rb)] {
                for x in xs {
                    let mu = r * x.exposure;
                    m2 += mu * mu;
                    vs += var_unit(r) * x.exposure;
                }
            }
            let phi0 = if vs > 0.0 {
                1.0 + pr.kappa.max(0.0) * m2 / vs
            } else {
                1.0
            };
            t_df += pr.df;
            ((df as f64 * phi_hat + pr.df * phi0) / (df as f64 + pr.df)).max(1.0)
        }
        _ => phi_hat.max(1.0),
    };
    let v0 = var_unit(r0);
    let se = (phi * v0 * (1.0 / ea + 1.0 / eb)).sqrt();
    let p_value = if ya + yb <= 0.0 {
        1.0
    } else if df == 0 && prior.is_some_and(|p| p.kappa > 0.0) {
        // One run per side, but a common jitter estimated across entities
        // (`robust_kappa_single`): z-test with sampling + jitter variance.
        // `prior.df` carries the effective degrees of freedom of the kappa
        // estimate (a median-based scale: about 37% efficient).
        let (kappa, kdf) = prior.map(|p| (p.kappa, p.df)).unwrap_or((0.0, 0.0));
        let var = v0 * (1.0 / ea + 1.0 / eb) + 2.0 * kappa * r0 * r0;
        if var <= 0.0 {
            1.0
        } else {
            let z = ((rb - ra) / var.sqrt()).abs();
            let tail = if kdf >= 1.0 {
                student_t_sf(z, kdf)
            } else {
                normal_sf(z)
            };
            (2.0 * tail).min(1.0)
        }
    } else if df == 0 {
        // Exact conditional binomial test on the two counts.
        let n = (ya + yb).round() as u64;
        let k = yb.round() as u64;
        let pi = eb / (ea + eb);
        let lo = binom_cdf(k, n, pi);
        let hi = binom_sf(k, n, pi);
        (2.0 * lo.min(hi)).min(1.0)
    } else if se <= 0.0 {
        if ra == rb {
            1.0
        } else {
            0.0
        }
    } else {
        let z = (rb - ra) / se;
        // Always Student's t: falling back to the normal when the estimate
        // happens to be <= 1 is anti-conservative when the true dispersion
        // is slightly above 1 (measured by `xtask bench gate-accuracy`).
        let tail = student_t_sf(z.abs(), t_df);
        (2.0 * tail).min(1.0)
    };
    Some(PooledTest {
        rate_a: ra,
        rate_b: rb,
        phi,
        df,
        se,
        p_value,
    })
}

/// Exposure per side needed to detect a difference `delta` in rate at
/// two-sided level `alpha` with power `power`, given a per-unit variance
/// `v` (already multiplied by the dispersion): `2 v (z_{1-α/2} + z_power)² / δ²`.
pub fn exposure_needed(delta: f64, v: f64, alpha: f64, power: f64) -> f64 {
    if delta == 0.0 {
        return f64::INFINITY;
    }
    let z = normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power);
    2.0 * v * z * z / (delta * delta)
}

/// Median of a slice (NaN-free); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|x, y| x.total_cmp(y));
    let k = v.len();
    Some(if k % 2 == 1 {
        v[k / 2]
    } else {
        (v[k / 2 - 1] + v[k / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn normal_functions_match_known_values() {
        assert!(close(normal_sf(1.959963984540054), 0.025, 1e-12));
        assert!(close(normal_sf(3.0), 0.0013498980316301, 1e-10));
        assert!(close(normal_cdf(-5.0), 2.866515718791939e-07, 1e-9));
        assert!(close(normal_quantile(0.975), 1.959963984540054, 1e-12));
        assert!(close(normal_quantile(0.001), -3.090232306167813, 1e-12));
    }

    #[test]
    fn student_t_matches_known_values() {
        // scipy.stats.t.sf(2.0, 8) = 0.04025811897863131, t.sf(2.896459, 8) = 0.01
        assert!(close(student_t_sf(2.0, 8.0), 0.04025811897863131, 1e-9));
        assert!(close(student_t_sf(2.896459447, 8.0), 0.01, 1e-7));
        assert!(close(student_t_sf(-1.0, 3.0), 1.0 - 0.19550110947788, 1e-9));
    }

    #[test]
    fn binomial_and_poisson_tails() {
        // scipy.stats.binom.sf(59, 100, 0.5) = P(X >= 60) = 0.028443966820490
        assert!(close(binom_sf(60, 100, 0.5), 0.02844396682049, 1e-9));
        // binom.cdf(3, 20, 0.4) = 0.01596116279000825
        assert!(close(binom_cdf(3, 20, 0.4), 0.01596116279000825, 1e-9));
        // poisson.sf(9, 5) = P(Y >= 10) = 0.031828057306204
        assert!(close(poisson_sf(10.0, 5.0), 0.03182805730620, 1e-9));
    }

    #[test]
    fn mann_whitney_exact_minimum_for_five_per_side() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let r = mann_whitney(&a, &b).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 0.0);
        assert!(close(r.p_value, 2.0 / 252.0, 1e-12));
    }

    #[test]
    fn mann_whitney_exact_matches_scipy() {
        // scipy.stats.mannwhitneyu([1.1,2.3,3.5,4.2,8.0],[2.0,5.1,6.3,7.7,9.9]) -> U=7, p=0.30952380952380953
        let r = mann_whitney(&[1.1, 2.3, 3.5, 4.2, 8.0], &[2.0, 5.1, 6.3, 7.7, 9.9]).unwrap();
        assert_eq!(r.u, 7.0);
        assert!(
            close(r.p_value, 0.30952380952380953, 1e-12),
            "{}",
            r.p_value
        );
    }

    #[test]
    fn mann_whitney_ties_use_normal_approximation() {
        // scipy.stats.mannwhitneyu([1,2,2,3,4],[2,3,5,5,6]) -> U=4.5, p=0.11049202405566802
        let r = mann_whitney(&[1.0, 2.0, 2.0, 3.0, 4.0], &[2.0, 3.0, 5.0, 5.0, 6.0]).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 4.5);
        assert!(close(r.p_value, 0.11049202405566802, 1e-9), "{}", r.p_value);
    }

    #[test]
    fn hodges_lehmann_interval_covers_shift() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [11.0, 12.0, 13.0, 14.0, 15.0];
        let s = hodges_lehmann(&a, &b, 0.95).unwrap();
        assert_eq!(s.shift, 10.0);
        // c = 2 (P(U<=2) = 4/252 <= 0.025 < P(U<=3) = 7/252): d[2], d[22].
        assert_eq!(s.low, 7.0);
        assert_eq!(s.high, 13.0);
        assert!(close(s.level, 1.0 - 8.0 / 252.0, 1e-12));
    }

    #[test]
    fn bh_adjusts_like_r_p_adjust() {
        // R: p.adjust(c(0.01,0.04,0.03,0.2), "BH") = 0.04 0.05333 0.05333 0.2
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.2]);
        for (x, y) in q.iter().zip([0.04, 0.16 / 3.0, 0.16 / 3.0, 0.2]) {
            assert!(close(*x, y, 1e-12), "{q:?}");
        }
    }

    #[test]
    fn pooled_single_run_is_conditional_binomial() {
        let a = [RunCount {
            count: 40.0,
            exposure: 1000.0,
        }];
        let b = [RunCount {
            count: 60.0,
            exposure: 1000.0,
        }];
        let t = pooled_test(&a, &b, CountModel::Share).unwrap();
        assert_eq!(t.df, 0);
        // binomtest(60, 100, 0.5).pvalue = 0.056887933640980
        assert!(close(t.p_value, 0.05688793364098, 1e-9), "{}", t.p_value);
    }

    #[test]
    fn pooled_dispersion_detects_overdispersion() {
        let mk = |xs: &[f64]| -> Vec<RunCount> {
            xs.iter()
                .map(|&c| RunCount {
                    count: c,
                    exposure: 1000.0,
                })
                .collect()
        };
        let calm = pooled_test(
            &mk(&[50., 51., 49., 50.]),
            &mk(&[50., 52., 48., 50.]),
            CountModel::Share,
        )
        .unwrap();
        assert_eq!(calm.phi, 1.0);
        let wild = pooled_test(
            &mk(&[20., 80., 30., 70.]),
            &mk(&[50., 52., 48., 50.]),
            CountModel::Share,
        )
        .unwrap();
        assert!(wild.phi > 5.0, "{}", wild.phi);
        assert_eq!(wild.df, 6);
    }

    #[test]
    fn robust_kappa_sees_common_jitter_not_one_change() {
        let rc = |c: f64| RunCount {
            count: c,
            exposure: 100_000.0,
        };
        // 20 functions of 2,000 samples each; identical runs: no jitter.
        let same: Vec<_> = (0..20).map(|_| (rc(2000.0), rc(2000.0))).collect();
        assert_eq!(robust_kappa_single(&same, CountModel::Share), 0.0);
        // Every function moves by ±10% (far beyond sampling noise): jitter.
        let moved: Vec<_> = (0..20)
            .map(|i| (rc(2000.0), rc(if i % 2 == 0 { 2200.0 } else { 1800.0 })))
            .collect();
        let k = robust_kappa_single(&moved, CountModel::Share);
        assert!(k > 0.001 && k < 0.02, "{k}");
        // One real change among steady functions does not count as jitter.
        let mut one = same.clone();
        one[0].1 = rc(4000.0);
        assert_eq!(robust_kappa_single(&one, CountModel::Share), 0.0);
    }
}

"""The statistics of the verdicts, in plain Python (scipy is not a dependency): Student's t quantile, paired
t-intervals, and Fisher's exact test.

```python
>>> round(t_quantile(0.975, 4), 4)  # 95% two-sided, 5 seeds
2.7764
>>> lo, hi = t_interval([1.0, 2.0, 3.0])
>>> round(lo, 3), round(hi, 3)
(-0.484, 4.484)
>>> round(fisher_exact(5, 0, 0, 5), 4)  # 5/5 against 0/5
0.0079

```
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t with `df` degrees of freedom (bisection on [`t_cdf`], to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided `confidence` t-interval of the mean of `values` (NaN, NaN with fewer than two values)."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    half = t_quantile(0.5 + confidence / 2.0, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test on the 2x2 table [[a, b], [c, d]] (rows: groups; columns: event, no
    event): the probability, with the margins fixed, of a table at most as likely as the one observed."""
    row1, col1, n = a + b, a + c, a + b + c + d

    def probability(x: int) -> float:
        return math.comb(col1, x) * math.comb(n - col1, row1 - x) / math.comb(n, row1)

    observed = probability(a)
    low, high = max(0, row1 + col1 - n), min(row1, col1)
    return min(1.0, sum(p for x in range(low, high + 1) if (p := probability(x)) <= observed * (1 + 1e-7)))


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    z = t_quantile(0.5 + confidence / 2.0, 1e9)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_of_proportions(a: int, n_a: int, b: int, n_b: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of a/n_a - b/n_b, from the two Wilson intervals."""
    if n_a == 0 or n_b == 0:
        return float("nan"), float("nan")
    p1, p2 = a / n_a, b / n_b
    l1, u1 = wilson(a, n_a, confidence)
    l2, u2 = wilson(b, n_b, confidence)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)

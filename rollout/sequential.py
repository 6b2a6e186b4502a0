"""Canary-vs-stable statistics for `rollout analyze` that stay valid when it is
run again and again on a growing window. Dependency-free (math only) like
rollout/stats.py, so analyze starts instantly.

* accuracy_test(): an always-valid confidence sequence for the difference of
  two proportions (canary accuracy minus stable accuracy at the 0.5 threshold,
  on labeled traffic), with a non-inferiority margin. It is the normal-mixture
  mSPRT of Johari, Pekelis & Walsh, "Always Valid Inference" (2017/2022) -
  the test Optimizely's stats engine runs - inverted into an interval: with
  theta_hat the observed difference, V its variance (p(1-p)/n per arm,
  plug-in) and tau^2 the mixing variance,

      Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2
                                                    / (2 V (V + tau^2)))

  and the interval is every theta0 with Lambda < 1/alpha:

      |theta_hat - theta0| < sqrt(V (V + tau^2) / tau^2
                                  * (2 log(1/alpha) + log((V + tau^2) / V))).

  P(the true difference is ever outside the interval, at any look) <= alpha
  (asymptotically, with the plug-in variance), so `analyze` can look every
  minute. A fixed-horizon z-test looked at every minute cannot: its false
  alarm rate grows with the number of looks (tests/rollout/test_sequential.py
  measures both).
* auc_difference(): the AUC difference with a Hanley-McNeil normal interval.
  This one is fixed-horizon (valid at one look, not under repeated looks), so
  `analyze` reports it and never decides on it.
* sample_ratio(): the chi-squared goodness-of-fit test (1 dof) of observed
  canary vs stable request counts against the configured percent.
"""
import dataclasses
import math
import statistics
from typing import Optional

WORSE = 'worse'               # interval entirely below -margin: the canary is worse
NOT_WORSE = 'not_worse'       # interval entirely above -margin: non-inferior
INCONCLUSIVE = 'inconclusive'

# Mixing standard deviation of the mSPRT: the size of difference the test is
# tuned to find fastest (Johari et al. sec. 4: tau about the effect sizes of
# interest). 0.05 = 5 accuracy points; smaller differences are still found,
# just later.
DEFAULT_TAU = 0.05


def normal_quantile(q):
    """Inverse standard normal CDF (0 < q < 1): the standard library's, which
    keeps this module free of NumPy/SciPy."""
    if not 0.0 < q < 1.0:
        raise ValueError('quantile must be in (0, 1), got %r' % q)
    return statistics.NormalDist().inv_cdf(q)


# ---------------------------------------------------------------- accuracy

@dataclasses.dataclass(frozen=True)
class SequentialResult:
    """Canary minus stable on a proportion, with its always-valid interval."""
    difference: float                  # canary - stable
    low: float                         # always-valid interval at level alpha
    high: float
    margin: float                      # non-inferiority margin (canary may be this much worse)
    alpha: float
    decision: str                      # WORSE, NOT_WORSE or INCONCLUSIVE
    canary: float                      # the two proportions
    stable: float
    n_canary: int
    n_stable: int


def _variance(successes, n):
    # (x + 0.5) / (n + 1): never 0 or 1, so an all-correct arm still has variance.
    p = (successes + 0.5) / (n + 1.0)
    return p * (1.0 - p) / n


def msprt_half_width(variance, alpha, tau=DEFAULT_TAU):
    """Half-width of the normal-mixture always-valid interval for a mean whose
    estimate has `variance` (Johari et al.; see the module docstring)."""
    tau2 = tau * tau
    return math.sqrt(variance * (variance + tau2) / tau2
                     * (2.0 * math.log(1.0 / alpha) + math.log((variance + tau2) / variance)))


def accuracy_test(correct_canary, n_canary, correct_stable, n_stable, margin=0.02,
                  alpha=0.05, tau=DEFAULT_TAU):
    """The sequential non-inferiority test of canary vs stable accuracy.

    'worse' when the whole interval is below -margin (the canary is more than
    `margin` less accurate: roll back), 'not_worse' when the whole interval is
    above -margin (pass), 'inconclusive' otherwise (wait for more labels).
    """
    if n_canary <= 0 or n_stable <= 0:
        raise ValueError('both arms need labeled rows (canary %d, stable %d)'
                         % (n_canary, n_stable))
    if not 0.0 < alpha < 1.0 or margin < 0 or tau <= 0:
        raise ValueError('need 0 < alpha < 1, margin >= 0, tau > 0')
    acc_c, acc_s = correct_canary / n_canary, correct_stable / n_stable
    difference = acc_c - acc_s
    width = msprt_half_width(_variance(correct_canary, n_canary)
                             + _variance(correct_stable, n_stable), alpha, tau)
    low, high = difference - width, difference + width
    if high < -margin:
        decision = WORSE
    elif low > -margin:
        decision = NOT_WORSE
    else:
        decision = INCONCLUSIVE
    return SequentialResult(difference, low, high, margin, alpha, decision, acc_c, acc_s,
                            n_canary, n_stable)


def fixed_horizon_z_test(correct_canary, n_canary, correct_stable, n_stable, margin=0.02,
                         alpha=0.05):
    """The classic one-look z-interval with the same decisions as accuracy_test().

    Only valid when looked at once; here so the tests can show how repeated
    looks inflate its false alarms. Not used by analyze.
    """
    difference = correct_canary / n_canary - correct_stable / n_stable
    width = normal_quantile(1 - alpha / 2) * math.sqrt(
        _variance(correct_canary, n_canary) + _variance(correct_stable, n_stable))
    if difference + width < -margin:
        return WORSE
    if difference - width > -margin:
        return NOT_WORSE
    return INCONCLUSIVE


# ---------------------------------------------------------------- AUC

@dataclasses.dataclass(frozen=True)
class AucDifference:
    """Canary AUC minus stable AUC with a fixed-horizon normal interval."""
    difference: float
    low: float
    high: float
    canary: float
    stable: float
    alpha: float


def hanley_mcneil_variance(auc, n_positive, n_negative):
    """Var(AUC) by Hanley & McNeil (1982), exponential approximation."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    return max((auc * (1.0 - auc) + (n_positive - 1) * (q1 - auc * auc)
                + (n_negative - 1) * (q2 - auc * auc)) / (n_positive * n_negative), 0.0)


def auc_difference(auc_canary, pos_canary, neg_canary, auc_stable, pos_stable, neg_stable,
                   alpha=0.05) -> Optional[AucDifference]:
    """AUC difference with a normal interval; the two arms are independent
    samples (a split sends each request to one arm), so the variances add.

    Fixed-horizon, NOT valid under repeated looks: reported, not decided on.
    None if either arm lacks one of the classes.
    """
    if None in (auc_canary, auc_stable) or min(pos_canary, neg_canary, pos_stable,
                                               neg_stable) <= 0:
        return None
    se = math.sqrt(hanley_mcneil_variance(auc_canary, pos_canary, neg_canary)
                   + hanley_mcneil_variance(auc_stable, pos_stable, neg_stable))
    width = normal_quantile(1 - alpha / 2) * se
    difference = auc_canary - auc_stable
    return AucDifference(difference, difference - width, difference + width, auc_canary,
                         auc_stable, alpha)


# ---------------------------------------------------------------- sample ratio

@dataclasses.dataclass(frozen=True)
class SampleRatio:
    """Observed canary share against the configured percent."""
    canary: int
    stable: int
    observed_share: float            # canary / (canary + stable)
    expected_share: float            # configured percent / 100
    chi2: float
    p_value: float


def sample_ratio(canary, stable, percent) -> Optional[SampleRatio]:
    """Chi-squared goodness of fit (1 dof; p = erfc(sqrt(chi2 / 2))) of the
    counts against `percent`% canary. None without requests or at 0/100%."""
    total = canary + stable
    if total <= 0 or not 0 < percent < 100:
        return None
    share = percent / 100.0
    expected_c, expected_s = total * share, total * (1.0 - share)
    chi2 = (canary - expected_c) ** 2 / expected_c + (stable - expected_s) ** 2 / expected_s
    return SampleRatio(canary, stable, canary / total, share, chi2,
                       math.erfc(math.sqrt(chi2 / 2.0)))


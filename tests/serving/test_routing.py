"""Traffic split and stickiness (fast, no TensorFlow)."""
import os
import random

import pytest

from serving import routing
from serving.models import CANARY, STABLE, Plan


class FakeVersion:
    def __init__(self, version):
        self.version = version


def _plan(traffic, canary=2):
    versions = {1: FakeVersion(1)}
    if canary:
        versions[canary] = FakeVersion(canary)
    return Plan('taxi', 1, canary, traffic, 'canary' if canary else 'stable', None, versions)


def test_split_without_key_follows_the_percent():
    rng = random.Random(7)
    plan = _plan(30)
    n = 20000
    canary = sum(routing.choose(plan, None, routing.SPLIT, rng)[1] == CANARY for _ in range(n))
    # Binomial(20000, 0.3): sd ~65; 5 sd.
    assert abs(canary - 0.3 * n) < 5 * 65


def test_keyed_requests_are_sticky_and_monotonic_in_the_percent():
    keys = ['user-%d' % i for i in range(5000)]
    at = {p: {k for k in keys if routing.choose(_plan(p), k)[1] == CANARY} for p in (5, 25, 50)}
    # The same key always lands on the same side ...
    assert at[25] == {k for k in keys if routing.choose(_plan(25), k)[1] == CANARY}
    # ... raising the percent only moves users to the canary ...
    assert at[5] <= at[25] <= at[50]
    # ... and the share matches the percent (sd ~31 at 25%).
    assert abs(len(at[25]) - 1250) < 5 * 31


def test_sticky_buckets_are_the_same_in_other_interpreters():
    """Two server replicas (or a restart) send a key to the same arm: the bucket must not
    depend on the interpreter's string-hash seed."""
    import json
    import subprocess
    import sys
    keys = ['user-%d' % i for i in range(200)]
    here = [routing.bucket('taxi', k) for k in keys]
    code = ('import json, sys; from serving import routing; '
            'print(json.dumps([routing.bucket("taxi", k) for k in json.load(sys.stdin)]))')
    for seed in ('1', '2'):
        other = subprocess.run([sys.executable, '-c', code], input=json.dumps(keys), text=True,
                               capture_output=True, check=True,
                               env=dict(os.environ, PYTHONHASHSEED=seed))
        assert json.loads(other.stdout) == here


@pytest.mark.parametrize('traffic, canary, mode, expected', [
    (0, 2, routing.SPLIT, STABLE),
    (100, 2, routing.SPLIT, CANARY),
    (50, None, routing.SPLIT, STABLE),
    (100, 2, routing.SHADOW, STABLE),   # shadow: the client always gets stable
])
def test_edge_cases(traffic, canary, mode, expected):
    plan = _plan(traffic if canary else 0, canary)
    assert routing.choose(plan, 'k', mode)[1] == expected

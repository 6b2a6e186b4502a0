"""Which version answers a request: the traffic split, sticky by request key.

With a key (e.g. a user id) the choice is a hash, so one user always sees one
version: bucket = hash(model, key) mod 10000 goes to the canary iff it is
below percent x 100. Raising the percent only moves users from stable to
canary, never back, so a user does not flip between versions while the
rollout advances. Without a key each request is an independent draw.
"""
import hashlib
import random

from serving.models import CANARY, STABLE

SPLIT = 'split'
SHADOW = 'shadow'
MODES = (SPLIT, SHADOW)
BUCKETS = 10000


def bucket(model_name, key):
    """A stable bucket in [0, BUCKETS) for `key` (same on every process/host)."""
    digest = hashlib.sha256(('%s\0%s' % (model_name, key)).encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big') % BUCKETS


def choose(plan, key=None, mode=SPLIT, rng=random):
    """Returns (ModelVersion, role) answering the client, or (None, None).

    In shadow mode the client is always answered by stable; the canary gets a
    copy of the request elsewhere (see server.py).
    """
    stable = plan.versions.get(plan.stable)
    canary = plan.versions.get(plan.canary) if plan.canary is not None else None
    if stable is None:
        return (canary, CANARY) if canary is not None else (None, None)
    if canary is None or mode == SHADOW or plan.traffic <= 0:
        return stable, STABLE
    if plan.traffic >= 100:
        return canary, CANARY
    if key is not None:
        to_canary = bucket(plan.model_name, key) < plan.traffic * (BUCKETS // 100)
    else:
        to_canary = rng.random() * 100 < plan.traffic
    return (canary, CANARY) if to_canary else (stable, STABLE)

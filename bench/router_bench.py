"""`serve --upstream` (router mode) overhead, measured inside bench/serving_bench.py's run.

The upstream is the bench's own `tfx-canary serve` process (standing in for
TF Serving, which cannot be installed here); the router is a second
`tfx-canary serve --upstream` process over a serving root holding only the
model's rollout.json (what a router needs). One client, one keep-alive
connection, the same request bytes, unversioned `:predict`: calls straight to
the upstream and calls through the router, in alternating rounds so machine
noise hits both alike. The router's added latency is the difference of the
pooled p50s (goal: at most TARGET_ADDED_P50_MS).
"""
import os
import shutil
import time

TARGET_ADDED_P50_MS = 1.0


def _router_root(root, model, work):
    """A serving root with `model`'s rollout.json alone (the router loads no version)."""
    bare = os.path.join(work, 'serving-bench-router-root')
    shutil.rmtree(bare, ignore_errors=True)
    os.makedirs(os.path.join(bare, model))
    shutil.copy(os.path.join(root, model, 'rollout.json'), os.path.join(bare, model))
    return bare


def measure(root, model, served, upstream_port, bodies, plan, work):
    """The router's added latency in front of the upstream on `upstream_port` (a dict)."""
    from bench import serving_bench as sb   # its server process, client and load loop
    path = '/v1/models/%s:predict' % model
    started = time.perf_counter()
    router = sb.ServerProcess(_router_root(root, model, work),
                              os.path.join(work, 'serving-bench-router.log'),
                              '--upstream', 'http://127.0.0.1:%d' % upstream_port).start()
    try:
        router.wait_ready(model, served)
        direct = [sb.Connection.post_bytes('127.0.0.1', upstream_port, path, b) for b in bodies]
        routed = [sb.Connection.post_bytes('127.0.0.1', router.port, path, b) for b in bodies]
        sb._load(router.port, routed, 1, count=100, warmup_seconds=0)   # warm both paths
        sb._load(upstream_port, direct, 1, count=100, warmup_seconds=0)
        pooled = {'direct': [], 'router': []}
        rounds, cpu = [], []
        for _ in range(plan['rounds']):
            a = sb._load(upstream_port, direct, 1, count=plan['calls'], warmup_seconds=0)
            b = sb._load(router.port, routed, 1, count=plan['calls'], warmup_seconds=0,
                         cpu=router.cpu_seconds)
            if a['failures'] or b['failures']:
                raise RuntimeError('requests failed: %s' % (a['failures'] + b['failures'])[:3])
            pooled['direct'] += a['latencies']
            pooled['router'] += b['latencies']
            cpu.append(b['server_cpu_ms_per_request'])
            rounds.append(round((sb._percentile(b['latencies'], 50)
                                 - sb._percentile(a['latencies'], 50)) * 1e3, 3))
    finally:
        router.stop()
    direct_stats, router_stats = sb._stats_ms(pooled['direct']), sb._stats_ms(pooled['router'])
    added = router_stats['p50_ms'] - direct_stats['p50_ms']
    cpu = [c for c in cpu if c is not None]
    return {'direct': direct_stats, 'through_router': router_stats,
            'added_p50_ms': round(added, 3),
            'added_p99_ms': round(router_stats['p99_ms'] - direct_stats['p99_ms'], 3),
            'added_p50_ms_rounds': rounds,
            'router_cpu_ms_per_request': round(sum(cpu) / len(cpu), 3) if cpu else None,
            'target_added_p50_ms': TARGET_ADDED_P50_MS,
            'target_met': added <= TARGET_ADDED_P50_MS,
            'seconds': round(time.perf_counter() - started, 1)}


def markdown(r):
    """Lines for results.md: the router vs. its upstream, this run's numbers."""
    cpu = r['router_cpu_ms_per_request']
    return [
        '',
        '`serve --upstream` (router mode) in front of the server above as its upstream '
        '(no TF Serving here), 1 client, the same rows, alternating rounds:',
        '',
        '| path | p50 ms | p99 ms |',
        '|---|---|---|',
        '| upstream directly | %.2f | %.2f |' % (r['direct']['p50_ms'], r['direct']['p99_ms']),
        '| through the router | %.2f | %.2f |' % (r['through_router']['p50_ms'],
                                                 r['through_router']['p99_ms']),
        '',
        '**Router mode adds %.2f ms p50** (%.2f ms p99; per round: %s; router CPU %s '
        'ms/request). Target ≤ %.1f ms: **%s**.' % (
            r['added_p50_ms'], r['added_p99_ms'],
            ', '.join('%.2f' % x for x in r['added_p50_ms_rounds']),
            '%.2f' % cpu if cpu is not None else '—', r['target_added_p50_ms'],
            'met' if r['target_met'] else 'NOT met'),
    ]

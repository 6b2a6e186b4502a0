"""The serving part of `make bench` in quick mode, over the session's pipeline workspace."""
import json
import time

import pytest

pytestmark = pytest.mark.e2e


def _sane(stats):
    assert stats['p99_ms'] >= stats['p50_ms'] > 0
    assert stats['n'] > 0


def test_quick_serving_bench_measures_server_and_in_process_in_one_run(pipeline_workspace,
                                                                       tmp_path):
    from bench import serving_bench
    root = pipeline_workspace['path'] / 'serving'
    rollout_before = (root / 'taxi' / 'rollout.json').read_text()
    snapshot = root / 'taxi' / 'serving-metrics.json'
    snapshot_before = snapshot.read_bytes() if snapshot.exists() else None
    started = time.monotonic()
    result = serving_bench.run(str(tmp_path / 'work'), quick=True, serving_root=str(root))
    # Quick mode is CI-sized: well under a minute once the pipeline has run.
    assert time.monotonic() - started < 60

    # What `make bench` needs: Markdown lines, and JSON for results.json.
    assert result['markdown'] and all(isinstance(line, str) for line in result['markdown'])
    md = '\n'.join(result['markdown'])
    assert 'Router overhead' in md and '| server, 16 clients |' in md
    json.dumps({k: v for k, v in result.items() if k != 'markdown'})

    # The in-process baseline: the SavedModel alone, and with the JSON work.
    for path in ('savedmodel', 'savedmodel_json'):
        _sane(result['in_process'][path])
        assert result['in_process'][path]['calls_per_s'] > 0
    _sane(result['server_1_client'])
    # The server answers what the SavedModel computes.
    assert result['answers_max_abs_diff'] < 1e-5

    levels = result['concurrency']
    assert [level['concurrency'] for level in levels] == [1, 4, 16]
    for level in levels:
        _sane(level)
        assert level['errors'] == 0 and level['requests'] > 0
        assert level['throughput_rps'] > 0
        assert sum(level['versions'].values()) == level['n']
        assert set(level['versions']) <= {str(v) for v in result['served_versions']}

    # gRPC on the same server process, at the same levels, answering what the SavedModel does.
    assert result['grpc_answers_max_abs_diff'] < 1e-5
    assert [level['concurrency'] for level in result['grpc']] == [1, 4, 16]
    for level in result['grpc']:
        _sane(level)
        assert level['errors'] == 0 and level['throughput_rps'] > 0
        assert sum(level['versions'].values()) == level['n']
        assert set(level['versions']) <= {str(v) for v in result['served_versions']}
    rest_1, grpc_1 = result['concurrency'][0], result['grpc'][0]
    assert '| 1 | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %.2f |' % (
        rest_1['p50_ms'], grpc_1['p50_ms'], rest_1['p99_ms'], grpc_1['p99_ms'],
        rest_1['throughput_rps'], grpc_1['throughput_rps'],
        grpc_1['p50_ms'] / rest_1['p50_ms']) in md

    # The overhead comes from this run's numbers, and the verdict from the overhead.
    in_process_p50 = result['in_process']['savedmodel']['p50_ms']
    server_p50 = result['server_1_client']['p50_ms']
    assert result['overhead_p50_ms'] == pytest.approx(server_p50 - in_process_p50, abs=1e-3)
    assert result['http_routing_p50_ms'] == pytest.approx(
        server_p50 - result['in_process']['savedmodel_json']['p50_ms'], abs=1e-3)
    assert result['target_met'] == (result['overhead_p50_ms'] <= 1.0)
    assert ('**met**' if result['target_met'] else '**NOT met**') in md
    assert len(result['rounds']) == serving_bench.QUICK['rounds']

    # `serve --upstream` in front of the same server, measured against it directly.
    router = result['upstream_router']
    _sane(router['direct'])
    _sane(router['through_router'])
    assert router['added_p50_ms'] == pytest.approx(
        router['through_router']['p50_ms'] - router['direct']['p50_ms'], abs=1e-3)
    assert len(router['added_p50_ms_rounds']) == serving_bench.QUICK['rounds']
    assert router['target_met'] == (router['added_p50_ms'] <= 1.0)
    assert ('**Router mode adds %.2f ms p50**' % router['added_p50_ms']) in md

    # The shared workspace was served from a copy and is left as it was.
    assert (root / 'taxi' / 'rollout.json').read_text() == rollout_before
    assert (snapshot.read_bytes() if snapshot.exists() else None) == snapshot_before

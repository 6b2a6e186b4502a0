"""Request helpers: TF Serving-style instances from CSV rows, and a small load driver.

Used by the tests, `docs/serving.md`'s examples and the benchmark numbers; a
real client needs none of this (any HTTP client speaking TF Serving's REST
API works).
"""
import csv
import threading
import time


def instances_from_csv(path, schema, feature_keys, limit=None):
    """predict_raw instances (dicts of the model's raw features) from a training CSV.

    `feature_keys` are the raw features the model serves (the caller knows the
    model: modules/features.py's RAW_FEATURE_KEYS for the bundled one). Types
    follow the schema (INT -> int, FLOAT -> float, BYTES -> str). Rows with an
    empty model feature are skipped: the signature needs every feature.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2
    kinds = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}
    convert = {'INT': int, 'FLOAT': float, 'BYTES': str}
    out = []
    with open(path, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f):
            if any(row.get(k, '') == '' for k in feature_keys):
                continue
            out.append({k: convert[kinds[k]](row[k]) for k in feature_keys})
            if limit and len(out) >= limit:
                break
    return out


def drive(url, bodies, concurrency=8, duration=None, headers_for=None, timeout=30.0):
    """POSTs `bodies` (JSON-able) to `url` from `concurrency` threads.

    Stops after every body was sent once, or after `duration` seconds if
    given (cycling through the bodies). Returns a dict with per-request
    (status, seconds, version header) results and the wall time.
    """
    import httpx
    results = []
    lock = threading.Lock()
    cursor = iter(range(10 ** 12))
    deadline = None if duration is None else time.monotonic() + duration
    failures = []

    def worker():
        with httpx.Client(timeout=timeout) as client:
            while True:
                with lock:
                    i = next(cursor)
                if deadline is None and i >= len(bodies):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                headers = headers_for(i) if headers_for else None
                started = time.perf_counter()
                try:
                    r = client.post(url, json=bodies[i % len(bodies)], headers=headers)
                    status, version = r.status_code, r.headers.get('x-model-version')
                except httpx.HTTPError as e:
                    status, version = None, None
                    with lock:
                        failures.append(repr(e))
                seconds = time.perf_counter() - started
                with lock:
                    results.append((status, seconds, version))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {'results': results, 'seconds': time.perf_counter() - started,
            'transport_errors': failures}


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))
    return values[index]

"""Replay a training CSV span as production traffic, and deliver its labels later.

A small driver for `make loop` (runners/loop.py) and for trying the feedback
loop by hand. It plays the part of a production client: each row of a span
becomes (part of) a TF Serving REST predict request,

    POST /v1/models/NAME:predict   {"signature_name": "predict_raw", "instances": [{...}]}
    X-Request-Id: replay-<token>-<n>

with a request id of its own, and it keeps, for each (request id, row), the
value of the label column from the CSV: the ground truth a real system learns
later (the trip ends, the tip is paid). `deliver_labels` then sends those
labels through `POST /v1/models/NAME:feedback`, in batches, the way a label
pipeline would (`write_labels_csv` writes the same for `tfx-canary capture
label`). Nothing here knows the model: the features to send and the label
column come as parameters (the CLI reads them from the model code and the
schema); the rows are read with serving/client.py's `instances_from_csv` and
sent with its `drive`.

    replay = Replay.from_csv('data/taxi/span-2/data.csv', schema, feature_keys, 'tips')
    sent = replay.send('http://127.0.0.1:8501', 'taxi')         # predictions
    delivered = replay.deliver_labels('http://127.0.0.1:8501', 'taxi')   # later
"""
import csv
import dataclasses
import uuid
from typing import Dict, List, Optional

from common.errors import TfxCanaryError
from serving import client

REQUEST_ID_HEADER = 'X-Request-Id'
DEFAULT_SIGNATURE = 'predict_raw'
FEEDBACK_BATCH = 500     # labels per feedback request


class ReplayError(TfxCanaryError):
    """The span cannot be replayed, or the server refused what was sent."""


@dataclasses.dataclass(frozen=True)
class SendResult:
    """What one replay's predict requests got back."""
    requests: int
    rows: int
    ok: int                                   # requests answered 200
    failed: int                               # other statuses and transport errors
    by_version: Dict[str, int]                # {version header: requests answered 200}
    seconds: float
    statuses: Dict[str, int]                  # {status code or 'transport': count}

    @property
    def requests_per_second(self):
        return self.requests / self.seconds if self.seconds else 0.0


@dataclasses.dataclass(frozen=True)
class FeedbackResult:
    """The summed answers of the feedback API to every batch."""
    sent: int
    accepted: int
    unknown: int
    duplicate: int
    requests: int
    seconds: float


class Replay:
    """The rows of one span as requests with ids, and the labels kept for later.

    `instances` are predict_raw instances (dicts of the model's raw features),
    `labels` the label column's value of the same rows, in order.
    """

    def __init__(self, instances, labels, label_key, rows_per_request=1, token=None,
                 signature=DEFAULT_SIGNATURE):
        if len(instances) != len(labels):
            raise ValueError('one label per instance')
        if rows_per_request < 1:
            raise ReplayError('rows per request must be at least 1, got %d' % rows_per_request)
        if not instances:
            raise ReplayError('nothing to replay: no row has every model feature and a label')
        self.instances = list(instances)
        self.labels = list(labels)
        self.label_key = label_key
        self.rows_per_request = rows_per_request
        self.signature = signature
        self.token = token or uuid.uuid4().hex[:8]
        count = -(-len(self.instances) // rows_per_request)
        self.request_ids = ['replay-%s-%06d' % (self.token, i) for i in range(count)]

    @classmethod
    def from_csv(cls, path, schema, feature_keys, label_key, limit=None, **kwargs):
        """The first `limit` rows of a training CSV (all by default) that have every
        model feature and a label; typed by the schema as the model expects."""
        try:
            with open(path, newline='', encoding='utf-8') as f:
                header = next(csv.reader(f), [])
        except OSError as e:
            raise ReplayError('cannot read %s: %s' % (path, e.strerror)) from None
        missing = [k for k in list(feature_keys) + [label_key] if k not in header]
        if missing:
            raise ReplayError('%s has no column %s: replay needs a training CSV with the '
                              "model's features and the label" % (path, ', '.join(missing)))
        if limit is not None and limit < 1:
            raise ReplayError('the row limit must be at least 1, got %d' % limit)
        # instances_from_csv skips rows with an empty cell among the keys it is
        # given, so asking for the label too keeps only rows that can be labeled.
        rows = client.instances_from_csv(path, schema, list(feature_keys) + [label_key],
                                         limit=limit)
        labels = [row.pop(label_key) for row in rows]
        return cls(rows, labels, label_key, **kwargs)

    def requests(self):
        """[(request id, predict body)] in order."""
        k = self.rows_per_request
        return [(rid, {'signature_name': self.signature,
                       'instances': self.instances[i * k:(i + 1) * k]})
                for i, rid in enumerate(self.request_ids)]

    def pending_labels(self) -> List[dict]:
        """Every (request id, row, label) this replay keeps: the feedback API's items."""
        k = self.rows_per_request
        return [{'request_id': self.request_ids[i // k], 'row': i % k,
                 self.label_key: label} for i, label in enumerate(self.labels)]

    def send(self, url, model_name, concurrency=4, timeout=30.0) -> SendResult:
        """POSTs every request to `url`/v1/models/NAME:predict (unversioned: the server
        routes it by the rollout) with its X-Request-Id."""
        requests = self.requests()
        ids = [rid for rid, _ in requests]
        bodies = [body for _, body in requests]
        done = client.drive('%s/v1/models/%s:predict' % (url.rstrip('/'), model_name), bodies,
                            concurrency=concurrency, timeout=timeout,
                            headers_for=lambda i: {REQUEST_ID_HEADER: ids[i]})
        statuses, by_version = {}, {}
        for status, _seconds, version in done['results']:
            key = 'transport' if status is None else str(status)
            statuses[key] = statuses.get(key, 0) + 1
            if status == 200:
                by_version[str(version)] = by_version.get(str(version), 0) + 1
        ok = statuses.get('200', 0)
        return SendResult(len(bodies), len(self.instances), ok, len(bodies) - ok,
                          dict(sorted(by_version.items())), done['seconds'],
                          dict(sorted(statuses.items())))

    def deliver_labels(self, url, model_name, batch_size=FEEDBACK_BATCH,
                       timeout=60.0) -> FeedbackResult:
        """Sends the kept labels through POST /v1/models/NAME:feedback, `batch_size` a
        request; sums the answers. A refused batch is a ReplayError with the server's
        message (a server without capture keeps no labels)."""
        import time

        import httpx
        items = self.pending_labels()
        totals = {'accepted': 0, 'unknown': 0, 'duplicate': 0}
        started = time.perf_counter()
        endpoint = '%s/v1/models/%s:feedback' % (url.rstrip('/'), model_name)
        requests = 0
        with httpx.Client(timeout=timeout) as http:
            for start in range(0, len(items), batch_size):
                try:
                    answer = http.post(endpoint, json={'labels': items[start:start + batch_size]})
                except httpx.HTTPError as e:
                    raise ReplayError('feedback to %s failed: %s' % (endpoint, e)) from None
                requests += 1
                if answer.status_code != 200:
                    raise ReplayError('feedback to %s refused (%d): %s'
                                      % (endpoint, answer.status_code, _error_text(answer)))
                body = answer.json()
                for key in totals:
                    totals[key] += int(body.get(key, 0))
        return FeedbackResult(len(items), totals['accepted'], totals['unknown'],
                              totals['duplicate'], requests, time.perf_counter() - started)

    def write_labels_csv(self, path):
        """The kept labels as `request_id,row,<label>` (for `tfx-canary capture label`)."""
        with open(path, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['request_id', 'row', self.label_key])
            for item in self.pending_labels():
                writer.writerow([item['request_id'], item['row'], item[self.label_key]])
        return path


def _error_text(response):
    try:
        return response.json().get('error') or response.text
    except ValueError:
        return response.text


def versions_text(by_version: Dict[str, int], roles: Optional[Dict[int, str]] = None) -> str:
    """'v1 stable 3620, v2 canary 402' from SendResult.by_version and {version: role}."""
    roles = roles or {}
    parts = []
    for version, count in sorted(by_version.items(), key=lambda kv: (len(kv[0]), kv[0])):
        role = roles.get(int(version)) if version.isdigit() else None
        parts.append('v%s%s %d' % (version, ' ' + role if role else '', count))
    return ', '.join(parts) or 'none'

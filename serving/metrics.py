"""Per-version serving metrics: Prometheus text on /metrics and a JSON snapshot.

Two views of the same events:

* Prometheus counters/histograms (prometheus-client, one private registry per
  server) are cumulative for the process, as Prometheus expects;
* the JSON snapshot that `tfx-canary rollout analyze` reads holds a *window*
  per model that restarts whenever the rollout changes (stable, canary or
  traffic), so a decision about the current step only uses requests served
  under it, plus the lifetime totals.
"""
import os
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram as PromHistogram
from prometheus_client import generate_latest

from rollout import stats
from rollout.live_quality import QUALITY_KEY, LiveQuality
from rollout.metrics_snapshot import SNAPSHOT_FORMAT


class VersionStats:
    """What one version did: requests, errors, latency and predictions."""

    def __init__(self):
        self.requests = 0
        self.rows = 0
        self.client_errors = 0   # 4xx: bad input (the same for both arms)
        self.server_errors = 0   # 5xx: the version failed
        self.by_route = {}
        self.latency = stats.Histogram(stats.LATENCY_BOUNDS)
        self.predictions = stats.Histogram(stats.PREDICTION_BOUNDS)
        self.quality = LiveQuality()   # labeled rows (serving/quality.py joins them)

    def to_dict(self):
        return {
            'requests': self.requests, 'rows': self.rows,
            'client_errors': self.client_errors, 'server_errors': self.server_errors,
            'errors': self.client_errors + self.server_errors,
            'by_route': dict(self.by_route),
            'latency_seconds': self.latency.to_dict(),
            'latency_p50_seconds': self.latency.quantile(0.5),
            'latency_p99_seconds': self.latency.quantile(0.99),
            'predictions': self.predictions.to_dict(),
            'prediction_mean': self.predictions.mean(),
            QUALITY_KEY: self.quality.to_dict(),
        }


class ShadowStats:
    """Agreement between stable's answer and the canary's on the same requests."""

    def __init__(self):
        self.comparisons = 0      # rows compared
        self.agreements = 0       # rows on the same side of the threshold
        self.canary_errors = 0    # shadow calls the canary failed
        self.dropped = 0          # requests not mirrored (shadow queue full)
        self.abs_diff = stats.Histogram(stats.DIFF_BOUNDS)

    def to_dict(self):
        return {
            'comparisons': self.comparisons, 'agreements': self.agreements,
            'agreement_rate': (self.agreements / self.comparisons
                               if self.comparisons else None),
            'canary_errors': self.canary_errors, 'dropped': self.dropped,
            'abs_diff': self.abs_diff.to_dict(),
            'abs_diff_mean': self.abs_diff.mean(),
            'abs_diff_p99': self.abs_diff.quantile(0.99),
        }


class Window:
    """Everything observed for one model since its rollout last changed."""

    def __init__(self, plan_description, mode):
        self.started_at = time.time()
        self.rollout = dict(plan_description)
        self.mode = mode
        self.versions = {}
        self.shadow = ShadowStats()

    def version(self, version):
        stats_ = self.versions.get(version)
        if stats_ is None:
            stats_ = self.versions[version] = VersionStats()
        return stats_

    def to_dict(self, now):
        return {
            'started_at': self.started_at,
            'seconds': now - self.started_at,
            'rollout': dict(self.rollout),
            'mode': self.mode,
            'versions': {str(v): s.to_dict() for v, s in sorted(self.versions.items())},
            'shadow': self.shadow.to_dict(),
        }


class ServingMetrics:
    """Thread-safe recorder behind /metrics and the JSON snapshot."""

    def __init__(self, mode, shadow_threshold=0.5):
        self.mode = mode
        self.shadow_threshold = shadow_threshold
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._windows = {}
        self._lifetime = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.rest_requests = Counter(
            'tfx_canary_rest_requests', 'REST API requests by API and HTTP status',
            ['api', 'code'], registry=r)
        self.grpc_requests = Counter(
            'tfx_canary_grpc_requests', 'gRPC API calls by method and status code',
            ['method', 'code'], registry=r)
        self.predict_requests = Counter(
            'tfx_canary_predict_requests', 'predict calls per served version',
            ['model', 'version', 'role', 'route'], registry=r)
        self.predict_errors = Counter(
            'tfx_canary_predict_errors', 'failed predict calls per served version',
            ['model', 'version', 'role', 'route', 'code'], registry=r)
        self.predict_latency = PromHistogram(
            'tfx_canary_predict_latency_seconds', 'time to answer a predict call (decode, '
            'model, encode)', ['model', 'version', 'role'], buckets=stats.LATENCY_BOUNDS,
            registry=r)
        self.prediction = PromHistogram(
            'tfx_canary_prediction', 'predicted probability per row',
            ['model', 'version', 'role'], buckets=stats.PREDICTION_BOUNDS, registry=r)
        self.shadow_rows = Counter(
            'tfx_canary_shadow_rows', 'rows answered by stable and mirrored to the canary',
            ['model', 'stable_version', 'canary_version'], registry=r)
        self.shadow_agreements = Counter(
            'tfx_canary_shadow_agreements', 'shadow rows where stable and canary fall on '
            'the same side of the decision threshold',
            ['model', 'stable_version', 'canary_version'], registry=r)
        self.shadow_abs_diff = PromHistogram(
            'tfx_canary_shadow_abs_diff', '|p_stable - p_canary| per shadow row',
            ['model', 'stable_version', 'canary_version'], buckets=stats.DIFF_BOUNDS,
            registry=r)
        self.shadow_dropped = Counter(
            'tfx_canary_shadow_dropped', 'requests not mirrored because the shadow queue '
            'was full', ['model'], registry=r)
        self.traffic = Gauge('tfx_canary_canary_traffic_percent',
                             'canary traffic percent being applied', ['model'], registry=r)
        self.served = Gauge('tfx_canary_served_version', 'version serving each role (0: none)',
                            ['model', 'role'], registry=r)
        self.reloads = Counter('tfx_canary_rollout_reloads', 'rollout.json changes applied',
                               ['model'], registry=r)
        quality_labels = ['model', 'version', 'role']
        self.labeled_rows = Counter(
            'tfx_canary_labeled_rows', 'served rows whose ground truth joined (first label '
            'per row)', quality_labels, registry=r)
        self.labeled_correct = Counter(
            'tfx_canary_labeled_correct', 'labeled rows predicted right at 0.5',
            quality_labels, registry=r)
        self.labeled_log_loss = Counter(
            'tfx_canary_labeled_log_loss_sum', 'sum of the log loss of labeled rows',
            quality_labels, registry=r)
        self.live_accuracy = Gauge('tfx_canary_live_accuracy', 'accuracy at 0.5 on labeled '
                                   'rows (process lifetime)', quality_labels, registry=r)
        self.live_auc = Gauge('tfx_canary_live_auc', 'AUC on labeled rows (process lifetime; '
                              'binned scores)', quality_labels, registry=r)
        self.live_calibration_gap = Gauge(
            'tfx_canary_live_calibration_gap', 'mean predicted probability minus observed '
            'positive rate on labeled rows (process lifetime)', quality_labels, registry=r)
        self._quality_by_role = {}
        self.capture_rows = Counter('tfx_canary_capture_rows', 'rows written to the capture',
                                    registry=r)
        self.capture_dropped = Counter(
            'tfx_canary_capture_dropped', 'sampled rows not captured (queue full or write '
            'error)', registry=r)

    # ------------------------------------------------------------ rollout

    def rollout_changed(self, model, old_plan, new_plan):
        """Starts a new window when what routing depends on changed."""
        description = new_plan.describe()
        with self._lock:
            window = self._windows.get(model)
            if window is None or old_plan.key != new_plan.key:
                self._windows[model] = Window(description, self.mode)
            else:
                window.rollout = dict(description)
        self.traffic.labels(model).set(description['traffic'])
        self.served.labels(model, 'stable').set(new_plan.stable or 0)
        self.served.labels(model, 'canary').set(new_plan.canary or 0)
        self.reloads.labels(model).inc()

    # ------------------------------------------------------------ events

    def rest(self, api, http_status):
        self.rest_requests.labels(api, str(http_status)).inc()

    def grpc(self, method, code):
        """One gRPC call (`code`: its status name); predicts also count in predicted()."""
        self.grpc_requests.labels(method, code).inc()

    def predicted(self, model, version, role, route, seconds, http_status, probabilities=()):
        """Records one predict call on `version` (probabilities: one per row)."""
        labels = (model, str(version), role or 'none')
        self.predict_requests.labels(*labels, route).inc()
        if http_status != 200:
            self.predict_errors.labels(*labels, route, str(http_status)).inc()
        else:
            self.predict_latency.labels(*labels).observe(seconds)
            prediction = self.prediction.labels(*labels)
            for p in probabilities:
                prediction.observe(p)
        with self._lock:
            for book in (self._window(model), self._lifetime_for(model)):
                if book is None:
                    continue
                entry = book.version(version)
                entry.requests += 1
                entry.by_route[route] = entry.by_route.get(route, 0) + 1
                if http_status >= 500:
                    entry.server_errors += 1
                elif http_status != 200:
                    entry.client_errors += 1
                else:
                    entry.rows += len(probabilities)
                    entry.latency.observe(seconds)
                    for p in probabilities:
                        entry.predictions.observe(p)

    def current_window(self, model):
        """The window a prediction is served in now (live quality files its label there)."""
        with self._lock:
            return self._windows.get(model)

    def labeled(self, model, version, role, window, pairs):
        """Records ground truth for rows `version` answered under `window`.

        `pairs`: (probability returned, derived label 0/1). The lifetime always
        counts them; the window only if it is still the current one (a label for
        a prediction served before the rollout changed is not this step's).
        """
        labels = (model, str(version), role or 'none')
        with self._lock:
            books = [self._lifetime_for(model).version(version)]
            if window is not None and self._windows.get(model) is window:
                books.append(window.version(version))
            by_role = self._quality_by_role.setdefault(labels, LiveQuality())
            before_correct, before_loss = by_role.correct, by_role.log_loss_sum
            for p, y in pairs:
                by_role.add(p, y)
                for book in books:
                    book.quality.add(p, y)
            correct = by_role.correct - before_correct
            loss = by_role.log_loss_sum - before_loss
            accuracy, auc, gap = by_role.accuracy, by_role.auc(), by_role.calibration_gap
        self.labeled_rows.labels(*labels).inc(len(pairs))
        self.labeled_correct.labels(*labels).inc(correct)
        self.labeled_log_loss.labels(*labels).inc(loss)
        if accuracy is not None:
            self.live_accuracy.labels(*labels).set(accuracy)
            self.live_calibration_gap.labels(*labels).set(gap)
        if auc is not None:
            self.live_auc.labels(*labels).set(auc)

    def shadow_compared(self, model, stable_version, canary_version, stable_p, canary_p):
        threshold = self.shadow_threshold
        labels = (model, str(stable_version), str(canary_version))
        diffs = [abs(a - b) for a, b in zip(stable_p, canary_p)]
        agreements = sum((a >= threshold) == (b >= threshold)
                         for a, b in zip(stable_p, canary_p))
        self.shadow_rows.labels(*labels).inc(len(diffs))
        self.shadow_agreements.labels(*labels).inc(agreements)
        histogram = self.shadow_abs_diff.labels(*labels)
        for d in diffs:
            histogram.observe(d)
        with self._lock:
            window = self._window(model)
            if window is None:
                return
            window.shadow.comparisons += len(diffs)
            window.shadow.agreements += agreements
            for d in diffs:
                window.shadow.abs_diff.observe(d)

    def shadow_failed(self, model):
        with self._lock:
            window = self._window(model)
            if window is not None:
                window.shadow.canary_errors += 1

    def shadow_skipped(self, model):
        self.shadow_dropped.labels(model).inc()
        with self._lock:
            window = self._window(model)
            if window is not None:
                window.shadow.dropped += 1

    def _window(self, model):
        return self._windows.get(model)

    def _lifetime_for(self, model):
        book = self._lifetime.get(model)
        if book is None:
            book = self._lifetime[model] = Window({}, self.mode)
        return book

    # ------------------------------------------------------------ output

    def snapshot(self):
        """The JSON document `rollout analyze` reads (format: rollout/metrics_snapshot.py)."""
        now = time.time()
        with self._lock:
            models = {}
            for name in sorted(set(self._windows) | set(self._lifetime)):
                window = self._windows.get(name)
                lifetime = self._lifetime.get(name)
                models[name] = {
                    'window': window.to_dict(now) if window else None,
                    'lifetime': ({str(v): s.to_dict()
                                  for v, s in sorted(lifetime.versions.items())}
                                 if lifetime else {}),
                }
        return {'format': SNAPSHOT_FORMAT, 'written_at': now,
                'server': {'started_at': self.started_at, 'pid': os.getpid(),
                           'mode': self.mode, 'shadow_threshold': self.shadow_threshold},
                'models': models}

    def prometheus_text(self):
        return generate_latest(self.registry)

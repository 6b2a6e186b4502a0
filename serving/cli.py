"""`tfx-canary serve` and `tfx-canary capture ...` (registered by runners/cli.py).

Only argparse is imported here: TensorFlow, TFDV and the HTTP stack are
imported by the handlers, so `tfx-canary --help` stays instant.
"""
import json
import os
import sys

from common import locations
from common.cli import HelpFormatter
from common.errors import TfxCanaryError

# The request-time column `serve` fills in when a client does not send it.
TIMESTAMP_COLUMN = 'trip_start_timestamp'


def add_subcommands(subparsers):
    _add_serve(subparsers)
    _add_capture(subparsers)


def _add_serve(subparsers):
    p = subparsers.add_parser(
        'serve', formatter_class=HelpFormatter,
        help="serve the staged models with TF Serving's REST API, routed by the rollout",
        description="Serve the staged stable/canary versions with TF Serving's REST API "
                    '(/v1/models/NAME:predict, /versions/N, /labels/{stable,canary}, status, '
                    'metadata). Unversioned predicts follow the rollout\'s traffic split '
                    '(split mode) or always get stable\'s answer while the canary gets a '
                    'copy (shadow mode). rollout.json is followed without a restart: new '
                    'versions load before traffic moves, old ones stay until their requests '
                    'finish. Metrics: /metrics (Prometheus) and /monitoring/snapshot (JSON, '
                    'also written to <serving-root>/<model>/serving-metrics.json for '
                    '`tfx-canary rollout analyze`). With --grpc-port, TF Serving\'s gRPC API '
                    'too (PredictionService.Predict/GetModelMetadata, '
                    'ModelService.GetModelStatus), routed, counted and captured alike.',
        epilog='Examples:\n'
               '  tfx-canary serve                                 # split mode on :8501\n'
               '  tfx-canary serve --mode shadow --capture-rate 0.1\n'
               '  curl -d \'{"signature_name": "predict_raw", "instances": [{...}]}\' \\\n'
               '       -H "X-Request-Key: user-42" localhost:8501/v1/models/taxi:predict\n'
               '  tfx-canary serve --grpc-port 8500                # + gRPC on :8500\n'
               '  # then, with tensorflow-serving-api:\n'
               '  #   stub = prediction_service_pb2_grpc.PredictionServiceStub(\n'
               '  #       grpc.insecure_channel("localhost:8500"))\n'
               '  #   stub.Predict(request, metadata=[("x-request-key", "user-42")])')
    # --workspace, --serving-root, --model-name, --capture-dir: as every command.
    locations.add_location_options(p, metadata=False, model_name='append', capture=True)
    p.add_argument('--host', default='127.0.0.1',
                   help='address to listen on (0.0.0.0 for all interfaces)')
    p.add_argument('--port', type=int, default=8501, help="port (TF Serving's REST default)")
    p.add_argument('--grpc-port', type=int, default=None, metavar='N',
                   help="also serve TF Serving's gRPC API on this port (TF Serving's default: "
                        '8500; 0: a free port, printed at start-up; default: off)')
    p.add_argument('--upstream', default=None, metavar='URL',
                   help='router mode: load no model, forward each predict to this TF '
                        'Serving-compatible REST server\'s version label '
                        '(URL/v1/models/NAME/labels/stable|canary:predict), e.g. '
                        'http://tf-serving:8501; --serving-root is read for rollout.json only')
    p.add_argument('--upstream-timeout', type=float, default=10.0, metavar='SECONDS',
                   help='router mode: seconds to wait for the upstream (connect, answer, a '
                        'free pooled connection) before answering 503')
    p.add_argument('--mode', choices=('split', 'shadow'), default='split',
                   help='split: the canary answers its traffic percent; shadow: stable '
                        'answers everything and the canary gets a copy of each request')
    p.add_argument('--sticky-header', default='X-Request-Key',
                   help='request header whose value pins a caller to one version ("" to '
                        'disable)')
    p.add_argument('--sticky-field', default='request_key',
                   help='top-level JSON field used as the key when the header is absent '
                        "(TF Serving ignores unknown top-level fields; \"\" to disable)")
    p.add_argument('--poll-seconds', type=float, default=1.0,
                   help='how often to check rollout.json for changes')
    p.add_argument('--predict-threads', type=int, default=None,
                   help='worker threads running predict calls (default: one per CPU)')
    p.add_argument('--max-body-bytes', type=int, default=None, metavar='N',
                   help='largest request body accepted, in bytes; a larger one is answered '
                        '413 before it is read (default: 16777216 = 16 MiB)')
    p.add_argument('--shadow-threshold', type=float, default=0.5,
                   help='decision threshold for shadow agreement (same side = agree)')
    p.add_argument('--capture-rate', type=float, default=0.0,
                   help='fraction of requests whose rows are captured (0 = off; captured '
                        'rows are production data: mind your privacy rules)')
    p.add_argument('--capture-span', type=int, default=None,
                   help='span number to capture into (default: the highest span-N already '
                        'in --capture-dir, else 1)')
    p.add_argument('--capture-schema', default=None,
                   help='schema giving the CSV header (default: the bundled taxi schema)')
    p.add_argument('--capture-rotate-rows', type=int, default=10000,
                   help='publish a part after this many rows')
    p.add_argument('--capture-rotate-seconds', type=float, default=300.0,
                   help='publish a part after this many seconds')
    p.add_argument('--capture-timestamp-column', default=TIMESTAMP_COLUMN,
                   help='column filled with the request time when the client does not send '
                        'it ("" for none)')
    p.set_defaults(func=cmd_serve)


def _add_capture(subparsers):
    p = subparsers.add_parser(
        'capture', help='check captured serving data, label it, export it as a training span',
        description='Work with the requests `tfx-canary serve --capture-rate` captured.')
    commands = p.add_subparsers(dest='capture_command', metavar='COMMAND', title='commands')
    commands.required = True
    v = commands.add_parser(
        'validate', formatter_class=HelpFormatter,
        help='TFDV: captured data vs. the training statistics and schema',
        description='Compute TFDV statistics of a captured span and check them against the '
                    'schema in the SERVING environment, for training/serving skew (the '
                    "schema's skew comparators: the rows each version served vs. the "
                    'statistics of the data that version was trained on, staged beside it) and '
                    'for drift (its drift comparators; vs. the previous capture span, or the '
                    'training statistics for the first). Exit '
                    'status 0: no anomalies; 1: anomalies found; 2: cannot run.')
    v.add_argument('--span', type=int, default=None,
                   help='captured span to check (default: the latest)')
    locations.add_location_options(v, metadata=False, capture=True, notes={
        'workspace': "where the capture is, and the fallback for a version staged without "
                     "training data: the newest schema and statistics in its outputs",
        'serving_root': 'each version that served captured rows is compared with the '
                        'training statistics and schema staged beside it here'})
    v.add_argument('--schema', default=None, help='schema.pbtxt instead of the workspace\'s')
    v.add_argument('--stats', default=None,
                   help="training statistics (FeatureStats.pb or its Split-train folder) "
                        "instead of the workspace's")
    v.add_argument('--json', action='store_true', help='print the report as JSON')
    v.set_defaults(func=cmd_capture_validate)
    _add_capture_label(commands)
    _add_capture_export(commands)


def _add_schema_option(parser):
    parser.add_argument('--schema', default=None,
                        help='schema naming the label column (its feature with '
                             'not_in_environment: "SERVING") and its type (default: the '
                             'bundled taxi schema)')


def _add_capture_label(commands):
    p = commands.add_parser(
        'label', formatter_class=HelpFormatter,
        help='append ground truth from a CSV to the label log (labels that arrive in bulk)',
        description='Append labels for captured rows to <capture dir>/labels.jsonl, the log '
                    'POST /v1/models/NAME:feedback writes too. FILE.csv has the columns '
                    'request_id,row,<label column> (the schema\'s label, typed as in the '
                    'training CSV). The whole file is checked first: one bad line and nothing '
                    'is written. The first label for a row wins; later ones are kept for audit '
                    'and counted as duplicates. Labels for rows not (yet) in the capture are '
                    'kept and counted as unknown.',
        epilog='Example:\n  tfx-canary capture label --labels warehouse-tips.csv')
    p.add_argument('--labels', required=True, metavar='FILE.csv',
                   help='CSV with the columns request_id,row,<label column>')
    _add_schema_option(p)
    locations.add_location_options(p, metadata=False, serving=False, model_name=False,
                                   capture=True)
    p.set_defaults(func=cmd_capture_label)


def _add_capture_export(commands):
    p = commands.add_parser(
        'export', formatter_class=HelpFormatter,
        help='write the labeled captured rows as a training span (DIR/span-N)',
        description='Join a capture span with the label log and write the labeled rows as '
                    'DIR/span-N/data.csv (the training CSV\'s header) plus '
                    'DIR/span-N/capture-manifest.json (time range, versions and roles that '
                    'served the rows, rows captured/labeled/unlabeled/rejected, capture rate). '
                    'Atomic: the span appears whole or not at all, and an existing span is '
                    'never replaced. Train on it with `tfx-canary run --data-root DIR --span N`.',
        epilog='Example:\n  tfx-canary capture export --data-root retrain-data')
    p.add_argument('--data-root', required=True, metavar='DIR',
                   help='data root to write span-N into (created if missing)')
    p.add_argument('--span', type=int, default=None,
                   help='span number to write (default: the next free one in DIR)')
    p.add_argument('--capture-span', type=int, default=None,
                   help='captured span to export (default: the latest in --capture-dir)')
    _add_schema_option(p)
    locations.add_location_options(p, metadata=False, serving=False, model_name=False,
                                   capture=True)
    p.add_argument('--json', action='store_true', help='print the manifest as JSON')
    p.set_defaults(func=cmd_capture_export)


def _schema_path(given):
    if given is None:
        from pipeline.configs import PipelineConfig
        return PipelineConfig().schema_path
    if not os.path.isfile(given):
        raise TfxCanaryError('schema %s does not exist: pass --schema PATH/schema.pbtxt'
                             % given)
    return given


def _label_log(capture_dir, schema):
    """The capture dir's label log, knowing the rows already captured there."""
    from serving import labels
    spec = labels.label_spec_from_schema(schema)
    return labels.LabelLog(capture_dir, spec,
                           index=labels.CapturedIndex().load(capture_dir))


def _capture_writer(args, metrics):
    from serving import capture
    if args.capture_rate <= 0:
        return None
    if args.capture_rate > 1:
        raise TfxCanaryError('--capture-rate must be between 0 and 1, got %s'
                             % args.capture_rate)
    schema = args.capture_schema
    if schema is None:
        schema = _schema_path(None)
    if not os.path.isfile(schema):
        raise TfxCanaryError('--capture-schema %s does not exist' % schema)
    capture_dir = locations.resolve(args).capture_dir
    span = args.capture_span
    if span is None:
        span = capture.latest_span(capture_dir) or 1
    sink = capture.CsvFileSink(capture_dir, span, capture.header_from_schema(schema),
                               max_rows=args.capture_rotate_rows,
                               max_seconds=args.capture_rotate_seconds)
    for path in sink.recovered:
        print('capture: recovered %s' % path, file=sys.stderr)
    return capture.CaptureWriter(sink, args.capture_rate,
                                 timestamp_column=args.capture_timestamp_column or None,
                                 metrics=metrics)


def cmd_serve(args):
    import logging

    from serving.server import ModelServer, ServerConfig, serve_forever

    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    logging.getLogger('serving').setLevel(logging.INFO)
    if args.predict_threads is not None and args.predict_threads < 1:
        raise TfxCanaryError('--predict-threads must be at least 1, got %d'
                             % args.predict_threads)
    _check_grpc_port(args)
    _check_upstream(args)
    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        raise TfxCanaryError('--max-body-bytes must be at least 1, got %d'
                             % args.max_body_bytes)
    if not 0 <= args.capture_rate <= 1:  # NaN too; negative is not "off", it is a typo
        raise TfxCanaryError('--capture-rate must be between 0 and 1, got %s'
                             % args.capture_rate)
    where = locations.resolve(args)
    root = os.path.abspath(where.serving_root)
    if not os.path.isdir(root):
        how = ('' if where.is_given(locations.SERVING_ROOT)
               else ' (the serving/ folder of %s)' % where.describe_workspace())
        raise TfxCanaryError('serving root %s does not exist%s: pass --serving-root (where the '
                             'pipeline staged models, e.g. workspace/serving) or --workspace'
                             % (root, how))
    from pipeline.configs import PipelineConfig
    pipeline_config = PipelineConfig()   # the label definition training used
    config = ServerConfig(root, where.model_name or None,
                          mode=args.mode, sticky_header=args.sticky_header or None,
                          sticky_field=args.sticky_field or None,
                          poll_seconds=args.poll_seconds,
                          predict_threads=args.predict_threads,
                          shadow_threshold=args.shadow_threshold,
                          label_key=pipeline_config.label_key,
                          transform_signature=pipeline_config.transform_signature)
    if args.max_body_bytes is not None:
        config.max_body_bytes = args.max_body_bytes
    if args.grpc_port is not None:
        config.grpc_host, config.grpc_port = args.host, args.grpc_port
        config.on_grpc_listening = _print_grpc_address
    server = _router(args, config) if args.upstream else ModelServer(config)
    if not server.registry.models:
        raise TfxCanaryError('no models under %s: expected <model>/rollout.json (run '
                             '`tfx-canary run` first)' % root)
    server.capture = _capture_writer(args, server.metrics)
    if server.capture is not None:  # labels join captured rows: a log next to them
        server.feedback = _label_log(server.capture.sink.root,
                                     args.capture_schema or _schema_path(None))
    print('tfx-canary serve: %s (%s mode) on http://%s:%d/v1/models/%s  [Ctrl-C to stop]'
          % (root, args.mode, args.host, args.port, ','.join(server.registry.models)),
          file=sys.stderr)
    if server.capture is not None:
        print('capturing %.0f%% of requests into %s' % (100 * args.capture_rate,
                                                        server.capture.sink.directory),
              file=sys.stderr)
    try:
        serve_forever(server, args.host, args.port)
    except OSError as e:
        raise TfxCanaryError('cannot listen on %s:%d: %s' % (args.host, args.port,
                                                             e.strerror)) from None
    if args.grpc_port is not None and server.grpc is None:
        raise TfxCanaryError('the gRPC API did not start on %s:%d (see the log above)'
                             % (args.host, args.grpc_port))
    return 0


def _check_grpc_port(args):
    """--grpc-port's value, and that it is free: refused before anything loads."""
    if args.grpc_port is None:
        return
    if not 0 <= args.grpc_port <= 65535 or args.grpc_port == args.port != 0:
        raise TfxCanaryError('--grpc-port must be 0 (a free port) or a port other than --port '
                             '(%d), e.g. 8500, got %d' % (args.port, args.grpc_port))
    if args.grpc_port:
        from serving.server import bind_socket
        try:
            bind_socket(args.host, args.grpc_port).close()
        except OSError as e:
            raise TfxCanaryError('cannot listen on %s:%d (--grpc-port): %s'
                                 % (args.host, args.grpc_port, e.strerror)) from None


def _print_grpc_address(host, port):
    print('tfx-canary serve: gRPC (TF Serving PredictionService, ModelService) on %s:%d'
          % (host, port), file=sys.stderr, flush=True)


def _check_upstream(args):
    """--upstream's URL and --upstream-timeout: refused before anything loads."""
    if args.upstream is None:
        return
    from serving.upstream import check_url
    try:
        check_url(args.upstream)
    except ValueError as e:
        raise TfxCanaryError(str(e)) from None
    if args.grpc_port is not None:
        # gRPC predicts run the model in this process (ModelServer.predict_call).
        raise TfxCanaryError('--grpc-port cannot be used with --upstream: router mode '
                             'forwards REST only; drop --grpc-port')
    if not 0 < args.upstream_timeout < float('inf'):  # NaN too
        raise TfxCanaryError('--upstream-timeout must be a positive number of seconds, e.g. '
                             '10, got %s' % args.upstream_timeout)


def _router(args, config):
    """Router mode's server: rollout.json here, the models at --upstream."""
    from serving.upstream import RouterServer, Upstream
    print('tfx-canary serve: routing to upstream %s (timeout %.1f s)'
          % (args.upstream, args.upstream_timeout), file=sys.stderr)
    return RouterServer(config, Upstream(args.upstream, timeout=args.upstream_timeout))


def _served_columns():
    """The columns `serve` captures: the model's raw features and the request time."""
    from modules import features
    return set(features.RAW_FEATURE_KEYS) | {TIMESTAMP_COLUMN}


def cmd_capture_validate(args):
    from serving import validate
    where = locations.resolve(args)
    report = validate.validate(where.capture_dir, args.span, where.workspace, args.schema,
                               args.stats, served_columns=_served_columns(),
                               serving_root=where.serving_root, model_name=where.model_name)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(validate.format_report(report))
    return 0 if report['ok'] else 1


def cmd_capture_label(args):
    from serving import labels
    where = locations.resolve(args)
    log = _label_log(where.capture_dir, _schema_path(args.schema))
    parsed = labels.labels_from_csv(args.labels, log.spec)
    result = log.append(parsed, 'file:%s' % os.path.abspath(args.labels))
    print('%d labels from %s into %s: %d accepted, %d unknown (kept; joined at export if '
          'their rows turn up), %d duplicate (the first label wins)'
          % (len(parsed), args.labels, log.path, result.accepted, result.unknown,
             result.duplicate))
    return 0


def cmd_capture_export(args):
    from serving import export, labels
    if args.span is not None and args.span < 1:
        raise TfxCanaryError('--span must be at least 1, got %d' % args.span)
    where = locations.resolve(args)
    spec = labels.label_spec_from_schema(_schema_path(args.schema))
    result = export.export(where.capture_dir, args.capture_span, args.data_root, spec,
                           span=args.span)
    if args.json:
        print(json.dumps(result.manifest, indent=2, sort_keys=True))
        return 0
    c = result.counts
    print('exported %d labeled rows as %s (%s): %d captured, %d unlabeled, %d rejected; '
          'labels: %d pending, %d unknown, %d duplicate; capture rate %s'
          % (c.labeled, result.directory, export.MANIFEST, c.captured, c.unlabeled,
             c.rejected, c.labels_pending, c.labels_unknown, c.labels_duplicate,
             result.manifest['capture_rate']))
    print('train on it: tfx-canary run --data-root %s --span %d'
          % (args.data_root, result.span))
    return 0

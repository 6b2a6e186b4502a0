"""TF Serving's gRPC API for `tfx-canary serve --grpc-port N`, on TF Serving's own protos.

`tensorflow_serving.apis`' generated services, so TF Serving's unmodified
stubs (`PredictionServiceStub`, `ModelServiceStub`) call it:

    PredictionService.Predict           routed exactly as REST `:predict` is
    PredictionService.GetModelMetadata  the SignatureDefMap (`signature_def`)
    ModelService.GetModelStatus         versions and states (AVAILABLE, LOADING, ...)
    Classify, Regress, MultiInference, HandleReloadConfigRequest   UNIMPLEMENTED

ModelSpec routes like the REST path: `version` -> that version, `version_label`
-> that role, neither -> the rollout's split (sticky by the `x-request-key`
metadata, i.e. ServerConfig.sticky_header lower-cased) or shadow mode. The
request id is the `x-request-id` metadata, else a new one; every answer, errors
included, carries it in its trailing metadata (with `x-model-version` and
`x-model-role` once a version was chosen), so labels sent to :feedback can
name the captured rows. Failures carry their canonical code as the gRPC
status (INVALID_ARGUMENT, NOT_FOUND, ...) with TF Serving's messages.

Why grpc.aio on serve's own event loop rather than grpc.server's thread
pool: a predict here is the REST predict minus JSON. Both go through
ModelServer.run_predict (inline when alone and small, else the shared
predict pool, so gRPC and REST calls share one concurrency limit and the
loop's count of predicts in flight) and ModelServer.predict_call (route,
model, metrics), then after_predict, which schedules shadow copies as tasks
on this loop and must run on it. A thread-pool server would need a second
pool and a hop back to the loop for every call.
"""
import functools

import grpc
import numpy as np
import tensorflow as tf
from grpc import aio
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving import codec
from serving.errors import ServingError, invalid_argument
from serving.server import PredictCall, client_request_id

REQUEST_ID_KEY = 'x-request-id'
SIGNATURE_DEF = 'signature_def'
GRACE_SECONDS = 30
# DataType -> (repeated field of TensorProto, NumPy dtype) read by _ndarray's fast path.
_VALUES = {types_pb2.DT_FLOAT: ('float_val', np.float32),
           types_pb2.DT_DOUBLE: ('double_val', np.float64),
           types_pb2.DT_INT32: ('int_val', np.int32),
           types_pb2.DT_INT64: ('int64_val', np.int64),
           types_pb2.DT_BOOL: ('bool_val', np.bool_)}


def _error_code(error):
    return grpc.StatusCode[error.code]


def _metadata(context, key):
    """The value of invocation metadata `key` (lower-case), or None."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value
    return None


def _model_spec(request):
    """(name, version or None, label or None) of a request's ModelSpec."""
    if not request.HasField('model_spec'):
        raise invalid_argument('Missing ModelSpec')
    spec = request.model_spec
    version = spec.version.value if spec.HasField('version') else None
    return spec.name, version, spec.version_label or None


def _ndarray(proto):
    """tf.make_ndarray(proto), read directly for the usual dtypes and encodings.

    tf.make_ndarray costs ~16 us a tensor: half a millisecond for the taxi
    model's 14 inputs, more than the model itself. Anything else (other
    dtypes, fewer values than the shape, which TF fills with the last one)
    is left to it.
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = 1
    for size in shape:
        count *= size
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == count:
        array = np.empty(count, dtype=object)
        array[:] = list(proto.string_val)
        return array.reshape(shape)
    field, dtype = _VALUES.get(proto.dtype, (None, None))
    if field is not None:
        if proto.tensor_content:
            array = np.frombuffer(proto.tensor_content, dtype=dtype)
        else:
            array = np.array(getattr(proto, field), dtype=dtype)
        if array.size == count:
            return array.reshape(shape)
    return tf.make_ndarray(proto)


def _arrays(inputs):
    """{alias: ndarray} and {alias: DataType name} of a PredictRequest's TensorProtos."""
    arrays, dtypes = {}, {}
    for alias, proto in inputs.items():
        try:
            dtypes[alias] = types_pb2.DataType.Name(proto.dtype)
            arrays[alias] = _ndarray(proto)
        except (TypeError, ValueError) as e:
            raise invalid_argument('input %s: not a valid TensorProto: %s' % (alias, e)) from None
    return arrays, dtypes


def _checked(arrays, dtypes, specs):
    """`arrays` if the signature takes them (names, dtypes, shapes), else INVALID_ARGUMENT."""
    if set(arrays) != set(specs):
        sent, wanted = sorted(arrays), sorted(specs)
        raise invalid_argument(
            'input size does not match signature: %d!=%d len({%s}) != len({%s}). Sent extra: '
            '{%s}. Missing but required: {%s}.'
            % (len(sent), len(wanted), ','.join(sent), ','.join(wanted),
               ','.join(sorted(set(sent) - set(wanted))),
               ','.join(sorted(set(wanted) - set(sent)))))
    for alias, spec in sorted(specs.items()):
        if dtypes[alias] != spec.dtype:
            raise invalid_argument('input %s: the signature expects %s but %s is provided'
                                   % (alias, spec.dtype, dtypes[alias]))
    codec.check_shapes(arrays, specs)
    return arrays


def _response(name, signature, output_filter, outputs, version):
    """A PredictResponse of `outputs` (all, or those `output_filter` names) as TF Serving's."""
    aliases = list(output_filter) or sorted(outputs)
    unknown = [alias for alias in aliases if alias not in outputs]
    if unknown:
        raise invalid_argument('output tensor alias not found in signature: %s Outputs expected '
                               'to be in the set {%s}.' % (unknown[0], ','.join(sorted(outputs))))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature
    for alias in aliases:
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
    return response


async def _answer(server, context, method, function, request):
    """function(request) on the loop (cheap calls), its ServingError as the status; counted."""
    try:
        response = function(request)
    except ServingError as e:
        server.metrics.grpc(method, e.code)
        await context.abort(_error_code(e), e.message)
    server.metrics.grpc(method, 'OK')
    return response


def _unimplemented(method):
    return ServingError('UNIMPLEMENTED', '%s is not supported by tfx-canary serve (the model '
                        'has no %s signature): use Predict' % (method, method.lower()))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService over one ModelServer (see the module doc)."""

    def __init__(self, server):
        self.server = server
        header = server.config.sticky_header
        self.sticky_key = header.lower() if header else None

    # ------------------------------------------------------------ Predict

    async def Predict(self, request, context):
        server = self.server
        key = _metadata(context, self.sticky_key) if self.sticky_key else None
        outcome = await server.run_predict(request.ByteSize(), self.predict_sync, request, key,
                                           _metadata(context, REQUEST_ID_KEY))
        server.after_predict(request.model_spec.name, outcome)
        trailing = [(REQUEST_ID_KEY, outcome.request_id)]
        if outcome.model is not None:
            trailing += [('x-model-version', str(outcome.model.version)),
                         ('x-model-role', outcome.role or '')]
        if outcome.error is not None:
            server.metrics.grpc('Predict', outcome.error.code)
            await context.abort(_error_code(outcome.error), outcome.error.message,
                                trailing_metadata=tuple(trailing))
        server.metrics.grpc('Predict', 'OK')
        context.set_trailing_metadata(tuple(trailing))
        return outcome.body

    def predict_sync(self, request, key, request_id):
        """One Predict through the path REST shares (ModelServer.predict_call)."""
        def prepare(outcome):
            outcome.request_id = client_request_id(request_id, where='x-request-id metadata')
            name, version, label = _model_spec(request)
            signature = request.model_spec.signature_name or codec.DEFAULT_SIGNATURE
            arrays, dtypes = _arrays(request.inputs)
            encode = functools.partial(_response, name, signature, request.output_filter)
            return PredictCall(name, version, label, key, signature,
                               functools.partial(_checked, arrays, dtypes), encode)
        return self.server.predict_call(prepare)

    # ------------------------------------------------------------ metadata

    async def GetModelMetadata(self, request, context):
        return await _answer(self.server, context, 'GetModelMetadata', self._metadata, request)

    def _metadata(self, request):
        if not request.metadata_field:
            raise invalid_argument('GetModelMetadataRequest must specify at least one '
                                   'metadata_field')
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                raise invalid_argument('Metadata field %s is not supported' % field)
        name, version, label = _model_spec(request)
        target = self.server.metadata_target(name, version, label)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for signature, definition in target.signature_defs.items():
            signatures.signature_def[signature].CopyFrom(definition)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = target.version
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response

    # ------------------------------------------------------------ not served

    async def Classify(self, request, context):
        return await _answer(self.server, context, 'Classify', self._refuse('Classify'), request)

    async def Regress(self, request, context):
        return await _answer(self.server, context, 'Regress', self._refuse('Regress'), request)

    async def MultiInference(self, request, context):
        return await _answer(self.server, context, 'MultiInference',
                             self._refuse('MultiInference'), request)

    @staticmethod
    def _refuse(method):
        def refuse(_request):
            raise _unimplemented(method)
        return refuse


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """ModelService.GetModelStatus over one ModelServer (config reloads are rollout.json's)."""

    def __init__(self, server):
        self.server = server

    async def GetModelStatus(self, request, context):
        return await _answer(self.server, context, 'GetModelStatus', self._status, request)

    def _status(self, request):
        name, version, label = _model_spec(request)
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state in self.server.version_states(name, version, label):
            status = response.model_version_status.add()
            status.version = number
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        return response

    async def HandleReloadConfigRequest(self, request, context):
        def refuse(_request):
            raise ServingError('UNIMPLEMENTED', 'HandleReloadConfigRequest is not supported by '
                               'tfx-canary serve: it follows rollout.json (tfx-canary rollout ...)')
        return await _answer(self.server, context, 'HandleReloadConfigRequest', refuse, request)


class GrpcApi:
    """The running gRPC server of one ModelServer; `port` is the one bound."""

    def __init__(self, aio_server, port):
        self._server = aio_server
        self.port = port

    async def stop(self, grace=GRACE_SECONDS):
        """Refuses new calls and lets those in flight finish (up to `grace` seconds)."""
        await self._server.stop(grace)


async def start(server, host, port):
    """Serves `server` (a ModelServer) over gRPC on host:port (0: a free port), on this loop."""
    limit = server.config.max_body_bytes
    aio_server = aio.server(options=[
        # The REST body limit for gRPC messages too (gRPC's default is 4 MiB).
        ('grpc.max_receive_message_length', limit),
        ('grpc.max_send_message_length', -1),
        # gRPC sets SO_REUSEPORT by default: a second server would share the port silently.
        ('grpc.so_reuseport', 0)])
    predictions = PredictionService(server)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, aio_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(server), aio_server)
    address = '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)
    bound = aio_server.add_insecure_port(address)
    await aio_server.start()
    return GrpcApi(aio_server, bound)

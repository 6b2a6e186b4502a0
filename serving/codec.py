"""TF Serving's REST JSON formats: predict requests in, tensors out, and back.

Follows TF Serving's documented rules (and its error messages where a client
might match on them), so a client written against TF Serving works unchanged:

* request: `{"signature_name": ..., "instances": [...]}` (row format) or
  `{"signature_name": ..., "inputs": ...}` (columnar format), exactly one of
  the two; binary strings as `{"b64": "..."}`;
* response: `{"predictions": [...]}` for row requests, `{"outputs": ...}` for
  columnar ones; with a single output tensor the values appear directly,
  with several, keyed by output name;
* DT_FLOAT accepts JSON integers and decimals, integer types only JSON
  integers (18.0 is not an int64), DT_BOOL only true/false.

This module only needs NumPy: the model server hands it the signature's input
specs (from the SignatureDef) and the output arrays.
"""
import base64
import binascii
import dataclasses
import json
import math

import numpy as np

from serving.errors import ServingError, invalid_argument

ROW = 'row'
COLUMNAR = 'columnar'
DEFAULT_SIGNATURE = 'serving_default'

# DataType name -> (NumPy dtype, name TF prints in type errors).
_DTYPES = {
    'DT_FLOAT': (np.float32, 'float'),
    'DT_DOUBLE': (np.float64, 'double'),
    'DT_INT8': (np.int8, 'int8'),
    'DT_INT16': (np.int16, 'int16'),
    'DT_INT32': (np.int32, 'int32'),
    'DT_INT64': (np.int64, 'int64'),
    'DT_UINT8': (np.uint8, 'uint8'),
    'DT_UINT32': (np.uint32, 'uint32'),
    'DT_UINT64': (np.uint64, 'uint64'),
    'DT_BOOL': (np.bool_, 'bool'),
    'DT_STRING': (object, 'string'),
}
_FLOATS = {'DT_FLOAT': 2 ** 24 - 1, 'DT_DOUBLE': 2 ** 53 - 1}
_FLOAT_MAX = {'DT_FLOAT': float(np.finfo(np.float32).max),
              'DT_DOUBLE': float(np.finfo(np.float64).max)}

# The deepest nesting of arrays and objects a predict body may have. The
# deepest legitimate body is a tensor of TensorFlow's highest rank (254,
# TensorShape's kMaxDims) inside the envelope: the document object, the
# `instances` list (its batch dimension) and a row object, or the document and
# the `inputs` object, plus a `{"b64": ...}` object at the leaves.
#
# Checked on the text *before* json.loads, instead of only catching
# RecursionError: Python's parser recurses once per level and raises
# RecursionError only near the interpreter's recursion limit (~1000 levels,
# fewer on a deeper stack), so a body nested 900 deep would parse and then
# overflow a later recursive step (error messages, tensor decoding) as a 500;
# and refusing from a count costs far less than building a huge nested
# document first.
_MAX_TENSOR_RANK = 254
MAX_JSON_DEPTH = _MAX_TENSOR_RANK + 4
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b'[]{}')))
_NOT_BRACKETS_OR_QUOTES = bytes(sorted(set(range(256)) - set(b'[]{}"')))


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One signature input: its alias, DataType name and shape.

    shape is None for unknown rank, else a tuple with None for unknown dims.
    """
    name: str
    dtype: str
    shape: tuple = None


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    """A parsed predict body: which signature, which format, the raw JSON."""
    signature_name: str
    format: str
    payload: object
    document: dict


def _json_text(value, limit=200):
    """Compact JSON of a value for error messages (truncated)."""
    try:
        text = json.dumps(value, separators=(',', ':'), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _json_type(value):
    if value is None:
        return 'Null'
    if value is True:
        return 'True'
    if value is False:
        return 'False'
    if isinstance(value, dict):
        return 'Object'
    if isinstance(value, list):
        return 'Array'
    if isinstance(value, str):
        return 'String'
    return 'Number'


def numpy_dtype(dtype):
    """The NumPy dtype for a DataType name ('DT_FLOAT' -> float32, 'DT_STRING' -> object)."""
    return _DTYPES[dtype][0]


def _type_error(value, dtype):
    return invalid_argument('JSON Value: %s Type: %s is not of expected type: %s'
                            % (_json_text(value), _json_type(value), _DTYPES[dtype][1]))


def _max_depth(data):
    """The deepest nesting of brackets in `data` (bytes; strings are not skipped)."""
    brackets = data.translate(None, _NOT_BRACKETS)
    if len(brackets) <= MAX_JSON_DEPTH:
        return len(brackets)  # a bound is enough
    # '[' and '{' have bit 1 set, ']' and '}' do not: +1 per open, -1 per close.
    steps = (np.frombuffer(brackets, dtype=np.uint8) & 2).astype(np.int8) - 1
    return int(np.cumsum(steps, dtype=np.int32).max())


def _without_strings(data):
    """`data` (UTF-8 JSON) with its strings cut out: brackets in them are data, not nesting."""
    # Escapes first, so that every quote left delimits a string: escaped
    # backslashes (pairs, left to right, as the JSON lexer reads them), then
    # escaped quotes. No byte of a multi-byte UTF-8 character is one of these.
    data = data.replace(b'\\\\', b'').replace(b'\\"', b'')
    # Between two quotes (the odd pieces) is a string; an unterminated one runs to the end.
    return b''.join(data.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')[::2])


def _too_deep(data):
    """Whether JSON `data` (UTF-8 bytes) nests arrays/objects more than MAX_JSON_DEPTH deep.

    Linear, and each step a C loop (bytes methods, NumPy): counting every
    bracket over-counts only when strings hold brackets, and only then are
    the strings cut out and the rest counted again.
    """
    return (_max_depth(data) > MAX_JSON_DEPTH
            and _max_depth(_without_strings(data)) > MAX_JSON_DEPTH)


def _too_deep_error():
    return invalid_argument('JSON Parse error: The document is nested too deeply (more than '
                            '%d levels of arrays and objects)' % MAX_JSON_DEPTH)


def parse_request(body):
    """Parses a predict body (bytes) into a PredictRequest.

    Only the JSON envelope is checked here; the tensors are decoded once the
    model version (and so its signature) is known, by decode_inputs(). Any
    body that does not parse is an INVALID_ARGUMENT (400), never a 500.
    """
    if not body or not body.strip():
        raise invalid_argument('JSON Parse error: The document is empty')
    try:
        # Decoded as json.loads(bytes) decodes (UTF-8, -16 or -32); the depth
        # check reads the same text, as UTF-8.
        if isinstance(body, str):
            text, encoding = body, None
        else:
            encoding = json.detect_encoding(body)
            text = body.decode(encoding, 'surrogatepass')
        utf8 = (bytes(body) if encoding in ('utf-8', 'utf-8-sig')
                else text.encode('utf-8', 'surrogatepass'))
        if _too_deep(utf8):
            raise _too_deep_error()
        document = json.loads(text)
    except UnicodeDecodeError as e:
        raise invalid_argument('JSON Parse error: Invalid encoding in string. at offset: %d'
                               % e.start) from None
    except json.JSONDecodeError as e:
        raise invalid_argument('JSON Parse error: %s at offset: %d' % (e.msg, e.pos)) from None
    except ValueError as e:  # e.g. an integer literal over Python's 4300-digit limit
        raise invalid_argument('JSON Parse error: %s' % e) from None
    except RecursionError:  # within the depth limit, but called on an already deep stack
        raise _too_deep_error() from None
    if not isinstance(document, dict):
        raise invalid_argument('JSON Value: %s Is not object' % _json_text(document))
    signature = document.get('signature_name', '')
    if not isinstance(signature, str):
        raise invalid_argument(
            "JSON Value: %s not formatted correctly. 'signature_name' key must be a "
            "string value." % _json_text(document))
    has_instances, has_inputs = 'instances' in document, 'inputs' in document
    if has_instances and has_inputs:
        raise invalid_argument(
            "JSON Value: %s Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist " % _json_text(document))
    if has_instances:
        instances = document['instances']
        if not isinstance(instances, list):
            raise invalid_argument("JSON Value: %s Excepting 'instances' to be an list/array"
                                   % _json_text(document))
        if not instances:
            raise invalid_argument("JSON Value: %s No values in 'instances' array"
                                   % _json_text(document))
        return PredictRequest(signature or DEFAULT_SIGNATURE, ROW, instances, document)
    if has_inputs:
        return PredictRequest(signature or DEFAULT_SIGNATURE, COLUMNAR, document['inputs'],
                              document)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# ---------------------------------------------------------------- decoding

def _is_b64(value):
    return (isinstance(value, dict) and len(value) == 1
            and isinstance(value.get('b64'), str))


def _scalar(value, dtype):
    """One JSON leaf -> a Python value NumPy stores losslessly as `dtype`."""
    if dtype == 'DT_STRING':
        if isinstance(value, str):
            return value.encode('utf-8')
        if isinstance(value, dict):
            if not _is_b64(value):
                raise invalid_argument('JSON Value: %s not formatted correctly for base64 data'
                                       % _json_text(value))
            try:
                return base64.b64decode(value['b64'], validate=True)
            except (binascii.Error, ValueError):
                raise invalid_argument('Unable to base64 decode') from None
        raise _type_error(value, dtype)
    if dtype == 'DT_BOOL':
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    # bool is an int in Python but not a JSON number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, dtype)
    if dtype in _FLOATS:
        if isinstance(value, int):
            if abs(value) > _FLOATS[dtype]:
                raise invalid_argument('Cannot convert JSON value: %s to %s without loss of '
                                       'precision.' % (value, _DTYPES[dtype][1]))
        elif math.isfinite(value) and abs(value) > _FLOAT_MAX[dtype]:
            raise invalid_argument('Cannot convert JSON value: %s to %s without loss of '
                                   'precision.' % (value, _DTYPES[dtype][1]))
        return float(value)
    if dtype not in _DTYPES:
        raise _unimplemented(dtype, value)
    if not isinstance(value, int):  # 18.0 is a decimal, not an integer.
        raise _type_error(value, dtype)
    info = np.iinfo(_DTYPES[dtype][0])
    if not info.min <= value <= info.max:
        raise _type_error(value, dtype)
    return value


def _unimplemented(dtype, value):
    return ServingError('UNIMPLEMENTED', 'Conversion of JSON Value: %s to type: %s'
                        % (_json_text(value), dtype))


def _dense(value, dtype):
    """A JSON value (scalar or nested lists) -> (shape, flat list of values).

    The shape is read along the first elements, then every list must match it,
    the way TF Serving builds a dense tensor from JSON.
    """
    if not isinstance(value, list):
        return (), [_scalar(value, dtype)]
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = []

    def fill(item, level):
        if not isinstance(item, list):
            if level != len(shape):
                raise invalid_argument(
                    'JSON Value: %s found at incorrect level: %d in the JSON DOM. Expected at '
                    'level: %d' % (_json_text(item), level + 1, len(shape)))
            flat.append(_scalar(item, dtype))
            return
        if level >= len(shape):
            raise invalid_argument('Encountered list at unexpected level: %d expected < %d'
                                   % (level, len(shape)))
        if len(item) != shape[level]:
            raise invalid_argument('Encountered list at unexpected size: %d at level: %d '
                                   'expected size: %d' % (len(item), level, shape[level]))
        for element in item:
            fill(element, level + 1)

    fill(value, 0)
    return tuple(shape), flat


def _array(flat, shape, dtype):
    np_dtype = _DTYPES[dtype][0]
    if np_dtype is object:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=np_dtype).reshape(shape)


def _shape_text(shape):
    return '[%s]' % ','.join(str(d) for d in shape)


def _decode_rows(instances, specs):
    def is_object(value):
        return isinstance(value, dict) and not _is_b64(value)

    names = sorted(specs)
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise invalid_argument(
            'instances is a plain list, but expecting list of objects as multiple input '
            'tensors required as per tensorinfo_map')
    objects = is_object(instances[0])
    columns = {name: [] for name in names}
    shapes = {}

    def add(name, value, index, with_key):
        try:
            shape, flat = _dense(value, specs[name].dtype)
            if name in shapes and shapes[name] != shape:
                if len(flat) != int(np.prod(shapes[name])):
                    raise invalid_argument('Expecting tensor size: %d but got: %d'
                                           % (int(np.prod(shapes[name])), len(flat)))
                raise invalid_argument('Expecting shape %s but got: %s'
                                       % (_shape_text(shapes[name]), _shape_text(shape)))
        except ServingError as e:
            where = ' key: %s' % name if with_key else ''
            raise invalid_argument("Failed to process element: %d%s of 'instances' list. "
                                   'Error: %s: %s' % (index, where, e.code, e.message)) from None
        shapes.setdefault(name, shape)
        columns[name].extend(flat)

    for index, element in enumerate(instances):
        if objects:
            if not is_object(element):
                raise invalid_argument('Expecting object but got list at item %d of input list'
                                       % index)
            for name, value in element.items():
                if name not in specs:
                    raise invalid_argument(
                        "Failed to process element: %d key: %s of 'instances' list. Error: "
                        'INVALID_ARGUMENT: JSON object: does not have named input: %s'
                        % (index, name, name))
                add(name, value, index, True)
            if len(element) != len(names):
                raise invalid_argument(
                    "Failed to process element: %d of 'instances' list. JSON object: %s keys "
                    'must be equal to: %s' % (index, _json_text(element), ','.join(names)))
        else:
            if is_object(element):
                raise invalid_argument('Expecting value/list but got object at item %d of '
                                       'input list' % index)
            add(names[0], element, index, False)
    count = len(instances)
    return {name: _array(columns[name], (count,) + shapes[name], specs[name].dtype)
            for name in names}


def _decode_columns(inputs, specs):
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(specs) > 1:
            raise invalid_argument(
                'inputs is a plain value/list, but expecting an object as multiple input '
                'tensors required as per tensorinfo_map')
        (name, spec), = specs.items()
        shape, flat = _dense(inputs, spec.dtype)
        return {name: _array(flat, shape, spec.dtype)}
    arrays = {}
    # Keys the signature does not know are ignored, as TF Serving does.
    for name in sorted(specs):
        if name not in inputs:
            raise invalid_argument("Missing named input: %s in 'inputs' object." % name)
        shape, flat = _dense(inputs[name], specs[name].dtype)
        arrays[name] = _array(flat, shape, specs[name].dtype)
    return arrays


def check_shapes(arrays, specs):
    """Rejects tensors the signature cannot accept, with a message naming them.

    TF Serving leaves this to the TensorFlow session, whose error is a 400 too;
    checking here gives a clearer message than a concrete function's TypeError.
    """
    for name, array in arrays.items():
        expected = specs[name].shape
        if expected is None:
            continue
        ok = array.ndim == len(expected) and all(
            want is None or want == got for want, got in zip(expected, array.shape))
        if not ok:
            raise invalid_argument(
                'input %s has shape %s but signature expects %s (-1: any size)'
                % (name, _shape_text(array.shape),
                   _shape_text(-1 if d is None else d for d in expected)))


def decode_inputs(request, specs):
    """Tensors for `request` as {input alias: ndarray}, checked against `specs`.

    specs: {alias: InputSpec} of the requested signature.
    """
    if not specs:
        raise invalid_argument('Failed to get input map for signature: %s'
                               % (request.signature_name or 'DEFAULT'))
    for spec in specs.values():
        if spec.dtype not in _DTYPES:
            raise _unimplemented(spec.dtype, '(input %s)' % spec.name)
    if request.format == ROW:
        arrays = _decode_rows(request.payload, specs)
    else:
        arrays = _decode_columns(request.payload, specs)
    check_shapes(arrays, specs)
    return arrays


# ---------------------------------------------------------------- encoding

def _nest(flat, shape):
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _json_values(name, array):
    """An output array -> nested JSON-ready lists, as TF Serving writes them."""
    array = np.asarray(array)
    flat = array.ravel()
    if array.dtype == np.float32 or array.dtype == np.float16:
        # str() of a float32 is its shortest round-trip text: 0.48522615, not
        # the float64 widening 0.48522615432739258 (TF Serving prints the same).
        values = [float(str(v)) for v in flat.astype(np.float32)]
    elif array.dtype.kind in 'SOU':
        as_b64 = name.endswith('_bytes')
        values = []
        for v in flat:
            raw = v if isinstance(v, bytes) else str(v).encode('utf-8')
            values.append({'b64': base64.b64encode(raw).decode('ascii')} if as_b64
                          else raw.decode('utf-8', errors='replace'))
    else:
        values = flat.tolist()
    return _nest(values, array.shape)


def encode_outputs(outputs, fmt):
    """{name: ndarray} -> the response object for a `fmt` (ROW/COLUMNAR) request."""
    if not outputs:
        raise invalid_argument('Cannot convert empty tensor map to JSON')
    names = sorted(outputs)
    if fmt == COLUMNAR:
        if len(names) == 1:
            return {'outputs': _json_values(names[0], outputs[names[0]])}
        return {'outputs': {name: _json_values(name, outputs[name]) for name in names}}
    batch = None
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise invalid_argument('Tensor name: %s has no shape information ' % name)
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument('Tensor name: %s has inconsistent batch size: %d expecting: %d'
                                   % (name, array.shape[0], batch))
        batch = array.shape[0]
    rows = {name: _json_values(name, outputs[name]) for name in names}
    if len(names) == 1:
        return {'predictions': rows[names[0]]}
    return {'predictions': [{name: rows[name][i] for name in names} for i in range(batch)]}


def dumps(obj):
    """JSON text of a response; NaN/Infinity are written as TF Serving does."""
    return json.dumps(obj, separators=(',', ':'), allow_nan=True)


def error_body(message):
    return dumps({'error': message})

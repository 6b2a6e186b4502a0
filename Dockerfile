# The image every step of the compiled pipeline runs in, on open-source KFP and
# on Vertex AI; with the Beam SDK harness copied in, also the worker image for
# Dataflow / Flink / Spark (--beam-runner). See docs/kubeflow.md.
#
#   docker build -t REGISTRY/tfx-canary:TAG .            # GPU-capable (CUDA wheels)
#   docker build --build-arg GPU=0 -t REGISTRY/tfx-canary:TAG-cpu .
ARG BEAM_SDK_IMAGE=apache/beam_python3.11_sdk:2.59.0

FROM ${BEAM_SDK_IMAGE} AS beam

FROM python:3.11-slim

# 1: add the CUDA/cuDNN wheels TensorFlow 2.16 loads at run time; without them
# the Trainer silently trains on CPU even on a GPU node.
ARG GPU=1

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # TFX 1.16 / TFMA 0.47 need tf.keras to be Keras 2 (tf_keras), in every step.
    TF_USE_LEGACY_KERAS=1

# The locked stack first: it changes rarely, so this layer stays cached.
# tfx and ml-pipelines-sdk 1.16.0 declare Requires-Python <3.11 although all
# their compiled dependencies ship cp311 wheels, hence --ignore-requires-python.
COPY requirements/lock.txt /tmp/requirements/lock.txt
RUN pip install --ignore-requires-python -r /tmp/requirements/lock.txt
RUN if [ "$GPU" = "1" ]; then \
        pip install --ignore-requires-python -c /tmp/requirements/lock.txt "tensorflow[and-cuda]==2.16.2"; \
    fi

# The project as an installed package (every package setup.py lists): executors and module paths in the compiled spec import from
# site-packages. The source is not kept, so nothing shadows the install.
COPY setup.py /tmp/src/
COPY common /tmp/src/common
COPY components /tmp/src/components
COPY modules /tmp/src/modules
COPY pipeline /tmp/src/pipeline
COPY rollout /tmp/src/rollout
COPY runners /tmp/src/runners
COPY lineage /tmp/src/lineage
COPY serving /tmp/src/serving
RUN pip install --ignore-requires-python --no-deps --no-build-isolation /tmp/src \
    && rm -rf /tmp/src

# The bundled taxi spans and curated schema: the defaults of the runtime
# parameters data_root and schema_path (pipeline/kubeflow_configs.py).
COPY data/taxi /pipeline/data/taxi
WORKDIR /pipeline

# Beam's SDK harness, so Dataflow/Flink/Spark workers can run this image.
# KFP and Vertex set the container command explicitly, so this entrypoint only
# matters to Beam.
COPY --from=beam /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]

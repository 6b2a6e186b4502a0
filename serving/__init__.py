"""Serving the staged models: a TF Serving-compatible REST server with canary
routing, shadow traffic, metrics and capture of production requests.

Modules that import TensorFlow or the HTTP stack are imported lazily by the
CLI, so `tfx-canary --help` stays fast.
"""

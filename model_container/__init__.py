"""Schooner's model container: what runs inside every model image.

It loads a model bundle (a cloudpickled closure, an entry point, or an ONNX model file
served by onnxruntime: ``model_container.onnx_model``) once, connects out to one or
several query frontends (a list, or every address of a DNS name:
``model_container.discovery``) over the ZeroMQ wire protocol (``model_container.protocol``,
specified in ``docs/wire-protocol.md``), registers with each, heartbeats and answers
batches until stopped.
Run it as ``python -m model_container``; see ``model_container.cli`` for the flags.

This package must stay importable with only numpy, pyzmq, msgpack, cloudpickle, orjson
and prometheus_client installed: it is the base install of every model image.
"""

from model_container.bundle import (
    BundleError,
    BundleInfo,
    BundleKind,
    IncompatibleRuntimeError,
    PredictFunction,
    check_compatible,
    load_predict_function,
    read_bundle_info,
    runtime_versions,
    write_closure_bundle,
    write_entry_point_bundle,
    write_onnx_bundle,
)
from model_container.protocol import (
    PROTOCOL_VERSION,
    ErrorKind,
    InputType,
    MsgType,
    ProtocolError,
)
from model_container.request_context import current_request_ids
from model_container.server import ContainerConfig, ModelContainer, serve

__all__ = [
    "PROTOCOL_VERSION",
    "BundleError",
    "BundleInfo",
    "BundleKind",
    "ContainerConfig",
    "ErrorKind",
    "IncompatibleRuntimeError",
    "InputType",
    "ModelContainer",
    "MsgType",
    "PredictFunction",
    "ProtocolError",
    "check_compatible",
    "current_request_ids",
    "load_predict_function",
    "read_bundle_info",
    "runtime_versions",
    "serve",
    "write_closure_bundle",
    "write_entry_point_bundle",
    "write_onnx_bundle",
]

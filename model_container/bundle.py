"""The model bundle: the directory a model is deployed as, and how a container loads it.

A bundle holds ``model.json`` and, for a cloudpickled closure, ``func.pkl``; for an
ONNX model, the model file (``model.onnx``)::

    {"format": 1,
     "kind": "closure" | "entry_point" | "onnx",
     "entry_point": "pkg.module:attr",          # entry_point bundles only
     "model_file": "model.onnx",                # onnx bundles only: a file in the bundle,
     "output_name": "output_label",             #   the output served (null: the first)
     "engine": "onnxruntime",                   #   and what runs it
     "input_type": "doubles",
     "runtime": {"python": "3.11.7", "cloudpickle": "3.1.2", "numpy": "2.4.6"},
     "pkgs": ["scikit-learn==1.5.0"]}

An entry point names a callable that takes a list of inputs, or a class that is
instantiated with no arguments and whose ``predict`` method is used. The bundle
directory is put first on ``sys.path`` while it is imported, so a bundle may carry its
own modules. An ONNX bundle is served by onnxruntime (``model_container.onnx_model``):
no code of the user's is unpickled or imported. ``pkgs`` is what the image builder
installs; the container only reports it.

A pickle only loads under the Python minor version and cloudpickle major version it was
made with, so ``load_predict_function`` refuses a mismatch, with a message naming both
versions, before it unpickles anything. A model file depends on neither (``needs_same_python``).

A bundle is named by its digest (``bundle_digest``): the cluster stores it under that
name, records it with the model version, and the container refuses a bundle whose
digest differs (``verify_bundle``) before it reads anything from it. The digest is the
sha256 of a manifest, one entry per file, directory and symlink under the bundle's
root, sorted by path (bytewise, UTF-8)::

    f <x> <sha256 of the contents> <path>\0     a regular file; <x> is 1 if its owner
                                                may execute it, else 0
    d - - <path>\0                              a directory
    l - <sha256 of the link's target> <path>\0  a symlink to a path inside the bundle

``<path>`` is relative to the root, '/'-separated. Nothing else is hashed (no times,
owners or other permission bits), so a copy made by ``cp -r``, ``COPY`` in a Dockerfile
or ``shutil.copytree`` has the same digest, and any tool can recompute it (see
docs/wire-protocol.md, "Model bundles"). A symlink pointing outside the bundle, and
any other kind of file (a socket, a device, a FIFO), is refused. Exceptions::

    ValueError
     └── BundleError                 missing, malformed or unloadable bundle
          ├── IncompatibleRuntimeError   pickled under another Python / cloudpickle
          └── BundleDigestError          not the bundle recorded at deploy (or unhashable)
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import inspect
import json
import logging
import os
import platform
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from model_container.protocol import InputType

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
MODEL_JSON = "model.json"
FUNC_PKL = "func.pkl"
ONNX_FILE = "model.onnx"

PredictFunction = Callable[[Any], Sequence[Any]]

_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?")


class BundleError(ValueError):
    """A bundle that is missing, malformed, or whose model cannot be loaded."""


class IncompatibleRuntimeError(BundleError):
    """A pickled model made under a Python or cloudpickle this container cannot load."""


class BundleDigestError(BundleError):
    """A bundle whose digest is not the one recorded at deploy, or that cannot be hashed."""


class BundleKind(enum.StrEnum):
    CLOSURE = "closure"
    ENTRY_POINT = "entry_point"
    ONNX = "onnx"


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What ``model.json`` says about a bundle."""

    path: Path
    kind: BundleKind
    input_type: InputType
    runtime: dict[str, str]
    pkgs: tuple[str, ...] = ()
    entry_point: str | None = None
    model_file: str | None = None  # ONNX bundles: the model file, in the bundle
    output_name: str | None = None  # ONNX bundles: the output served; None: the first
    engine: str | None = None  # ONNX bundles: what runs the model file
    format: int = BUNDLE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for rewrite

    @property
    def needs_same_python(self) -> bool:
        """Whether replicas must run the Python and cloudpickle this bundle was made
        with: a pickle (or code from the bundle) does; a model file does not."""
        return self.kind is not BundleKind.ONNX

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            **self.extra,
            "format": self.format,
            "kind": str(self.kind),
            "input_type": str(self.input_type),
            "runtime": dict(self.runtime),
            "pkgs": list(self.pkgs),
        }
        if self.entry_point is not None:
            doc["entry_point"] = self.entry_point
        if self.kind is BundleKind.ONNX:
            doc["model_file"] = self.model_file
            doc["output_name"] = self.output_name
            doc["engine"] = self.engine
        return doc


def runtime_versions() -> dict[str, str]:
    """The versions of this interpreter and of the libraries a pickle depends on."""
    return {
        "python": platform.python_version(),
        "cloudpickle": str(cloudpickle.__version__),
        "numpy": np.__version__,
    }


def check_compatible(pickled: Mapping[str, str], runtime: Mapping[str, str]) -> None:
    """Refuse a pickle made under another Python minor or cloudpickle major version.

    ``pickled`` is the ``runtime`` recorded in the bundle, ``runtime`` is this
    interpreter's (``runtime_versions()``). Patch-level differences are accepted.
    """
    theirs_py, ours_py = pickled.get("python", "unknown"), runtime.get("python", "unknown")
    theirs_cp = pickled.get("cloudpickle", "unknown")
    ours_cp = runtime.get("cloudpickle", "unknown")
    theirs_minor, ours_minor = _release(theirs_py, 2), _release(ours_py, 2)
    theirs_major, ours_major = _release(theirs_cp, 1), _release(ours_cp, 1)
    python_ok = theirs_minor is not None and theirs_minor == ours_minor
    pickle_ok = theirs_major is not None and theirs_major == ours_major
    if python_ok and pickle_ok:
        return
    ours_env, their_image = [], []
    if not python_ok:
        ours_env.append(f"Python {_short(ours_py, 2)}")
        their_image.append(f"Python {_short(theirs_py, 2)}")
    if not pickle_ok:
        ours_env.append(f"cloudpickle {_short(ours_cp, 1)}.x")
        their_image.append(f"cloudpickle {_short(theirs_cp, 1)}.x")
    raise IncompatibleRuntimeError(
        f"model was pickled under Python {theirs_py} / cloudpickle {theirs_cp} but this "
        f"container runs Python {ours_py} / cloudpickle {ours_cp}: re-deploy from a "
        f"{' / '.join(ours_env)} environment (or use a base image with "
        f"{' and '.join(their_image)})"
    )


def _release(version: str, parts: int) -> tuple[int, ...] | None:
    match = _VERSION.match(version)
    if match is None or (parts == 2 and match.group(2) is None):
        return None
    return tuple(int(g) for g in match.groups()[:parts])


def _short(version: str, parts: int) -> str:
    release = _release(version, parts)
    return ".".join(map(str, release)) if release is not None else version


# --------------------------------------------------------------------------- digest

# 64 lowercase hex digits, matched with ``fullmatch`` (``$`` lets a trailing newline through).
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_BLOCK = 1 << 20


def bundle_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 (64 lowercase hex digits) of the bundle directory at ``path``.

    Raises ``BundleDigestError`` for a missing or unreadable bundle, a symlink pointing
    outside it, or a file that is neither a regular file, a directory nor a symlink.
    """
    root = Path(path)
    if not root.is_dir() or root.is_symlink():
        raise BundleDigestError(f"no model bundle directory at {root}")
    real_root = root.resolve()
    manifest = hashlib.sha256()
    try:
        for rel in _walk(root):
            manifest.update(_entry(root, real_root, rel))
    except OSError as exc:
        raise BundleDigestError(f"cannot read the bundle at {root}: {exc}") from exc
    return manifest.hexdigest()


def verify_bundle(path: str | os.PathLike[str], expected: str) -> None:
    """Refuse the bundle at ``path`` unless its digest is ``expected``; reads no model."""
    if not SHA256_RE.fullmatch(expected):
        raise BundleDigestError(
            f"the expected bundle digest {expected!r} is not 64 lowercase hex digits"
        )
    found = bundle_digest(path)
    if found != expected:
        raise BundleDigestError(
            f"the bundle at {path} has sha256 {found}, but this model version was deployed "
            f"with {expected}: the bundle was changed after it was deployed (or this is not "
            "its bundle). Nothing was loaded from it. Deploy the model again under a new "
            "version; if nobody should have changed it, find out who did"
        )


def _walk(root: Path) -> list[str]:
    """Every path under ``root``, relative, '/'-separated, sorted bytewise (UTF-8)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_raise):
        base = Path(dirpath).relative_to(root)
        for name in (*dirnames, *filenames):
            out.append((base / name).as_posix())
    return sorted(out, key=lambda p: p.encode("utf-8", "surrogateescape"))


def _raise(exc: OSError) -> None:
    raise exc


def _entry(root: Path, real_root: Path, rel: str) -> bytes:
    full = root / rel
    st = full.lstat()
    name = rel.encode("utf-8", "surrogateescape")
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(full)
        resolved = full.resolve()
        if resolved != real_root and real_root not in resolved.parents:
            raise BundleDigestError(
                f"the bundle at {root} holds a symlink {rel} -> {target} that points outside "
                "it: copy the file into the bundle instead"
            )
        text = hashlib.sha256(target.encode("utf-8", "surrogateescape")).hexdigest()
        return b"l - " + text.encode() + b" " + name + b"\0"
    if stat.S_ISDIR(st.st_mode):
        return b"d - - " + name + b"\0"
    if stat.S_ISREG(st.st_mode):
        contents = hashlib.sha256()
        with full.open("rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                contents.update(block)
        x = b"1" if st.st_mode & stat.S_IXUSR else b"0"
        return b"f " + x + b" " + contents.hexdigest().encode() + b" " + name + b"\0"
    raise BundleDigestError(
        f"the bundle at {root} holds {rel}, which is neither a file, a directory nor a "
        "symlink: remove it"
    )


# --------------------------------------------------------------------------- writing


def write_closure_bundle(
    path: str | os.PathLike[str],
    func: Callable[..., Any],
    input_type: InputType | str,
    pkgs: Iterable[str] = (),
) -> BundleInfo:
    """Cloudpickle ``func`` into a bundle at ``path`` (created if missing)."""
    if not callable(func):
        raise BundleError(f"a closure bundle needs a callable, got {type(func).__name__}")
    info = BundleInfo(
        path=Path(path),
        kind=BundleKind.CLOSURE,
        input_type=_input_type(input_type),
        runtime=runtime_versions(),
        pkgs=tuple(pkgs),
    )
    try:
        pickled = cloudpickle.dumps(func)
    except Exception as exc:
        raise BundleError(f"cannot pickle {func!r}: {type(exc).__name__}: {exc}") from exc
    info.path.mkdir(parents=True, exist_ok=True)
    (info.path / FUNC_PKL).write_bytes(pickled)
    _write_info(info)
    return info


def write_entry_point_bundle(
    path: str | os.PathLike[str],
    entry_point: str,
    input_type: InputType | str,
    pkgs: Iterable[str] = (),
) -> BundleInfo:
    """Write a bundle at ``path`` that loads ``entry_point`` ("pkg.module:attr")."""
    info = BundleInfo(
        path=Path(path),
        kind=BundleKind.ENTRY_POINT,
        input_type=_input_type(input_type),
        runtime=runtime_versions(),
        pkgs=tuple(pkgs),
        entry_point=_check_entry_point(entry_point),
    )
    info.path.mkdir(parents=True, exist_ok=True)
    _write_info(info)
    return info


def write_onnx_bundle(
    path: str | os.PathLike[str],
    model_file: str | os.PathLike[str],
    input_type: InputType | str,
    output_name: str | None = None,
    pkgs: Iterable[str] = (),
) -> BundleInfo:
    """Copy the ONNX model file ``model_file`` into a bundle at ``path``, to be served
    by onnxruntime; ``output_name`` is the output served (None: the model's first).

    The file is not checked here beyond being readable (``onnx_model.inspect_onnx_model``
    checks a model; the admin client's ``deploy_onnx_model`` does so first).
    """
    from model_container.onnx_model import (
        ENGINE,
        OnnxModelError,
        onnxruntime_version,
        read_model_file,
    )

    if output_name is not None and (not isinstance(output_name, str) or not output_name):
        raise BundleError(f"output_name must be a non-empty string or None, got {output_name!r}")
    try:
        data = read_model_file(model_file)
    except OnnxModelError as exc:
        raise BundleError(str(exc)) from exc
    runtime = runtime_versions()
    version = onnxruntime_version()
    if version is not None:
        runtime[ENGINE] = version
    info = BundleInfo(
        path=Path(path),
        kind=BundleKind.ONNX,
        input_type=_input_type(input_type),
        runtime=runtime,
        pkgs=tuple(pkgs),
        model_file=ONNX_FILE,
        output_name=output_name,
        engine=ENGINE,
    )
    info.path.mkdir(parents=True, exist_ok=True)
    (info.path / ONNX_FILE).write_bytes(data)
    _write_info(info)
    return info


def _write_info(info: BundleInfo) -> None:
    text = json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n"
    tmp = info.path / (MODEL_JSON + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(info.path / MODEL_JSON)


def _input_type(value: InputType | str) -> InputType:
    try:
        return InputType(value)
    except ValueError:
        known = ", ".join(t.value for t in InputType)
        raise BundleError(f"unknown input type {value!r}; use one of: {known}") from None


def _check_entry_point(value: object) -> str:
    if not isinstance(value, str) or not _ENTRY_POINT.match(value):
        raise BundleError(f"entry point {value!r} is not of the form 'package.module:attribute'")
    return value


# --------------------------------------------------------------------------- reading


def read_bundle_info(path: str | os.PathLike[str]) -> BundleInfo:
    """Read and validate a bundle's ``model.json``."""
    root = Path(path)
    try:
        doc = json.loads((root / MODEL_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"no model bundle at {root}: {MODEL_JSON} is missing") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {root / MODEL_JSON}: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{root / MODEL_JSON} is not a JSON object")
    fmt = doc.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleError(
            f"{root / MODEL_JSON} has format {fmt!r}; this container reads format "
            f"{BUNDLE_FORMAT} (upgrade the model image's schooner package)"
        )
    try:
        kind = BundleKind(str(doc.get("kind")))
    except ValueError:
        raise BundleError(f"{root / MODEL_JSON}: unknown kind {doc.get('kind')!r}") from None
    runtime = doc.get("runtime", {})
    pkgs = doc.get("pkgs", [])
    if not isinstance(runtime, dict) or not all(isinstance(v, str) for v in runtime.values()):
        raise BundleError(f"{root / MODEL_JSON}: 'runtime' must map names to version strings")
    if not isinstance(pkgs, list) or not all(isinstance(p, str) for p in pkgs):
        raise BundleError(f"{root / MODEL_JSON}: 'pkgs' must be a list of strings")
    known = {"format", "kind", "input_type", "runtime", "pkgs", "entry_point"}
    onnx: dict[str, Any] = {}
    if kind is BundleKind.ONNX:
        onnx = _onnx_fields(root, doc)
        known |= set(onnx)
    return BundleInfo(
        path=root,
        kind=kind,
        input_type=_input_type(doc.get("input_type", "")),
        runtime={str(k): v for k, v in runtime.items()},
        pkgs=tuple(pkgs),
        entry_point=(
            _check_entry_point(doc.get("entry_point")) if kind is BundleKind.ENTRY_POINT else None
        ),
        extra={k: v for k, v in doc.items() if k not in known},
        **onnx,
    )


def _onnx_fields(root: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The ONNX keys of ``model.json``, checked: the model file is a plain file name."""
    from model_container.onnx_model import ENGINE

    model_file, output_name = doc.get("model_file"), doc.get("output_name")
    engine = doc.get("engine", ENGINE)
    if (
        not isinstance(model_file, str)
        or model_file in ("", ".", "..", MODEL_JSON)
        or "/" in model_file
        or "\\" in model_file
    ):
        raise BundleError(
            f"{root / MODEL_JSON}: 'model_file' must name a file in the bundle, got {model_file!r}"
        )
    if output_name is not None and (not isinstance(output_name, str) or not output_name):
        raise BundleError(f"{root / MODEL_JSON}: 'output_name' must be a string or null")
    if engine != ENGINE:
        raise BundleError(
            f"{root / MODEL_JSON}: engine {engine!r} is not one this container runs ({ENGINE})"
        )
    return {"model_file": model_file, "output_name": output_name, "engine": engine}


def load_predict_function(path: str | os.PathLike[str]) -> PredictFunction:
    """Load the model of the bundle at ``path`` as a function of a list of inputs.

    Raises ``BundleError`` (``IncompatibleRuntimeError`` for a pickle from another
    runtime) with a message that says what went wrong and what to do.
    """
    info = read_bundle_info(path)
    if info.kind is BundleKind.CLOSURE:
        return _load_closure(info)
    if info.kind is BundleKind.ONNX:
        return _load_onnx(info)
    assert info.entry_point is not None
    return _load_entry_point(info.path, info.entry_point)


def _load_closure(info: BundleInfo) -> PredictFunction:
    check_compatible(info.runtime, runtime_versions())
    pkl = info.path / FUNC_PKL
    try:
        data = pkl.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the pickled model {pkl}: {exc}") from exc
    try:
        func = cloudpickle.loads(data)
    except Exception as exc:
        raise BundleError(
            f"cannot unpickle the model in {pkl}: {type(exc).__name__}: {exc} (a module the "
            f"model uses may be missing from the image: add it to pkgs and re-deploy)"
        ) from exc
    if not callable(func):
        raise BundleError(f"{pkl} holds a {type(func).__name__}, not a callable")
    logger.info("loaded pickled model %r from %s", getattr(func, "__name__", func), pkl)
    return func  # type: ignore[no-any-return]


def _load_onnx(info: BundleInfo) -> PredictFunction:
    from model_container.onnx_model import OnnxModelError, load_onnx_model

    assert info.model_file is not None
    try:
        return load_onnx_model(info.path / info.model_file, info.input_type, info.output_name)
    except OnnxModelError as exc:
        raise BundleError(f"cannot serve the ONNX model of {info.path}: {exc}") from exc


def _load_entry_point(root: Path, entry_point: str) -> PredictFunction:
    module_name, _, attr_path = entry_point.partition(":")
    bundle_dir = str(root.resolve())
    # Writing __pycache__ into the bundle would change its digest: the next start would
    # refuse it. (And a .pyc planted there is caught by the digest, not loaded.)
    sys.dont_write_bytecode = True
    if bundle_dir not in sys.path:
        sys.path.insert(0, bundle_dir)
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise BundleError(
            f"cannot import module {module_name!r} of entry point {entry_point!r}: "
            f"{type(exc).__name__}: {exc} (is its package installed in the image, or "
            f"in the bundle directory?)"
        ) from exc
    for name in attr_path.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise BundleError(
                f"entry point {entry_point!r}: {module_name} has no attribute {attr_path!r}"
            ) from None
    if inspect.isclass(target):
        try:
            instance = target()
        except Exception as exc:
            raise BundleError(
                f"entry point {entry_point!r}: {target.__name__}() raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        target = getattr(instance, "predict", None)
        if not callable(target):
            raise BundleError(f"entry point {entry_point!r}: the class has no predict method")
    elif not callable(target):
        raise BundleError(f"entry point {entry_point!r} is a {type(target).__name__}")
    logger.info("loaded model from entry point %s", entry_point)
    return target  # type: ignore[no-any-return]


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m model_container.bundle DIR...``: print each bundle's digest."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m model_container.bundle BUNDLE_DIR...", file=sys.stderr)
        return 2
    for path in paths:
        try:
            print(f"{bundle_digest(path)}  {path}")
        except BundleError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

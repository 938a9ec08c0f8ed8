"""``schooner deploy``: a model version from the user's own code or files, on any manager.

Three sources, one per deploy:

- ``--func module:callable`` imports the callable here, on the admin side, from the
  user's own code (``--path`` directories, by default the current directory, are put
  first on ``sys.path``), and deploys it as ``deploy_python_closure`` does. The modules
  that import brought in from those directories are pickled by value (their code goes
  into the bundle), since the replicas cannot import them; installed packages are
  pickled by reference and named with ``--pkg`` for the replicas to install.
- ``--pickle FILE`` loads (unpickles) a pickle or cloudpickle file the user made, here,
  and deploys the object: itself when callable, else its ``predict`` method, called on a
  batch. Unpickling runs code: the help says to load only one's own files.
- ``--onnx FILE`` hands the file to ``admin.deployers.onnx.deploy_onnx_model``: no code
  is pickled; the replicas run it with onnxruntime.

Nothing here reads code from the network: every source is a path or module the user
names on their own machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pickle
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from admin.cli import _managers as managers
from admin.deployers.onnx import deploy_onnx_model
from admin.deployers.python import deploy_python_closure
from admin.exceptions import DeployError, InvalidRequestError

# Schooner's own packages: the model container has them; never pickled by value.
_SCHOONER = ("admin", "model_container", "management_frontend", "query_frontend")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_FUNC_SPEC = re.compile(rf"^({_DOTTED}):({_DOTTED})$")


def func_spec(text: str) -> str:
    """``--func``'s ``module:callable`` (``pkg.mod:obj.method`` too), or a usage error."""
    if not _FUNC_SPEC.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not module:callable (e.g. mymodel:predict, or "
            "mypkg.models:model.predict for a method of an object)"
        )
    return text


def cmd_deploy(args: argparse.Namespace) -> int:
    pkgs = list(args.pkg or [])
    with managers.connect(args) as conn:
        if args.onnx is not None:
            deploy_onnx_model(
                conn,
                args.name,
                args.version,
                args.input_type,
                args.onnx,
                output_name=args.output_name,
                num_replicas=args.replicas,
                batch_size=args.batch_size,
                pkgs_to_install=pkgs or None,
                output_type=args.output_type,
            )
        else:
            with _user_code(args.path) as (roots, before):
                if args.func:
                    func = _import_callable(args.func, roots)
                else:
                    func = _load_pickle(args.pickle)
                _pickle_users_code_by_value(roots, set(sys.modules) - before, args.func)
                deploy_python_closure(
                    conn,
                    args.name,
                    args.version,
                    args.input_type,
                    func,
                    pkgs_to_install=pkgs,
                    num_replicas=args.replicas,
                    batch_size=args.batch_size,
                    output_type=args.output_type,
                )
    print(f"deployed {args.name}:{args.version} ({args.replicas} replica(s))")
    return 0


# --------------------------------------------------------------------------- user code


@contextlib.contextmanager
def _user_code(paths: Sequence[Path] | None) -> Iterator[tuple[list[Path], set[str]]]:
    """The directories of the user's code (``paths``, default: the current directory),
    first on ``sys.path`` for the block, and the modules imported before it. What the
    block registers with cloudpickle to be pickled by value is unregistered after it,
    and ``sys.path`` restored."""
    import cloudpickle

    roots = [p.expanduser().resolve() for p in (paths or [Path.cwd()])]
    for root in roots:
        if not root.is_dir():
            raise InvalidRequestError(f"--path {root}: there is no such directory")
    saved_path = list(sys.path)
    sys.path[:0] = [str(r) for r in roots]
    registered = set(cloudpickle.list_registry_pickle_by_value())
    try:
        yield roots, set(sys.modules)
    finally:
        for name in set(cloudpickle.list_registry_pickle_by_value()) - registered:
            module = sys.modules.get(name)
            if module is not None:
                with contextlib.suppress(ValueError):
                    cloudpickle.unregister_pickle_by_value(module)
        sys.path[:] = saved_path


def _pickle_users_code_by_value(
    roots: Sequence[Path], imported: set[str], spec: str | None
) -> None:
    """Pickle by value the top-level modules (or packages) of the user's code from
    ``roots``: those ``imported`` while loading the model, and the one ``spec`` names.
    The replicas cannot import them."""
    import cloudpickle

    names = {name.partition(".")[0] for name in imported}
    if spec:
        names.add(spec.partition(":")[0].partition(".")[0])
    for name in sorted(names - set(_SCHOONER)):
        module = sys.modules.get(name)
        if module is not None and _is_users(module, roots):
            cloudpickle.register_pickle_by_value(module)


def _import_callable(spec: str, roots: Sequence[Path]) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = ", ".join(str(r) for r in roots)
        raise InvalidRequestError(
            f"--func {spec}: cannot import {module_name} ({exc}); it is looked for in {where} "
            "and the installed packages: pass --path DIR, the directory it is in"
        ) from exc
    except Exception as exc:  # the user's module raised while it was imported
        raise DeployError(
            f"--func {spec}: importing {module_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise InvalidRequestError(
                f"--func {spec}: {module_name} has no {attr_path} (no attribute {attr!r})"
            ) from None
    if not callable(obj):
        raise InvalidRequestError(
            f"--func {spec}: {attr_path} is a {type(obj).__name__}, not a function or "
            "method; name the callable that takes a batch, e.g. model.predict"
        )
    return obj  # type: ignore[no-any-return]


def _is_users(module: ModuleType, roots: Sequence[Path]) -> bool:
    """Whether ``module`` is the user's code from ``roots`` (not an installed package,
    not even one installed in a virtualenv that lives under a root)."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    paths = sysconfig.get_paths()
    installed = {Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib")}
    if any(path.is_relative_to(i) for i in installed) or "site-packages" in path.parts:
        return False
    return any(path.is_relative_to(r) for r in roots)


def _load_pickle(path: Path) -> Callable[..., Any]:
    """The model in the user's own pickle file: the object if callable, else its
    ``predict``."""
    try:
        with path.open("rb") as f:
            obj = pickle.load(f)  # the user's own file, named on their command line
    except FileNotFoundError:
        raise InvalidRequestError(f"--pickle {path}: there is no such file") from None
    except OSError as exc:
        raise InvalidRequestError(f"--pickle {path}: cannot read it: {exc}") from exc
    except Exception as exc:  # unpickling runs the pickle's code: anything may raise
        raise DeployError(
            f"--pickle {path}: cannot load it ({type(exc).__name__}: {exc}); a module it "
            "refers to may be missing here: pass --path DIR, or install it"
        ) from exc
    if callable(obj):
        return obj  # type: ignore[no-any-return]
    predict = getattr(obj, "predict", None)
    if callable(predict):
        return predict  # type: ignore[no-any-return]
    raise InvalidRequestError(
        f"--pickle {path}: holds a {type(obj).__name__}, which is neither callable nor has "
        "a predict method; pickle the function (or model) that takes a batch"
    )

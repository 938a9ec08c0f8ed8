"""The Python runtime that replicas run in: its versions, its packages, pip installs.

A model is pickled under the deployer's Python; its replicas run under
``python_executable``, which may be another interpreter (a virtualenv made for one
model). This module asks that interpreter -- in-process when it is this one, through a
subprocess otherwise -- which Python, cloudpickle and numpy it has and which versions
of the requested packages it already holds, so that the local manager installs only
what is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

from packaging.markers import UndefinedComparison, UndefinedEnvironmentName, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from admin._files import os_errors
from admin._progress import wait_for
from admin.container_managers._processes import log_tail
from admin.exceptions import DeployError

PROBE_TIMEOUT: Final = 60.0

# Run by another interpreter; stdlib only, model_container if that interpreter has it.
_PROBE: Final = """\
import json, os, platform, sys
from importlib import metadata

def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None

runtime = {"python": platform.python_version()}
try:
    from model_container.bundle import runtime_versions
    runtime.update(runtime_versions())
except Exception:
    for name in ("cloudpickle", "numpy"):
        if version(name) is not None:
            runtime[name] = version(name)
environment = {
    "implementation_name": sys.implementation.name,
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
installed = {name: version(name) for name in json.loads(sys.argv[1])}
print(json.dumps({"runtime": runtime, "environment": environment, "installed": installed}))
"""


@dataclass(frozen=True, slots=True)
class Probe:
    """What an interpreter reports about itself."""

    runtime: dict[str, str]  # python, cloudpickle, numpy versions
    environment: dict[str, str] = field(default_factory=dict)  # PEP 508 marker variables
    installed: dict[str, str | None] = field(default_factory=dict)  # canonical name -> version


def is_this_interpreter(python_executable: str) -> bool:
    # Not realpath: a virtualenv's python is a symlink to the base interpreter, but
    # the two see different site-packages.
    return Path(python_executable).absolute() == Path(sys.executable).absolute()


def requirement_names(requirements: Sequence[str]) -> list[str]:
    """Canonical names of the parseable requirements (the rest are left to pip)."""
    names = []
    for text in requirements:
        try:
            names.append(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:
            continue
    return sorted(set(names))


def probe(python_executable: str, package_names: Sequence[str] = ()) -> Probe:
    """Ask ``python_executable`` for its runtime versions and installed packages."""
    if is_this_interpreter(python_executable):
        from model_container.bundle import runtime_versions

        installed: dict[str, str | None] = {}
        for name in package_names:
            try:
                installed[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                installed[name] = None
        env = {k: str(v) for k, v in default_environment().items()}
        return Probe(runtime=runtime_versions(), environment=env, installed=installed)
    try:
        done = subprocess.run(
            [python_executable, "-c", _PROBE, json.dumps(list(package_names))],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise DeployError(
            f"cannot run the replica interpreter {python_executable!r}: {exc}; pass "
            "python_executable= the path of a working Python 3 interpreter"
        ) from exc
    try:
        doc = json.loads(done.stdout)
        return Probe(
            runtime={str(k): str(v) for k, v in doc["runtime"].items()},
            environment={str(k): str(v) for k, v in doc["environment"].items()},
            installed={str(k): None if v is None else str(v) for k, v in doc["installed"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeployError(
            f"the replica interpreter {python_executable!r} did not describe itself "
            f"(exit {done.returncode}): {done.stderr.strip()[-1000:]}"
        ) from exc


def unsatisfied(
    requirements: Sequence[str],
    installed: Mapping[str, str | None],
    environment: Mapping[str, str] | None = None,
) -> list[str]:
    """The requirements that ``installed`` (canonical name -> version) does not meet.

    A requirement whose marker is false in ``environment`` does not apply. Anything
    this cannot judge -- a URL, extras (whose dependencies are not checked), a string
    that is not a PEP 508 requirement, a marker that cannot be evaluated -- counts as
    unsatisfied, and pip decides.
    """
    missing = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            missing.append(text)
            continue
        try:
            applies = req.marker is None or req.marker.evaluate(dict(environment or {}))
        except (UndefinedComparison, UndefinedEnvironmentName):  # e.g. python_version ~= "3"
            missing.append(text)
            continue
        if not applies:
            continue
        if req.url or req.extras:
            missing.append(text)
            continue
        have = installed.get(canonicalize_name(req.name))
        try:
            ok = have is not None and req.specifier.contains(have, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            missing.append(text)
    return missing


def pip_install(
    python_executable: str,
    target: Path,
    requirements: Sequence[str],
    *,
    log_path: Path,
    timeout: float,
    on_progress: Callable[[float], None] | None = None,
) -> None:
    """``pip install --target`` the requirements; ``DeployError`` with pip's output tail."""
    argv = [
        python_executable,
        *("-m", "pip", "install", "--disable-pip-version-check", "--no-input"),
        *("--target", str(target)),
        *requirements,
    ]
    preparing = f"prepare {target} and {log_path} for pip"
    with os_errors(preparing, DeployError):
        target.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("w", encoding="utf-8")
    started = time.monotonic()
    with log:
        with os_errors(preparing, DeployError):
            log.write(" ".join(argv) + "\n")
            log.flush()
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            raise DeployError(f"cannot run pip with {python_executable!r}: {exc}") from exc
        try:
            finished = wait_for(
                lambda: proc.poll() is not None,
                timeout=timeout,
                on_progress=on_progress,
                progress_every=10.0,
            )
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    if not finished:
        raise DeployError(
            f"pip install {' '.join(requirements)} did not finish within {timeout:g} s "
            f"(log: {log_path}); check the network or pin versions with wheels, then deploy "
            "again"
        )
    if proc.returncode != 0:
        raise DeployError(
            f"pip install {' '.join(requirements)} failed (exit {proc.returncode}) after "
            f"{time.monotonic() - started:.0f} s; fix pkgs_to_install (names and versions as "
            f"on PyPI) and deploy again. pip said:\n{log_tail(log_path, 20)}"
        )

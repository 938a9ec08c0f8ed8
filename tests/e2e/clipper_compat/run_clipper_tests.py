"""Run Clipper's own admin integration tests against Schooner, only their imports changed.

    .venv/bin/python tests/e2e/clipper_compat/run_clipper_tests.py [--clipper DIR] [--short|--long]

Copies ``integration-tests/clipper_admin_tests.py`` and ``integration-tests/test_utils.py``
of ucbrise/clipper (from ``--clipper``, a checkout, else the mirror's git objects at
``/work/.mirror/ucbrise+clipper/repo``) into a temporary directory, rewrites ONLY their
import lines (``clipper_admin`` becomes ``admin.clipper``; the diff is printed and any
other change refused), and runs the tests in Clipper's own order (its
``SHORT_TEST_ORDERING`` and ``LONG_TEST_ORDERING``, as its ``__main__`` does, without
stopping at the first failure) against real Docker clusters that the tests start
themselves. Prints each test's outcome, and for each failure its exception and whether
it needs Clipper's own Docker images (which no registry here can supply).

Nothing is set for them: the clusters run in Clipper's default user-defined network
(``SCHOONER_DOCKER_NETWORK`` chooses another, ``host`` for the host's network stack) and
build from the managers' default base (``SCHOONER_BASE_IMAGE`` chooses another; without a
registry, ``schooner/base-python:3.11`` when the engine has it): see
``admin/clipper/docker/docker_container_manager.py``. Containers, volumes and images the
tests' clusters leave behind are removed at the end. Exit status 0 when every test that
does not need Clipper's images passed.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

MIRROR = Path("/work/.mirror/ucbrise+clipper/repo")
FILES = ("integration-tests/clipper_admin_tests.py", "integration-tests/test_utils.py")
IMPORT_LINE = re.compile(r"^(\s*)(from|import)(\s+)clipper_admin\b")

# Tests whose subject is one of Clipper's images (clipper/noop-container,
# clipper/python3x-closure-container): they deploy it, build from it or count its
# containers by ``ancestor=`` -- and, for the closure images, pick the image by the
# Python version, leaving ``containers`` unbound on Python 3.8+.
NEEDS_CLIPPER_IMAGES = {
    "test_model_deploys_successfully": "deploys clipper/noop-container",
    "test_set_num_replicas_for_deployed_model_succeeds": "deploys clipper/noop-container",
    "test_remove_inactive_containers_succeeds": "deploys clipper/noop-container",
    "test_stop_models": "deploys clipper/noop-container",
    "test_python_closure_deploys_successfully": (
        "counts containers of clipper/python3x-closure-container (none for Python 3.11)"
    ),
    "test_register_py_endpoint": (
        "counts containers of clipper/python3x-closure-container (none for Python 3.11)"
    ),
    "test_build_model_with_custom_packages": "builds FROM clipper/python*-closure-container",
    "test_remove_inactive_container": "deploys clipper/noop-container",
    "test_deployed_model_queried_successfully": "deploys clipper/noop-container",
    "test_batch_queries_returned_successfully": "deploys clipper/noop-container",
}

DRIVER = """
import json, sys, traceback, unittest
sys.argv = [sys.argv[0]]
import clipper_admin_tests as t

class Recorder(unittest.TextTestResult):
    outcomes = []
    def addSuccess(self, test):
        super().addSuccess(test); self.outcomes.append((test._testMethodName, "pass", ""))
    def _bad(self, test, err, kind):
        text = "".join(traceback.format_exception(*err))
        self.outcomes.append((test._testMethodName, kind, text))
    def addFailure(self, test, err):
        super().addFailure(test, err); self._bad(test, err, "fail")
    def addError(self, test, err):
        super().addError(test, err)
        name = getattr(test, "_testMethodName", str(test))
        self.outcomes.append((name, "error", "".join(traceback.format_exception(*err))))

suite = unittest.TestSuite()
which = sys.stdin.read().strip()
if which in ("all", "short"):
    for name in t.SHORT_TEST_ORDERING:
        suite.addTest(t.ClipperManagerTestCaseShort(name))
if which in ("all", "long"):
    for name in t.LONG_TEST_ORDERING:
        suite.addTest(t.ClipperManagerTestCaseLong(name))
runner = unittest.TextTestRunner(verbosity=2, resultclass=Recorder, failfast=False)
runner.run(suite)
with open("outcomes.json", "w") as f:
    json.dump(Recorder.outcomes, f)
"""


def source(path: str, clipper: Path | None) -> str:
    if clipper is not None:
        return (clipper / path).read_text(encoding="utf-8")
    return subprocess.run(
        ["git", "-C", str(MIRROR), "show", f"HEAD:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def rewrite_imports(text: str) -> str:
    """``text`` with ``clipper_admin`` replaced by ``admin.clipper`` in import lines only."""
    lines = text.splitlines(keepends=True)
    return "".join(IMPORT_LINE.sub(r"\1\2\3admin.clipper", line) for line in lines)


def only_imports_changed(before: str, after: str) -> list[str]:
    """The changed lines (``-``/``+``); raises if a changed line is not an import."""
    changed = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    for line in changed:
        if not re.match(r"^[+-]\s*(from|import)\s", line):
            raise SystemExit(f"refusing to run: a non-import line changed: {line}")
    return changed


def cleanup(prefixes: tuple[str, ...]) -> None:
    """Remove what the tests' clusters left: containers, volumes, model images."""
    import docker

    client = docker.from_env()
    try:
        for c in client.containers.list(all=True, filters={"label": "schooner.cluster"}):
            if c.labels.get("schooner.cluster", "").startswith(prefixes):
                c.remove(force=True)
        for v in client.volumes.list(filters={"label": "schooner.cluster"}):
            if (v.attrs.get("Labels") or {}).get("schooner.cluster", "").startswith(prefixes):
                v.remove(force=True)
        for image in client.images.list(filters={"label": "schooner.image.cluster"}):
            if (image.labels or {}).get("schooner.image.cluster", "").startswith(prefixes):
                for tag in image.tags:
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clipper", type=Path, help="a ucbrise/clipper checkout")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--short", action="store_const", dest="which", const="short")
    group.add_argument("--long", action="store_const", dest="which", const="long")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    args = parser.parse_args()
    which = args.which or "all"

    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryDirectory(prefix="clipper-tests-") as tmp:
        work = Path(tmp) / "integration-tests"
        work.mkdir()
        for path in FILES:
            original = source(path, args.clipper)
            rewritten = rewrite_imports(original)
            print(f"--- {path}: import lines rewritten")
            for line in only_imports_changed(original, rewritten):
                print(f"    {line}")
            (work / Path(path).name).write_text(rewritten, encoding="utf-8")
        (work / "driver.py").write_text(DRIVER, encoding="utf-8")
        try:
            subprocess.run(
                [sys.executable, "driver.py"],
                check=False,
                cwd=work,
                env=env,
                input=which,
                text=True,
            )
        finally:
            cleanup(("admin-test-cluster-", "admin-l-"))
        outcomes = json.loads((work / "outcomes.json").read_text())

    print("\n=== Clipper's clipper_admin_tests.py against Schooner ===")
    passed = [n for n, kind, _ in outcomes if kind == "pass"]
    needing = [n for n, kind, _ in outcomes if kind != "pass" and n in NEEDS_CLIPPER_IMAGES]
    other = [
        (n, text) for n, kind, text in outcomes if kind != "pass" and n not in NEEDS_CLIPPER_IMAGES
    ]
    for name, kind, text in outcomes:
        why = ""
        if kind != "pass":
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            why = f": {last.strip()}"
            if name in NEEDS_CLIPPER_IMAGES:
                why += f"  [needs Clipper's images: {NEEDS_CLIPPER_IMAGES[name]}]"
        print(f"{kind.upper():5} {name}{why}")
    runnable = len(outcomes) - len(needing)
    print(
        f"\n{len(passed)} passed of {len(outcomes)}; {len(passed)} of the {runnable} that do "
        f"not need Clipper's images; {len(needing)} need Clipper's images"
    )
    if args.json:
        args.json.write_text(json.dumps(outcomes, indent=2))
    for name, text in other:
        print(f"\n--- {name}\n{text}")
    return 0 if not other else 1


if __name__ == "__main__":
    sys.exit(main())

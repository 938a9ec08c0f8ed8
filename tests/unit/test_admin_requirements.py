"""Which of a model's ``pkgs_to_install`` the replicas' interpreter already satisfies."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from admin.container_managers._runtime import (
    is_this_interpreter,
    probe,
    requirement_names,
    unsatisfied,
)

INSTALLED = {"scikit-learn": "1.5.2", "numpy": "2.1.0", "zope-interface": "6.0"}
PY311 = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux"}


@pytest.mark.parametrize(
    "requirement",
    [
        "scikit-learn",
        "scikit-learn==1.5.2",
        "scikit-learn>=1.3,<2",
        "Scikit_Learn~=1.5",  # names compare canonicalised
        "zope.interface>=5",
        "numpy; python_version >= '3.9'",
        "missing-package; python_version < '3.0'",  # does not apply to this runtime
    ],
)
def test_satisfied_requirements_need_no_install(requirement: str) -> None:
    assert unsatisfied([requirement], INSTALLED, PY311) == []


@pytest.mark.parametrize(
    "requirement",
    [
        "missing-package",
        "scikit-learn==1.4.0",
        "numpy<2",
        "scikit-learn[alldeps]",  # the extras' dependencies are not checked: let pip decide
        "mypkg @ https://example.com/mypkg-1.0.tar.gz",
        "git+https://github.com/org/repo.git",  # not PEP 508: pip's business
        "-e ./local",
    ],
)
def test_unsatisfied_requirements_are_installed(requirement: str) -> None:
    assert unsatisfied([requirement], INSTALLED, PY311) == [requirement]


def test_only_the_unsatisfied_ones_are_returned_in_order() -> None:
    reqs = ["numpy", "requests>=2", "scikit-learn==1.5.2", "torch"]
    assert unsatisfied(reqs, INSTALLED, PY311) == ["requests>=2", "torch"]


def test_an_unparseable_installed_version_counts_as_unsatisfied() -> None:
    assert unsatisfied(["weird>=1"], {"weird": "not a version"}, PY311) == ["weird>=1"]


@given(st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=4))
def test_a_pin_to_the_installed_version_is_always_satisfied(parts: list[int]) -> None:
    version = ".".join(map(str, parts))
    assert unsatisfied([f"pkg=={version}"], {"pkg": version}, PY311) == []
    assert unsatisfied([f"pkg!={version}"], {"pkg": version}, PY311) == [f"pkg!={version}"]


def test_requirement_names_are_canonical_and_skip_what_pip_alone_understands() -> None:
    names = requirement_names(["Scikit_Learn>=1", "numpy", "git+https://x/y.git", "numpy<3"])
    assert names == ["numpy", "scikit-learn"]


def test_probe_of_this_interpreter_reports_its_versions_and_packages() -> None:
    found = probe(sys.executable, ["packaging", "surely-not-installed-pkg"])
    assert found.runtime["python"] == platform.python_version()
    assert found.installed == {
        "packaging": metadata.version("packaging"),
        "surely-not-installed-pkg": None,
    }
    assert unsatisfied(["packaging"], found.installed, found.environment) == []


def test_probe_of_another_interpreter_runs_it() -> None:
    # The same binary reached by another path counts as another interpreter: probed
    # through a subprocess, it must report what the in-process probe reports.
    bin_dir, exe = os.path.split(sys.executable)
    other = os.path.join(bin_dir, "..", os.path.basename(bin_dir), exe)
    assert not is_this_interpreter(other)
    found = probe(other, ["packaging"])
    assert found.runtime["python"] == platform.python_version()
    assert found.installed["packaging"] == metadata.version("packaging")
    assert found.environment["python_version"] == ".".join(platform.python_version_tuple()[:2])

"""The bundle digest: what a model version is recorded with, and what a replica checks.

``bundle_digest`` is defined by a manifest any tool can recompute (docs/wire-protocol.md,
"Model bundles"); ``recompute`` below is that definition written again from the docs,
and the tests pin that the two agree, that the digest is stable and independent of the
order files were written in, and that it changes with every name, byte and executable
bit a loader could notice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_container.bundle import (
    BundleDigestError,
    BundleError,
    bundle_digest,
    load_predict_function,
    verify_bundle,
    write_closure_bundle,
    write_entry_point_bundle,
)


def recompute(root: Path) -> str:
    """The digest as docs/wire-protocol.md defines it, independently of the code."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix().encode()
            if path.is_symlink():
                target = hashlib.sha256(os.readlink(path).encode()).hexdigest()
                entries.append((rel, b"l - " + target.encode() + b" " + rel + b"\0"))
            elif path.is_dir():
                entries.append((rel, b"d - - " + rel + b"\0"))
            else:
                x = b"1" if path.stat().st_mode & stat.S_IXUSR else b"0"
                contents = hashlib.sha256(path.read_bytes()).hexdigest().encode()
                entries.append((rel, b"f " + x + b" " + contents + b" " + rel + b"\0"))
    return hashlib.sha256(b"".join(line for _, line in sorted(entries))).hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


FILES = {
    "model.json": b"{}",
    "func.pkl": b"\x80\x05pickle",
    "pkg/__init__.py": b"",
    "pkg/model.py": b"def f(xs): return xs\n",
    "pkg-data/weights.bin": bytes(range(256)) * 10,
}


def test_the_digest_is_the_documented_manifest_hash(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "b", FILES)
    (root / "pkg" / "link.py").symlink_to("model.py")
    (root / "empty").mkdir()
    digest = bundle_digest(root)
    assert len(digest) == 64 and digest == digest.lower()
    assert digest == recompute(root)
    assert bundle_digest(root) == digest  # stable


@settings(max_examples=25, deadline=None)
@given(st.permutations(sorted(FILES)))
def test_the_digest_does_not_depend_on_the_order_files_were_written(
    tmp_path_factory: pytest.TempPathFactory, order: list[str]
) -> None:
    a = write_tree(tmp_path_factory.mktemp("a"), FILES)
    b = write_tree(tmp_path_factory.mktemp("b"), {rel: FILES[rel] for rel in order})
    assert bundle_digest(a) == bundle_digest(b)


def test_a_copy_has_the_same_digest_times_and_other_mode_bits_aside(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "b", FILES)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    (copy / "model.json").chmod(0o600)
    copy.chmod(0o700)
    os.utime(copy / "func.pkl", (0, 0))
    assert bundle_digest(copy) == bundle_digest(root)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: (r / "func.pkl").write_bytes(b"\x80\x05other"), id="a file's bytes"),
        pytest.param(lambda r: (r / "func.pkl").rename(r / "func2.pkl"), id="a file's name"),
        pytest.param(lambda r: (r / "pkg").rename(r / "pkh"), id="a directory's name"),
        pytest.param(lambda r: (r / "extra.py").write_bytes(b""), id="a file added"),
        pytest.param(lambda r: (r / "pkg" / "__init__.py").unlink(), id="a file removed"),
        pytest.param(lambda r: (r / "new").mkdir(), id="an empty directory added"),
        pytest.param(lambda r: (r / "pkg" / "model.py").chmod(0o755), id="the executable bit"),
        pytest.param(
            lambda r: (
                (r / "pkg" / "__pycache__").mkdir()
                or (r / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"planted")
            ),
            id="a planted .pyc",
        ),
    ],
)
def test_the_digest_changes_with_anything_a_loader_could_notice(
    tmp_path: Path, change: object
) -> None:
    root = write_tree(tmp_path / "b", FILES)
    before = bundle_digest(root)
    change(root)  # type: ignore[operator]
    assert bundle_digest(root) != before


def test_moving_bytes_between_names_changes_the_digest(tmp_path: Path) -> None:
    a = write_tree(tmp_path / "a", {"x": b"1", "y": b"2"})
    b = write_tree(tmp_path / "b", {"x": b"2", "y": b"1"})
    assert bundle_digest(a) != bundle_digest(b)


def test_a_symlink_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "b", FILES)
    (tmp_path / "secret").write_text("outside")
    (root / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(BundleDigestError, match=r"symlink leak -> .* points outside"):
        bundle_digest(root)
    (root / "leak").unlink()
    (root / "up").symlink_to("../secret")
    with pytest.raises(BundleDigestError, match="points outside"):
        bundle_digest(root)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_special_file_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "b", FILES)
    os.mkfifo(root / "pipe")
    with pytest.raises(BundleDigestError, match="pipe, which is neither a file"):
        bundle_digest(root)


def test_a_missing_bundle_or_a_symlinked_root_has_no_digest(tmp_path: Path) -> None:
    with pytest.raises(BundleDigestError, match="no model bundle directory"):
        bundle_digest(tmp_path / "nowhere")
    real = write_tree(tmp_path / "real", FILES)
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(BundleDigestError, match="no model bundle directory"):
        bundle_digest(tmp_path / "alias")


def test_verify_accepts_the_digest_and_refuses_any_other(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    write_closure_bundle(bundle, lambda xs: xs, "doubles")
    digest = bundle_digest(bundle)
    verify_bundle(bundle, digest)
    with pytest.raises(BundleDigestError, match=f"has sha256 {digest}, but .* deployed with 0+:"):
        verify_bundle(bundle, "0" * 64)
    for malformed in (digest.upper(), digest + "\n"):
        with pytest.raises(BundleDigestError, match="not 64 lowercase hex digits"):
            verify_bundle(bundle, malformed)
    assert issubclass(BundleDigestError, BundleError)


def test_loading_an_entry_point_leaves_no_bytecode_that_would_change_the_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "digest_ep_model.py").write_text("def f(xs):\n    return xs\n")
    write_entry_point_bundle(bundle, "digest_ep_model:f", "ints")
    digest = bundle_digest(bundle)
    assert load_predict_function(bundle)([1]) == [1]
    assert bundle_digest(bundle) == digest

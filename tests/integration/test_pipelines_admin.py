"""Pipelines through the admin client and the ``schooner`` command, on a real local
cluster (redis-server, both frontends and a replica as processes).

What is set is read back as the management frontend recorded it; a pipeline whose
stage cannot take what the stage before it declares it answers is refused with the
cluster's own message, and changes nothing. Predictions through a pipeline are the
query frontend's tests (``test_pipelines.py``). One cluster serves the module; each
test uses its own app names.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clusters import started

from admin import ConflictError, Connection, InvalidRequestError, LocalContainerManager, Stage
from admin.cli import main
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    """A cluster with a featuriser (strings -> doubles, deployed), two versions of a
    classifier and a tokeniser that declares strings (registered: no replicas needed
    to set a pipeline)."""
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        # Defined here: cloudpickle pickles it by value (the replica cannot import tests).
        def featurise(texts: list[str]) -> list[list[float]]:
            return [[float(len(t)), float(t.count(" "))] for t in texts]

        deploy_python_closure(c, "feat", "1", "strings", featurise, output_type="doubles")
        c.register_model("clf", "1", "doubles", output_type="ints")
        c.register_model("clf", "2", "doubles", output_type="ints")
        c.register_model("tokens", "1", "strings", output_type="strings")
        yield c


def shape(stages: list[dict[str, Any]]) -> list[tuple[list[str], str, dict[str, Any]]]:
    return [(s["arms"], s["policy"], s["policy_params"]) for s in stages]


def test_a_pipeline_set_is_read_back_as_set(conn: Connection) -> None:
    conn.register_application("reviews", "strings", "-1", 1_000_000)
    split = Stage(["clf:1", "clf:2"], policy="split", weights={"clf:1": 90, "clf:2": 10})
    app = conn.set_app_pipeline("reviews", ["feat", split])
    expected = [
        (["feat"], "single", {"loss": "auto"}),
        (["clf:1", "clf:2"], "split", {"weights": {"clf:1": 90.0, "clf:2": 10.0}, "loss": "auto"}),
    ]
    assert shape(app["pipeline"]) == expected
    assert shape(conn.get_app_pipeline("reviews")) == expected
    assert conn.get_linked_models("reviews") == ["feat"]  # stage 1 is the app's links
    assert shape(conn.get_app_info("reviews")["pipeline"]) == expected  # type: ignore[index]
    assert conn.get_model_info("feat", "1")["output_type"] == "doubles"  # type: ignore[index]
    # What get_app_pipeline shows, set_app_pipeline takes back, keeping what was learned.
    before = conn.get_app_pipeline("reviews")
    assert conn.set_app_pipeline("reviews", before)["pipeline"] == before

    # One stage's policy, alone.
    conn.set_selection_policy("reviews", "exp4", stage=2, eta=0.3)
    stages = conn.get_app_pipeline("reviews")
    assert (stages[1]["policy"], stages[1]["policy_params"]["eta"]) == ("exp4", 0.3)
    assert stages[0]["policy"] == "single"
    state = conn.get_policy_state("reviews", stage=2)
    assert state["policy"] == "exp4" and set(state["arms"]) == {"clf:1", "clf:2"}
    conn.reset_policy_state("reviews", stage=2)
    with pytest.raises(InvalidRequestError, match="stage 3"):
        conn.get_policy_state("reviews", stage=3)

    # Back to one stage: an ordinary app again.
    conn.set_app_pipeline("reviews", ["feat"])
    assert shape(conn.get_app_pipeline("reviews")) == [(["feat"], "single", {"loss": "auto"})]
    assert conn.get_linked_models("reviews") == ["feat"]


def test_a_stage_that_cannot_take_the_previous_output_is_refused_with_the_clusters_message(
    conn: Connection,
) -> None:
    conn.register_application("mismatch", "strings", "-1", 1_000_000)
    conn.set_app_pipeline("mismatch", ["feat", "clf"])
    before = conn.get_app_pipeline("mismatch")
    with pytest.raises(InvalidRequestError) as caught:
        conn.set_app_pipeline("mismatch", ["tokens", "clf"])
    message = str(caught.value)
    assert caught.value.status_code == 400
    assert "stage 2 ('clf')" in message and "stage 1 ('tokens')" in message
    assert "'strings'" in message and "'doubles'" in message
    assert conn.get_app_pipeline("mismatch") == before  # nothing stored


def test_a_model_that_is_not_deployed_is_refused_naming_its_stage(conn: Connection) -> None:
    conn.register_application("missing", "strings", "-1", 1_000_000)
    with pytest.raises(InvalidRequestError, match="stage 2") as caught:
        conn.set_app_pipeline("missing", ["feat", "nothing-here"])
    assert caught.value.status_code == 400
    assert "nothing-here" in str(caught.value)


def test_a_new_version_a_later_stage_cannot_take_is_not_deployed(conn: Connection) -> None:
    conn.register_application("guarded", "strings", "-1", 1_000_000)
    conn.set_app_pipeline("guarded", ["feat", "clf"])  # feat follows its current version
    with pytest.raises(ConflictError) as caught:
        deploy_python_closure(conn, "feat", "2", "strings", list, output_type="strings")
    message = str(caught.value)
    assert "stage 2 ('clf')" in message and "feat:2 was not made current" in message
    model = conn.get_model("feat")
    assert model is not None and model["versions"] == ["1"] and model["current_version"] == "1"


# --------------------------------------------------------------------------- the CLI


class Shell:
    """``schooner ... --data-dir DIR``, in this process; its exit status and output."""

    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.capsys.readouterr()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            status = main([*argv, "--data-dir", str(self.data_dir)])
        finally:
            sys.stdin = saved
        out, err = self.capsys.readouterr()
        return status, out, err

    def ok(self, *argv: str, stdin: str = "") -> str:
        status, out, err = self(*argv, stdin=stdin)
        assert status == 0, f"schooner {' '.join(argv)} exited {status}: {err}"
        return out


@pytest.fixture
def shell(conn: Connection, capsys: pytest.CaptureFixture[str]) -> Shell:
    manager = conn.cm
    assert isinstance(manager, LocalContainerManager)
    return Shell(manager.data_dir, capsys)


def test_the_pipeline_verbs(shell: Shell, conn: Connection, tmp_path: Path) -> None:
    shell.ok("register", "cli-reviews", "--input-type", "strings", "--slo-micros", "1000000")
    out = shell.ok("set-pipeline", "cli-reviews", "feat", "clf:1,clf:2@split:clf:1=90,clf:2=10")
    assert out.strip() == "cli-reviews: feat -> clf:1,clf:2@split"
    assert conn.get_app_pipeline("cli-reviews")[1]["policy_params"]["weights"] == {
        "clf:1": 90.0,
        "clf:2": 10.0,
    }

    lines = shell.ok("pipeline", "cli-reviews").splitlines()
    assert lines[0] == "cli-reviews: feat -> clf:1,clf:2@split"
    assert lines[3].split()[:3] == ["1", "feat", "single"]
    assert lines[4].split()[:3] == ["2", "clf:1,clf:2", "split"]

    # What `pipeline --json` prints, `set-pipeline --file` takes back.
    saved = tmp_path / "stages.json"
    saved.write_text(shell.ok("pipeline", "cli-reviews", "--json"))
    shell.ok("set-pipeline", "cli-reviews", "feat")
    shell.ok("set-pipeline", "cli-reviews", "--file", str(saved))
    assert [s["arms"] for s in conn.get_app_pipeline("cli-reviews")] == [
        ["feat"],
        ["clf:1", "clf:2"],
    ]
    shell.ok("set-pipeline", "cli-reviews", "--file", "-", stdin='["feat", "clf:2"]')
    assert [s["arms"] for s in conn.get_app_pipeline("cli-reviews")] == [["feat"], ["clf:2"]]

    # A stage's own policy.
    shell.ok("set-pipeline", "cli-reviews", "feat", "clf:1,clf:2@exp4")
    printed = json.loads(shell.ok("set-policy", "cli-reviews", "exp3", "--stage", "2"))
    assert (printed["stage"], printed["policy"]) == (2, "exp3")
    state = shell.ok("policy-state", "cli-reviews", "--stage", "2")
    assert state.startswith("app cli-reviews, stage 2: policy exp3")

    # The listings show the stages.
    apps = json.loads(shell.ok("apps", "--json"))
    [row] = [a for a in apps if a["name"] == "cli-reviews"]
    assert row["stages"] == "feat -> clf:1,clf:2@exp3"
    assert row["linked_models"] == "feat"
    table = shell.ok("apps")
    assert "STAGES" in table.splitlines()[0] and "feat -> clf:1,clf:2@exp3" in table
    status = shell.ok("status")
    [line] = [ln for ln in status.splitlines() if ln.startswith("cli-reviews ")]
    assert "feat -> clf:1,clf:2@exp3" in line


def test_a_refused_pipeline_exits_1_with_the_clusters_message(shell: Shell) -> None:
    shell.ok("register", "cli-mismatch", "--input-type", "strings", "--slo-micros", "1000000")
    status, _out, err = shell("set-pipeline", "cli-mismatch", "tokens", "clf")
    assert status == 1
    assert "400" in err and "stage 2 ('clf')" in err and "stage 1 ('tokens')" in err
    status, _out, err = shell("set-pipeline", "cli-mismatch", "feat", "clf:1,clf:2")
    assert status == 1
    assert "stage 2 ('clf:1', 'clf:2') has 2 arms but the policy 'single'" in err


def test_deploy_declares_an_output_type(shell: Shell, conn: Connection, tmp_path: Path) -> None:
    (tmp_path / "shout.py").write_text(
        "def predict(texts):\n    return [t.upper() for t in texts]\n"
    )
    shell.ok(
        "deploy",
        "shout",
        "1",
        "--input-type",
        "strings",
        "--func",
        "shout:predict",
        "--path",
        str(tmp_path),
        "--output-type",
        "strings",
    )
    assert conn.get_model_info("shout", "1")["output_type"] == "strings"  # type: ignore[index]
    status, _out, err = shell(
        "deploy", "shout", "2", "--input-type", "strings", "--func", "shout:predict",
        "--path", str(tmp_path), "--output-type", "vector",
    )  # fmt: skip
    assert status == 1 and "output_type 'vector' is not known" in err

"""``schooner set-pipeline`` and ``schooner pipeline``: an app as a chain of stages.

On the command line each stage is one word, in the syntax ``describe`` prints::

    STAGE   = ARMS [ "@" POLICY [ ":" SETTING { "," SETTING } ] ]
    ARMS    = ARM { "," ARM }          ARM = MODEL [ ":" VERSION ]
    SETTING = KEY "=" VALUE            VALUE read as JSON when it parses

    feat                      one model, following its current version (policy single)
    clf:2                     one version, pinned
    a,b@exp4                  two models, exp4 choosing among them
    a,b@exp3:eta=0.2,gamma=0.1
    clf:1,clf:2@split:clf:1=90,clf:2=10     split: KEY=VALUE naming an arm is its weight
    a,b@exp4:loss=squared

``@`` cannot be part of a name, so everything after it is the policy; ``:`` after the
policy starts its settings. For ``split`` every setting but ``loss`` is an arm's weight.
Anything the syntax cannot say goes in a JSON file instead (``--file``): a list of
stages in any shape ``Connection.set_app_pipeline`` takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

from admin._pipelines import describe
from admin.cli import _managers as managers
from admin.cli._tables import table, to_json
from admin.exceptions import InvalidRequestError

SYNTAX: Final = (
    "MODEL[:VERSION][,MODEL[:VERSION]...][@POLICY[:KEY=VALUE,...]], e.g. feat, clf:2, "
    "a,b@exp4, a,b@exp3:eta=0.2, clf:1,clf:2@split:clf:1=90,clf:2=10"
)
# Settings of a split stage that are not an arm's weight.
_SPLIT_SETTINGS: Final = ("loss",)


def stage_spec(text: str) -> dict[str, Any]:
    """One STAGE of the command line as the API's stage (checked further by the client)."""
    arms_text, at, policy_text = text.strip().partition("@")
    arms = [arm.strip() for arm in arms_text.split(",")]
    if not all(arms):
        raise argparse.ArgumentTypeError(f"{text!r}: name each arm, as {SYNTAX}")
    if not at:
        return {"arms": arms}
    policy, colon, settings_text = policy_text.partition(":")
    if not policy.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: name the policy after '@' (split, exp3 or exp4), as {SYNTAX}"
        )
    settings: dict[str, Any] = {}
    for item in settings_text.split(",") if colon else []:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {item!r} is not KEY=VALUE; the policy's settings are "
                f"comma-separated KEY=VALUE, as {SYNTAX}"
            )
        if key in settings:
            raise argparse.ArgumentTypeError(f"{text!r}: {key!r} is given twice")
        settings[key] = _json_or_text(raw.strip())
    stage: dict[str, Any] = {"arms": arms, "policy": policy.strip()}
    if stage["policy"] == "split":
        weights = {k: v for k, v in settings.items() if k not in _SPLIT_SETTINGS}
        settings = {k: v for k, v in settings.items() if k in _SPLIT_SETTINGS}
        if weights:
            settings["weights"] = weights
    stage["policy_params"] = settings
    return stage


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def read_stages_file(path: str) -> list[Any]:
    """The JSON list of stages in ``path`` (``-``: stdin)."""
    where = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(f"--file {where}: cannot read it: {exc}") from exc
    try:
        stages = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"--file {where}: not JSON ({exc})") from exc
    if isinstance(stages, dict) and "stages" in stages:  # what `schooner pipeline --json` prints
        stages = stages["stages"]
    if not isinstance(stages, list):
        raise InvalidRequestError(
            f"--file {where}: expected a JSON list of stages (or an object with 'stages'), "
            f'e.g. ["feat", {{"arms": ["a", "b"], "policy": "exp4"}}]'
        )
    return stages


def cmd_set_pipeline(args: argparse.Namespace) -> int:
    stages = read_stages_file(args.file) if args.file else list(args.stages)
    with managers.connect(args) as conn:
        app = conn.set_app_pipeline(args.app, stages, reset_state=args.reset_state)
    print(f"{args.app}: {describe(app.get('pipeline') or stages)}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        stages = conn.get_app_pipeline(args.app)
    if args.json:
        print(to_json({"app": args.app, "stages": stages}))
        return 0
    print(f"{args.app}: {describe(stages)}\n")
    rows = [
        {
            "stage": number,
            "arms": ",".join(stage.get("arms") or []),
            "policy": stage.get("policy"),
            "policy_params": stage.get("policy_params") or None,
        }
        for number, stage in enumerate(stages, start=1)
    ]
    print(table(rows, ["stage", "arms", "policy", "policy_params"]))
    return 0


EXAMPLES: Final = """examples:
  schooner set-pipeline reviews embed clf            embed's outputs go to clf
  schooner set-pipeline reviews embed:3 clf:1,clf:2@split:clf:1=90,clf:2=10
  schooner set-pipeline reviews embed a,b@exp4:eta=0.2 rerank
  schooner set-pipeline reviews clf                  back to one stage (an ordinary app)
  schooner pipeline reviews --json > stages.json; schooner set-pipeline reviews --file stages.json

Stages are numbered from 1; stage 1 is the app's links (link/unlink change it), and
`schooner set-policy APP POLICY --stage N` changes one stage's policy alone."""


def add_arguments(set_pipeline: argparse.ArgumentParser, pipeline: argparse.ArgumentParser) -> None:
    set_pipeline.epilog = EXAMPLES
    set_pipeline.formatter_class = argparse.RawDescriptionHelpFormatter
    set_pipeline.add_argument("app", help="the application's name")
    set_pipeline.add_argument(
        "stages",
        nargs="*",
        type=stage_spec,
        metavar="STAGE",
        help=f"the stages in order, each {SYNTAX}; '@' starts the policy, which picks "
        "among a stage's arms (single by default, for one arm); for split each "
        "ARM=WEIGHT is a weight. One stage makes the app an ordinary one again",
    )
    set_pipeline.add_argument(
        "--file",
        metavar="FILE",
        help="read the stages from a JSON file instead ('-': stdin): a list of "
        '"model", "model:version", or {"arms": [...], "policy": ..., "policy_params": '
        "{...}} (what `schooner pipeline APP --json` prints is taken too)",
    )
    set_pipeline.add_argument(
        "--reset-state",
        action="store_true",
        help="forget what every stage's policy learned, even where its name stays the same",
    )
    pipeline.add_argument("app", help="the application's name")


def usage_problem(args: argparse.Namespace) -> str | None:
    if args.command != "set-pipeline":
        return None
    if args.file and args.stages:
        return "give the stages on the command line or in --file, not both"
    if not args.file and not args.stages:
        return f"name at least one STAGE ({SYNTAX}), or pass --file"
    return None

"""`tfx-canary rollout ...` handlers driven through argparse."""

import argparse
import json

import pytest

from rollout import audit
from rollout import cli
from rollout import control
from rollout.errors import RolloutError

from tests.rollout.conftest import snapshot_tree


def run(argv):
    """Parse argv like the top-level CLI and call the handler."""
    parser = argparse.ArgumentParser(prog="tfx-canary")
    cli.add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def staged_root(serving_root, make_model):
    controller = control.RolloutController(
        serving_root, "taxi", storage_uri_prefix="gs://b/s")
    controller.stage(make_model())
    controller.stage(make_model(), canary_percent=10)
    return serving_root


@pytest.fixture(autouse=True)
def no_default_metadata(tmp_path, monkeypatch):
    # The default ./workspace/metadata.sqlite is relative to the cwd.
    monkeypatch.chdir(tmp_path)


def test_status_table_and_json(staged_root, capsys):
    assert run(["rollout", "status", "--serving-root", staged_root]) == 0
    out = capsys.readouterr().out
    assert "taxi (phase: canary)" in out
    assert "v1  90% of traffic" in out and "v2  10% of traffic" in out
    assert run(["rollout", "status", "--serving-root", staged_root,
                "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["canary_version"] == 2 and status["in_sync"]


def test_set_traffic_prints_before_and_after(staged_root, capsys):
    assert run(["rollout", "set-traffic", "25%", "--serving-root",
                staged_root, "--reason", "ramp"]) == 0
    out = capsys.readouterr().out
    assert "before: stable v1 (90%), canary v2 (10%)" in out
    assert "after:  stable v1 (75%), canary v2 (25%)" in out
    # TF Serving has no traffic split; only the KServe manifest changes.
    assert "wrote:  rollout.json, kserve/inferenceservice.yaml" in out
    assert "unchanged: models.config" in out
    status = control.RolloutController(staged_root, "taxi").status()
    assert status.canary_traffic_percent == 25
    assert status.last_event["reason"] == "ramp"


@pytest.mark.parametrize("percent", ["-1", "101", "abc", "12.5"])
def test_bad_percent_is_a_clear_error_and_changes_nothing(
        staged_root, percent):
    before = snapshot_tree(staged_root)
    with pytest.raises(RolloutError) as info:
        run(["rollout", "set-traffic", percent, "--serving-root",
             staged_root])
    assert "PERCENT must be a whole number from 0 to 100" in str(info.value)
    assert repr(percent) in str(info.value)
    assert snapshot_tree(staged_root) == before


def test_promote_then_rollback_to(staged_root, capsys):
    assert run(["rollout", "promote", "--serving-root", staged_root]) == 0
    assert "after:  stable v2 (100%), no canary" in capsys.readouterr().out
    assert run(["rollout", "rollback", "--to", "1", "--serving-root",
                staged_root]) == 0
    assert "after:  stable v1 (100%), no canary" in capsys.readouterr().out


def test_rollback_errors_explain_what_to_do(staged_root):
    run(["rollout", "rollback", "--serving-root", staged_root])
    with pytest.raises(RolloutError) as info:
        run(["rollout", "rollback", "--serving-root", staged_root])
    assert "--to VERSION" in str(info.value) and "1, 2" in str(info.value)
    with pytest.raises(RolloutError, match="not staged.*1, 2"):
        run(["rollout", "rollback", "--to", "5", "--serving-root",
             staged_root])
    with pytest.raises(RolloutError, match="--to must be a version"):
        run(["rollout", "rollback", "--to", "latest", "--serving-root",
             staged_root])


def test_explicit_missing_metadata_path_is_rejected(staged_root, tmp_path):
    with pytest.raises(RolloutError, match="--metadata-path"):
        run(["rollout", "promote", "--serving-root", staged_root,
             "--metadata-path", str(tmp_path / "typo.sqlite")])
    assert not (tmp_path / "typo.sqlite").exists()


def test_default_metadata_store_is_used_when_present(staged_root, tmp_path):
    (tmp_path / "workspace").mkdir()
    config = audit.sqlite_connection_config(
        str(tmp_path / "workspace" / "metadata.sqlite"))
    audit.connect(config)  # creates the store, as the pipeline would
    run(["rollout", "promote", "--serving-root", staged_root,
         "--reason", "ship it"])
    rows = audit.transitions(audit.connect(config), "taxi")
    # Earlier events are back-filled, then the promotion itself.
    assert [r["event"] for r in rows] == [
        "staged_stable", "staged_canary", "promoted"]
    assert rows[-1]["reason"] == "ship it"


def test_repair_subcommand(staged_root, capsys):
    controller = control.RolloutController(staged_root, "taxi")
    with open(controller.models_config_path, "w") as handle:
        handle.write("")
    run(["rollout", "repair", "--serving-root", staged_root])
    assert "models.config: rewritten" in capsys.readouterr().out
    assert controller.status().in_sync


def test_help_texts_exist(capsys):
    for argv in (["rollout", "--help"], ["rollout", "set-traffic", "--help"],
                 ["rollout", "rollback", "--help"]):
        with pytest.raises(SystemExit) as info:
            run(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "PERCENT" in out and "--to VERSION" in out
    assert "--serving-root" in out

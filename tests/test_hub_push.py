"""multiverse push: an allow-list of files, training state refused, --dry-run offline, the Hub's own errors."""

import json
import os
import socket
import time

import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects
from typer.testing import CliRunner

from multiverse.cli import app
from multiverse.hub_cards.loading import resolve_model_path

CANARY = "hf_CANARYtoken0123456789"
SECRETS = ("training_args.bin", ".env", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
           "checkpoint-")


@pytest.fixture(scope="module")
def trained(tiny_model, tokenizer, tmp_path_factory):
    """A `multiverse train` output folder as a Trainer leaves it, secrets included."""
    folder = tmp_path_factory.mktemp("run")
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "training_args.bin").write_text(f"hub_token={CANARY}")
    (folder / ".env").write_text(f"HF_TOKEN={CANARY}\n")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": [{"loss": 1.0}]}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# run\n")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (folder / "checkpoint-2").mkdir(exist_ok=True)
        (folder / "checkpoint-2" / name).write_text("state")
    return folder


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "mv"
    result = CliRunner().invoke(app, ["export", str(trained), str(out), "--repo-id", "someone/mv-tiny", "--no-verify"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def no_hub(monkeypatch):
    """Any call to the Hub fails the test; records none."""
    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was called")

    for name in ("create_repo", "upload_folder", "whoami", "create_commit"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, refuse)


def listed(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.startswith("  ")]


def test_dry_run_refuses_a_training_output_and_names_the_export_command(trained, no_hub):
    result = CliRunner().invoke(app, ["push", str(trained), "someone/mv-tiny", "--dry-run"])
    assert result.exit_code == 1, result.output
    assert "holds training state" in result.output and "multiverse export" in result.output
    assert listed(result.output) == []  # nothing is offered for upload
    assert CANARY not in result.output


def test_dry_run_of_the_export_lists_the_allowed_files_only(trained, exported, no_hub):
    (exported / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["push", str(exported), "someone/mv-tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    files = listed(result.output)
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md",
            "modeling_multiverse.py"} <= set(files)
    assert not [f for f in files if any(s in f for s in SECRETS)], files
    assert "notes.txt" not in files  # not on the allow-list
    # Every file listed is in the export, and nothing of the training run came along.
    assert all((exported / f).is_file() for f in files)
    assert not any(CANARY in (exported / f).read_text(errors="ignore") for f in files)


def test_push_uploads_exactly_the_dry_run_list_plus_included_files(exported, monkeypatch):
    calls = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault(
        "token", self.token))

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, **kwargs):
        # What huggingface_hub itself would send with these patterns.
        paths = [p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file()]
        calls["sent"] = sorted(filter_repo_objects(paths, allow_patterns=allow_patterns))
        return "https://hub.example/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    (exported / "notes.txt").write_text("mine")
    (exported / "logs").mkdir(exist_ok=True)
    (exported / "logs" / "events.txt").write_text("tensorboard")
    args = ["push", str(exported), "someone/mv-tiny", "--include", "notes.txt", "--token", CANARY]
    planned = listed(CliRunner().invoke(app, [*args, "--dry-run"]).output)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls["sent"] == planned and "notes.txt" in planned and "logs/events.txt" not in planned
    assert calls["token"] == CANARY and CANARY not in result.output


def test_include_cannot_name_training_state(exported, no_hub):
    (exported / "optimizer.pt").write_text("state")
    try:
        result = CliRunner().invoke(app, ["push", str(exported), "someone/mv-tiny", "--include", "*.pt", "--dry-run"])
    finally:
        (exported / "optimizer.pt").unlink()
    assert result.exit_code == 1 and "optimizer.pt" in result.output and "multiverse export" in result.output


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: connecting to it is refused


@pytest.mark.parametrize("setting, reason", [
    ("HF_HUB_OFFLINE", "offline mode is on"),
    ("ENDPOINT", "cannot reach the Hub (ConnectError"),
])
def test_push_learns_the_hub_is_unreachable_from_huggingface_hub(exported, monkeypatch, setting, reason):
    # huggingface_hub reads its environment once, at import: set its constants as the variables would.
    if setting == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["push", str(exported), "someone/mv-tiny", "--token", CANARY])
    assert result.exit_code == 2, result.output
    assert "the Hub is unreachable" in result.output and reason in result.output
    assert "Nothing was uploaded" in result.output and CANARY not in result.output
    assert time.perf_counter() - start < 5


def test_push_source_has_no_probe_of_its_own():
    import multiverse.hub_cards.push as push

    source = open(push.__file__, encoding="utf-8").read()
    assert "socket" not in source and "getaddrinfo" not in source


@pytest.mark.parametrize("bad", ["not a repo", "a/b/c"])
def test_repo_ids_are_validated(trained, tmp_path, bad, no_hub):
    for args in (["export", str(trained), str(tmp_path / "out"), "--repo-id", bad, "--no-verify"],
                 ["push", str(trained), bad, "--dry-run"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and f"repo_id={bad!r} is not a Hub id" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_card_snippet_loads_the_absolute_folder_without_a_repo_id(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", str(trained), "rel-out", "--no-verify"])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "rel-out" / "README.md").read_text()
    assert f"model_id = {json.dumps(str((tmp_path / 'rel-out').resolve()))}" in card


def test_an_export_whose_card_loads_another_id_is_not_pushed_as_is(trained, tmp_path, no_hub):
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["export", str(trained), str(out), "--no-verify"]).exit_code == 0
    result = CliRunner().invoke(app, ["push", str(out), "someone/mv-tiny", "--dry-run"])
    assert result.exit_code == 1 and f"loads {str(out.resolve())!r}, not 'someone/mv-tiny'" in result.output
    assert "--repo-id someone/mv-tiny" in result.output


@pytest.mark.parametrize("name", ["./no-such-model", "../no/such", "~/no-such-model-xyz", "/no/such/model",
                                  "a/b/c", "my model"])
def test_a_local_looking_path_that_does_not_exist_is_no_such_folder(name, monkeypatch):
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda *a, **k: pytest.fail("looked up the Hub"))
    with pytest.raises(FileNotFoundError, match=f"no such folder: {name}"):
        resolve_model_path(name)
    result = CliRunner().invoke(app, ["convert", name, "out"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: BASE: no such folder: {name} (from {os.getcwd()}) "
                                                  "(multiverse --debug ... shows the traceback)"]


def test_debug_shows_the_exception(monkeypatch):
    result = CliRunner().invoke(app, ["--debug", "convert", "./no-such-model", "out"])
    assert result.exit_code == 1 and isinstance(result.exception, FileNotFoundError)


def test_hub_ids_and_folders_resolve(tmp_path, monkeypatch):
    assert resolve_model_path(tmp_path) == str(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert resolve_model_path("someone/model") == "someone/model"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="'someone/model' is not a local folder, and the Hub is offline"):
        resolve_model_path("someone/model", "--model_name_or_path")

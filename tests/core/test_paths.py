from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError, ModelError
from core.paths import ModelPaths, read_extra_model_paths


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_list_merges_folders_recursively_sorted_and_filters_extensions(tmp_path: Path) -> None:
    touch(tmp_path / "models/checkpoints/b.safetensors")
    touch(tmp_path / "models/checkpoints/sub/a.ckpt")
    touch(tmp_path / "models/checkpoints/readme.txt")
    touch(tmp_path / "extra/c.safetensors")
    paths = ModelPaths(tmp_path / "models", {"checkpoints": [tmp_path / "extra"]})
    assert paths.list("checkpoints") == ["b.safetensors", "c.safetensors", "sub/a.ckpt"]
    assert paths.list("loras") == []


def test_legacy_aliases_and_multi_folder_kinds(tmp_path: Path) -> None:
    touch(tmp_path / "models/clip/old.safetensors")
    touch(tmp_path / "models/text_encoders/new.safetensors")
    touch(tmp_path / "models/t2i_adapter/adapter.pth")
    paths = ModelPaths(tmp_path / "models")
    assert paths.list("clip") == paths.list("text_encoders") == ["new.safetensors", "old.safetensors"]
    assert paths.list("controlnet") == ["adapter.pth"]


def test_resolve_refuses_escapes(tmp_path: Path) -> None:
    ckpt = touch(tmp_path / "models/checkpoints/sub/model.safetensors")
    touch(tmp_path / "models/secret.safetensors")
    paths = ModelPaths(tmp_path / "models")
    assert paths.resolve("checkpoints", "sub/model.safetensors") == ckpt.resolve()
    for name in ("../secret.safetensors", str(tmp_path / "models/secret.safetensors"), "", "a\x00b"):
        with pytest.raises(ModelError):
            paths.resolve("checkpoints", name)
    with pytest.raises(ModelError, match="not found; looked in"):
        paths.resolve("checkpoints", "missing.safetensors")
    with pytest.raises(ModelError, match="unknown model folder kind 'nope'"):
        paths.folders("nope")


def test_extra_model_paths_yaml(tmp_path: Path) -> None:
    yaml_file = tmp_path / "conf" / "extra_model_paths.yaml"
    yaml_file.parent.mkdir()
    yaml_file.write_text(
        "comfyui:\n"
        "  base_path: ../shared\n"
        "  is_default: true\n"
        "  checkpoints: models/checkpoints\n"
        "  loras: |\n"
        "    models/loras\n"
        "    other/loras\n"
        "testing:\n"
        "  custom_nodes: testing_nodes\n"
    )
    pairs = read_extra_model_paths(yaml_file)
    shared = tmp_path / "conf" / "../shared"
    assert pairs == [
        ("checkpoints", shared / "models/checkpoints"),
        ("loras", shared / "models/loras"),
        ("loras", shared / "other/loras"),
        ("custom_nodes", tmp_path / "conf" / "testing_nodes"),
    ]
    paths = ModelPaths.from_config(tmp_path / "models", [yaml_file])
    assert paths.folders("loras")[1:] == [shared / "models/loras", shared / "other/loras"]
    assert paths.custom_nodes_dirs == [tmp_path / "conf" / "testing_nodes"]


def test_bad_yaml_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        read_extra_model_paths(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_extra_model_paths(tmp_path / "missing.yaml")


def test_symlinked_model_files_resolve_but_names_cannot_escape(tmp_path: Path) -> None:
    elsewhere = touch(tmp_path / "big_disk" / "model.safetensors")
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "linked.safetensors").symlink_to(elsewhere)
    paths = ModelPaths(tmp_path / "models")
    assert paths.list("checkpoints") == ["linked.safetensors"]
    assert paths.resolve("checkpoints", "linked.safetensors").resolve() == elsewhere.resolve()
    with pytest.raises(ModelError):
        paths.resolve("checkpoints", "../../big_disk/model.safetensors")

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config


def test_defaults_match_comfyui() -> None:
    config = Config.from_args([], base_dir=Path("/srv/loom"))
    assert config.command == "serve"
    assert (config.listen, config.port) == ("127.0.0.1", 8188)
    assert config.cache.kind == "classic"
    assert config.output_path == Path("/srv/loom/output")
    assert config.models_path == Path("/srv/loom/models")
    assert config.all_custom_nodes_dirs == (Path("/srv/loom/custom_nodes"),)
    assert config.preview_method == "none"


def test_comfyui_flag_names_are_accepted(tmp_path: Path) -> None:
    argv = [
        "--output-directory", str(tmp_path / "out"), "--input-directory", str(tmp_path / "in"),
        "--temp-directory", str(tmp_path / "t"), "--user-directory", str(tmp_path / "u"),
        "--listen", "--port", "8190", "--cpu", "--extra-model-paths-config", "a.yaml", "b.yaml",
        "--disable-all-custom-nodes", "--preview-method", "auto", "--enable-cors-header",
        "--max-upload-size", "5", "--lowvram", "--reserve-vram", "1.5", "--use-pytorch-cross-attention",
    ]  # fmt: skip
    config = Config.from_args(argv, base_dir=tmp_path)
    assert config.output_path == tmp_path / "out"
    assert config.input_path == tmp_path / "in"
    assert config.temp_path == tmp_path / "t"
    assert config.user_path == tmp_path / "u"
    assert config.listen == "0.0.0.0,::"  # bare --listen, as ComfyUI
    assert config.port == 8190
    assert config.cpu and config.disable_custom_nodes
    assert [p.name for p in config.extra_model_paths] == ["a.yaml", "b.yaml"]
    assert config.enable_cors_header == "*"
    assert config.max_upload_size_mb == 5
    assert config.engine == {"lowvram": True, "reserve_vram": "1.5", "use_pytorch_cross_attention": True}


def test_loom_flag_names_and_repeatable_custom_node_dirs(tmp_path: Path) -> None:
    config = Config.from_args(
        [
            "run",
            "wf.json",
            "--output-dir",
            "o",
            "--models-dir",
            "m",
            "--custom-nodes-dir",
            "a",
            "--custom-nodes-dir",
            "b",
        ],
        base_dir=tmp_path,
    )
    assert config.command == "run"
    assert config.workflow is not None and config.workflow.name == "wf.json"
    assert config.output_path.name == "o" and config.models_path.name == "m"
    assert [p.name for p in config.all_custom_nodes_dirs] == ["custom_nodes", "a", "b"]


@pytest.mark.parametrize(
    ("argv", "kind", "detail"),
    [
        (["--cache-lru", "100"], "lru", 100),
        (["--cache-lru", "0"], "classic", 0),
        (["--cache-classic"], "classic", 0),
        (["--cache-ram"], "ram", 4.0),
        (["--cache-ram", "2.5"], "ram", 2.5),
        (["--cache-none"], "none", 0),
    ],
)
def test_cache_flags(argv: list[str], kind: str, detail: float) -> None:
    cache = Config.from_args(argv).cache
    assert cache.kind == kind
    assert detail in (cache.lru_size, cache.ram_gb)


def test_cache_flags_are_exclusive_and_bad_values_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        Config.from_args(["--cache-none", "--cache-lru", "5"])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        Config.from_args(["--cache-lru", "-1"])
    assert "must be >= 0" in capsys.readouterr().err


def test_run_needs_a_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        Config.from_args(["run"])
    assert "workflow" in capsys.readouterr().err


def test_importing_config_does_no_work() -> None:
    # Importing must not parse argv: a fresh interpreter with junk argv imports it cleanly.
    import subprocess
    import sys

    code = "import sys; sys.argv=['x','--bogus']; import core.config, core.paths, core.spec; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "ok", out.stderr

"""The command line: which params a command runs with, and usage errors."""

import json

import pytest

from telemetry_lab import AnalysisParams, cli

from conftest import fleet_channels, write_telemetry


@pytest.fixture
def small(tmp_path):
    path = write_telemetry(tmp_path / "f.parquet", fleet_channels(3000))
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"preset": "seed", "window": 100, "welch_nperseg": 256,
                                  "z_threshold": 6.5}))
    return path, str(params)


def analysed_params(tmp_path, *args) -> dict:
    out = tmp_path / "doc.json"
    assert cli.main(["analyse", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())["params"]


def test_params_file_then_preset_then_environment_then_default(tmp_path, small, monkeypatch):
    path, params_file = small
    tiny_seed = AnalysisParams.preset("seed").replace(window=100, welch_nperseg=256)
    assert analysed_params(tmp_path, path, "--params", params_file)["z_threshold"] == 6.5
    monkeypatch.setenv("TELEMETRY_LAB_PARAMS", params_file)
    assert analysed_params(tmp_path, path)["z_threshold"] == 6.5
    # A preset named on the command line wins over the environment's file.
    assert analysed_params(tmp_path, path, "--preset", "seed") == AnalysisParams.preset("seed").to_dict()
    monkeypatch.delenv("TELEMETRY_LAB_PARAMS")
    assert analysed_params(tmp_path, path) == AnalysisParams.preset("default").to_dict()
    assert tiny_seed.z_threshold != 6.5  # the file's value is not a preset's


@pytest.mark.parametrize("args", [["--preset", "seed", "--params", "p.json"],
                                  ["--preset", "fastest"]])
def test_conflicting_or_unknown_choices_are_usage_errors(small, args, capsys):
    path, _ = small
    with pytest.raises(SystemExit) as info:
        cli.main(["analyse", path, *args])
    assert info.value.code == 2
    assert "--preset" in capsys.readouterr().err


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "exit codes: 0 OK" in text and "5 bad params" in text and ":mod:" not in text


def test_an_empty_params_flag_is_an_error_not_the_environment(small, monkeypatch, capsys):
    path, params_file = small
    monkeypatch.setenv("TELEMETRY_LAB_PARAMS", params_file)
    assert cli.main(["analyse", path, "--params", ""]) == 5
    assert "--params names no file" in capsys.readouterr().err

import pytest

from telemetry_lab import AnalysisParams
from telemetry_lab.errors import ParamsError
from telemetry_lab.params import PRESETS


def test_seed_preset_is_the_original_method():
    p = AnalysisParams.preset("seed")
    assert (p.detector, p.window, p.z_threshold, p.variance_floor, p.welch_nperseg) == (
        "zscore", 1000, 4.0, 1e-9, 8192)
    assert (p.min_event_samples, p.merge_gap_samples) == (1, 0)
    assert p.preset_name == "seed"


def test_default_constructor_is_the_default_preset():
    assert AnalysisParams() == AnalysisParams.preset("default")
    assert set(PRESETS) >= {"default", "seed"}


@pytest.mark.parametrize("field,value,quoted", [
    ("window", 0, "window=0"),
    ("window", 10.5, "window=10.5"),
    ("z_threshold", -1.0, "z_threshold=-1.0"),
    ("z_threshold", float("nan"), "z_threshold=nan"),
    ("welch_overlap", 1.0, "welch_overlap=1.0"),
    ("welch_overlap", 0.999999, "welch_overlap=0.999999"),
    ("detector", "magic", "detector='magic'"),
    ("welch_window", "triangle-ish", "welch_window='triangle-ish'"),
    ("channels", (), "channels=()"),
    ("chunk_rows", 1500, "chunk_rows=1500"),
    ("min_event_samples", True, "min_event_samples=True"),
    ("merge_gap_samples", 2**63 - 1, "merge_gap_samples=9223372036854775807"),
    ("window", 10**30, "window=1000000000000000000000000000000"),
    ("welch_nperseg", 2**40, "welch_nperseg=1099511627776 must be at most 4,194,304"),
    ("chunk_rows", 2**25, "chunk_rows=33554432 must be at most 16,777,216"),
    # The robust detector's reference holds `window` samples: it could never be scored.
    ("window", 199, "min_reference=200 must not exceed window=199"),
    ("min_reference", 5001, "min_reference=5001 must not exceed window=5000"),
])
def test_bad_values_are_rejected_with_the_value_quoted(field, value, quoted):
    with pytest.raises(ParamsError) as info:
        AnalysisParams().replace(**{field: value})
    assert quoted in str(info.value)


def test_unknown_preset_and_unknown_field():
    with pytest.raises(ParamsError, match="'nope'"):
        AnalysisParams.preset("nope")
    with pytest.raises(ParamsError, match="colour"):
        AnalysisParams().replace(colour="red")


def test_params_file_round_trip(tmp_path):
    p = AnalysisParams.preset("seed").replace(z_threshold=5.5, channels=("sensor_00", "sensor_09"))
    path = tmp_path / "p.json"
    p.save(str(path))
    assert AnalysisParams.load(str(path)) == p
    assert p.digest() == AnalysisParams.load(str(path)).digest()


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"window": "big"}', "window='big'"),
    ('{"preset": "nope"}', "'nope'"),
    ('{"windw": 5}', "windw"),
])
def test_bad_params_file_names_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ParamsError) as info:
        AnalysisParams.load(str(path))
    assert needle in str(info.value)
    assert str(path) in str(info.value)

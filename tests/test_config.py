"""Config: YAML + dotted overrides, errors naming the key path."""

from __future__ import annotations

import pytest

from raysys.cli import main
from raysys.config import ConfigError, load_config


def test_defaults_validate() -> None:
    cfg = load_config()
    assert cfg.data.views_per_modality == 2
    assert cfg.data.audio.channels == ["logmel", "logstft", "pcen"]


@pytest.mark.parametrize("name", ["demo", "recipe", "tiny"])
def test_shipped_configs_load_with_the_measured_defaults(name: str) -> None:
    """docs/learning.md's findings are what a config inherits: eq, a crop per view, and with
    several modalities a cross head that sends no gradient into the encoders."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    audio = cfg.data.augment.audio
    assert audio.eq_p == 1.0 and audio.crop_shared is False
    assert audio.eq_tilt_db == (-5.0, 5.0) and audio.eq_peak_db == (-12.0, 12.0)
    assert cfg.model.cross_head is True and cfg.model.cross_backprop == 0.0
    single = load_config(path, ["data.modalities=[audio]", "data.views_per_modality=4"])
    assert single.model.cross_head is False


def test_yaml_and_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\ndata:\n  batch_size: 8\n  audio:\n    n_bins: 32\n")
    cfg = load_config(path, ["data.batch_size=16", "data.modalities=[audio, image]"])
    assert cfg.seed == 3
    assert cfg.data.batch_size == 16  # override wins over the file
    assert cfg.data.audio.n_bins == 32
    assert cfg.data.modalities == ["audio", "image"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.batch_size=0", "data.batch_size: Input should be greater than or equal to 1"),
        ("data.batchsize=4", "data.batchsize: unknown key"),
        ("data.audio.channels=[mfcc]", "data.audio.channels.0:"),
        ("data.modalities=[]", "data.modalities"),
        ("data.augment.audio.gain_p=1.5", "data.augment.audio.gain_p"),
        ("nosuch.key=1", "nosuch: unknown key"),
    ],
)
def test_errors_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_malformed_override_and_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["data.batch_size"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ["seed=1", "seed.x=1"])
    with pytest.raises(ConfigError, match="seed: Input should be a valid integer"):
        load_config(None, ["seed.x=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_cli_reports_config_error(capsys) -> None:
    assert main(["config", "show", "data.batch_size=-1"]) == 2
    assert "data.batch_size" in capsys.readouterr().err
    assert main(["config", "show", "data.batch_size=7"]) == 0
    assert "batch_size: 7" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["objective.loev.enabled=true", "objective.loev.augmentations=[pitch_shift]"],
         "objective.loev.augmentations: 'pitch_shift' has no head"),
        (["objective.loev.enabled=true", "objective.loev.augmentations=[pitch_shift]",
          "model.loev_heads=[pitch_shift]", "data.modalities=[image]"],
         "is not recorded by data.modalities"),
        (["objective.loev.enabled=true", "objective.loev.augmentations=[pitch_shift]",
          "model.loev_heads=[pitch_shift]", "data.modalities=[audio]"],
         r"2 views per entity .* no contrast between a clip and its augmented self"),
        (["objective.cola=true"], "objective.cola needs model.cola"),
        (["objective.mode=anchor", "objective.anchor_modality=tabular",
          "data.modalities=[audio, image]"], "objective.anchor_modality 'tabular'"),
    ],
)
def test_sections_must_agree(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_loev_on_one_modality_needs_three_views() -> None:
    """With 3 views a head-k row can hold a positive and its own clip with k applied."""
    loev = ["objective.loev.enabled=true", "objective.loev.augmentations=[pitch_shift]",
            "model.loev_heads=[pitch_shift]"]
    assert load_config(None, [*loev, "data.modalities=[audio]",
                              "data.views_per_modality=3"]).data.views_per_modality == 3
    assert load_config(None, [*loev, "data.modalities=[audio, image]"]).objective.loev.enabled


def test_a_saved_config_with_retired_keys_still_loads(tmp_path) -> None:
    """Runs written before a key was removed keep loading (resume, evaluate); a retired key
    set to anything but its old default is refused, saying why."""
    import yaml

    from raysys.config import dump_config

    tree = yaml.safe_load(dump_config(load_config(None)))
    tree["eval"].update(test_fraction=0.25, few_shot_heads=["prototype"], neighbours_k=10,
                        probe_modality="audio")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(tree))
    assert load_config(tmp_path / "old.yaml").model_dump() == load_config(None).model_dump()
    tree["eval"]["test_fraction"] = 0.4
    (tmp_path / "set.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"eval\.test_fraction: this key was removed \(the "
                                          r"in-training evaluation predicts"):
        load_config(tmp_path / "set.yaml")

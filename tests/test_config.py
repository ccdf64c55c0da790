"""The typed Config: defaults validate, YAML + --key=value overrides, errors name the key."""
import dataclasses

import pytest
import yaml

from lsdc.core.config import (CONFIG_FILENAME, Config, CropSpec, LoaderConfig, LocalizerConfig, ModelConfig,
                              PredictConfig, PreprocessConfig, TrainConfig)
from lsdc.core.overrides import _LEAVES, config_from_dict, field_docs, load_config, resolve_key, section_help
from lsdc.core.errors import InputError


def test_defaults_are_the_seed_recipe():
    cfg = Config()
    assert cfg.model.backbone == "tf_efficientnetv2_s" and cfg.model.pretrained is False
    assert cfg.train.class_weights == (1.0, 2.0, 4.0)
    assert (cfg.train.lr, cfg.train.backbone_lr, cfg.train.batch_size) == (1e-4, 1e-5, 12)
    spec = cfg.preprocess.sagittal_t2
    assert spec.store_slices == spec.slices + 2 * spec.slice_margin == 11
    assert spec.store_px >= spec.out_px and spec.store_px % 2 == spec.out_px % 2
    assert spec.store_mm == pytest.approx(spec.crop_mm * spec.store_px / spec.out_px)


def test_overrides_by_unique_name_and_dotted_path(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text(yaml.safe_dump({"train": {"epochs": 3, "lr": 0.001}, "backbone": "test_resnet"}))
    cfg = load_config(f, ["--epochs=5", "--preprocess.axial_t2.crop_mm=50", "--class_weights=[1,4,6]",
                          "--backend=torch", "--pretrained=true"])
    assert cfg.train.epochs == 5  # command line beats file
    assert cfg.train.lr == 0.001  # file beats default
    assert cfg.model.backbone == "test_resnet"
    assert cfg.preprocess.axial_t2.crop_mm == 50.0 and cfg.preprocess.sagittal_t2.crop_mm == 40.0
    assert cfg.train.class_weights == (1.0, 4.0, 6.0)
    assert cfg.loader.backend == "torch" and cfg.model.pretrained is True


def test_one_field_of_a_view_keeps_that_views_other_defaults():
    """Overriding out_px of the axial view must not reset its crop_mm (45) to the CropSpec class
    default (40); the other views and sections stay at their defaults."""
    default = Config().preprocess
    cfg = load_config(None, ["--preprocess.axial_t2.out_px=64", "--preprocess.sagittal_t1.slices=5"])
    assert default.axial_t2.crop_mm == 45.0 and default.sagittal_t1.crop_mm == 40.0
    assert cfg.preprocess.axial_t2.crop_mm == 45.0 and cfg.preprocess.axial_t2.out_px == 64
    assert cfg.preprocess.sagittal_t1.slices == 5 and cfg.preprocess.sagittal_t1.out_px == default.sagittal_t1.out_px
    assert cfg.preprocess.sagittal_t2 == default.sagittal_t2 and cfg.train == Config().train


def test_exponent_without_dot_is_a_number():
    assert load_config(None, ["--lr=1e-4", "--backbone_lr=3E-5"]).train.lr == 1e-4


def test_string_field_keeps_text():
    assert load_config(None, ["--backbone=123"]).model.backbone == "123"


@pytest.mark.parametrize("override, needle", [
    ("--no_such_key=1", "no_such_key"),
    ("--epochs=abc", "epochs"),
    ("--epochs=2.5", "epochs"),
    ("--pretrained=1", "pretrained"),
    ("--lr=fast", "lr"),
    ("--class_weights=[1,2]", "class_weights"),
    ("--backend=magic", "backend"),
    ("--crop_mm=30", "ambiguous"),
    ("--max_slice_shift=5", "max_slice_shift"),
    ("epochs", "--key=value"),
])
def test_bad_keys_and_types_name_the_key(override, needle):
    with pytest.raises(InputError, match=needle):
        load_config(None, [override])


def test_bad_yaml_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        load_config(f)
    f.write_text("train:\n  nope: 1\n")
    with pytest.raises(InputError, match="train.nope"):
        load_config(f)


def test_save_round_trip(tmp_path):
    cfg = load_config(None, ["--epochs=7", "--preprocess.sagittal_t1.slices=9"])
    path = cfg.save(tmp_path / "run")
    assert path.name == CONFIG_FILENAME
    back = config_from_dict(yaml.safe_load(path.read_text()))
    assert back == cfg


def test_resolve_key():
    assert resolve_key("lr") == ("train", "lr")
    assert resolve_key("preprocess.sagittal_t2.out_px") == ("preprocess", "sagittal_t2", "out_px")


def test_every_config_field_has_a_docstring():
    """`lsdc VERB -h` lists each field with its docstring, read from the source of lsdc.core.config."""
    docs = field_docs()
    for section in dataclasses.fields(Config):
        help_ = section_help(section.name)
        assert docs["Config"][section.name] in " ".join(help_.split())
    for path in _LEAVES:
        assert f"--{'.'.join(path)} (default " in section_help(path[0])
    for cls in (CropSpec, PreprocessConfig, LoaderConfig, ModelConfig, TrainConfig, LocalizerConfig, PredictConfig):
        missing = [f.name for f in dataclasses.fields(cls) if not docs[cls.__name__].get(f.name)]
        assert not missing, f"{cls.__name__}: no docstring for {missing}"

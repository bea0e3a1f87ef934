"""The path layout: every place a stage reads or writes, from params ``paths`` + ``data.name``."""

from pathlib import Path

import pytest

from components.settings import ConfigError, load_params
from components.layout import Layout
from conftest import settings

REPO = Path(__file__).resolve().parents[1]


def test_layout_names_every_place_from_params():
    lay = Layout.from_params({"paths": {"datasets": "d", "splits": "s", "models": "m", "metrics": "mt", "plots": "p",
                                        "reports": "r", "exports": "e", "lams": "l", "work": "w"},
                              "data": {"name": "neu"}})
    assert lay.dataset == Path("d/neu") and lay.split_file == Path("s/neu.json") and lay.lam_dir == Path("l/neu")
    assert lay.weights("dasc") == Path("m/dasc/weights/best.pt") and lay.train_info("dasc") == Path("m/dasc/train_info.json")
    assert lay.tuned("lagnet") == Path("m/tuned/lagnet.json") and lay.metrics_file("baseline") == Path("mt/baseline.json")
    assert lay.plots_dir("dasc") == Path("p/dasc") and lay.report_dir("dasc") == Path("r/dasc")
    assert lay.promotion == Path("r/promotion.json") and lay.export("dasc") == Path("e/dasc/best.onnx")
    assert lay.scratch("tune-dasc", "trial-3") == Path("w/tune-dasc/trial-3")


def test_layout_of_the_shipped_params_matches_dvc_yaml():
    """The files and folders dvc.yaml's stages depend on and write are the ones the layout names."""
    import re

    import yaml

    params = load_params(REPO / "params.yaml")
    lay = Layout.from_params(params)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    named = set()
    for st in stages.values():
        st = st.get("do", st)
        for kind in ("deps", "outs", "metrics", "plots"):
            for o in st.get(kind, []):
                o = o if isinstance(o, str) else next(iter(o))
                o = re.sub(r"\$\{paths\.(\w+)\}", lambda m: params["paths"][m.group(1)], o)
                named.add(o.replace("${data.name}", lay.data_name).replace("${key}", "baseline"))
    expected = [lay.dataset, lay.split_file, lay.lam_dir, lay.promotion, lay.model_dir("baseline"),
                lay.model_dir("dasc"), lay.weights("baseline"), lay.weights("lagnet"), lay.tuned("dasc"),
                lay.tuned("lagnet"), lay.metrics_file("baseline"), lay.plots_dir("baseline"),
                lay.report_dir("baseline"), lay.report_dir("lam")]
    missing = [str(x) for x in expected if x.as_posix() not in named]
    assert not missing, f"dvc.yaml does not name {missing}"


def test_layout_without_paths_says_which_key():
    with pytest.raises(ConfigError, match="paths"):
        Layout.from_params({"data": {"name": "x"}})


def test_a_partial_params_dict_serves_what_it_has_and_names_what_it_lacks():
    lay = Layout.from_params({"paths": {"datasets": "d"}, "data": {"name": "neu"}})
    assert lay.dataset == Path("d/neu")
    with pytest.raises(ConfigError, match="'paths.models'"):
        lay.weights("dasc")
    with pytest.raises(ConfigError, match="'data.name'"):
        Layout.from_params({"paths": {"datasets": "d"}}).dataset


def test_the_detector_catalogue_says_what_each_detector_is():
    from components.detectors import CATALOGUE, display_name, spec, uses_lam

    params = settings()
    assert list(CATALOGUE) == ["baseline", "dasc", "lagnet"]
    assert [display_name(m, params) for m in CATALOGUE] == ["YOLO11n", "DASC-YOLO-n", "LAGNet-s"]
    assert [spec(m).channels(params) for m in CATALOGUE] == [3, 3, 6] and uses_lam("lagnet", params)
    assert [spec(m).export(params) for m in CATALOGUE] == ["single", "single", "pipeline"]
    assert spec("dasc").paper == "dasc-yolo.md" and spec("lagnet").tune_space == "tune.space.lagnet"
    rgb = settings({"lagnet.lam": False})
    assert spec("lagnet").channels(rgb) == 3 and display_name("lagnet", rgb) == "LAGNet-s (RGB only)"
    with pytest.raises(ValueError, match="unknown model 'yolov5'"):
        spec("yolov5")

"""The orchestrators take one request object, or its fields as keywords (not both)."""

import json

import numpy as np
import pytest

from napari_any2reg.core.phantom import make_phantom
from napari_any2reg.pipeline.export import ExportRequest, export_registration
from napari_any2reg.pipeline.series import RegisterSettings, SeriesRequest, register_series

FAST = RegisterSettings(engine="groupwise", device="cpu", engine_options={"iterations_scale": 0.1})


@pytest.fixture(scope="module")
def molli():
    return make_phantom("molli", seed=2, shape=(32, 32)).sequence


def test_register_series_with_a_request_writes_what_the_keywords_write(tmp_path, molli):
    by_keywords = register_series(molli, tmp_path / "keywords", FAST, input_path="molli.tif", command=["any2reg", "x"])
    request = SeriesRequest(input_path="molli.tif", command=["any2reg", "x"])
    by_request = register_series(molli, tmp_path / "request", FAST, request)
    for outcome in (by_keywords, by_request):
        assert sorted(p.name for p in outcome.outdir.iterdir()) == ["displacement.npy", "metrics.json", "registered.tif"]
    metrics = [json.loads((o.outdir / "metrics.json").read_text()) for o in (by_keywords, by_request)]
    assert metrics[0]["input"] == metrics[1]["input"] == "molli.tif"
    np.testing.assert_array_equal(by_keywords.result.displacement, by_request.result.displacement)
    assert request.command == ("any2reg", "x")  # frozen: the caller's list is copied


def test_a_request_and_its_keywords_together_are_refused_before_any_work(tmp_path, molli):
    with pytest.raises(TypeError, match="either request= or overwrite"):
        register_series(molli, tmp_path / "out", FAST, SeriesRequest(), overwrite=True)
    with pytest.raises(TypeError, match="SeriesRequest"):
        register_series(molli, tmp_path / "out", FAST, {"overwrite": True})
    with pytest.raises(TypeError, match="either request= or items, report_format"):
        export_registration(tmp_path / "out", molli, np.zeros((molli.n_frames, 2, 32, 32), np.float32),
                            request=ExportRequest(), items="stack", report_format="pdf")
    assert not (tmp_path / "out").exists()


def test_export_with_a_request(tmp_path, molli):
    u = np.zeros((molli.n_frames, 2, 32, 32), np.float32)
    written = []
    request = ExportRequest(items=["stack", "displacement"], extra_files={"note.txt": lambda p: written.append(p.name) or p.write_text("x")})
    result = export_registration(tmp_path / "out", molli, u, request=request)
    assert result.items == ("stack", "displacement") and written == ["note.txt"]
    assert sorted(p.name for p in result.files) == ["displacement.json", "displacement.nii.gz", "displacement.npy",
                                                    "note.txt", "registered.tif"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_registration(tmp_path / "out", molli, u, request=request)
    export_registration(tmp_path / "out", molli, u, request=ExportRequest(items="stack", overwrite=True))

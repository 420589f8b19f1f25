import subprocess
import sys

import pytest
import torch

from pixelreg.errors import PixelregError
from pixelreg.io.checkpoints import FORMAT_VERSION, load_checkpoint, model_from_checkpoint, save_checkpoint
from pixelreg.nn.registry import build_model


class WritesAFile:
    """Unpickling this object would create a file: the classic malicious checkpoint."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _payload(model):
    return {"model": model.name, "model_args": {"height": 16, "width": 16}, "state_dict": model.state_dict()}


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = build_model("heatmap", height=16, width=16)
    path = save_checkpoint(tmp_path / "m.pt", _payload(model))
    loaded = model_from_checkpoint(load_checkpoint(path))
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {
            "format_version": 1,
            "model": "heatmap",
            "model_args": {},
            "state_dict": {},
            "evil": WritesAFile(str(marker)),
        },
        tmp_path / "evil.pt",
    )
    with pytest.raises(PixelregError, match="could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_newer_format_is_refused(tmp_path):
    model = build_model("heatmap", height=16, width=16)
    torch.save({**_payload(model), "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(PixelregError, match="upgrade pixelreg"):
        load_checkpoint(tmp_path / "new.pt")


def test_truncated_checkpoint_is_refused(tmp_path):
    model = build_model("cnn", height=16, width=16)
    path = save_checkpoint(tmp_path / "m.pt", _payload(model))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PixelregError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    cnn = build_model("cnn", height=16, width=16)
    path = save_checkpoint(tmp_path / "m.pt", {**_payload(cnn), "model": "heatmap"})
    with pytest.raises(PixelregError, match="do not fit"):
        model_from_checkpoint(load_checkpoint(path))


def test_a_damaged_pickle_inside_an_intact_archive_is_called_corrupt_not_dangerous(tmp_path):
    import zipfile

    model = build_model("heatmap", height=16, width=16)
    good = save_checkpoint(tmp_path / "m.pt", _payload(model))
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, data[: len(data) // 2] if item.filename.endswith("data.pkl") else data)
    with pytest.raises(PixelregError, match="truncated or corrupt"):
        load_checkpoint(damaged)


@pytest.mark.parametrize("camera", [True, False])
def test_the_header_says_what_the_loaded_model_is(tmp_path, checkpoint_of, camera):
    from pixelreg.io.checkpoint_header import ModelHeader
    from pixelreg.io.checkpoints import load_model

    path = checkpoint_of(tmp_path / "m.pt", camera=camera)
    header, (model, _) = ModelHeader.read(path), load_model(path)
    assert (header.model, header.points, header.counting) == (model.name, model.points, model.counting)
    assert header.camera == model.camera and (header.camera is not None) == camera


def test_the_header_is_read_without_torch(small_run):
    code = (
        "import sys\nfrom pixelreg.io.checkpoint_header import ModelHeader\n"
        f"header = ModelHeader.read({str(small_run / 'best.pt')!r})\n"
        "print(header.model, header.counting, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["heatmap", "False", "False"], done.stderr


def test_a_header_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    from pixelreg.io.checkpoint_header import ModelHeader

    marker = tmp_path / "pwned"
    payload = {"format_version": 1, "model": "heatmap", "model_args": {}, "state_dict": {}}
    torch.save({**payload, "evil": WritesAFile(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(PixelregError, match="could run code"):
        ModelHeader.read(tmp_path / "evil.pt")
    assert not marker.exists()

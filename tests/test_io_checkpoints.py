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

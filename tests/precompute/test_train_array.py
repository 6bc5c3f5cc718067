"""`python -m precompute train-array` refuses an array that is not the survey's images, in one line."""
import numpy as np

from precompute.__main__ import main


def test_train_array_names_a_channel_mismatch(tmp_path, capsys):
    np.save(tmp_path / "one_band.npy", np.zeros((8, 1, 40, 40), np.float32))
    assert main(["train-array", "--survey", "sdss", "--images", str(tmp_path / "one_band.npy"),
                 "--out", str(tmp_path / "enc"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "1 channels, but sdss images have 5 (u, g, r, i, z)" in err and not (tmp_path / "enc").exists()

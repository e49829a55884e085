"""Data sources through the public loader: folders (both layouts, archives, bad files), npz,
digits, and the errors a user gets for each kind of bad input."""
import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from kerasnets.pipelines import data


def _write_image(path, rng, size=12, channels=3, fmt="png"):
    pixels = rng.integers(0, 255, (size, size, channels), dtype=np.uint8)
    encoded = tf.io.encode_png(pixels) if fmt == "png" else tf.io.encode_jpeg(pixels)
    path.write_bytes(encoded.numpy())


def _folder(root, classes=("cat", "dog", "emu"), per_class=6, split=True, channels=3):
    rng = np.random.default_rng(0)
    for part in (("train", "test") if split else ("",)):
        for cls in classes:
            folder = root / part / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                _write_image(folder / f"{i}.{'png' if i % 2 else 'jpg'}", rng, channels=channels,
                             fmt="png" if i % 2 else "jpeg")
    return root


def test_split_folder_layout(tmp_path):
    d = data.load(f"imagefolder:{_folder(tmp_path)}", image_shape=(16, 16, None))
    assert d.classes == ["cat", "dog", "emu"] and (d.num_train, d.num_test) == (18, 18)
    x, y = next(iter(d.train.batch(64)))
    assert x.shape == (18, 16, 16, 3) and float(tf.reduce_min(x)) >= -1 and float(tf.reduce_max(x)) <= 1
    assert sorted(set(y.numpy())) == [0, 1, 2]


def test_flat_folder_gets_a_seeded_split_and_grayscale_follows_the_data(tmp_path):
    root = _folder(tmp_path, split=False, channels=1, per_class=10)
    a = data.load(f"imagefolder:{root}", test_fraction=0.3, seed=1)
    b = data.load(f"imagefolder:{root}", test_fraction=0.3, seed=1)
    assert (a.num_train, a.num_test) == (21, 9) and a.image_shape == (12, 12, 1)
    assert [y for _, y in a.test.as_numpy_iterator()] == [y for _, y in b.test.as_numpy_iterator()]
    rgb = data.load(f"imagefolder:{root}", image_shape=(None, None, 3))
    assert next(iter(rgb.train))[0].shape == (12, 12, 3)


def test_corrupt_images_are_skipped_and_counted_or_rejected_with_strict(tmp_path):
    root = _folder(tmp_path)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"this is no jpeg")
    (root / "train" / "dog" / "empty.png").write_bytes(b"")
    good = (root / "train" / "emu" / "0.jpg").read_bytes()
    (root / "train" / "emu" / "truncated.jpg").write_bytes(good[:40])
    d = data.load(f"imagefolder:{root}")
    assert len(d.skipped) == 2 and {os.path.basename(p) for p, _ in d.skipped} == {"broken.jpg", "empty.png"}
    assert len(list(d.train.as_numpy_iterator())) == 18  # the truncated JPEG is dropped at decode
    with pytest.raises(ValueError, match=r"broken.jpg: not a JPEG.*`strict=True`"):
        data.load(f"imagefolder:{root}", strict=True)


def test_wrong_layout_shows_the_expected_one(tmp_path):
    (tmp_path / "only_files").mkdir()
    (tmp_path / "only_files" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"(?s)expected layout.*PATH/train/<class>"):
        data.load(f"imagefolder:{tmp_path / 'only_files'}")
    with pytest.raises(ValueError, match="is not a folder"):
        data.load(f"imagefolder:{tmp_path / 'missing'}")


def test_tar_archive_is_unpacked_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASNETS_CACHE", str(tmp_path / "cache"))
    root = _folder(tmp_path / "src")
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    d = data.load(f"imagefolder:{archive}")
    assert (d.num_train, d.num_test) == (18, 18)
    assert str(tmp_path / "cache") in d.source


def test_npz_both_layouts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (30, 10, 10, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 30)
    np.savez(tmp_path / "split.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    np.savez(tmp_path / "flat.npz", x=x[..., 0], y=y)
    d = data.load(f"npz:{tmp_path / 'split.npz'}", image_shape=(16, 16, None))
    assert (d.num_train, d.num_test, d.image_shape) == (20, 10, (16, 16, 3))
    flat = data.load(f"npz:{tmp_path / 'flat.npz'}", test_fraction=0.5)
    assert (flat.num_train, flat.image_shape) == (15, (10, 10, 1))
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match="expected x_train, y_train"):
        data.load(f"npz:{tmp_path / 'bad.npz'}")


def test_digits_and_representative_images():
    d = data.load("digits", image_shape=(24, 24, 3))
    assert d.num_train + d.num_test == 1797 and d.classes == [str(i) for i in range(10)]
    calibration = data.representative_images(d, 20)
    assert calibration.shape == (20, 24, 24, 3) and calibration.dtype == np.float32


def test_unknown_and_unavailable_datasets_say_what_to_do():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*imagefolder:PATH"):
        data.load("mnist")
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorflow-datasets"):
            data.load("svhn")

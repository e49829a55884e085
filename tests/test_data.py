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


def test_unknown_dataset_says_what_to_do():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*imagefolder:PATH"):
        data.load("mnist")


# ---------------------------------------------------------------------------------------------
# the named data sets, offline: small archives in the exact layout each upstream loader caches


def _cifar_batch(path, rng, count, label_key, classes):
    """One pickled batch as in the python CIFAR archives: bytes keys, rows of 3x32x32 uint8."""
    import pickle

    batch = {b"batch_label": b"test batch", label_key.encode(): list(rng.integers(0, classes, count)),
             b"data": rng.integers(0, 255, (count, 3 * 32 * 32), dtype=np.uint8),
             b"filenames": [f"{i}.png".encode() for i in range(count)]}
    path.write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize("name, folder, train, test, label_key, meta, classes", [
    ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels",
     ("batches.meta", b"label_names"), 10),
    ("cifar100", "cifar-100-python", ["train"], "test", "fine_labels", ("meta", b"fine_label_names"), 100),
])
def test_cifar_from_the_keras_datasets_cache_without_a_download(tmp_path, monkeypatch, name, folder, train,
                                                                 test, label_key, meta, classes):
    import pickle
    import urllib.request

    def no_download(*args, **kwargs):
        raise AssertionError(f"{name}: a download was attempted")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_download)
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tmp_path / ".keras" / "datasets" / folder  # where keras.datasets unpacks the download
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for file in train:
        _cifar_batch(cache / file, rng, 4, label_key, classes)
    _cifar_batch(cache / test, rng, 3, label_key, classes)
    names = [f"class{i}".encode() for i in range(classes)]
    (cache / meta[0]).write_bytes(pickle.dumps({meta[1]: names}))

    d = data.load(name, image_shape=(16, 16, None))
    assert (d.num_train, d.num_test, d.image_shape) == (4 * len(train), 3, (16, 16, 3))
    assert d.classes == [n.decode() for n in names]
    x, y = next(iter(d.test.batch(8)))
    assert x.shape == (3, 16, 16, 3) and y.dtype == tf.int64
    # the same pixels as the archive's rows (channel-first rows -> HWC), at the native size
    raw = pickle.loads((cache / test).read_bytes())
    native = data.load(name)
    first = next(iter(native.test))[0].numpy()
    expected = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0) / 127.5 - 1.0
    np.testing.assert_allclose(first, expected, atol=1e-5)

    same = data.load(name, data_dir=str(tmp_path / ".keras" / "datasets"))  # data_dir: the same layout
    assert same.num_train == d.num_train
    with pytest.raises(ValueError, match=rf"`data_dir=.*` holds no {folder}/ with .*{test}"):
        data.load(name, data_dir=str(tmp_path / "empty"))


def _prepare_tfds(name, data_dir, download_dir, downloads, monkeypatch):
    """Prepare `name` with tensorflow-datasets' own builder into `data_dir`, from small files the
    test wrote: only the network is replaced (its download manager returns those files)."""
    import tensorflow_datasets as tfds

    for method, result in downloads.items():
        monkeypatch.setattr(tfds.download.DownloadManager, method, lambda self, *a, _r=result, **k: _r(*a))
    tfds.builder(name, data_dir=str(data_dir)).download_and_prepare(download_dir=str(download_dir))
    monkeypatch.undo()


def test_svhn_from_a_prepared_tensorflow_datasets_folder(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets", reason="svhn and caltech101 need tensorflow-datasets")
    import scipy.io

    rng = np.random.default_rng(0)
    mats = {}
    for split, count in (("train", 6), ("test", 4), ("extra", 1)):  # svhn_cropped's .mat files
        mats[split] = str(tmp_path / f"{split}_32x32.mat")
        scipy.io.savemat(mats[split], {"X": rng.integers(0, 255, (32, 32, 3, count), dtype=np.uint8),
                                       "y": ((np.arange(count) + 9) % 10 + 1).reshape(count, 1)})  # 10, 1, 2, ...
    _prepare_tfds("svhn_cropped", tmp_path / "tfds", tmp_path / "dl",
                  {"download": lambda urls: {k: mats[k] for k in urls}}, monkeypatch)
    assert (tmp_path / "tfds" / "svhn_cropped").is_dir() and tfds.__version__

    d = data.load("svhn", image_shape=(16, 16, 1), data_dir=str(tmp_path / "tfds"))
    assert (d.num_train, d.num_test, d.image_shape, len(d.classes)) == (6, 4, (16, 16, 1), 10)
    x, y = next(iter(d.train.batch(8)))
    assert x.shape == (6, 16, 16, 1) and float(tf.reduce_max(tf.abs(x))) <= 1 and y.dtype == tf.int64
    assert sorted(y.numpy()) == [0, 1, 2, 3, 4, 5]  # svhn's label 10 is the digit 0


def test_caltech101_from_a_prepared_tensorflow_datasets_folder(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets", reason="svhn and caltech101 need tensorflow-datasets")
    from etils import epath

    rng = np.random.default_rng(0)
    images = tmp_path / "extracted" / "101_ObjectCategories"
    for cls, count in (("accordion", 31), ("airplanes", 32)):  # 30 a class go to train, the rest to test
        (images / cls).mkdir(parents=True)
        for i in range(count):
            _write_image(images / cls / f"image_{i:04d}.jpg", rng, size=10, fmt="jpeg")
    _prepare_tfds("caltech101", tmp_path / "tfds", tmp_path / "dl",
                  {"download_and_extract": lambda url: epath.Path(tmp_path / "zip"),
                   "extract": lambda path: epath.Path(images.parent)}, monkeypatch)

    with pytest.raises(ValueError, match=r"images of different sizes: give `image_shape`"):
        data.load("caltech101", data_dir=str(tmp_path / "tfds"))
    d = data.load("caltech101", image_shape=(24, 24, 3), data_dir=str(tmp_path / "tfds"))
    assert (d.num_train, d.num_test, d.image_shape) == (60, 3, (24, 24, 3))
    assert len(d.classes) == 102 and d.classes[:2] == ["accordion", "airplanes"]
    assert next(iter(d.test.batch(8)))[0].shape == (3, 24, 24, 3)


@pytest.mark.parametrize("name", ["svhn", "caltech101"])
def test_tfds_data_sets_that_are_missing_name_data_dir(tmp_path, name):
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorflow-datasets"):
            data.load(name)
        return
    with pytest.raises(ValueError, match=rf"{name} \(\w+\) could not be loaded from `data_dir=.*tfds build"):
        data.load(name, image_shape=(16, 16, 3), data_dir=str(tmp_path))


def test_subset_takes_the_first_images_or_a_seeded_shuffle_of_them():
    full = data.load("digits", image_shape=(8, 8, 1))
    labels = lambda split: [int(y) for _, y in split.as_numpy_iterator()]  # noqa: E731
    first = data.subset(full, 100, 30)
    assert (first.num_train, first.num_test) == (100, 30)
    assert labels(first.train) == labels(full.train)[:100] and labels(first.test) == labels(full.test)[:30]
    shuffled = data.subset(full, 100, 0, shuffle_seed=0, cache=True)
    assert shuffled.num_test == full.num_test  # 0: the whole split
    assert labels(shuffled.train) == labels(data.subset(full, 100, shuffle_seed=0).train)  # same seed, same images
    assert labels(shuffled.train) != labels(first.train)

"""Image data for training, calibration and evaluation, as tf.data pipelines.

Sources (`spec` strings, as on the command line):
  digits             scikit-learn's bundled handwritten digits (no download) - the embedded default
  imagefolder:PATH   PATH/<split>/<class>/*.jpg|png, or PATH/<class>/* with a seeded split;
                     PATH may also be a .tar.gz of such a folder (unpacked once into a cache)
  npz:PATH           arrays x_train, y_train, x_test, y_test (or x, y with a seeded split)
  cifar10, cifar100  keras.datasets' python archives: unpacked under `data_dir` or in
                     ~/.keras/datasets (downloaded there when online)
  svhn, caltech101   tensorflow-datasets (`pip install 'kerasnets[tfds]'`; svhn is its
                     svhn_cropped): prepared under `data_dir`, or downloaded when online
Images come out as float32 in [-1, 1] at (height, width, channels); labels as int64.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tarfile

import numpy as np

log = logging.getLogger("kerasnets.data")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8")
FOLDER_LAYOUT = ("  PATH/train/<class>/*.jpg   and  PATH/test/<class>/*.jpg   (or val/)\n"
                 "  or PATH/<class>/*.jpg   (split by `seed`)")
NAMED = ("cifar10", "cifar100", "svhn", "caltech101")


@dataclasses.dataclass
class ImageData:
    """Both splits of a data set, unbatched, with what a user needs to check it."""

    train: object  # tf.data.Dataset of (image, label)
    test: object
    classes: list
    num_train: int
    num_test: int
    image_shape: tuple
    skipped: list = dataclasses.field(default_factory=list)  # unreadable files (path, reason)
    source: str = ""


def digits_images(input_shape, count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` real handwritten digits (scikit-learn's bundled 8x8 set, no download) resized to
    `input_shape` (H, W, C), scaled to [-1, 1], with their labels 0-9."""
    x, y = _digits_arrays()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), size=count, replace=count > len(x))
    return _resize(x[pick], input_shape), y[pick]


def _digits_arrays():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype("float32")[..., None] * (255.0 / 16.0), digits.target.astype("int64")


def _resize(images_0_255: np.ndarray, shape) -> np.ndarray:
    """uint8-range images (N,h,w,c) -> float32 [-1, 1] at (H, W, C), channels repeated/averaged."""
    import tensorflow as tf

    height, width, channels = (int(d) for d in shape)
    images = tf.image.resize(np.asarray(images_0_255, np.float32), (height, width)).numpy()
    images = _match_channels(images, channels)
    return (images / 127.5 - 1.0).astype("float32")


def _match_channels(images, channels):
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1:
        return np.repeat(images, channels, axis=-1)
    if channels == 1:
        return images.mean(axis=-1, keepdims=True)
    raise ValueError(f"cannot turn {have}-channel images into {channels} channels")


def _split(x, y, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(round(len(x) * (1 - test_fraction)))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def _from_arrays(train, test, classes, shape, source):
    import tensorflow as tf

    (xtr, ytr), (xte, yte) = train, test
    xtr, xte = _resize(xtr, shape), _resize(xte, shape)
    return ImageData(tf.data.Dataset.from_tensor_slices((xtr, ytr.astype("int64"))),
                     tf.data.Dataset.from_tensor_slices((xte, yte.astype("int64"))),
                     list(classes), len(xtr), len(xte), tuple(shape), source=source)


def _load_npz(path, shape, test_fraction, seed):
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"npz:{path} cannot be read ({error}); expected a .npz with x_train, y_train, "
                         "x_test, y_test or x, y") from None
    keys = set(arrays.files)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        train, test = (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    elif {"x", "y"} <= keys:
        train, test = _split(arrays["x"], arrays["y"], test_fraction, seed)
    else:
        raise ValueError(f"npz:{path} holds {sorted(keys)}; expected x_train, y_train, x_test, y_test "
                         "(or x, y)")
    x = train[0]
    if x.ndim == 3:
        train, test = (train[0][..., None], train[1]), (test[0][..., None], test[1])
    if np.issubdtype(x.dtype, np.floating) and x.max() <= 1.0:
        train, test = (train[0] * 255.0, train[1]), (test[0] * 255.0, test[1])
    labels = np.concatenate([train[1], test[1]]).astype("int64").ravel()
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return _from_arrays((train[0], train[1].ravel()), (test[0], test[1].ravel()), classes,
                        _shape(shape, train[0]), f"npz:{path}")


def _shape(shape, x):
    """Requested (H, W, C) with None parts taken from the data."""
    h, w, c = shape if shape is not None else (None, None, None)
    return (h or x.shape[1], w or x.shape[2], c or (x.shape[3] if x.ndim == 4 else 1))


def _cache_dir():
    return os.environ.get("KERASNETS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kerasnets"))


def unpack_archive(path) -> str:
    """Unpack a .tar(.gz) image folder once into the cache (never beside a read-only archive)."""
    import shutil

    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = os.path.join(_cache_dir(), "archives", key)
    if not os.path.isdir(target):
        partial = f"{target}.partial-{os.getpid()}"  # an interrupted unpack never looks finished
        log.warning("unpacking %s into %s (once)", path, target)
        with tarfile.open(path) as archive:
            archive.extractall(partial, filter="data")
        try:
            os.replace(partial, target)
        except OSError:  # another process finished first
            shutil.rmtree(partial, ignore_errors=True)
    entries = [e for e in os.listdir(target) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(target, entries[0])):
        return os.path.join(target, entries[0])  # archive with one top-level folder
    return target


def _class_files(folder):
    classes = sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e)))
    files = {c: sorted(os.path.join(folder, c, f) for f in os.listdir(os.path.join(folder, c))
                       if f.lower().endswith(IMAGE_SUFFIXES)) for c in classes}
    return classes, files


def check_image_file(path) -> str | None:
    """None if the file looks like an image we can decode, else the reason it is skipped."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if not head:
        return "empty file"
    if not head.startswith(_MAGIC):
        return "not a JPEG/PNG/BMP/GIF image (bad header)"
    return None


def _scan(folder, classes, strict, skipped):
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for path in _class_files(folder)[1].get(cls, []):
            reason = check_image_file(path)
            if reason:
                if strict:
                    raise ValueError(f"{path}: {reason} (`strict=True`); remove it or drop `strict` to skip it")
                skipped.append((path, reason))
                continue
            paths.append(path)
            labels.append(label)
    return paths, labels


def _decode_dataset(paths, labels, shape):
    import tensorflow as tf

    height, width, channels = shape

    def decode(path, label):
        raw = tf.io.read_file(path)
        image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
        image.set_shape((height, width, channels))
        return image / 127.5 - 1.0, label

    ds = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int64)))
    # Truncated files pass the header check but fail to decode: drop them rather than stop.
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()


def _first_image_shape(path):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    return tuple(int(d) for d in image.shape)


def _permuted(paths_labels, seed):
    paths, labels = paths_labels
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order], [labels[i] for i in order]


def _load_folder(root, shape, test_fraction, seed, strict):
    if os.path.isfile(root) and tarfile.is_tarfile(root):
        root = unpack_archive(root)
    if not os.path.isdir(root):
        raise ValueError(f"imagefolder:{root} is not a folder. Expected layout:\n{FOLDER_LAYOUT}")
    entries = {e.lower(): e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e))}
    test_name = entries.get("test") or entries.get("val") or entries.get("validation")
    skipped = []
    if "train" in entries and test_name:
        train_dir, test_dir = os.path.join(root, entries["train"]), os.path.join(root, test_name)
        classes, _ = _class_files(train_dir)
        test_classes, _ = _class_files(test_dir)
        if test_classes != classes:
            raise ValueError(f"imagefolder:{root}: train classes {classes} differ from "
                             f"{test_name} classes {test_classes}")
        # folders list files class by class: a fixed permutation makes a shuffle buffer, a
        # calibration subset or a `take(n)` see every class
        train = _permuted(_scan(train_dir, classes, strict, skipped), seed)
        test = _permuted(_scan(test_dir, classes, strict, skipped), seed)
    else:
        classes, _ = _class_files(root)
        paths, labels = _scan(root, classes, strict, skipped)
        order = np.random.default_rng(seed).permutation(len(paths))
        cut = int(round(len(paths) * (1 - test_fraction)))
        train = ([paths[i] for i in order[:cut]], [labels[i] for i in order[:cut]])
        test = ([paths[i] for i in order[cut:]], [labels[i] for i in order[cut:]])
    if len(classes) < 2 or not train[0] or not test[0]:
        raise ValueError(f"imagefolder:{root} has {len(classes)} class folders and {len(train[0])} "
                         f"readable training images; expected layout:\n{FOLDER_LAYOUT}")
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    if skipped:
        log.warning("%d unreadable images skipped (use `strict` to stop on them)", len(skipped))
    first = _first_image_shape(train[0][0])
    full = (shape[0] if shape and shape[0] else first[0], shape[1] if shape and shape[1] else first[1],
            shape[2] if shape and shape[2] else first[2])
    return ImageData(_decode_dataset(*train, full), _decode_dataset(*test, full), classes,
                     len(train[0]), len(test[0]), full, skipped, f"imagefolder:{root}")


# keras.datasets' CIFAR archives: folder name in ~/.keras/datasets, download, its sha256, the
# pickled batch files of each split, the label key and the file with the class names
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", ("batches.meta", "label_names")),
    "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                 ["train"], ["test"], "fine_labels", ("meta", "fine_label_names")),
}
# tensorflow-datasets names of the data sets read through it
_TFDS = {"svhn": "svhn_cropped", "caltech101": "caltech101"}


def _unpickle(path):
    import pickle

    with open(path, "rb") as f:
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in pickle.load(f, encoding="bytes").items()}


def _cifar_folder(name, data_dir) -> str:
    """The extracted CIFAR folder: under `data_dir`, else in keras.datasets' cache
    (~/.keras/datasets), downloaded there (with keras' hash check) when missing."""
    folder, origin, sha256, train_files, test_files, _, _ = _CIFAR[name]
    needed = train_files + test_files
    roots = [os.path.join(data_dir, folder), data_dir] if data_dir else [
        os.path.join(os.path.expanduser("~"), ".keras", "datasets", folder)]
    for root in roots:
        if all(os.path.isfile(os.path.join(root, f)) for f in needed):
            return root
    if data_dir:
        raise ValueError(f"{name}: `data_dir={data_dir}` holds no {folder}/ with {', '.join(needed)} (the "
                         f"python version of the archive, {origin})")
    import tf_keras as keras

    try:
        return keras.utils.get_file(folder, origin=origin, untar=True, file_hash=sha256)
    except Exception as error:  # offline: urllib raises several kinds
        raise ValueError(
            f"{name} could not be downloaded ({type(error).__name__}). Without internet, unpack {origin} "
            f"into ~/.keras/datasets (the keras.datasets cache) or pass `data_dir`, or pass an image folder: "
            f"`spec=imagefolder:PATH` (e.g. a CIFAR-10 JPEG folder or .tar.gz)") from None


def _load_cifar(name, shape, data_dir):
    """CIFAR-10/100 from the python-pickle batches keras.datasets downloads (any number of images
    per batch), with the class names of the archive's meta file."""
    folder = _cifar_folder(name, data_dir)
    _, _, _, train_files, test_files, label_key, (meta_file, names_key) = _CIFAR[name]

    def read(files):
        batches = [_unpickle(os.path.join(folder, f)) for f in files]
        x = np.concatenate([np.asarray(b["data"], np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        y = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
        return x.transpose(0, 2, 3, 1), y

    train, test = read(train_files), read(test_files)
    meta = os.path.join(folder, meta_file)
    classes = ([n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(meta)[names_key]]
               if os.path.isfile(meta) else [str(c) for c in range(10 if name == "cifar10" else 100)])
    return _from_arrays(train, test, classes, _shape(shape, train[0]), name)


def _load_tfds(name, shape, data_dir):
    """A tensorflow-datasets data set: prepared under `data_dir` (never downloaded there), else in
    tfds' own folder (~/tensorflow_datasets), downloaded and prepared when missing."""
    tfds_name = _TFDS[name]
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(f"{name} is read through tensorflow-datasets: pip install tensorflow-datasets "
                         f"(or kerasnets[tfds]), then be online once or pass `data_dir` with a prepared "
                         f"{tfds_name}") from None
    try:
        (train, test), info = tfds.load(tfds_name, split=["train", "test"], as_supervised=True, with_info=True,
                                        data_dir=data_dir, download=not data_dir)
    except Exception as error:
        where = f"`data_dir={data_dir}`" if data_dir else "the tensorflow-datasets folder"
        raise ValueError(f"{name} ({tfds_name}) could not be loaded from {where}: {type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}. Prepare it online once "
                         f"(`tfds build {tfds_name} --data_dir DIR`) and pass `data_dir=DIR`") from None
    import tensorflow as tf

    feature = info.features["image"].shape  # (None, None, 3) for data sets of mixed image sizes
    full = tuple(want or have for want, have in zip(shape or (None, None, None), feature))
    if None in full:
        raise ValueError(f"{name} has images of different sizes: give `image_shape` (height, width), "
                         f"e.g. (224, 224, 3)")

    def prep(image, label):
        image = tf.image.resize(tf.cast(image, tf.float32), full[:2])
        if full[2] != image.shape[-1]:
            image = tf.image.grayscale_to_rgb(image) if full[2] == 3 else tf.image.rgb_to_grayscale(image)
        return image / 127.5 - 1.0, tf.cast(label, tf.int64)

    classes = info.features["label"].names
    return ImageData(train.map(prep), test.map(prep), classes, info.splits["train"].num_examples,
                     info.splits["test"].num_examples, full, source=name)


def _load_named(name, shape, data_dir):
    return _load_cifar(name, shape, data_dir) if name in _CIFAR else _load_tfds(name, shape, data_dir)


def load(spec: str, *, image_shape=None, data_dir=None, test_fraction: float = 0.2, seed: int = 0,
         strict: bool = False) -> ImageData:
    """Load a data set by its spec string (see the module docstring); `image_shape` (H, W, C),
    any part None, resizes and sets channels, else the data's own shape is kept."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset must be a spec string like digits, cifar10, imagefolder:PATH or "
                         f"npz:PATH, got {spec!r}")
    kind, _, path = spec.partition(":")
    if kind == "digits" and not path:
        x, y = _digits_arrays()
        train, test = _split(x, y, test_fraction, seed)
        return _from_arrays(train, test, [str(d) for d in range(10)], _shape(image_shape or (32, 32, 1), x),
                            "digits")
    if kind == "npz" and path:
        return _load_npz(path, image_shape, test_fraction, seed)
    if kind == "imagefolder" and path:
        return _load_folder(path, image_shape, test_fraction, seed, strict)
    if spec in NAMED:
        return _load_named(spec, image_shape, data_dir)
    raise ValueError(f"unknown dataset {spec!r}; use digits, {', '.join(NAMED)}, imagefolder:PATH or npz:PATH")


def in_memory(data: ImageData) -> ImageData:
    """The same data set decoded once into arrays (images float32 in [-1, 1], labels int64), for
    a process that trains several models on it: each new pipeline then starts without decoding
    a file. Holds both splits in RAM (CIFAR-10 at 32x32: ~740 MB)."""
    import tensorflow as tf

    def arrays(split):
        images, labels = [], []
        for x, y in split.batch(1024).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        return np.concatenate(images).astype("float32"), np.concatenate(labels).astype("int64")

    train, test = arrays(data.train), arrays(data.test)
    return dataclasses.replace(data, train=tf.data.Dataset.from_tensor_slices(train),
                               test=tf.data.Dataset.from_tensor_slices(test),
                               num_train=len(train[1]), num_test=len(test[1]))


def subset(data: ImageData, train_images: int = 0, test_images: int = 0, *, shuffle_seed: int | None = None,
           cache: bool = False) -> ImageData:
    """The first `train_images` training and `test_images` test images of `data` (0: all of that
    split). `shuffle_seed` shuffles each split once with that seed first (the order of a source
    that is not already permuted, as image folders are); `cache` keeps the decoded subset in memory."""
    def cut(split, count, total):
        if shuffle_seed is not None:
            split = split.shuffle(total, seed=shuffle_seed, reshuffle_each_iteration=False)
        split = split.take(count) if count else split
        return split.cache() if cache else split

    return dataclasses.replace(data, train=cut(data.train, train_images, data.num_train),
                               test=cut(data.test, test_images, data.num_test),
                               num_train=min(train_images or data.num_train, data.num_train),
                               num_test=min(test_images or data.num_test, data.num_test))


def representative_images(data: ImageData, count: int = 100) -> np.ndarray:
    """The first `count` training images as one array: the int8 calibration set."""
    images = [image for image, _ in data.train.take(count).as_numpy_iterator()]
    if not images:
        raise ValueError(f"{data.source} yielded no images for calibration")
    return np.stack(images).astype("float32")

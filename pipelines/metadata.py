"""TFLite model metadata (labels, input normalisation, description) for the Android Task Library
and MediaPipe image classifiers, written without `tflite-support`.

`tflite-support` 0.4.4 pins protobuf < 4 and breaks beside TensorFlow 2.21, and MediaPipe's
metadata writers pin an absl-py that TFMOT refuses, so this module writes the metadata format
itself with the `flatbuffers` package TensorFlow already depends on:

- a `ModelMetadata` flatbuffer (file identifier "M001", the tflite-support `metadata_schema.fbs`
  layout) in a model buffer, referenced by a model `metadata` entry named "TFLITE_METADATA";
- the associated files (the labels) in a zip archive appended to the model, where the readers
  look for them.

The model itself is rewritten through TensorFlow's own TFLite schema module.
"""
from __future__ import annotations

import dataclasses
import io
import zipfile

import flatbuffers
from tensorflow.lite.python import schema_py_generated as schema

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # only fields of the first metadata schema are written
LABELS_FILE = "labels.txt"

# Enum and union values of metadata_schema.fbs.
_TENSOR_AXIS_LABELS = 2
_COLOR_RGB, _COLOR_GRAYSCALE = 1, 2
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2
_PROCESS_NORMALIZATION = 1


@dataclasses.dataclass(frozen=True)
class ImageClassifierInfo:
    """What an image classifier's metadata says. `mean`/`std` map 0-255 pixels to the model's
    input range: input = (pixel - mean) / std (kerasnets data pipelines give [-1, 1])."""
    name: str
    labels: tuple[str, ...]
    mean: tuple[float, ...] = (127.5,)
    std: tuple[float, ...] = (127.5,)
    description: str = ""
    version: str = "1"
    author: str = "kerasnets"
    license: str = ""


# ---- writing ---------------------------------------------------------------------------------

def _table(builder, fields):
    """One flatbuffer table from (slot, kind, value), kind "offset" or "byte"; None values skipped."""
    builder.StartObject(max((slot for slot, _, _ in fields), default=-1) + 1)
    for slot, kind, value in fields:
        if value is None:
            continue
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        else:
            builder.PrependInt8Slot(slot, value, 0)
    return builder.EndObject()


def _offsets(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder, values):
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(float(value))
    return builder.EndVector()


def _string(builder, text):
    return builder.CreateString(text) if text else None


def _metadata_buffer(info: ImageClassifierInfo, channels: int) -> bytes:
    b = flatbuffers.Builder(1024)
    # Input tensor: an image, normalised per channel.
    norm = _table(b, [(0, "offset", _floats(b, info.mean)), (1, "offset", _floats(b, info.std))])
    unit = _table(b, [(0, "byte", _PROCESS_NORMALIZATION), (1, "offset", norm)])
    image = _table(b, [(0, "byte", _COLOR_GRAYSCALE if channels == 1 else _COLOR_RGB)])
    image_content = _table(b, [(0, "byte", _CONTENT_IMAGE), (1, "offset", image)])
    input_meta = _table(b, [
        (0, "offset", _string(b, "image")),
        (1, "offset", _string(b, f"Input image; model input = (pixel - {list(info.mean)}) / {list(info.std)}.")),
        (3, "offset", image_content), (4, "offset", _offsets(b, [unit]))])
    # Output tensor: one score per label, the labels in an associated file.
    labels = _table(b, [(0, "offset", _string(b, LABELS_FILE)),
                        (1, "offset", _string(b, "Class names, one per line, in output order.")),
                        (2, "byte", _TENSOR_AXIS_LABELS)])
    feature = _table(b, [])
    score_content = _table(b, [(0, "byte", _CONTENT_FEATURE), (1, "offset", feature)])
    output_meta = _table(b, [(0, "offset", _string(b, "probability")),
                             (1, "offset", _string(b, "Score of each class.")),
                             (3, "offset", score_content), (6, "offset", _offsets(b, [labels]))])
    subgraph = _table(b, [(2, "offset", _offsets(b, [input_meta])), (3, "offset", _offsets(b, [output_meta]))])
    root = _table(b, [
        (0, "offset", _string(b, info.name)), (1, "offset", _string(b, info.description)),
        (2, "offset", _string(b, info.version)), (3, "offset", _offsets(b, [subgraph])),
        (4, "offset", _string(b, info.author)), (5, "offset", _string(b, info.license)),
        (7, "offset", _string(b, MIN_PARSER_VERSION))])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def attach(tflite: bytes, info: ImageClassifierInfo) -> bytes:
    """`tflite` with image-classifier metadata; any metadata it carried before is replaced."""
    from kerasnets.pipelines import tflite_file

    graph = tflite_file.read_tflite(tflite)  # clear error on a corrupt model
    (inp,), (out,) = graph.inputs, graph.outputs
    classes, channels = out.shape[-1], inp.shape[-1]
    if len(info.labels) != classes:
        raise ValueError(f"{len(info.labels)} labels for a model with {classes} outputs: pass one label per class")
    if len(info.mean) not in (1, channels) or len(info.std) not in (1, channels):
        raise ValueError(f"mean/std need 1 or {channels} values (one per input channel); got "
                         f"{len(info.mean)} and {len(info.std)}")
    if any(s == 0 for s in info.std):
        raise ValueError("std must be non-zero")
    model = _without_metadata(tflite)
    buffer = schema.BufferT()
    buffer.data = list(_metadata_buffer(info, channels))
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    return _append_zip(_packed(model), info.labels)


def _packed(model) -> bytes:
    from kerasnets.pipelines import tflite_file

    return tflite_file.pack(model)


def strip(tflite: bytes) -> bytes:
    """`tflite` without classifier metadata or associated files: what a microcontroller flashes."""
    if read(tflite) is None:
        return bytes(tflite)
    return _packed(_without_metadata(tflite))


def _without_metadata(tflite: bytes):
    """The model as TF's schema objects, its TFLITE_METADATA entry and buffer dropped (a buffer
    that is not the last one is only emptied: the graph's buffer indices must not move)."""
    from kerasnets.pipelines import tflite_file

    model = tflite_file.unpack(tflite)
    kept = []
    for entry in model.metadata or []:
        if entry.name.decode() != METADATA_NAME:
            kept.append(entry)
        elif entry.buffer == len(model.buffers) - 1:
            model.buffers.pop()
        else:
            model.buffers[entry.buffer].data = None
    model.metadata = kept
    return model


def _append_zip(model: bytes, labels) -> bytes:
    """Append the associated files as a zip whose offsets count from the model's first byte, the
    layout the metadata readers expect (the .tflite is then also a valid zip file)."""
    sink = io.BytesIO(model)
    sink.seek(0, io.SEEK_END)
    with zipfile.ZipFile(sink, "a", zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    return sink.getvalue()


# ---- reading ---------------------------------------------------------------------------------

def read(tflite: bytes) -> dict | None:
    """The metadata `attach` writes, as a dict (None when the model carries none)."""
    model = schema.Model.GetRootAsModel(bytes(tflite), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            return {**_read_metadata(raw), "labels": _read_labels(tflite)}
    return None


def _table_at(buf, pos):
    return flatbuffers.table.Table(buf, pos)


def _field(table, slot):
    """Offset of field `slot` relative to `table` (what Vector/VectorLen take), 0 if absent."""
    return table.Offset(4 + 2 * slot)


def _str(table, slot):
    rel = _field(table, slot)
    return table.String(table.Pos + rel).decode() if rel else ""


def _vector_tables(table, slot):
    rel = _field(table, slot)
    if not rel:
        return []
    start, count = table.Vector(rel), table.VectorLen(rel)
    return [_table_at(table.Bytes, table.Indirect(start + 4 * i)) for i in range(count)]


def _vector_floats(table, slot):
    rel = _field(table, slot)
    if not rel:
        return ()
    start, count = table.Vector(rel), table.VectorLen(rel)
    return tuple(table.Get(flatbuffers.number_types.Float32Flags, start + 4 * i) for i in range(count))


def _byte(table, slot):
    rel = _field(table, slot)
    return table.Get(flatbuffers.number_types.Int8Flags, table.Pos + rel) if rel else 0


def _child(table, slot):
    rel = _field(table, slot)
    return _table_at(table.Bytes, table.Indirect(table.Pos + rel)) if rel else None


def _first(tables):
    return tables[0] if tables else None


def _read_metadata(raw: bytes) -> dict:
    """The image-classifier fields of a metadata flatbuffer; fields another writer left out
    (or a metadata of another kind of model) read as empty."""
    if raw[4:8] != FILE_IDENTIFIER:
        raise ValueError(f"model metadata buffer has identifier {raw[4:8]!r}, expected {FILE_IDENTIFIER!r}")
    buf = bytearray(raw)
    root = _table_at(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    subgraph = _first(_vector_tables(root, 3))
    image = _first(_vector_tables(subgraph, 2)) if subgraph else None
    output = _first(_vector_tables(subgraph, 3)) if subgraph else None
    mean = std = ()
    color = 0
    if image is not None:
        for unit in _vector_tables(image, 4):
            if _byte(unit, 0) == _PROCESS_NORMALIZATION:
                options = _child(unit, 1)
                mean, std = _vector_floats(options, 0), _vector_floats(options, 1)
        content = _child(image, 3)
        if content is not None and _byte(content, 0) == _CONTENT_IMAGE:
            color = _byte(_child(content, 1), 0)
    files = [(_str(f, 0), _byte(f, 2)) for f in _vector_tables(output, 6)] if output else []
    return {"name": _str(root, 0), "description": _str(root, 1), "version": _str(root, 2),
            "author": _str(root, 4), "license": _str(root, 5), "min_parser_version": _str(root, 7),
            "mean": mean, "std": std, "color_space": {1: "RGB", 2: "GRAYSCALE"}.get(color, "UNKNOWN"),
            "label_files": [name for name, kind in files if kind == _TENSOR_AXIS_LABELS]}


def _read_labels(tflite: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(tflite))) as archive:
            return archive.read(LABELS_FILE).decode().splitlines()
    except (zipfile.BadZipFile, KeyError):
        return []

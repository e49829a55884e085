"""`kerasnets compress`: load or build a model, compress it, save it, summarise before/after."""
from __future__ import annotations

import os


def _model(model_name, keras_file, input_size, classes):
    from kerasnets.pipelines import saving

    if keras_file:
        return saving.load_keras(keras_file)
    return saving.create_at_size(model_name, input_size, classes)


def run(*, model=None, keras_file=None, method, ratio=None, target=None, dataset=None, epochs=0,
        batch_size=None, input_size=None, classes=None, from_scratch=False, strength=None,
        out) -> dict:
    """Compress, write `out` (.keras) and return the one-line summary."""
    from kerasnets.pipelines import data as data_mod
    from kerasnets.pipelines import prune

    prune.Request(method, ratio, target, int(epochs or 0),
                  "scratch" if from_scratch else "finetune")  # bad arguments fail before any work
    images = None
    net = _model(model, keras_file, input_size, classes)
    if dataset:
        images = data_mod.load(dataset, image_shape=net.input_shape[1:])
        if classes is None and keras_file is None and len(images.classes) != net.output_shape[-1]:
            net = _model(model, keras_file, input_size, len(images.classes))  # head for the data
    config = {"batch_size": batch_size} if batch_size else None
    result, summary = prune.compress(net, method, ratio=ratio, target=target, data=images,
                                     epochs=epochs or 0,
                                     strategy="scratch" if from_scratch else "finetune",
                                     config=config, strength=strength,
                                     out_dir=os.path.splitext(out)[0] + "-work")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result.save(out)
    summary["out"] = out
    if images is not None:
        from kerasnets.pipelines import train

        summary["top1"] = round(train.evaluate(result, images), 4)
    return summary

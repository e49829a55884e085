"""Training recipe on real data (digits): learning, per-epoch checkpoints, exact resume after an
interruption, NaN stop that keeps the last good checkpoint, distillation, bad options."""
import json
import os

import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import data, train

# resnet8 keeps Keras-default BatchNorm (momentum 0.99, as MLPerf Tiny): small batches give its
# moving statistics enough steps to settle in a 3-epoch run.
FAST = {"epochs": 3, "batch_size": 16, "lr": 0.05, "augment": []}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", image_shape=(16, 16, 1))


def _build():
    return kerasnets.create_model("resnet8", input_shape=(16, 16, 1), classes=10)


def test_fit_learns_and_checkpoints_every_epoch(digits, tmp_path):
    result = train.fit(_build, digits, str(tmp_path), config=FAST, verbose=0)
    history = result["history"]
    assert history["loss"][-1] < history["loss"][0]
    assert train.evaluate(result["model"], digits) > 0.5
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    loaded = keras.models.load_model(tmp_path / "last.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(next(iter(digits.test.batch(8)))[0], verbose=0),
                               result["model"].predict(next(iter(digits.test.batch(8)))[0], verbose=0),
                               atol=1e-5)
    assert (tmp_path / "tensorboard").is_dir()


def _grouped_model():
    inputs = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(12, 3, padding="same", groups=4, name="grouped")(inputs)
    x = keras.layers.Conv2D(8, 1, strides=2, groups=2, use_bias=False)(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))


def _conv_ops(layer):
    """The Conv2D ops a traced call of `layer` makes itself (a grouped conv as tf_keras runs it is
    one call of an XLA-compiled function: no Conv2D op at this level)."""
    import tensorflow as tf

    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((1, *layer.input_shape[1:]))).graph
    return [op for op in graph.get_operations() if op.type == "Conv2D"]


def test_grouped_convolutions_train_group_by_group_with_the_same_values():
    import tensorflow as tf

    model = _grouped_model()
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 8)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 10, 10)

    def step():
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, outputs))
        return outputs.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

    assert _conv_ops(model.get_layer("grouped")) == []
    native = step()
    with train.grouped_convolutions_by_groups():
        convs = _conv_ops(model.get_layer("grouped"))
        by_groups = step()
    assert len(convs) == 4 and all(op.inputs[1].shape == (3, 3, 2, 3) for op in convs)  # 8 -> 12 in 4 groups
    np.testing.assert_allclose(by_groups[0], native[0], rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(by_groups[1], native[1]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
    assert _conv_ops(model.get_layer("grouped")) == []  # restored: what is converted stays one grouped conv


def test_fit_trains_grouped_convolutions_group_by_group(digits, tmp_path):
    seen = []

    class Traced(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(len(_conv_ops(self.model.get_layer("grouped"))))

    def build():
        inputs = keras.Input((16, 16, 1))
        x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
        x = keras.layers.Conv2D(8, 3, padding="same", groups=4, name="grouped")(x)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(
            keras.layers.GlobalAveragePooling2D()(x)))

    train.fit(build, digits, str(tmp_path), config={**FAST, "epochs": 1}, verbose=0, extra_callbacks=[Traced()])
    assert seen == [4]


class _Interrupt(keras.callbacks.Callback):
    """Stands in for a kill: raises during the given epoch, after the previous epoch finished."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_continues_at_the_interrupted_epoch_with_optimizer_state(digits, tmp_path):
    config = {**FAST, "epochs": 4}
    with pytest.raises(KeyboardInterrupt):
        train.fit(_build, digits, str(tmp_path), config=config, verbose=0, extra_callbacks=[_Interrupt(2)])
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append((epoch, int(self.model.optimizer.iterations.numpy())))

    result = train.fit(_build, digits, str(tmp_path), config=config, resume=True, verbose=0,
                       extra_callbacks=[Record()])
    steps = digits.num_train // config["batch_size"]
    assert seen[0] == (2, 2 * steps)  # epoch 3 of 4 starts with the optimiser 2 epochs in
    assert [e for e, _ in seen] == [2, 3]
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert len(result["history"]["loss"]) == 2


def test_a_resumed_run_reports_the_steps_it_runs(tmp_path, capsys):
    """Images read from folders have no known count: the progress bar learns an epoch's length
    from the steps run, and a resumed run must not count the restored epochs' steps in it."""
    import dataclasses

    digits = data.load("digits", image_shape=(8, 8, 1))
    digits = dataclasses.replace(digits, train=digits.train.filter(lambda x, y: True))  # length unknown
    config = {"epochs": 3, "batch_size": 64, "lr": 0.05, "augment": []}
    with pytest.raises(KeyboardInterrupt):
        train.fit(_tiny, digits, str(tmp_path), config=config, verbose=0, extra_callbacks=[_Interrupt(2)])
    capsys.readouterr()
    train.fit(_tiny, digits, str(tmp_path), config=config, resume=True, verbose=2)
    steps = digits.num_train // 64
    assert f"{steps}/{steps} - " in capsys.readouterr().out


def _tiny():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="fc")(x))


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path):
    """Same seed, interrupted after 2 of 3 epochs and resumed: the same weights, bit for bit, as
    the run that was not interrupted (shuffle order and random crops/flips included), whatever
    seed the process had set before."""
    digits = data.load("digits", image_shape=(8, 8, 1))
    config = {"epochs": 3, "batch_size": 64, "lr": 0.05, "augment": ["crop", "flip"], "seed": 3}
    keras.utils.set_random_seed(123)
    whole = train.fit(_tiny, digits, str(tmp_path / "whole"), config=config, verbose=0)["model"]
    keras.utils.set_random_seed(7)
    with pytest.raises(KeyboardInterrupt):
        train.fit(_tiny, digits, str(tmp_path / "cut"), config=config, verbose=0, extra_callbacks=[_Interrupt(2)])
    resumed = train.fit(_tiny, digits, str(tmp_path / "cut"), config=config, resume=True, verbose=0)
    assert len(resumed["history"]["loss"]) == 1  # only the third epoch ran again
    for expected, got in zip(whole.get_weights(), resumed["model"].get_weights()):
        np.testing.assert_array_equal(got, expected)


class _Poison(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    with pytest.raises(train.TrainingStopped, match=r"NaN/inf.*Last good checkpoint: .*last.keras"):
        train.fit(_build, digits, str(tmp_path), config=FAST, verbose=0, extra_callbacks=[_Poison()])
    good = keras.models.load_model(tmp_path / "last.keras", compile=False)
    assert all(np.isfinite(w).all() for w in good.get_weights())
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1


def test_distillation_learns_from_the_teacher(tmp_path):
    """A teacher that answers class 7 whatever the image: a student distilled from it alone
    (distill_alpha=0, no weight on the true labels) answers 7 too, which the labels never teach."""
    inputs = keras.Input((8, 8, 1))
    head = keras.layers.Dense(10, activation="softmax", name="fc")
    teacher = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(inputs)))
    head.set_weights([np.zeros((1, 10), "float32"), np.eye(10, dtype="float32")[7] * 10])
    teacher.save(tmp_path / "teacher.keras")
    digits = data.load("digits", image_shape=(8, 8, 1))
    config = {"epochs": 2, "batch_size": 32, "lr": 0.05, "augment": [], "teacher": str(tmp_path / "teacher.keras"),
              "distill_alpha": 0.0}
    result = train.fit(_tiny, digits, str(tmp_path / "student"), config=config, verbose=0)
    # the epochs' losses are the distillation losses (the compiled loss, never called, reads 0)
    history = result["history"]
    assert all(v > 0 for v in history["loss"] + history["val_loss"]), history
    assert history["loss"][1] < history["loss"][0]
    answers = np.concatenate([np.argmax(result["model"].predict_on_batch(x), -1) for x, _ in digits.test.batch(256)])
    labels = np.concatenate([y.numpy() for _, y in digits.test.batch(256)])
    assert np.mean(labels == 7) < 0.15 and np.mean(answers == 7) > 0.95
    # the saved model is the student, not the distillation wrapper
    saved = keras.models.load_model(result["model_path"], compile=False)
    assert saved.count_params() == _tiny().count_params()


def test_a_distilled_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    """The distillation wrapper is built lazily (Keras warns that BackupAndRestore wants a built
    model): its checkpoint is still restored in full, student and optimiser, on resume."""
    teacher = _tiny()
    teacher.save(tmp_path / "teacher.keras")
    digits = data.load("digits", image_shape=(8, 8, 1))
    config = {"epochs": 3, "batch_size": 64, "lr": 0.05, "augment": ["crop", "flip"], "seed": 3,
              "teacher": str(tmp_path / "teacher.keras")}
    whole = train.fit(_tiny, digits, str(tmp_path / "whole"), config=config, verbose=0)["model"]
    with pytest.raises(KeyboardInterrupt):
        train.fit(_tiny, digits, str(tmp_path / "cut"), config=config, verbose=0, extra_callbacks=[_Interrupt(2)])
    resumed = train.fit(_tiny, digits, str(tmp_path / "cut"), config=config, resume=True, verbose=0)
    assert len(resumed["history"]["loss"]) == 1
    for expected, got in zip(whole.get_weights(), resumed["model"].get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_schedule_warmup_then_cosine():
    schedule = train.WarmupSchedule(0.1, total_steps=100, warmup_steps=10, kind="cosine")
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(9)) == pytest.approx(0.1)
    assert float(schedule(55)) == pytest.approx(0.05, abs=1e-6)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    step = train.WarmupSchedule(0.1, 100, kind="step", boundaries=[50, 75], factor=0.1)
    assert [round(float(step(s)), 6) for s in (0, 50, 80)] == [0.1, 0.01, 0.001]


def test_bad_options_and_class_mismatch(digits, tmp_path):
    with pytest.raises(ValueError, match="unknown training option 'epoch'"):
        train.fit(_build, digits, str(tmp_path), config={"epoch": 3})
    with pytest.raises(ValueError, match="has 3 outputs but digits has 10 classes"):
        train.fit(lambda: kerasnets.create_model("resnet8", input_shape=(16, 16, 1), classes=3), digits,
                  str(tmp_path), config=FAST, verbose=0)

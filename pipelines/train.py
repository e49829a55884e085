"""Training recipe on `model.fit`: optimiser, schedule with warm-up, label smoothing, weight decay,
optional distillation, per-epoch checkpoints with exact resume, NaN stop, TensorBoard logs."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines import augment as augment_mod, convert

log = logging.getLogger("kerasnets.train")

DEFAULTS = {
    "epochs": 30, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
    "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine", "warmup_epochs": 0,
    "step_epochs": [], "step_factor": 0.1, "label_smoothing": 0.0, "mixed_precision": "auto",
    "ema": 0.0,
    "augment": ["crop", "flip"], "teacher": "", "distill_alpha": 0.5, "distill_temperature": 4.0,
    "seed": 0,
}


SCHEDULES = ("cosine", "linear", "step", "constant")
# "auto": float16 on a GPU, else float32; "native": bfloat16 on a CPU with native bf16 arithmetic
# (AVX512_BF16 / AMX), float16 on a GPU, else float32
PRECISIONS = ("auto", "native", "bfloat16", "float16", "float32", True, False)


def _grouped_convolution_by_groups(layer, inputs, kernel):
    """A grouped convolution as `groups` ordinary ones on channel slices, concatenated: the same
    sums, computed by kernels whose gradients are fast on a CPU."""
    axis = layer._get_channel_axis()
    parts = zip(tf.split(inputs, layer.groups, axis=axis), tf.split(kernel, layer.groups, axis=-1))
    return tf.concat([layer.convolution_op(x, k) for x, k in parts], axis=axis)


@contextlib.contextmanager
def grouped_convolutions_by_groups():
    """Within it, tf_keras convolutions with `groups` > 1 run group by group
    (`_grouped_convolution_by_groups`) in every function traced inside it.

    Why: tf_keras runs a grouped conv as one XLA-compiled op, whose gradient on a CPU was 85x
    slower than the same work split into groups (3x3, 64 channels, 4 groups, batch 128: 10.3 s
    against 0.12 s a step; a full 3x3 conv 0.22 s), so mgiad_cifar took 63 s a training step.
    Only training uses it: a converted or exported model keeps its one grouped CONV_2D."""
    from tf_keras.src.layers.convolutional import base_conv

    # the method tf_keras routes grouped convs through; a release without it trains as it is
    saved = base_conv.Conv.__dict__.get("_jit_compiled_convolution_op")
    if saved is None:
        yield
        return
    base_conv.Conv._jit_compiled_convolution_op = _grouped_convolution_by_groups
    try:
        yield
    finally:
        base_conv.Conv._jit_compiled_convolution_op = saved


class TrainingStopped(RuntimeError):
    """Training could not go on (NaN loss); the last good checkpoint is named in the message."""


def _config(overrides: dict | None) -> dict:
    config = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown training option {key!r}; known: {', '.join(sorted(DEFAULTS))}")
        config[key] = value
    if config["optimizer"] not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be sgd or adamw, got {config['optimizer']!r}")
    if config["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {config['schedule']!r}")
    if not 0.0 <= float(config["ema"]) < 1.0:
        raise ValueError(f"ema is the per-step decay of the weights' moving average, in [0, 1) (0: off), "
                         f"got {config['ema']!r}")
    if config["mixed_precision"] not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                         f"got {config['mixed_precision']!r}")
    if int(config["epochs"]) < 1 or int(config["batch_size"]) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {config['epochs']}, {config['batch_size']}")
    return config


@keras.saving.register_keras_serializable(package="kerasnets")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then cosine or linear decay to 0, step decay, or constant (per optimiser
    step). Linear decay after a warm-up is the one-cycle shape of fast CIFAR training."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, kind="cosine", boundaries=(), factor=0.1):
        self.base_lr, self.total_steps, self.warmup_steps = float(base_lr), int(total_steps), int(warmup_steps)
        self.kind, self.boundaries, self.factor = kind, [int(b) for b in boundaries], float(factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = tf.cast(max(self.warmup_steps, 1), tf.float32)
        if self.kind == "cosine":
            span = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
            progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            lr = 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * progress))
        elif self.kind == "linear":
            span = tf.cast(max(self.total_steps - self.warmup_steps, 1), tf.float32)
            lr = self.base_lr * (1.0 - tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0))
        elif self.kind == "step":
            drops = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] or [tf.constant(0.0)])
            lr = self.base_lr * tf.pow(self.factor, drops)
        else:
            lr = tf.constant(self.base_lr)
        if self.warmup_steps:
            lr = tf.where(step < self.warmup_steps, self.base_lr * (step + 1) / warm, lr)
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "boundaries": self.boundaries, "factor": self.factor}


def make_optimizer(config, steps_per_epoch):
    total = steps_per_epoch * int(config["epochs"])
    schedule = WarmupSchedule(config["lr"], total, steps_per_epoch * int(config["warmup_epochs"]),
                              config["schedule"], [e * steps_per_epoch for e in config["step_epochs"]],
                              config["step_factor"])
    if config["optimizer"] == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"])
    # SGD: weight decay as decoupled decay, as in the papers' PyTorch recipes (SGD + wd).
    return keras.optimizers.SGD(schedule, momentum=config["momentum"], nesterov=bool(config["nesterov"]),
                                weight_decay=config["weight_decay"])


class Distiller(keras.Model):
    """Knowledge distillation (Hinton et al.): hard-label loss plus T^2-scaled KL to the teacher's
    softened outputs. Works on probability outputs: softmax(log p / T) = softmax(z / T)."""

    def __init__(self, student, teacher, alpha=0.5, temperature=4.0, label_smoothing=0.0):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.hard_loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        self.teacher.trainable = False
        # the loss is computed here, not by the compiled loss, whose tracker would report 0
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker] + [m for m in super().metrics if m.name != "loss"]

    def _results(self, y, pred, loss):
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, pred)
        return {m.name: m.result() for m in self.metrics}

    def _regularization(self):
        """The student's weight penalties (its layers' regularisers), added to both losses."""
        return tf.add_n(self.student.losses) if self.student.losses else 0.0

    def _soft(self, probabilities):
        return tf.nn.softmax(tf.math.log(probabilities + 1e-8) / self.temperature)

    def call(self, x, training=False):
        return self.student(x, training=training)

    def train_step(self, data):
        x, y = data
        # under a mixed policy the networks answer in bf16/fp16: the losses are taken in float32
        teacher = self._soft(tf.cast(self.teacher(x, training=False), tf.float32))
        with tf.GradientTape() as tape:
            pred = tf.cast(self.student(x, training=True), tf.float32)
            soft = keras.losses.kl_divergence(teacher, self._soft(pred)) * self.temperature ** 2
            loss = self.alpha * self.hard_loss(y, pred) + (1 - self.alpha) * tf.reduce_mean(soft)
            loss += self._regularization()
        grads = tape.gradient(loss, self.student.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
        return self._results(y, pred, loss)

    def test_step(self, data):
        """The student on held-out data: its hard-label loss (as a plain model's val_loss)."""
        x, y = data
        pred = tf.cast(self.student(x, training=False), tf.float32)
        loss = self.hard_loss(y, pred) + self._regularization()
        return self._results(y, pred, loss)


class WeightAverage(keras.callbacks.Callback):
    """Exponential moving average of every weight of `target` (BatchNorm statistics included, so
    they match the averaged kernels), swapped into the model when training ends. The decay warms
    up as min(decay, (1 + n) / (10 + n)) after n steps, so a short run is not pulled back to its
    initialisation (Keras' optimiser EMA starts from the initial weights at the full decay).
    A resumed run restarts the average from the restored weights."""

    def __init__(self, target, decay: float):
        super().__init__()
        self.target, self.decay = target, float(decay)

    def on_train_begin(self, logs=None):
        self.step = tf.Variable(0.0, trainable=False)
        self.averages = [tf.Variable(w, trainable=False) for w in self.target.weights]
        self._update = tf.function(self._average)

    def _average(self):
        self.step.assign_add(1.0)
        decay = tf.minimum(self.decay, (1.0 + self.step) / (10.0 + self.step))
        for average, weight in zip(self.averages, self.target.weights):
            average.assign(decay * average + (1.0 - decay) * tf.cast(weight, average.dtype))

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    def on_train_end(self, logs=None):
        for average, weight in zip(self.averages, self.target.weights):
            weight.assign(tf.cast(average, weight.dtype))


class _StepCountFromZero(keras.callbacks.Callback):
    """Keras's progress bar sizes an epoch of unknown length by the model's step counter, which
    BackupAndRestore restores with the weights: a resumed run's first epoch would read 156/156 for
    78 steps. The counter serves nothing else here (checkpoints are per epoch), so it restarts at 0
    as in a fresh run."""

    def on_train_begin(self, logs=None):
        self.model._train_counter.assign(0)


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first NaN/inf loss, before anything is checkpointed from the broken weights."""

    def __init__(self):
        super().__init__()
        self.bad_batch = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.bad_batch = batch
            self.model.stop_training = True


def write_model(model, path):
    """Save a .keras file under a temporary name, then rename: never half-written."""
    tmp = path[:-len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Save `last.keras` (atomically) and the epoch history after every epoch with a finite loss."""

    def __init__(self, out_dir, nan_guard: StopOnNaN, model_to_save=None):
        super().__init__()
        self.out_dir, self.nan_guard, self.model_to_save = out_dir, nan_guard, model_to_save

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.bad_batch is not None:
            return
        path = os.path.join(self.out_dir, "last.keras")
        write_model(self.model_to_save or self.model, path)
        history_path = os.path.join(self.out_dir, "history.jsonl")
        with open(history_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}) + "\n")


def training_dataset(dataset, *, batch_size, classes, augment=(), seed=0, cache=True):
    """Shuffled, augmented, batched, prefetched, with one-hot labels (MixUp/CutMix mix them)."""
    ds = dataset.cache() if cache else dataset
    ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, classes)), num_parallel_calls=tf.data.AUTOTUNE)
    per_image, per_batch = augment_mod.split(augment, seed=seed)
    for fn in per_image:
        ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    for fn in per_batch:
        # one batch at a time: parallel calls would take the random draws in whatever order the
        # threads run, so the same seed would not give the same crops (nor the same weights)
        ds = ds.map(fn)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(dataset, *, batch_size, classes, cache=True):
    ds = dataset.cache() if cache else dataset
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, classes)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def precision_policy(setting="auto") -> str:
    """The Keras dtype policy training uses for `mixed_precision` (see PRECISIONS): "auto" picks
    mixed_float16 on a GPU, else float32; "native" also mixed_bfloat16 on a CPU with native bf16
    (not always faster: thin convs ran 2x slower in bf16 on an AVX512_BF16 CPU)."""
    if setting in ("auto", "native"):
        if tf.config.list_physical_devices("GPU"):
            return "mixed_float16"
        if setting == "auto":
            return "float32"
        from kerasnets.pipelines import machine

        native_bf16 = {"avx512_bf16", "amx_bf16", "bf16"} & set(machine.isa_features())
        return "mixed_bfloat16" if native_bf16 else "float32"
    if setting is True or setting == "float16":
        return "mixed_float16"
    return "mixed_bfloat16" if setting == "bfloat16" else "float32"


def _as_float32(build_model, trained):
    """A float32 copy of a model trained under a mixed policy: what is saved and converted."""
    keras.mixed_precision.set_global_policy("float32")
    model = build_model()
    model.set_weights(trained.get_weights())
    return model


def _finished_epochs(backup_dir) -> int:
    """Epochs the run backed up in `backup_dir` had finished (0 when nothing is backed up):
    BackupAndRestore keeps the index of the last one in its checkpoint, read by all workers from
    the chief's folder."""
    latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if latest is None:
        return 0
    return int(tf.train.load_variable(latest, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def _skip_finished_epochs(train_ds, epochs: int) -> None:
    """Each pass over the training data draws the next shuffle order from the seeded order sequence
    (and restarts the augmentation's random stream): a resumed run draws and drops the orders of the
    epochs it has done, so its next epoch sees the order an uninterrupted run would."""
    for _ in range(epochs):
        iter(train_ds)


def fit(build_model, data, out_dir, *, config=None, resume=False, strategy=None, verbose=1,
        extra_callbacks=()) -> dict:
    """Train a model on `data` (pipelines.data.ImageData); checkpoints and logs go to `out_dir`.

    `build_model()` returns a fresh model (called inside the distribution strategy's scope).
    With `resume=True` an interrupted run continues from its last finished epoch with the same
    optimiser state and schedule step (keras BackupAndRestore) and the data order and crops/flips
    of that epoch, so it ends with the weights the uninterrupted run ends with (per-image
    augmentations run in parallel and take their random draws in thread order). Returns the history and the
    path of the final model; raises TrainingStopped on a NaN loss, naming the last good checkpoint.
    """
    config = _config(config)
    os.makedirs(out_dir, exist_ok=True)
    backup_dir = os.path.join(out_dir, "backup")
    if not resume:
        for stale in ("history.jsonl",):
            if os.path.exists(os.path.join(out_dir, stale)):
                os.remove(os.path.join(out_dir, stale))
        if os.path.isdir(backup_dir):
            import shutil

            shutil.rmtree(backup_dir)
    policy = precision_policy(config["mixed_precision"])
    strategy = strategy or tf.distribute.get_strategy()
    global_batch = int(config["batch_size"])
    if global_batch > data.num_train:  # drop_remainder would leave an empty epoch
        log.warning("batch_size %d > %d training images: using %d", global_batch, data.num_train,
                    data.num_train)
        global_batch = data.num_train
    steps = max(data.num_train // global_batch, 1)
    classes = len(data.classes)
    # before the datasets: a shuffle's order depends on the global seed too, so seeding after them
    # gave a run a different order from the same run made later in the same process
    keras.utils.set_random_seed(int(config["seed"]))
    train_ds = training_dataset(data.train, batch_size=global_batch, classes=classes,
                                augment=config["augment"], seed=config["seed"])
    val_ds = eval_dataset(data.test, batch_size=global_batch, classes=classes)
    if resume:
        _skip_finished_epochs(train_ds, _finished_epochs(backup_dir))
    try:  # a mixed policy set below never outlives this call, even when it raises
        with strategy.scope():
            student = build_model()
            # fake quantisation learns int8 ranges: a QAT model trains in float32 whatever the CPU has
            if policy != "float32" and not convert.is_qat(student):
                keras.mixed_precision.set_global_policy(policy)
                student = build_model()
            else:
                policy = "float32"
            if student.output_shape[-1] != classes:
                raise ValueError(f"the model has {student.output_shape[-1]} outputs but {data.source} has "
                                 f"{classes} classes: build it with classes={classes}")
            model = student
            if config["teacher"]:
                teacher = keras.models.load_model(config["teacher"], compile=False)
                model = Distiller(student, teacher, config["distill_alpha"], config["distill_temperature"],
                                  config["label_smoothing"])
            model.compile(optimizer=make_optimizer(config, steps),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"]),
                          metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
        nan_guard = StopOnNaN()
        callbacks = [
            nan_guard,
            keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
            _StepCountFromZero(),  # after the restore
            EpochCheckpoint(out_dir, nan_guard, student if model is not student else None),
            keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), write_graph=False),
            *extra_callbacks,
        ]
        if config["ema"]:  # before the checkpoint's final save below, after the epoch checkpoints
            callbacks.append(WeightAverage(student, config["ema"]))
        with grouped_convolutions_by_groups():
            history = model.fit(train_ds, epochs=int(config["epochs"]), validation_data=val_ds,
                                callbacks=callbacks, verbose=verbose)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    last = os.path.join(out_dir, "last.keras")
    if nan_guard.bad_batch is not None:
        raise TrainingStopped(
            f"loss became NaN/inf at batch {nan_guard.bad_batch}; training stopped. Last good checkpoint: "
            f"{last if os.path.exists(last) else 'none (failed in the first epoch)'}. Lower the learning "
            "rate or add warm-up (`warmup_epochs`).")
    if policy != "float32" or config["ema"]:
        # the final model in float32 with its EMA weights (fit swapped them in at the end)
        if policy != "float32":
            student = _as_float32(build_model, student)
        write_model(student, last)
    return {"history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "model_path": last, "model": student, "precision": policy}


def evaluate(model, data, batch_size=256) -> float:
    """Top-1 accuracy of a Keras model on the test split."""
    correct = total = 0
    for x, y in data.test.batch(batch_size):
        pred = model.predict_on_batch(x)
        correct += int(np.sum(np.argmax(pred, -1) == y.numpy()))
        total += int(len(y))
    return correct / max(total, 1)

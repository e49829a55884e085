"""One Keras (tf_keras, fp32) timing run in a fresh process, so that TensorFlow's thread pools
can be sized per measurement (they are fixed once TensorFlow starts)."""
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv):
    path, threads, runs = argv[1], int(argv[2]), int(argv[3])
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from kerasnets.pipelines.saving import load_keras  # the zoo's custom layers

    model = load_keras(path)
    x = tf.constant(np.zeros((1, *model.input_shape[1:]), np.float32))
    call = tf.function(lambda t: model(t, training=False))  # graph mode: what serving runs
    for _ in range(3):
        call(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(x).numpy()
        times.append((time.perf_counter() - start) * 1e3)
    from kerasnets.tools.bench_child import peak_rss_kb

    print(json.dumps({"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
                      "peak_rss_mb": round(peak_rss_kb() / 1024, 1)}))


if __name__ == "__main__":
    main(sys.argv)

"""tf.distribute on CPU: MirroredStrategy over 2 logical devices (with QAT), and two
MultiWorkerMirroredStrategy worker processes on 127.0.0.1 that must end with the same weights."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "dist_worker.py")


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def test_mirrored_strategy_on_two_logical_cpus_trains_a_qat_model(tmp_path):
    out = tmp_path / "mirrored.npz"
    subprocess.run([sys.executable, WORKER, "mirrored", str(out)], check=True, timeout=900, env=_env())
    result = np.load(out)
    assert int(result["replicas"]) == 2
    assert result["loss"][-1] < result["loss"][0]


def test_two_replicas_reach_the_weights_of_one_on_the_same_global_batch(tmp_path):
    """MirroredStrategy splits each global batch of 32 over 2 replicas and sums their gradients:
    the training must be the one-device training, within float rounding. Run alone, the two ended
    9e-8 apart; summed in another order under load, rounding can tip a unit across a ReLU's zero
    and move the few weights it feeds further (one full test run, AVX-512 host: 2 of 1,152 kernel
    values of the second conv 1.0e-3 apart, the rest up to 5e-5, on weights of ~0.5). So every
    weight within 1% of the largest, and 99% of each tensor within 0.1%; a replica that trained
    on its own half-batch, or gradients summed instead of averaged, moves nearly every weight by
    several percent."""
    out = tmp_path / "replicas.npz"
    subprocess.run([sys.executable, WORKER, "replicas", str(out)], check=True, timeout=900, env=_env())
    result = np.load(out)
    assert (int(result["one_replicas"]), int(result["two_replicas"])) == (1, 2)
    names = sorted(k[len("one_"):] for k in result.files if k.startswith("one_w"))
    assert names
    scale = max(max(float(np.abs(result[f"one_{k}"]).max()) for k in names), 1.0)
    for k in names:
        apart = np.abs(result[f"two_{k}"] - result[f"one_{k}"])
        assert apart.max() <= 1e-2 * scale, (k, float(apart.max()))
        close = float(np.mean(apart <= 1e-3 * scale))
        assert close >= 0.99, (k, close)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_localhost_agree_on_the_final_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen([sys.executable, WORKER, "multiworker", str(tmp_path / f"w{index}.npz")],
                                      env=_env(TF_CONFIG=config), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode()[-2000:]
    a, b = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert int(a["replicas"]) == 2
    names = [k for k in a.files if k.startswith("w")]
    assert names and all(np.array_equal(a[k], b[k]) for k in names)
    assert a["loss"][-1] < a["loss"][0]

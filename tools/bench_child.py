"""One LiteRT timing run, as a standalone script: it imports only numpy and the LiteRT
interpreter, so the peak RSS of its process is the model's footprint, not TensorFlow's."""
import json
import resource
import sys
import time

import numpy as np


def _interpreter(tflite: bytes, threads: int, xnnpack: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=bytes(tflite), num_threads=threads,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def time_invokes(tflite: bytes, *, threads: int = 1, runs: int = 50, warmup: int = 5,
                 xnnpack: bool = True) -> dict:
    """Median and p90 wall time (ms) of one invoke on a zero input, after `warmup` invokes."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    interpreter = _interpreter(tflite, threads, xnnpack)
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
            "xnnpack_partitions": xnnpack_partitions(interpreter),
            "ops_outside_xnnpack": ops_outside_xnnpack(interpreter) if xnnpack else ""}


def xnnpack_partitions(interpreter) -> int:
    """How many pieces XNNPACK runs of the graph (0 without it): each piece is one delegate node,
    and an op XNNPACK does not take (in int8: HARD_SWISH, AVERAGE_POOL_2D) ends one piece and
    runs on TFLite's own kernels before the next, so more than one means part of the model
    leaves XNNPACK's int8 path, and a handoff per piece."""
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())  # no public op list


def ops_outside_xnnpack(interpreter) -> str:
    """The ops XNNPACK left to TFLite's kernels, as "OP:count" by name ("" when it took them all).

    The interpreter lists the model's ops and, after them, one DELEGATE op per piece XNNPACK runs.
    A tensor a delegated op makes is inside a piece or one of its outputs, so an op is left out
    when its output leaves the graph, or feeds a piece or a left-out op, and is no piece's output.
    """
    ops = interpreter._get_ops_details()  # no public op list
    pieces = [op for op in ops if op["op_name"] == "DELEGATE"]
    model_ops = [op for op in ops if op["op_name"] != "DELEGATE"]
    made_by_pieces = {t for op in pieces for t in op["outputs"]}
    wanted = {t for op in pieces for t in op["inputs"]} | {d["index"] for d in interpreter.get_output_details()}
    left_out, grew = set(), True
    while grew:  # outputs first, then back through chains of left-out ops
        grew = False
        for op in model_ops:
            if op["index"] not in left_out and not set(op["outputs"]) & made_by_pieces \
                    and set(op["outputs"]) & wanted:
                left_out.add(op["index"])
                wanted |= {t for t in op["inputs"] if t >= 0}
                grew = True
    names = sorted(op["op_name"] for op in model_ops if op["index"] in left_out)
    return " ".join(f"{name}:{names.count(name)}" for name in sorted(set(names)))


def peak_rss_kb() -> int:
    """This process's RSS high-water mark. /proc's VmHWM belongs to the process's own memory
    map; getrusage's ru_maxrss would include the parent's RSS from before exec()."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv):
    path, threads, runs, xnnpack = argv[1], int(argv[2]), int(argv[3]), argv[4] == "1"
    with open(path, "rb") as f:
        tflite = f.read()
    result = time_invokes(tflite, threads=threads, runs=runs, xnnpack=xnnpack)
    result["peak_rss_mb"] = round(peak_rss_kb() / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)

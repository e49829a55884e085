"""What the command line shows: TensorFlow's logs silenced unless --verbose, one line per stage, the run summary.

TensorFlow talks on three channels. Its C++ core and the TFLite converter log through absl/tsl
to the stderr file descriptor (some lines, such as oneDNN's notice at import, ignore
TF_CPP_MIN_LOG_LEVEL; the converter also printf's), its Python side logs through the
`tensorflow` logger (`Assets written to ...`), and absl prints INFO records. A quiet command:
sets TF_CPP_MIN_LOG_LEVEL and the logger levels before TensorFlow loads, and points the stderr
file descriptor at a temporary file for the whole command while Python's `sys.stderr` (warnings,
logging, progress bars, these lines) keeps writing to the terminal. The captured native output
is shown when the command fails.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

_NOISY_LOGGERS = ("tensorflow", "absl", "h5py")
# Notices every TensorFlow process prints (import, CPU features, the CUDA probe): not worth showing
# even beside an error.
_NOTICES = ("All log messages before absl::InitializeLog", "oneDNN custom operations", "cudart_stub.cc",
            "cpu_feature_guard.cc", "To enable the following instructions", "failed call to cuInit")


def verbose_requested(argv) -> bool:
    """Whether `argv` asks for --verbose (read before the flags are parsed, as TensorFlow's log
    levels must be set before it loads; the last of --verbose/--noverbose/--verbose=... wins)."""
    verbose = False
    for arg in argv[1:]:
        if arg == "--verbose":
            verbose = True
        elif arg == "--noverbose":
            verbose = False
        elif arg.startswith("--verbose="):
            verbose = arg.split("=", 1)[1].lower() in ("1", "true", "yes", "on")
    return verbose


# Python-side TensorFlow warnings about the machine's timing, not the user's model or data: Keras
# warns when a batch-end callback (the NaN guard, the weight average) takes longer than a batch,
# which a tiny model on a busy CPU triggers at random
_TIMING_WARNINGS = ("is slow compared to the batch time",)


class _DropTimingWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _TIMING_WARNINGS)


_DROP_TIMING_WARNINGS = _DropTimingWarnings()


def set_log_levels(verbose: bool) -> None:
    """TensorFlow's C++ log level (before it loads) and its Python loggers' levels. Quiet keeps
    C++ errors (level 2 drops INFO and WARNING); a TF_CPP_MIN_LOG_LEVEL the user set is kept.
    TF_ENABLE_ONEDNN_OPTS is never touched: it changes numerics, only its notice is silenced."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    tf_logger = logging.getLogger("tensorflow")
    if verbose:
        tf_logger.removeFilter(_DROP_TIMING_WARNINGS)
    else:
        tf_logger.addFilter(_DROP_TIMING_WARNINGS)


def set_absl_verbosity(verbose: bool) -> None:
    """absl's Python verbosity (after app.run has parsed its own --verbosity flag)."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)


def _repoint_stream_handlers(old, new) -> None:
    """Logging handlers that write to `old` (the previous sys.stderr) write to `new`."""
    from absl import logging as absl_logging

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    handlers = [h for logger in loggers for h in getattr(logger, "handlers", [])]
    handlers.append(absl_logging.get_absl_handler().python_handler)
    for handler in handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)


class NativeStderr:
    """The stderr file descriptor pointed at a temporary file, Python's sys.stderr at the
    terminal; `captured()` reads what native code wrote, `restore()` undoes it."""

    def __init__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved_fd = os.dup(2)
        self._old = sys.stderr
        self._new = open(os.dup(self._saved_fd), "w", buffering=1, encoding=getattr(self._old, "encoding", None)
                         or "utf-8", errors="backslashreplace")
        os.dup2(self._file.fileno(), 2)
        sys.stderr = self._new
        _repoint_stream_handlers(self._old, self._new)

    def captured(self) -> str:
        self._file.flush()
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")

    def restore(self) -> None:
        self._new.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        _repoint_stream_handlers(self._new, self._old)
        sys.stderr = self._old
        self._new.close()
        self._file.close()


def _without_notices(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(notice in line for notice in _NOTICES))


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True):
    """Hide what native code (TensorFlow's C++ logs, the TFLite converter, LiteRT) writes to the
    stderr file descriptor; on an exception or a failing exit, show it before the error."""
    if not enabled:
        yield
        return
    capture = NativeStderr()
    failed = True
    try:
        result = yield
        failed = False
        return result
    except SystemExit as exit_:
        failed = exit_.code not in (None, 0)
        raise
    finally:
        text = _without_notices(capture.captured())
        capture.restore()
        if failed and text.strip():
            sys.stderr.write("--- native (TensorFlow) output of the failed command ---\n" + text
                             + ("" if text.endswith("\n") else "\n") + "---\n")


# ---------------------------------------------------------------------------------------------
# what a run prints


def stage_line(stage: str, status: str) -> str:
    """`train ........ 41.2 s`: the stage name padded with dots to one column, then its status."""
    return f"{stage} {'.' * (12 - len(stage))} {status}"


def print_stage(stage: str, status: str, stream=None) -> None:
    print(stage_line(stage, status), file=stream or sys.stderr, flush=True)


def _percent(value):
    return f"{100 * value:.1f}%"


def _kib(value):
    # the run's *_kb metrics are bytes / 1024: KiB, labelled so
    return f"{value:.1f} KiB"


def summary_rows(metrics: dict, report: str) -> list[tuple[str, str]]:
    """(label, value) rows of the run summary; a metric the run did not produce is left out."""
    rows = []
    for label, key, show in (
            ("top-1 fp32", "top1_fp32", _percent), ("top-1 compressed", "top1_compressed", _percent),
            ("top-1 QAT", "top1_qat", _percent), ("top-1 int8", "top1_int8", _percent),
            ("int8 size", "int8_kb", _kib),
            ("TFLM arena", "arena_bytes", lambda b: f"{_kib(b / 1024)} ({b} bytes)"),
            ("host latency", "latency_ms", lambda ms: f"{ms:.3f} ms median")):
        if metrics.get(key) is not None:
            rows.append((label, show(metrics[key])))
    if rows and rows[-1][0] == "host latency" and metrics.get("machine"):
        rows[-1] = (rows[-1][0], f"{rows[-1][1]} ({metrics['machine']})")
    rows.append(("report", report))
    return rows


def summary(metrics: dict, report: str) -> str:
    rows = summary_rows(metrics, report)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)

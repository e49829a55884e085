"""The `kerasnets` command line as a user runs it (a real subprocess)."""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ZOO_COLUMNS = ["model", "input", "params", "macs", "published_params", "published_macs", "size_ok",
               "int8_kb", "arena_bytes", "latency_ms", "machine"]


def kerasnets(*args, umask=None):
    cmd = [sys.executable, "-c", "from kerasnets.tools.cli import run; run()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def test_zoo_writes_the_documented_csv(tmp_path):
    out = tmp_path / "zoo.csv"
    result = kerasnets("zoo", "--filter=resnet8", f"--out={out}", "--runs=3")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ZOO_COLUMNS
    row = rows[0]
    assert row["model"] == "resnet8" and row["input"] == "32x32x3" and row["size_ok"] == "True"
    # the row measures the model it names: the same net calibrated and converted the same way here
    # has that size and arena
    from kerasnets import create_model
    from kerasnets.micro import arena
    from kerasnets.pipelines import convert, data
    from kerasnets.tools import zoo

    images, _ = data.digits_images((32, 32, 3), zoo.CALIBRATION_IMAGES)
    model = create_model("resnet8")
    convert.calibrate_batchnorm(model, images)
    tflite = convert.to_int8(model, images)
    assert float(row["int8_kb"]) == round(len(tflite) / 1024, 1)
    assert int(row["arena_bytes"]) == arena.measure_arena(tflite)
    assert float(row["latency_ms"]) > 0 and row["machine"]
    assert "resnet8" in result.stdout


def test_zoo_input_size_merges_into_the_existing_table(tmp_path):
    out = tmp_path / "zoo.csv"
    kept = dict.fromkeys(ZOO_COLUMNS, "1") | {"model": "aaa_earlier_run", "input": "32x32x3"}
    with out.open("w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=ZOO_COLUMNS)
        writer.writeheader()
        writer.writerow(kept)
    result = kerasnets("zoo", "--filter=resnet8", "--input-size=40", f"--out={out}", "--runs=2")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows[0] == kept and rows[1]["model"] == "resnet8" and rows[1]["input"] == "40x40x3"
    bad = kerasnets("zoo", "--filter=nosuchnet*", f"--out={out}")
    assert bad.returncode == 2 and "matches no model" in bad.stderr


def test_profile_json_and_csv():
    result = kerasnets("profile", "--model=resnet8", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    for key in ("params", "macs", "weights_int8_bytes", "peak_activation_bytes", "layers"):
        assert key in stats
    table = kerasnets("profile", "--model=resnet8", "--csv")
    header = table.stdout.splitlines()[0]
    assert header.startswith("name,type,output_shape,params,macs")


@pytest.mark.parametrize("args, message", [
    (("nosuch",), "usage: kerasnets"),
    (("profile",), "needs --model"),
    (("profile", "--model=resnet_8"), "did you mean resnet8"),
    (("compress", "--model=resnet8", "--out=small.keras"), "compress needs --method (one of "),
    (("bench", "--target=phone"), "<host|android|cortex-m4|ethos-u55-128|ethos-u65-256>"),
])
def test_cli_errors_are_clear(args, message):
    result = kerasnets(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_export_int8_with_micro_sources_and_metadata(tmp_path, digit_batches):
    import kerasnets as zoo
    from kerasnets.micro import arena as micro_arena
    from kerasnets.pipelines import convert, metadata

    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    out = tmp_path / "out"
    # seeded weights with BatchNorm statistics from digits: `--model`'s fresh random weights gave,
    # now and then, one int8 output for every golden input, which export rightly refuses
    model = zoo.create_model("resnet8")  # seeded by conftest's `_seeded`
    convert.calibrate_batchnorm(model, digit_batches(model.input_shape[1:], 32))
    model.save(tmp_path / "resnet8.keras")
    result = kerasnets("export", f"--keras={tmp_path / 'resnet8.keras'}", "--mode=int8", "--micro",
                       f"--labels={labels}", f"--out={out}", umask=0o022)
    assert result.returncode == 0, result.stderr
    # written under a temporary name and renamed, yet with the mode the umask gives (not 0600)
    for written in (out / "resnet8.tflite", out / "micro" / "arena.json", out / "micro" / "resnet8_model_data.cc"):
        assert written.stat().st_mode & 0o777 == 0o644, written
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["parity"] and summary["metadata"]["labels"] == 10
    tflite = (out / "resnet8.tflite").read_bytes()
    assert metadata.read(tflite)["labels"] == [f"class {i}" for i in range(10)]
    arena = json.loads((out / "micro" / "arena.json").read_text())
    # the TFLite Micro interpreter's own figure for the model it flashes (the headroom comes on top)
    assert arena["arena_bytes"] == micro_arena.measure_arena(metadata.strip(tflite)) and "CONV_2D" in arena["ops"]
    # The microcontroller's copy carries no metadata: the C array is the plain model.
    source = (out / "micro" / "resnet8_model_data.cc").read_text()
    flashed = int(re.search(r"g_resnet8_model_data_size = (\d+);", source).group(1))
    assert flashed <= len(metadata.strip(tflite)) < len(tflite)
    # beside it, the copy apps take (the Task Library refuses int8 input): uint8, RGB, same labels
    app = (out / "resnet8_app.tflite").read_bytes()
    assert summary["app_tflite"] == str(out / "resnet8_app.tflite") and summary["app_io_type"] == "uint8"
    assert summary["app_int8_dot_product"] is True  # lowered for a phone's CPU unless told otherwise
    assert metadata.read(app)["labels"] == [f"class {i}" for i in range(10)]
    from kerasnets.pipelines import convert

    details = convert.litert_interpreter(app).get_input_details()[0]
    assert details["dtype"] == np.uint8 and tuple(details["shape"]) == (1, 32, 32, 3)


def test_export_fp32_parity_gate(tmp_path):
    result = kerasnets("export", "--model=resnet8", "--mode=fp32", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["parity"]["max_abs_diff"] <= 1e-4 and summary["mode"] == "fp32"


def test_export_refuses_a_failing_int8_parity_gate_and_writes_nothing(tmp_path):
    """A classifier whose logits differ by far less than its int8 output step: int8 ties most of
    them, so it picks the fp32 model's class on fewer than half of the images (40.6% measured)."""
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    head = keras.layers.Dense(10, name="head")
    model = keras.Model(inp, head(keras.layers.Flatten()(inp)), name="tied")
    weights = np.random.default_rng(0).normal(scale=0.01, size=(64, 10)).astype("float32")
    weights[:, 0] = 0
    head.set_weights([weights, np.array([-100] + [0] * 9, "float32")])  # class 0 only stretches the range
    model.save(tmp_path / "tied.keras")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept\n")
    result = kerasnets("export", f"--keras={tmp_path / 'tied.keras'}", "--mode=int8", "--micro", f"--out={out}")
    assert result.returncode == 2, result.stderr[-2000:]
    message = next(line for line in result.stderr.splitlines() if line.startswith("kerasnets export:"))
    agreement = float(re.search(r"top-1 class of ([\d.]+)% of 64 held-out --calibration images", message).group(1))
    assert agreement < 90 and "below --min_agreement=0.9: nothing was written" in message
    assert "train" in message and "lower --min_agreement" in message
    assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]  # nothing new, nothing half-written
    lowered = kerasnets("export", f"--keras={tmp_path / 'tied.keras'}", "--mode=int8", "--min_agreement=0",
                        f"--out={out}")
    assert lowered.returncode == 0, lowered.stderr[-2000:]
    assert round(json.loads(lowered.stdout.splitlines()[-1])["parity"]["top1_agreement"] * 100, 1) == agreement


def test_export_reports_a_tflite_micro_abort_as_an_error(tmp_path):
    """An untrained 1000-class softmax: its near-uniform logits make TFLite Micro's int8 softmax
    abort on the golden inputs. The command says so and exits 1; the abort stays in a child."""
    import tf_keras as keras

    inp = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inp))
    keras.Model(inp, keras.layers.Dense(1000, activation="softmax", name="head")(pooled)).save(tmp_path / "wide.keras")
    out = tmp_path / "out"
    result = kerasnets("export", f"--keras={tmp_path / 'wide.keras'}", "--mode=int8", "--micro", "--min_agreement=0",
                       f"--out={out}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert re.search(r"kerasnets export: TFLite Micro crashed on the golden inputs for wide, so nothing was "
                     r"written: .*killed by SIGABRT", result.stderr)
    assert not out.exists()


@pytest.mark.parametrize("command, shown, not_shown", [
    ("export", ["--io_type: <int8|uint8|float>", "--app_io_type: <uint8|float|none>",
                "--mode: <fp32|fp16|dynamic|int8|int16x8>", "--calibration", "--max_arena", "--input_size",
                "--min_agreement", "--[no]tensor_checksums", "--[no]app_int8_dot_product",
                "--condensed_index: <folded|gather>"], ["--filter", "--target", "--helpfull"]),
    ("compress", ["--target: A budget KEY=VALUE", "--method: <", "scl", "--strength"], ["--io_type"]),
    ("bench", ["--target: <host|android|cortex-m4|ethos-u55-128|ethos-u65-256>: Where to run", "--tflite", "--threads", "--tflm_tree", "--clock_mhz"], ["--method"]),
    ("run", ["--from_stage: <data|train|compress|qat|export|micro|bench|report>", "--train.epochs",
             "--dataset"], ["--io_type"]),
    ("frontier", ["--recipe: <baseline|fast|fast_fp32>", "--candidates", "--rank_epochs", "--top",
                  "--[no]reference"], ["--io_type", "--method"]),
])
def test_subcommand_help_lists_its_own_flags(command, shown, not_shown):
    result = kerasnets(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: kerasnets {command} [flags]")
    for text in shown:
        assert text in result.stdout, text
    for text in not_shown:
        assert text not in result.stdout, text


def test_run_accepts_every_stage_for_from_stage(tmp_path):
    """--from_stage=compress passes flag parsing; the unknown model then stops the run before any work."""
    result = kerasnets("run", "--from_stage=compress", "--model=resnet_8", f"--out={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "did you mean resnet8" in result.stderr


def test_export_builds_the_model_at_input_size(tmp_path):
    from kerasnets.pipelines import tflite_file

    result = kerasnets("export", "--model=resnet8", "--input_size=24", "--mode=fp32", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr
    _, graph = tflite_file.read_tflite_file(str(tmp_path / "resnet8.tflite"))
    assert list(graph.inputs[0].shape) == [1, 24, 24, 3]


def test_library_errors_name_the_argument_and_the_cli_names_the_flag(tmp_path):
    from kerasnets.pipelines import saving
    from kerasnets.tools import run

    missing = tmp_path / "missing.keras"
    with pytest.raises(ValueError, match=r"`keras_file=.*missing.keras`: no such file") as error:
        saving.load_keras(str(missing))
    assert "--" not in str(error.value)
    with pytest.raises(ValueError, match=r"`config_file=.*nothing.yaml`") as error:
        run.load_config_file(str(tmp_path / "nothing.yaml"))
    assert "--" not in str(error.value)
    result = kerasnets("export", f"--keras={missing}", f"--out={tmp_path}")
    assert result.returncode == 2 and f"kerasnets export: --keras={missing}: no such file" in result.stderr
    result = kerasnets("run", f"--config={tmp_path / 'nothing.yaml'}")
    assert result.returncode == 2 and f"kerasnets run: --config={tmp_path / 'nothing.yaml'}:" in result.stderr


def test_micro_error_through_the_cli_names_the_flag(tmp_path):
    result = kerasnets("export", "--model=resnet8", "--input_size=16", "--micro", "--max_arena=1000",
                       f"--out={tmp_path}")
    assert result.returncode == 2
    assert "above --max_arena=1000" in result.stderr and "`" not in result.stderr.splitlines()[-1]


def test_translation_uses_each_commands_table_and_keeps_unknown_names():
    from kerasnets.tools import cli

    message = "`spec=imagefolder:PATH` is empty; set `seed` or `nosuch=3`"
    assert cli.translate(message, cli.COMMANDS["export"].renames) == \
        "--calibration=imagefolder:PATH is empty; set `seed` or `nosuch=3`"
    assert cli.translate(message, cli.COMMANDS["run"].renames) == \
        "--dataset=imagefolder:PATH is empty; set --data.seed or `nosuch=3`"
    assert cli.translate("`strength` and `data`", cli.COMMANDS["compress"].renames | {"strength": "strength"}) \
        == "--strength and --dataset"


def test_export_writes_a_condensed_model_with_its_index_as_gather(tmp_path):
    from kerasnets.pipelines import tflite_file

    sizes = {}
    for form in ("folded", "gather"):
        result = kerasnets("export", "--model=effcnet_cifar", "--mode=int8", "--app_io_type=none", "--min_agreement=0",
                           f"--condensed_index={form}", f"--out={tmp_path / form}")
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads(result.stdout.splitlines()[-1])
        assert summary["condensed_index"] == form
        _, graph = tflite_file.read_tflite_file(str(tmp_path / form / "effcnet_cifar.tflite"))
        assert ("GATHER" in graph.op_names) == (form == "gather"), graph.op_names
        sizes[form] = summary["size_bytes"]
    assert sizes["gather"] < sizes["folded"]
    refused = kerasnets("export", "--model=resnet8", "--condensed_index=gather", f"--out={tmp_path / 'r'}")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "kerasnets export: --condensed_index gather: " in refused.stderr
    assert "has no IndexedGroupConv" in refused.stderr and not (tmp_path / "r").exists()

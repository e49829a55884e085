"""kerasnets frontier: the budget screen, the cheap ranking and one trained, deployed row."""
import json
import time

import numpy as np
import pytest

from kerasnets.pipelines import data
from kerasnets.tools import bench, frontier


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", image_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def calibration(digits):
    return data.representative_images(digits, 32)


@pytest.fixture(scope="module")
def limit(calibration):
    return frontier.budget(calibration)


def test_the_budget_is_the_reference_measured_in_this_run(limit, calibration):
    # He et al.'s ResNet-8 has 144 parameters fewer than MLPerf's and the same maps (so the same
    # arena), but its BatchNorm'd shortcut adds an op and per-channel quantisation data: the budget
    # is exact enough to tell them apart
    assert limit["params"] == 78186
    he = frontier.find(frontier.search_space(), "resnet_cifar[depth=8,width=1.0]")
    row, = frontier.screen([he], limit, calibration)
    assert row["params"] < limit["params"] and row["arena_bytes"] == limit["arena_bytes"]
    assert row["verdict"] == "int8 size over budget"


def test_screen_keeps_what_fits_and_says_why_the_rest_does_not(limit, calibration):
    space = frontier.search_space()
    picked = [frontier.find(space, label) for label in (
        "resnet_cifar[depth=8,width=0.5]",              # fits
        "resnet_cifar[depth=26,width=1.25]",            # too many parameters: rejected by the profiler
        "ghost_resnet_cifar[depth=8,width=1.0,ghost]",  # 42k params, but 16+16-channel maps: arena
        "effcnet_cifar[res=32]")]                       # few parameters, large arena and file
    verdicts = {f"{r['model']}[{r['variant']}]": r["verdict"]
                for r in frontier.screen(picked, limit, calibration)}
    assert verdicts["resnet_cifar[depth=8,width=0.5]"] == "fits"
    assert verdicts["resnet_cifar[depth=26,width=1.25]"] == "params over the int8 budget (profiler)"
    assert verdicts["ghost_resnet_cifar[depth=8,width=1.0,ghost]"] == "arena over budget"
    assert verdicts["effcnet_cifar[res=32]"] != "fits"
    # the reference itself fits its own budget exactly
    reference = frontier.screen(frontier.search_space_reference(), limit, calibration)
    assert reference[0]["verdict"] == "fits"


def test_the_screen_table_measures_only_the_candidates_it_lacks(limit, calibration, tmp_path):
    space = frontier.search_space()
    kept, new = (frontier.find(space, label) for label in (
        "resnet_cifar[depth=8,width=0.5]", "shufflenetv2_cifar[width=0.25,repeats=2-4-2,last=128]"))
    path = str(tmp_path / "screen.csv")
    bench.append_rows([{"model": kept.family, "variant": kept.variant, "verdict": "kept from an earlier run"}],
                      path, frontier.SCREEN_COLUMNS)
    rows = frontier.screen_table([kept, new], path, limit, calibration)
    assert rows[0]["verdict"] == "kept from an earlier run"  # not measured again
    # measured: converted and allocated in TFLite Micro (the README's figures for this point: a 97,672-byte
    # file, 95.4 KiB, with a 62,480-byte arena; neither depends on the weights' values)
    assert (rows[1]["int8_kb"], rows[1]["arena_bytes"], rows[1]["verdict"]) == (95.4, 62480, "int8 size over budget")
    assert frontier.read_rows(path)[1]["params"] == str(rows[1]["params"])  # the new row is in the table
    assert frontier.screen_table([kept, new], path, limit, calibration) == frontier.read_rows(path)  # nothing new


def test_shufflenet_v2_knobs_span_the_paper_model_and_smaller_ones():
    from kerasnets import create_model, shufflenetv2

    paper = create_model("shufflenetv2_050_cifar")
    assert shufflenetv2.shufflenetv2_cifar(width=0.5).count_params() == paper.count_params()
    params = {knobs: shufflenetv2.shufflenetv2_cifar(**dict(knobs)).count_params()
              for knobs in ((("width", 0.25),), (("width", 0.25), ("repeats", (2, 4, 2))),
                            (("width", 0.25), ("last_channels", 128)))}
    assert max(params.values()) < paper.count_params()
    assert params[(("width", 0.25), ("repeats", (2, 4, 2)))] < params[(("width", 0.25),)]
    assert params[(("width", 0.25), ("last_channels", 128))] < params[(("width", 0.25),)]
    with pytest.raises(ValueError, match="repeats"):
        shufflenetv2.shufflenetv2_cifar(repeats=(4, 8))


def test_densenet_knobs_span_the_paper_model_and_smaller_ones():
    from kerasnets import create_model, densenet

    assert densenet.densenet_cifar(depth=100, growth=12).count_params() == \
        create_model("densenet_bc_100_k12_cifar").count_params()
    small = densenet.densenet_cifar(depth=22, growth=4)
    assert [len([l for l in small.layers if l.name.startswith(f"block{b}_") and l.name.endswith("_concat")])
            for b in (1, 2, 3)] == [3, 3, 3]  # (22 - 4) / 6 layers per block
    assert small.count_params() < densenet.densenet_cifar(depth=22, growth=6).count_params()
    with pytest.raises(ValueError, match="depth must be 4 \\+ a multiple of 6"):
        densenet.densenet_cifar(depth=25)


def test_resnet_stage_knobs_set_each_stage_and_reproduce_the_uniform_net():
    from kerasnets import resnet

    assert resnet.cifar_resnet(stage_widths=(16, 32, 64), stage_blocks=(3, 3, 3)).count_params() == \
        resnet.cifar_resnet(20).count_params()
    shaped = resnet.cifar_resnet(stage_widths=(14, 32, 48), stage_blocks=(1, 2, 1))
    assert shaped.name == "resnet10_cifar"
    convs = {l.name.removesuffix("_conv2_conv"): l.filters for l in shaped.layers
             if l.__class__.__name__ == "Conv2D" and l.name.endswith("_conv2_conv")}
    assert convs == {"stage1_block1": 14, "stage2_block1": 32, "stage2_block2": 32, "stage3_block1": 48}
    with pytest.raises(ValueError, match="stage_blocks must be three positive integers"):
        resnet.cifar_resnet(stage_blocks=(1, 2))
    with pytest.raises(ValueError, match="depth 14 does not match stage_blocks"):
        resnet.cifar_resnet(14, stage_blocks=(1, 2, 1))
    with pytest.raises(ValueError, match="width .* or stage_widths"):
        resnet.cifar_resnet(8, width=0.5, stage_widths=(8, 16, 32))
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet.cifar_resnet()


def test_a_model_registered_from_the_search_is_not_searched_twice():
    labels = [c.label for c in frontier.search_space()]
    assert "resnet_cifar[depth=14,width=0.625]" in labels  # resnet14_062_cifar, as a point of the search
    assert "resnet14_062_cifar[res=32]" not in labels and "resnet14_062_cifar[res=24]" in labels
    assert len(labels) == len(set(labels))


def test_an_unknown_candidate_is_named():
    with pytest.raises(ValueError, match="no candidate 'nonet'"):
        frontier.find(frontier.search_space(), "nonet")


def test_a_trained_row_measures_the_deployed_int8_model(digits, tmp_path):
    candidate = frontier.find(frontier.search_space(), "resnet_cifar[depth=8,width=0.5]")
    row = frontier.train_row(candidate, digits, str(tmp_path), recipe="fast", epochs=6, qat_epochs=1,
                             overrides={"batch_size": 32}, verbose=0)
    assert set(frontier.COLUMNS) - {"device", "command"} <= set(row)
    # a trained digits classifier, and its int8 (post-training and QAT) forms classify like it
    assert row["top1_fp32"] > 0.8, {k: row[k] for k in ("top1_fp32", "top1_int8", "top1_qat_int8")}
    assert abs(row["top1_int8"] - row["top1_fp32"]) < 0.05 and abs(row["top1_qat_int8"] - row["top1_fp32"]) < 0.05
    tflite = (tmp_path / "model_int8.tflite").read_bytes()
    assert row["int8_kb"] == round(len(tflite) / 1024, 1) and row["arena_bytes"] > 0
    path = tmp_path / "frontier.csv"
    bench.append_rows([{**row, "device": "test", "command": "test"}], str(path), frontier.COLUMNS)
    assert frontier.done(str(path), candidate, 6, "fast") and not frontier.done(str(path), candidate, 30, "fast")


def test_an_interrupted_row_resumes_and_a_finished_one_is_not_trained_again(digits, tmp_path):
    import tf_keras as keras

    class Epochs(keras.callbacks.Callback):  # the epochs a call trained; `die_at` kills it there
        def __init__(self, die_at=None):
            super().__init__()
            self.trained, self.die_at = [], die_at

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.die_at:  # after the previous epoch's checkpoint, as a killed process
                raise KeyboardInterrupt
            self.trained.append(epoch + 1)

    build = frontier.find(frontier.search_space(), "resnet_cifar[depth=8,width=0.5]").build
    config = {**frontier.RECIPES["fast_fp32"], "epochs": 3, "batch_size": 64, "ema": 0.0}
    folder = str(tmp_path / "train")

    def trained(config, die_at=None):
        epochs = Epochs(die_at)
        model, _ = frontier.trained_model(lambda: build((32, 32, 3), 10), digits, folder, config,
                                          verbose=0, extra_callbacks=[epochs])
        return model, epochs.trained

    with pytest.raises(KeyboardInterrupt):
        trained(config, die_at=1)
    assert frontier.training_seconds(folder) > 0  # what the killed run spent up to its checkpoint
    state = json.loads((tmp_path / "train" / "trained.json").read_text())
    (tmp_path / "train" / "trained.json").write_text(json.dumps({**state, "seconds": 1000.0}))  # a long first run
    started = time.time()
    model, epochs = trained(config)
    assert epochs == [2, 3]  # it went on from the first
    # and its seconds add to the killed run's
    assert 1000 < frontier.training_seconds(folder) <= 1000 + time.time() - started
    spent = frontier.training_seconds(folder)
    again, epochs = trained(config)
    assert epochs == [] and frontier.training_seconds(folder) == spent  # finished: loaded, not trained again
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))
    _, epochs = trained({**config, "epochs": 2})
    assert epochs == [1, 2]  # another config in the same folder starts afresh, its clock too
    assert frontier.training_seconds(folder) < 1000


def test_the_reference_is_ranked_with_the_candidates_and_never_chosen(digits, tmp_path):
    out, work = str(tmp_path / "frontier.csv"), str(tmp_path / "work")
    label = ("resnet_cifar", "depth=8,width=0.5")
    bench.append_rows([{"model": label[0], "variant": label[1], "params": 19954, "macs": 3236160, "int8_kb": 31.6,
                        "arena_bytes": 30016, "verdict": "fits"}], str(tmp_path / "frontier-screen.csv"),
                      frontier.SCREEN_COLUMNS)  # a screen kept by an earlier run: not redone
    space = [frontier.find(frontier.search_space(), "[".join(label) + "]")]
    rows = frontier.run_frontier(digits, out=out, work=work, epochs=1, top=1, reference=False, rank_epochs=1,
                                 rank_images=500, device="test", space=space, progress=lambda message: None)
    ranked = {(r["model"], r["variant"]): r for r in frontier.read_rows(str(tmp_path / "frontier-rank.csv"))}
    assert set(ranked) == {label, ("resnet8", "res=32")}
    assert ranked[("resnet8", "res=32")]["params"] == "78186"
    assert [(r["model"], r["variant"]) for r in rows] == [label]  # the top-1 candidate, not the reference


def test_flip_tta_averages_an_image_and_its_mirror(digits):
    import tf_keras as keras

    # a "model" that answers by the left half's brightness: mirror-averaging changes its answers
    inputs = keras.Input((32, 32, 3))
    left = keras.layers.Cropping2D(((0, 0), (0, 16)))(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(left))
    model = keras.Model(inputs, outputs)
    plain = np.mean([np.argmax(model.predict_on_batch(x), -1) == y.numpy() for x, y in digits.test.batch(10_000)])
    assert frontier.evaluate_flip_tta(model, digits) != pytest.approx(plain)


def test_a_distilled_frontier_trains_its_teacher_once_and_labels_the_rows(digits, tmp_path):
    out, work = str(tmp_path / "frontier.csv"), str(tmp_path / "work")
    messages = []
    label = "resnet_cifar[depth=8,width=0.5]"
    run = lambda: frontier.run_frontier(digits, out=out, work=work, epochs=1, candidates=[label],  # noqa: E731
                                        reference=False, teacher="resnet8", teacher_epochs=2, device="test",
                                        progress=messages.append)
    rows = run()
    table = frontier.read_rows(out)
    # the teacher's own row (same recipe, its own epochs, no QAT), then the student distilled from it
    assert [(r["model"], r["variant"], r["epochs"], r["recipe"]) for r in table] == [
        ("resnet8", "res=32", "2", "fast_fp32"),
        ("resnet_cifar", "depth=8,width=0.5", "1", "fast_fp32+kd(resnet8, 2 ep)")]
    assert table[0]["top1_qat_int8"] == "" and rows[0]["top1_qat_int8"] > 0
    assert any(m.startswith("teacher resnet8: fp32") for m in messages)
    # a re-run finds both: nothing is trained again
    assert run() == [] and len(frontier.read_rows(out)) == 2


def test_a_larger_model_is_pruned_into_the_measured_budget_and_fine_tuned(digits, limit, tmp_path):
    row = frontier.compressed_row("resnet20_cifar", digits, str(tmp_path), limit=limit, epochs=2, pre_epochs=1,
                                  qat_epochs=1, overrides={"batch_size": 64}, verbose=0)
    # resnet20_cifar (272k params, ~300 KiB in int8) pruned to ResNet-8's measured file and arena
    pruned = row["pruned"]
    assert pruned["int8_bytes"] <= limit["int8_bytes"] and pruned["arena_bytes"] <= limit["arena_bytes"]
    assert 0 < pruned["ratio"] < 0.95 and row["arena_bytes"] <= limit["arena_bytes"]
    assert row["params"] < 0.4 * 272_474 and row["variant"] == "l1-pruned to budget after 1 ep"
    assert row["epochs"] == 2 and row["recipe"] == frontier.DEFAULT_RECIPE


def test_compressing_needs_epochs_left_to_fine_tune(digits, tmp_path):
    with pytest.raises(ValueError, match=r"`pre_epochs` \(2\) must leave epochs"):
        frontier.run_frontier(digits, out=str(tmp_path / "f.csv"), work=str(tmp_path), epochs=2, pre_epochs=2,
                              compressed=["resnet20_cifar"], candidates=[], reference=False)

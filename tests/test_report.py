"""The run report of a real (small) digits run, opened in headless Chromium: every image loads
from the copied HTML alone, every section is there, and a broken image is caught; the numbers read
as a person wants them; the trade-off plot only compares rows of the run's own data set."""
import csv
import json
import os
import re
import shutil

import pytest

from kerasnets.tools import report
from test_pipeline import QUICK, kerasnets

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh --test installs them)")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A one-epoch resnet8 run on digits, from a folder with no results/ (no comparison rows)."""
    work = tmp_path_factory.mktemp("report")
    out = work / "run"
    result = kerasnets("run", *QUICK, f"--out={out}", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through Debian's chromedriver; nothing is downloaded (both paths given)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_report(browser, path):
    """(images as (alt, naturalWidth), h2 headings, {section id: its rendered text}) of a page."""
    browser.get(path.as_uri())
    browser.execute_async_script(  # every <img> finished loading or failing
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => i.onload = i.onerror = r)))"
        ".then(done);")
    images = browser.execute_script("return [...document.images].map(i => [i.alt, i.naturalWidth]);")
    headings = browser.execute_script("return [...document.querySelectorAll('h2')].map(h => h.textContent);")
    sections = browser.execute_script(  # the text of each section, as the browser renders it
        "const text = {}; let id = null;"
        "for (const e of document.body.children) {"
        "  if (e.tagName === 'H2') { id = e.id; text[id] = ''; } else if (id) { text[id] += e.innerText + '\\n'; } }"
        "return text;")
    return images, headings, sections


@needs_chromium
def test_report_opens_from_a_copied_folder_with_every_image_and_section(digits_run, browser, tmp_path):
    copied = tmp_path / "elsewhere" / "report.html"  # the HTML alone: its images travel inside it
    copied.parent.mkdir()
    shutil.copy(digits_run / "report.html", copied)
    images, headings, sections = open_report(browser, copied)

    assert headings == list(report.SECTIONS.values())
    assert sorted(alt for alt, _ in images) == ["confusion matrix of the int8 model",
                                                "per-layer parameters, MACs and live int8 activation memory",
                                                "training curves"]
    assert all(width > 0 for _, width in images), images
    assert re.search(r"top-1 int8\t\d{1,3}\.\d%", sections["metrics"]), sections["metrics"]
    for budget in ("RAM 64 KiB", "RAM 256 KiB", "flash 256 KiB", "flash 1 MiB"):
        assert re.search(rf"{budget}\t\d+\.\d KiB\t(yes|no)\t", sections["fits"]), sections["fits"]
    assert re.search(r"^0\t\d+\t\d+\t\d+\.\d%$", sections["classes"], re.M), sections["classes"]


@needs_chromium
def test_a_broken_image_is_seen_as_not_loaded(digits_run, browser, tmp_path):
    html = (digits_run / "report.html").read_text()
    broken = tmp_path / "report.html"
    broken.write_text(html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    images, _, _ = open_report(browser, broken)
    assert sorted(width == 0 for _, width in images) == [False, False, True]


def test_confusion_matrix_and_per_layer_names_come_from_the_run(digits_run):
    confusion = json.loads((digits_run / report.CONFUSION).read_text())
    manifest = json.loads((digits_run / "manifest.json").read_text())
    matrix = confusion["matrix"]
    assert confusion["classes"] == [str(i) for i in range(10)] and len(matrix) == 10
    assert sum(map(sum, matrix)) == confusion["images"] == manifest["metrics"]["num_test"]
    assert round(sum(matrix[i][i] for i in range(10)) / confusion["images"], 4) == manifest["metrics"]["top1_int8"]
    text = (digits_run / "report.md").read_text()
    assert "| stem_conv | Conv2D | 16x16x16 |" in text and "| head_fc | Dense |" in text
    assert "Left out: no row of results/*.csv was measured on digits" in text
    assert not (digits_run / "tradeoff.png").exists()


def test_tradeoff_compares_only_rows_of_the_same_data_set(digits_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(digits_run, run_dir)
    rows = [{"model": "resnet20_cifar", "method": "l1", "top1_int8": "0.55", "int8_kb": "160", "latency_ms": "1.0",
             "command": "python benchmarks/compression.py --dataset imagefolder:/data/cifar10.tar.gz"},
            {"model": "resnet8", "dataset": "digits", "method": "bn", "top1_int8": "0.9", "int8_kb": "60",
             "latency_ms": "0.05", "command": "python benchmarks/compression.py"}]
    with open(tmp_path / "compression.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "dataset", "method", "top1_int8", "int8_kb", "latency_ms",
                                               "command"])
        writer.writeheader()
        writer.writerows(rows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    points, others = report.result_points(str(tmp_path / "*.csv"), "digits")
    assert points == [("resnet8 bn", 0.9, 60.0, 0.05)] and others == ["imagefolder:/data/cifar10.tar.gz"]
    written = report.write_report(str(run_dir), manifest, results_glob=str(tmp_path / "*.csv"))
    assert "tradeoff.png" in written and "the 1 rows of" in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("key, value, shown", [
    ("top1_int8", 0.9387, "93.9%"), ("int8_kb", 93.9, "93.9 KiB"), ("arena_bytes", 55952, "54.6 KiB (55,952 bytes)"),
    ("latency_ms", 0.0776, "0.078 ms"), ("macs", 12206720, "12.21 M"), ("params", 77898, "77,898"),
    ("machine", "x86_64", "x86_64")])
def test_metrics_read_as_a_person_wants_them(key, value, shown):
    assert report.format_metric(key, value) == shown


def test_fits_says_yes_or_no_per_budget_with_the_numbers():
    rows, note = report.fits({"arena_bytes": 100 * 1024, "arena_headroom_bytes": 0, "micro_model_bytes": 300 * 1024})
    assert [(r["budget"], r["needs"], r["fits"], r["margin"]) for r in rows] == [
        ("RAM 64 KiB", "100.0 KiB", "no", "-36.0 KiB"), ("RAM 256 KiB", "100.0 KiB", "yes", "156.0 KiB"),
        ("flash 256 KiB", "300.0 KiB", "no", "-44.0 KiB"), ("flash 1 MiB", "300.0 KiB", "yes", "724.0 KiB")]
    rows, note = report.fits({"int8_kb": 10.0})
    assert [r["budget"] for r in rows] == ["flash 256 KiB", "flash 1 MiB"] and "Not measured in this run: RAM" in note

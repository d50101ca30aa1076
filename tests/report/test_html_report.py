"""`oebench report`: the HTML page, opened in a real headless Chromium (selenium + Debian's
chromium and chromium-driver; skipped where they are absent, installed by .ci/run)."""

import csv
import io
import os
import re
import shutil
from html import escape

import numpy as np
import pytest
from conftest import TINY, run_cli

import oebench
from oebench.report.platforms import platform_signature

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
#: the tiny benchmark with near/far OOD groups
GROUPS = 'ood_groups = { near = ["letters"], far = ["gaussian-pixel", "textures", "faces"] }'
NUMBER = re.compile(
    r"^([+-]?\d+\.\d\d)(?:±(\d+\.\d\d))?(?:\[([+-]?\d+\.\d\d), ([+-]?\d+\.\d\d)\])?$"
)
#: every table of the rendered page as data: its attributes, the column each cell is under
#: (from the header cells' data-metric / data-side) and each cell's text and data-value
TABLES_JS = """
return Array.from(document.querySelectorAll("table")).map(function (t) {
  var heads = Array.from(t.querySelectorAll("thead th[data-col]"));
  var cols = {};
  heads.forEach(function (h) {
    cols[h.getAttribute("data-col")] = [h.getAttribute("data-metric"), h.getAttribute("data-side")];
  });
  var attrs = {};
  Array.from(t.attributes).forEach(function (a) { attrs[a.name] = a.value; });
  return {attrs: attrs, bodies: Array.from(t.tBodies).map(function (b) {
    return Array.from(b.rows).map(function (r) {
      return Array.from(r.cells).map(function (c, i) {
        return {col: cols[String(i)] || null, text: c.textContent.trim(),
                value: c.getAttribute("data-value"), cls: c.className};
      });
    });
  })};
});
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two seeds of the tiny benchmark (with near/far groups) in a fresh store, and the store's
    rows as `oebench leaderboard --format csv` writes them."""
    root = tmp_path_factory.mktemp("html-report")
    env = {  # module scope runs before the per-test autouse fixtures: isolate explicitly
        "OEBENCH_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "oebench-cache"),
        "OEBENCH_STORE": str(root / "unused.sqlite"),
    }
    bench = root / "tiny-report.toml"
    bench.write_text(
        TINY.read_text()
        .replace('name = "tiny"', 'name = "tiny-report"')
        .replace("[training]", GROUPS + "\n[training]", 1)
    )
    store = root / "store.sqlite"
    result = run_cli(
        "run", str(bench), "--seed", "0", "--seed", "1", "--store", str(store), env=env
    )
    assert result.returncode == 0, result.stderr
    board = run_cli("leaderboard", "--store", str(store), "--format", "csv", env=env)
    assert board.returncode == 0, board.stderr
    rows = list(csv.DictReader(io.StringIO(board.stdout)))
    return {"store": store, "env": env, "rows": rows, "root": root}


def _expected(rows, training, detector, ood, metric):
    """Mean and std (ddof 0) over seeds of one metric, from the leaderboard CSV."""
    values = [
        float(r[metric])
        for r in rows
        if (r["training"], r["detector"], r["ood_dataset"]) == (training, detector, ood)
    ]
    assert len(values) == 2, (training, detector, ood)
    return float(np.mean(values)), float(np.std(values)), values


def _deltas(rows, detector, ood, metric):
    base = _expected(rows, "baseline", detector, ood, metric)[2]
    oe = _expected(rows, "oe", detector, ood, metric)[2]
    diffs = np.subtract(oe, base)
    return float(np.mean(diffs)), float(np.std(diffs))


def _check_cell(cell, mean, std, signed=False):
    """A rendered number cell shows ``mean`` (± ``std`` when not 0) and holds it in full."""
    match = NUMBER.match(cell["text"])
    assert match, cell
    assert float(cell["value"]) == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert match.group(1) == (f"{mean:+.2f}" if signed else f"{mean:.2f}")
    if std > 0:
        assert match.group(2) == f"{std:.2f}", cell
    return match


def _browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium "
            "chromium-driver; .ci/run does)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,2000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def test_the_report_renders_the_stores_numbers_sorts_and_logs_no_error(stored, tmp_path):
    out = tmp_path / "report.html"
    args = ["report", "--store", str(stored["store"]), "--ci", "--resamples", "50"]
    result = run_cli(*args, "-o", str(out), env=stored["env"])
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    # self-contained: nothing fetched from elsewhere, and the page's policy forbids it
    assert not re.search(r"""(src|href)=['"]?(https?:|//)""", html)
    assert "Content-Security-Policy" in html and "<link" not in html

    driver = _browser()
    try:
        driver.get(out.as_uri())
        tables = driver.execute_script(TABLES_JS)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth]);"
        )
        sort_checks = _sort_in_browser(driver)
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    assert not [e for e in logs if e["level"] in ("SEVERE", "WARNING")], logs

    rows = stored["rows"]
    boards = {
        t["attrs"]["data-ood"]: t for t in tables if t["attrs"].get("data-kind") == "leaderboard"
    }
    assert set(boards) == {"mean", "mean:near", "mean:far"}
    bands = oebench.leaderboard(stored["store"], ci=True, resamples=50).set_index("detector")
    for ood, table in boards.items():
        assert table["attrs"]["data-baseline"] == "baseline" and table["attrs"]["data-oe"] == "oe"
        (body,) = table["bodies"]
        assert sorted(r[0]["text"] for r in body) == ["energy", "msp"]
        for row in body:
            det = row[0]["text"]
            cells = {tuple(c["col"]): c for c in row[1:]}
            assert set(cells) == {
                (m, s) for m in ("auroc", "aupr_out", "fpr95") for s in ("baseline", "oe", "delta")
            }
            for metric in ("auroc", "aupr_out", "fpr95"):
                for side, training in (("baseline", "baseline"), ("oe", "oe")):
                    mean, std, _ = _expected(rows, training, det, ood, metric)
                    match = _check_cell(cells[(metric, side)], mean, std)
                    if ood == "mean" and metric in ("auroc", "fpr95"):  # --ci: the bootstrap's
                        low = bands.loc[det, f"{metric}_ci_low_{side}"]
                        high = bands.loc[det, f"{metric}_ci_high_{side}"]
                        assert match.group(3, 4) == (f"{low:.2f}", f"{high:.2f}")
                _check_cell(cells[(metric, "delta")], *_deltas(rows, det, ood, metric), signed=True)
            if ood == "mean":
                low = bands.loc[det, "auroc_delta_ci_low_oe"]
                assert f"[{low:+.2f}, " in cells[("auroc", "delta")]["text"]
        best = max(body, key=lambda r: float(r[1]["value"]))  # AUROC no OE, best highlighted
        assert "best" in best[1]["cls"]

    per_set = {
        t["attrs"]["data-detector"]: t for t in tables if t["attrs"].get("data-kind") == "per-set"
    }
    assert set(per_set) == {"energy", "msp"}
    for det, table in per_set.items():
        sets, summary = table["bodies"]
        assert [r[0]["text"] for r in sets] == ["gaussian-pixel", "letters", "textures", "faces"]
        assert [r[0]["text"] for r in summary] == ["mean:near", "mean:far", "mean"]
        for row in sets + summary:
            cells = {tuple(c["col"]): c for c in row[1:]}
            mean, std, _ = _expected(rows, "oe", det, row[0]["text"], "fpr95")
            _check_cell(cells[("fpr95", "oe")], mean, std)

    # figures: 1 heatmap, ROC curves and histograms per detector, 1 detector comparison per
    # training, each a decoded image
    assert len(images) == 1 + 2 * 2 + 2 and all(width for _, width in images), images
    provenance = next(t for t in tables if t["attrs"].get("data-kind") == "fingerprints")
    shown = {(r[0]["text"], r[1]["text"]): r[2]["text"] for r in provenance["bodies"][0]}
    results = oebench.load_results(stored["store"])
    for key in results.cell.unique():
        record = _cell_record(stored["store"], key)
        for kind in ("code", "data"):
            for name, digest in record["config"]["fingerprints"][kind].items():
                assert digest in shown[(kind, name)]
    assert results.benchmark_digest.iloc[0] in html and "OOD = positive class" in html
    assert results.torch_version.iloc[0] in html
    for sig in filter(None, map(platform_signature, results.get("platform", []))):
        assert escape(sig) in html  # where this oebench records platforms
    values = sort_checks["values"]
    assert sort_checks["first"] == sorted(values)  # FPR95: lower is better, best first
    assert sort_checks["second"] == sorted(values, reverse=True)
    assert sort_checks["aria"] == ["ascending", "descending"]
    assert sort_checks["names"] == ["energy", "msp"]
    sets = sort_checks["sets"]  # AUROC: higher is better, best first; the means stay below
    assert sets == sorted(sets, reverse=True) and len(sets) == 4
    assert sort_checks["summary"] == ["mean:near", "mean:far", "mean"]


def _cell_record(store, key):
    from oebench.record.store import ResultStore

    with ResultStore(store, create=False) as s:
        return s.cell(key)


def _sort_in_browser(driver):
    """Click headers as a user does: a metric (best first, then reversed), the name column,
    and a per-set table's column (its mean rows stay below)."""
    from selenium.webdriver.common.by import By

    board = driver.find_element(By.CSS_SELECTOR, "table[data-kind='leaderboard'][data-ood='mean']")
    header = board.find_element(By.CSS_SELECTOR, "th[data-metric='fpr95'][data-side='oe']")
    column = int(header.get_attribute("data-col"))

    def column_values():
        return [
            float(r.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value"))
            for r in board.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]

    values = column_values()
    header.click()  # FPR95: lower is better, so the first click sorts ascending
    first = column_values()
    aria = [header.get_attribute("aria-sort")]
    header.click()
    second = column_values()
    aria.append(header.get_attribute("aria-sort"))
    board.find_element(By.CSS_SELECTOR, "th[data-key='name']").click()
    names = [
        r.find_element(By.TAG_NAME, "td").text
        for r in board.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    per_set = driver.find_element(By.CSS_SELECTOR, "table[data-kind='per-set']")
    auroc = per_set.find_element(By.CSS_SELECTOR, "th[data-metric='auroc'][data-side='baseline']")
    auroc.click()
    at = int(auroc.get_attribute("data-col"))
    sets = [
        float(r.find_elements(By.TAG_NAME, "td")[at].get_attribute("data-value"))
        for r in per_set.find_elements(By.CSS_SELECTOR, "tbody:not(.summary) tr")
    ]
    summary = [
        r.find_element(By.TAG_NAME, "td").text
        for r in per_set.find_elements(By.CSS_SELECTOR, "tbody.summary tr")
    ]
    return {
        "values": values,
        "first": first,
        "second": second,
        "aria": aria,
        "names": names,
        "sets": sets,
        "summary": summary,
    }


def test_report_checks_its_output_before_any_work(stored, tmp_path):
    missing = tmp_path / "nowhere" / "report.html"
    result = run_cli(
        "report", "--store", str(stored["store"]), "-o", str(missing), env=stored["env"]
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot write {missing}: folder {missing.parent} does not exist"
    ]
    target = tmp_path / "elsewhere.html"
    target.write_text("keep")
    link = tmp_path / "link.html"
    os.symlink(target, link)
    result = run_cli("report", "--store", str(stored["store"]), "-o", str(link), env=stored["env"])
    assert result.returncode == 2 and "symbolic link" in result.stderr
    result = run_cli(
        "report",
        "--store",
        str(stored["store"]),
        "-o",
        str(link),
        "--force",
        "--no-figures",
        "--detector",
        "msp",
        env=stored["env"],
    )
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "keep" and not link.is_symlink()
    page = link.read_text()
    assert (
        "<img" not in page
        and "data-detector='msp'" in page
        and "data-detector='energy'" not in page
    )
    wrong = run_cli(
        "report", "--store", str(stored["store"]), "--detector", "nope", env=stored["env"]
    )
    assert wrong.returncode == 2 and "No detector 'nope'" in wrong.stderr

"""Report pages and the index: title, banner, contents, folded code, provenance, nothing from the network."""
import base64
import re

import nbformat
import pytest

from labcore.report import render


def _record(**over):
    rec = {"notebook": "01_probe", "title": "Exercise 9: a probe", "profile": "smoke", "status": "ok",
           "headline": [["Test accuracy", "0.912, mean of 3 seeds"], ["Did not train", "2 of 12 configurations"]],
           "metrics": {"test_acc": 0.912}, "parameters": {"data": {"name": "mnist", "subset": 500}, "seeds": [0, 1]},
           "provenance": {"time": "2026-11-25T06:30:00+01:00", "git": {"commit": "0123456789abcdef", "dirty": True},
                          "device": "cpu: 2 threads of 2, AMD EPYC", "packages": {"torch": "2.15.0", "cuDNN": None},
                          "data": {"mnist": {"source": "image-folder:/data/mnist", "sha256": "ab" * 32,
                                             "train": 60000, "test": 10000}},
                          "run_store_version": 2, "tracking": "offline", "seeds": [0, 1]},
           "summary_figure": None, "seconds": 12.5, "error": None}
    return {**rec, **over}


def _notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Exercise 9: a probe\n\nIntro."),
                nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")]),
                nbformat.v4.new_markdown_cell("## First part: data\n\ntext"),
                nbformat.v4.new_markdown_cell("## Second part\n\ntext")]
    return nb


def test_utc_is_the_one_clock():
    assert render.utc("2026-11-25T06:30:00+01:00") == "2026-11-25 05:30 UTC"
    assert render.utc().endswith(" UTC")


@pytest.mark.parametrize("profile, words", [("smoke", "meaningless"), ("quick", "reduced settings"),
                                            ("full", "the lab&#x27;s settings")])
def test_banner_says_what_the_profile_means_and_marks_a_dirty_tree(profile, words):
    text = render.banner(profile, "2026-11-25T05:30:00+00:00", {"commit": "0123456789abcdef", "dirty": True},
                         "cpu", ["train.epochs: 8 (full: 10)"] * 6)
    assert words in text and f"<code>{profile}</code>" in text and "2026-11-25 05:30 UTC" in text
    assert "0123456789 (dirty" in text and "lc-dirty" in text and "6 settings" in text and "2 more" in text
    clean = render.banner(profile, None, {"commit": "0123456789abcdef", "dirty": False}, None)
    assert "(1 setting)" in render.banner(profile, None, None, None, ["train.epochs: 8 (full: 10)"]), "one, not 1 settings"
    assert "dirty" not in clean


def test_page_is_self_contained_with_title_banner_contents_folded_code_and_provenance():
    page = render.notebook_page(_notebook(), _record())
    assert re.search(r"<title>Exercise 9: a probe \(smoke profile\)</title>", page)
    assert "<script src" not in page and not re.search(r"""(src|href)=["']https?:""", page), "nothing from a CDN"
    assert "mathjax" not in page.lower() and "require.min.js" not in page
    assert "<details class=\"lc-code\"><summary>code</summary>" in page and "In&nbsp;[" not in page
    assert page.index("id='lc-banner'") < page.index("id=\"Exercise-9") < page.index("id='provenance'")
    targets = re.findall(r"<nav class='lc-toc'.*?</nav>", page, re.S)[0]
    for href in re.findall(r"href='#([^']+)'", targets):
        assert f'id="{href}"' in page or f"id='{href}'" in page, f"contents link #{href} has no target"
    assert "href='index.html'" in targets
    prov = page[page.index("id='provenance'"):]
    assert "subset: 500" in prov and "seeds: [0, 1]" in prov, "parameters as readable YAML"
    assert "sha256 abababab" in prov and "60,000 train" in prov and "AMD EPYC" in prov and "12.5 s" in prov
    assert "run store version" in prov and "offline" in prov and "2.15.0" in prov


def test_a_failed_notebook_says_so_at_the_top():
    page = render.notebook_page(_notebook(), _record(status="failed", error="ValueError: boom"))
    assert page.index("This notebook failed: ValueError: boom") < page.index("id=\"Exercise-9")


def test_index_lists_headlines_in_order_with_figures_files_errors_and_previous(tmp_path):
    (tmp_path / "01_probe-summary.png").write_bytes(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))
    for ext in ("html", "json", "ipynb"):
        (tmp_path / f"01_probe.{ext}").write_text("x")
    (tmp_path / "previous").mkdir()
    (tmp_path / "previous" / "02_bad.html").write_text("x")
    records = [_record(summary_figure="01_probe-summary.png"),
               _record(notebook="02_bad", title="Exercise 10", status="failed", error="ValueError: boom", headline=[])]
    page = render.index(tmp_path, "smoke", records)
    assert page.index("Test accuracy") < page.index("Did not train") and "2 of 12 configurations" in page
    assert "data:image/png;base64," in page and "<a href='01_probe-summary.png'" in page, "embedded, full size a click away"
    assert all(f"href='01_probe.{e}'" in page for e in ("html", "json", "ipynb"))
    assert "ValueError: boom" in page and "href='previous/02_bad.html'" in page and "href='previous/'" in page
    assert "meaningless" in page and "(dirty" in page and "2026-11-25 05:30 UTC" in page
    assert "<title>labcore reports (smoke profile)</title>" in page
    rebuilt = render.index(tmp_path, "smoke", [records[0], {**records[1], "status": "ok", "error": None}])
    assert "previous/" not in rebuilt, "after a good rebuild the index no longer points at the previous report"


def test_a_page_shows_the_parameters_that_ran_once():
    import nbformat

    params = nbformat.v4.new_code_cell("seeds = [0]\nprofile = None", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("# Parameters\nseeds = [0, 1, 2]\nprofile = \"quick\"\n",
                                         metadata={"tags": ["injected-parameters"]})
    nb = render.parameters_once(nbformat.v4.new_notebook(cells=[params, injected, nbformat.v4.new_code_cell("x = 1")]))
    assert len(nb.cells) == 2 and "seeds = [0, 1, 2]" in nb.cells[0].source and "seeds = [0]\n" not in nb.cells[0].source
    assert nb.cells[0].source.startswith("# The parameters this report ran with")


def test_a_pages_runs_are_counted_by_where_they_came_from_naming_only_what_there_is():
    assert render._origin(2, 2) == "all trained by this build"
    assert render._origin(6, 0) == "all read from the run store"
    assert render._origin(6, 2) == "2 trained by this build, 4 read from the run store"


def test_a_cpu_builds_provenance_names_no_cudnn():
    from labcore.store.provenance import collect

    assert "cuDNN" not in collect("cpu")["packages"]


def test_provenance_tables_go_through_the_pages_formatter():
    record = {"notebook": "01_mlp_baseline", "profile": "smoke",
              "provenance": {"seeds": [0, 1, 2], "packages": {"torch": "2.15.0"},
                             "regimes": [{"device": "cpu", "tf32": False, "deterministic": None, "fused": True,
                                          "compiled": False, "runs": 12000.0},
                                         {"device": "cpu", "tf32": False, "deterministic": True, "fused": False,
                                          "compiled": False, "runs": 3.0}]}}
    page = render.provenance_section(record)
    assert ">0, 1, 2<" in page and ">yes<" in page and ">no<" in page and ">12,000<" in page
    assert ">False<" not in page and ">None<" not in page and "[0, 1, 2]" not in page
    assert "\u2013 not recorded" in page, "a dash is explained once under its table"
    assert "\u2013 not recorded" not in render.provenance_section({**record, "provenance": {"seeds": [0]}})


def test_a_headline_number_reads_as_a_person_writes_it_at_every_scale():
    from labcore.report.publish import format_metric

    assert format_metric(0.9203) == "0.9203"
    assert format_metric(1.05e5) == "1.050\u00d710\u2075" and format_metric(3.8e-10) == "3.800\u00d710\u207b\u00b9\u2070"
    assert format_metric(7) == "7"


@pytest.mark.parametrize("value, digits, shown", [
    (0.043, 2, "0.043"), (2.5, 2, "2.5"), (999, 3, "999"), (1000, 3, "1,000"), (12345, 2, "12,000"),
    (1234.5, 4, "1,234"), (-2500, 2, "-2,500"), (1e5, 2, "1.0\u00d710\u2075"), (9.9e-4, 2, "9.9\u00d710\u207b\u2074"),
    (0, 2, "0"),
])
def test_a_number_in_a_sentence_never_reads_1e_plus_03(value, digits, shown):
    from labcore.text import sci

    assert sci(value, digits) == shown


@pytest.mark.parametrize("index", [[0, 1, 2], [3, 7, 9], ["a", "b", "c"]])
def test_a_tables_named_index_is_shown_as_its_first_column_whatever_its_values(index):
    import pandas as pd

    from labcore.report.publish import table

    html = table(pd.DataFrame({"seed": index, "test_acc": [0.9, 0.91, 0.92]}).set_index("seed")).to_html()
    assert ">seed</th>" in html and ">test accuracy</th>" in html
    assert ">0.910<" in html
    unnamed = table(pd.DataFrame({"test_acc": [0.9, 0.91, 0.92]})).to_html()
    assert ">index</th>" not in unnamed, "row numbers are not a column"
    stacked = pd.concat([pd.DataFrame({"claim": ["mean", "std"]})] * 2)  # index 0, 1, 0, 1
    assert "index" not in table(stacked).to_html() and table(stacked).data.columns.tolist() == ["claim"]
    named_rows = table(pd.DataFrame({"mean": [0.1, 0.2]}, index=["lab CNN", "ConvNet-40 plain"]))
    assert named_rows.data.columns.tolist() == ["", "mean"] and ">ConvNet-40 plain<" in named_rows.to_html(), \
        "unnamed labels stay, as a first column without a header"


def test_a_page_s_banner_names_how_its_parameters_differ_from_full_s():
    from labcore.exercises import params

    quick = params.merged_parameters("01_mlp_baseline", "quick")
    page = render.notebook_page(_notebook(), _record(notebook="01_mlp_baseline", profile="quick", parameters=quick))
    assert "Reduced against <code>full</code>" in page
    full = params.merged_parameters("01_mlp_baseline", "full")
    assert "Reduced against" not in render.notebook_page(_notebook(), _record(notebook="01_mlp_baseline",
                                                                               profile="full", parameters=full))


def test_the_banner_names_what_changes_learning_before_the_sizes_of_the_data():
    """Smoke's learning rate, 10x the lab's, is shown, not folded under '3 more' behind the data's sizes."""
    reduced = ["data.val_size: 1000 (full: 5000)", "data.subset: 2000 (full: all)", "data.test_subset: 1000 (full: all)",
               "train.epochs: 2 (full: 15)", "train.lr: 0.001 (full: 0.0001)", "seeds: [0] (full: [0, 1, 2])",
               "long_epochs: 3 (full: 30)"]
    page = render.banner("smoke", None, None, None, reduced)
    shown = page.split("Reduced against")[1].split("</p>")[0]
    assert shown.index("train.lr") < shown.index("train.epochs") and "data." not in shown, shown
    assert "3 more" in page and page.index("data.val_size") > page.index("seeds")


def test_each_figure_is_described_by_its_section_not_by_nbconverts_placeholder():
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 16).decode()
    fig = nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
    nb = _notebook()
    nb.cells.insert(3, nbformat.v4.new_code_cell("plot()", outputs=[fig, fig]))
    nb.cells.append(nbformat.v4.new_code_cell("plot()", outputs=[fig]))
    page = render.notebook_page(nb, _record())
    assert render.NO_ALT not in page
    assert page.count('alt="Figure 1 of the section “First part: data”"') == 1
    assert 'alt="Figure 2 of the section “First part: data”"' in page
    assert 'alt="Figure 1 of the section “Second part”"' in page

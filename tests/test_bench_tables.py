"""python -m infer.bench tables on a tiny setting: both tables, the JSON and the plot from five drafts (copies
of the shipped one stand in for the trained drafts: the command's wiring is under test, not their figures)."""

import json
import shutil

import pytest

from infer import bench_tables
from sparrow_jax import demo
from sparrow_jax.errors import UserError


def test_tables_from_five_drafts(tmp_path, capsys):
    root = tmp_path / "drafts"
    for d in bench_tables.DRAFTS:
        shutil.copytree(demo.DRAFT, root / d.name / "draft")
    out, png = tmp_path / "tables.json", tmp_path / "dsr.png"
    rc = bench_tables.main(["--root", str(root), "--frames", "8", "--videos", "1", "--new-tokens", "12",
                            "--repeats", "1", "--json", str(out), "--plot", str(png)])
    printed = capsys.readouterr().out
    assert rc == 0 and "Robustness" in printed and "Ablation" in printed
    tables = json.loads(out.read_text())
    assert [r["draft"] for r in tables["robustness"]] == list(bench_tables.ROBUSTNESS)
    assert [r["draft"] for r in tables["ablation"]] == [d.name for d in bench_tables.DRAFTS]
    cells = tables["cells"]
    assert len(cells) == 6 and all(c["identical"] and 1.0 <= c["tau"] <= 4.0 and c["dsr"] > 0 for c in cells)
    assert all(c["draft_prefill_s"] > 0 and c["prefill_s"] > 0 for c in cells)  # timed apart from decoding
    by_name = {c["draft"]: c for c in cells}
    # The drafts without VATA read the whole prompt (a window over it); the others the text alone.
    for name, c in by_name.items():
        assert c["sees_visual"] == (not bench_tables.KINDS[name].vata)
        assert c["window"] >= c["prompt"] + 12 if c["sees_visual"] else c["window"] == 256
    # Copies of one draft seeing the prompt alike accept alike.
    assert by_name["vata"]["tau"] == by_name["sparrow"]["tau"] == by_name["shipped"]["tau"]
    assert by_name["none"]["tau"] == by_name["mtp"]["tau"] == by_name["mtp_ivsb"]["tau"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_name_the_missing_drafts(tmp_path):
    shutil.copytree(demo.DRAFT, tmp_path / "none" / "draft")
    with pytest.raises(UserError, match="no trained draft for vata, sparrow under .*reproduce_tables.sh"):
        bench_tables.main(["--root", str(tmp_path), "--drafts", "none,vata,sparrow"])
    with pytest.raises(UserError, match="--drafts: bogus: name one or more of the tables' drafts"):
        bench_tables.main(["--root", str(tmp_path), "--drafts", "none,bogus"])


def test_default_drafts_are_the_trained_ones_and_the_shipped_baseline(tmp_path):
    """A fresh clone has no trained drafts: the robustness table's baseline is the shipped one (the package
    holds it); a trained draft under --root takes its place, and every trained one is measured."""
    args = bench_tables.build_parser().parse_args(["--root", str(tmp_path)])
    assert bench_tables.chosen_drafts(args) == {"none": demo.BASELINE}
    assert (demo.BASELINE / "config.json").is_file()
    for name in ("none", "mtp"):
        shutil.copytree(demo.DRAFT, tmp_path / name / "draft")
    assert bench_tables.chosen_drafts(args) == {n: tmp_path / n / "draft" for n in ("none", "mtp")}

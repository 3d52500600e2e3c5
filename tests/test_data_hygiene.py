"""Harvest hygiene, a split that cannot leak copies, the later-release held-out set and ``--from-input``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY
from mlm.data import hygiene
from mlm.data.corpus import load_corpus
from mlm.data.split import copy_groups, split_files

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_threejs_dataset.sh"

HAND_WRITTEN = "export class Box3 {\n\n\tconstructor( min, max ) {\n\n\t\tthis.min = min;\n\t}\n\n}\n"
#: A hand-written file with one long literal (like src/math/MathUtils.js): kept.
LOOKUP_TABLE = "const _lut = [ " + ", ".join(f"'{i:02x}'" for i in range(256)) + " ];\n" + HAND_WRITTEN * 60
MINIFIED = "var a=function(b){return b+1};" * 200 + "\n"
PAIRS = 12  # pairs of whitespace-variant copies: enough that a path-only split separates one pair


def env(**extra: str) -> dict[str, str]:
    result = {**os.environ, **GIT_IDENTITY, **extra}
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return result


def commit(repo: Path, files: dict[str, str], message: str, date: str) -> None:
    """Write ``files`` and commit them with a fixed committer date."""
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    dated = env(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    for args in (["add", "-A"], ["commit", "-qm", message]):
        subprocess.run(["git", *args], cwd=repo, env=dated, check=True, capture_output=True)


def tag(repo: Path, name: str) -> None:
    subprocess.run(["git", "tag", name], cwd=repo, env=env(), check=True, capture_output=True)


def copies() -> dict[str, str]:
    """Pairs of files that differ only in whitespace, at unrelated paths."""
    files = {}
    for i in range(PAIRS):
        body = f"export function f{i}( a, b ) {{\n\treturn a * {i} + b;\n}}\n"
        files[f"src/a/copy{i}.js"] = body
        files[f"src/b/moved{i}.js"] = body.replace("\t", "    ").replace("( a, b )", "(a,  b)")
    return files


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """r1: hand-written, vendored, minified and copied files; r2 (a day later) adds two files and a copy."""
    repo = tmp_path_factory.mktemp("hygiene") / "three.js"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, env=env(), check=True)
    commit(repo, {
        "src/math/Box3.js": HAND_WRITTEN,
        "src/math/MathUtils.js": LOOKUP_TABLE,
        "examples/jsm/libs/draco/draco_encoder.js": "var Draco = {};\n" * 5,
        "examples/jsm/libs/draco/gltf/draco_encoder.js": "var Draco = { gltf: 1 };\n" * 5,
        "examples/jsm/vendor/tool.js": HAND_WRITTEN,
        "examples/jsm/utils/gui.min.js": HAND_WRITTEN,
        "examples/jsm/utils/blob.js": MINIFIED,
        **copies(),
    }, "r1", "2024-01-01T00:00:00+00:00")
    tag(repo, "r1")
    commit(repo, {
        "src/math/Sphere.js": HAND_WRITTEN.replace("Box3", "Sphere"),
        "src/extras/New.js": HAND_WRITTEN.replace("Box3", "New"),
        "src/renamed/copy0.js": copies()["src/a/copy0.js"],
        "src/math/Box3.js": HAND_WRITTEN + "// changed\n",
    }, "r2", "2024-01-02T00:00:00+00:00")
    tag(repo, "r2")
    return repo


def build(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlm.data", "build", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=120)


def build_ok(cwd: Path, upstream: Path, *args: str, out: str = "input.txt") -> dict:
    done = build(cwd, "--repo", str(upstream), "--cache", "cache", "--out", out, *args)
    assert done.returncode == 0, done.stderr
    return json.loads((cwd / out).with_suffix(".manifest.json").read_text(encoding="utf-8"))


def test_skip_rules_on_hand_made_files() -> None:
    assert hygiene.skip_reason("src/math/Box3.js", HAND_WRITTEN.encode()) is None
    assert hygiene.skip_reason("src/math/MathUtils.js", LOOKUP_TABLE.encode()) is None
    assert hygiene.skip_reason("examples/jsm/libs/x.js", b"x\n") == "vendored (libs/)"
    assert hygiene.skip_reason("a/node_modules/y/z.js", b"x\n") == "vendored (node_modules/)"
    assert hygiene.skip_reason("a/b.min.js", b"x\n") == "minified (*.min.js)"
    assert hygiene.skip_reason("a/blob.js", MINIFIED.encode()).startswith("minified or generated (mean line")
    # Mean line under 200, but most bytes in one 2,000-byte line (an embedded image, as in SMAANode.js).
    embedded = ("x\n" * 400 + "const image = '" + "A" * 2000 + "';\n").encode()
    assert "of bytes in lines over 1000 bytes" in hygiene.skip_reason("a/pass.js", embedded)
    assert hygiene.category("src/a.js", HAND_WRITTEN.encode()) == hygiene.HAND_WRITTEN
    assert hygiene.category("libs/a.js", HAND_WRITTEN.encode()) == hygiene.VENDORED
    assert hygiene.category("a/blob.js", MINIFIED.encode()) == hygiene.MINIFIED


def test_copy_groups_join_whitespace_variants_and_vendored_namesakes() -> None:
    paths = ["src/x.js", "lib/y.js", "libs/a/enc.js", "libs/a/gltf/enc.js", "src/z.js", "src/empty1.js",
             "src/empty2.js"]
    contents = [b"a = 1;\n", b"a  =  1 ;", b"foo", b"bar", b"b = 2;\n", b"\n", b"  \n"]
    groups = {g.paths: g.reasons for g in copy_groups(paths, contents)}
    assert groups == {("lib/y.js", "src/x.js"): ("same content",),
                      ("libs/a/enc.js", "libs/a/gltf/enc.js"): ("same vendored file name",)}
    # Closed under both rules: a vendored namesake of a copy joins the whole group.
    grouped = copy_groups(["lib/y.js", "src/x.js", "libs/q/x.js", "libs/r/x.js"],
                          [b"a=1;", b"a = 1;", b"a=1;", b"other"])
    assert [g.paths for g in grouped] == [("lib/y.js", "libs/q/x.js", "libs/r/x.js", "src/x.js")]
    assert grouped[0].reasons == ("same content", "same vendored file name")


def test_near_copies_share_most_long_lines() -> None:
    lines = [f"export const value{i} = computeSomething( input{i}, options );".encode() for i in range(20)]
    original = b"\n".join(lines)
    edited = b"\n".join(lines[:19] + [b"// one line changed in the copy, the rest is identical"])
    unrelated = b"\n".join(line.replace(b"value", b"other") for line in lines)
    short = b"\n".join(lines[:5])  # too few long lines to call anything a copy
    groups = copy_groups(["a.js", "b.js", "c.js", "d.js"], [original, edited, unrelated, short])
    assert [(g.paths, g.reasons) for g in groups] == [(("a.js", "b.js"), ("near copy",))]
    # 17 of 20 shared lines is under 90%: not a copy.
    less = b"\n".join(lines[:17] + [b"// changed line number %d of the copy, not the same" % i for i in range(3)])
    assert copy_groups(["a.js", "b.js"], [original, less]) == []


def test_default_build_skips_vendored_and_minified_and_says_why(tmp_path: Path, upstream: Path) -> None:
    done = build(tmp_path, "--repo", str(upstream), "--cache", "cache", "--ref", "r1")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "input.manifest.json").read_text(encoding="utf-8"))
    kept = {item["path"] for item in manifest["files"]}
    assert kept == {"src/math/Box3.js", "src/math/MathUtils.js", *copies()}
    reasons = {item["path"]: item["reason"] for item in manifest["skipped"]}
    assert reasons["examples/jsm/libs/draco/draco_encoder.js"] == "vendored (libs/)"
    assert reasons["examples/jsm/vendor/tool.js"] == "vendored (vendor/)"
    assert reasons["examples/jsm/utils/gui.min.js"] == "minified (*.min.js)"
    assert reasons["examples/jsm/utils/blob.js"].startswith("minified or generated")
    assert "skipped 5 files (1 minified, 1 minified or generated, 3 vendored)" in done.stdout
    assert manifest["keep_vendored"] is False


def test_keep_vendored_restores_everything(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "r1", "--keep-vendored")
    assert len(manifest["files"]) == 7 + 2 * PAIRS and manifest["skipped"] == []
    groups = {tuple(g["paths"]): g["reasons"] for g in manifest["copy_groups"]}
    assert groups[("examples/jsm/libs/draco/draco_encoder.js", "examples/jsm/libs/draco/gltf/draco_encoder.js")] \
        == ["same vendored file name"]


def test_copies_land_on_one_side_of_the_split(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "r1", "--val-fraction", "0.5")
    side = {item["path"]: item["validation"] for item in manifest["files"]}
    pairs = [(f"src/a/copy{i}.js", f"src/b/moved{i}.js") for i in range(PAIRS)]
    assert all(side[a] == side[b] for a, b in pairs)
    assert len(manifest["copy_groups"]) == PAIRS
    assert all(g["validation"] == side[g["paths"][0]] for g in manifest["copy_groups"])
    # Without the groups the pinned path hash would have split some pair: the test can fail.
    path_only = dict(zip(side, split_files(list(side), 0.5), strict=True))
    assert any(path_only[a] != path_only[b] for a, b in pairs)
    # The loader derives the same split from the corpus alone.
    corpus = load_corpus(tmp_path / "input.txt")
    assert {s.path for s in corpus.val_sections} == {p for p, v in side.items() if v}
    assert corpus.val_bytes == manifest["totals"]["val_bytes"]


def test_holdout_ref_writes_exactly_the_added_files(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "r1", "--holdout-ref", "r2")
    held = manifest["holdout"]
    assert [item["path"] for item in held["files"]] == ["src/extras/New.js", "src/math/Sphere.js"]
    assert {item["path"]: item["reason"] for item in held["skipped"]}["src/renamed/copy0.js"].startswith(
        "copy of a training-snapshot file (src/a/copy0.js")
    text = (tmp_path / "input.holdout.txt").read_text()
    assert text == "".join(f"// === FILE: {p} ===\n{HAND_WRITTEN.replace('Box3', n)}\n"
                           for p, n in (("src/extras/New.js", "New"), ("src/math/Sphere.js", "Sphere")))
    # The training corpus is the r1 snapshot, not r2's.
    assert "// changed" not in (tmp_path / "input.txt").read_text()


@pytest.mark.parametrize(("args", "fragment"), [
    (("--ref", "r1", "--holdout-ref", "r1"), "is the training snapshot itself"),
    (("--ref", "r2", "--holdout-ref", "r1"), "is older than --ref r2"),
    (("--ref", "r1", "--include", "examples/jsm/libs"), "every match was skipped (2 vendored)"),
])
def test_bad_holdout_and_empty_harvest_fail_in_one_line(tmp_path: Path, upstream: Path, args, fragment) -> None:
    done = build(tmp_path, "--repo", str(upstream), "--cache", "cache", *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert fragment in lines[-1] and lines[-1].startswith("error: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "input.txt").exists()


def test_from_input_reproduces_the_filtered_corpus(tmp_path: Path, upstream: Path) -> None:
    build_ok(tmp_path, upstream, "--ref", "r1", "--keep-vendored", out="all.txt")
    build_ok(tmp_path, upstream, "--ref", "r1", out="clean.txt")
    done = build(tmp_path, "--from-input", "all.txt", "--out", "again.txt")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "again.txt").read_bytes() == (tmp_path / "clean.txt").read_bytes()
    again = json.loads((tmp_path / "again.manifest.json").read_text())
    assert again["input"] == "all.txt" and again["repository"] is None
    done = build(tmp_path, "--from-input", "all.txt", "--keep-vendored", "--out", "same.txt")
    assert (tmp_path / "same.txt").read_bytes() == (tmp_path / "all.txt").read_bytes()
    done = build(tmp_path, "--from-input", "all.txt", "--holdout-ref", "r2", "--out", "x.txt")
    assert done.returncode != 0 and "--holdout-ref needs a git source" in done.stderr


def test_script_passes_keep_vendored_and_holdout_ref(tmp_path: Path, upstream: Path) -> None:
    variables = {k: v for k, v in env().items() if k not in {"REPO_REF", "INCLUDE", "OUT", "CACHE"}}
    variables.update(REPO_URL=str(upstream), REPO_REF="r1", HOLDOUT_REF="r2", KEEP_VENDORED="1",
                     PYTHON=sys.executable)
    done = subprocess.run([str(SCRIPT)], cwd=tmp_path, env=variables, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "input.manifest.json").read_text())
    assert manifest["keep_vendored"] is True and manifest["holdout"]["ref"] == "r2"
    assert (tmp_path / "input.holdout.txt").exists()
    shown = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and all(v in shown.stdout for v in ("HOLDOUT_REF", "KEEP_VENDORED", "REPO_REF"))

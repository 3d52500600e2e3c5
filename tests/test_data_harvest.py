"""Tests for ``python -m mlm.data build``: git refs, selection, output format, manifest and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY
from mlm.data import harvest
from mlm.data.corpus import load_corpus
from mlm.data.split import split_files
from mlm.errors import MlmError

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 2000
NON_ASCII = "src/ünï/ñame.js"
V1_FILES = {
    "examples/jsm/e.js",
    "src/core/a.js",
    "src/core/nested/deep/b.js",
    "src/math/m.js",
    NON_ASCII,
}
V1_SKIPPED = {
    "examples/jsm/libs/lib.js": "vendored (libs/)",
    "src/bin.js": "binary (NUL byte)",
    "src/huge.js": f"over {MAX_BYTES} bytes",
    "src/latin1.js": "not valid UTF-8",
    "src/link.js": "symlink",
    "src/linkdir": "symlink",
}
V2_FILES = (V1_FILES - {"src/math/m.js"}) | {"src/v2only.js"}


def env(**extra: str) -> dict[str, str]:
    """Environment for git and the CLI: fixed identity, no user config, the package importable."""
    result = {**os.environ, **GIT_IDENTITY, **extra}
    result["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return result


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stripped output."""
    done = subprocess.run(["git", *args], cwd=repo, env=env(), check=True, capture_output=True, text=True)
    return done.stdout.strip()


def write(repo: Path, rel: str, data: bytes | str) -> None:
    """Create ``repo/rel`` (and its folders) holding ``data``."""
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def make_repo(path: Path) -> Path:
    """Create the fixture: tag v1 (annotated), then v2 (lightweight) on branch main."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    write(path, "src/core/a.js", "export const a = 1;\n")
    write(path, "src/core/nested/deep/b.js", "export const b = 'deep';\n")
    write(path, "src/math/m.js", "export const m = Math.PI;")  # no trailing newline on purpose
    write(path, NON_ASCII, "export const ü = 'ñ';\n")
    write(path, "src/readme.txt", "not javascript\n")
    write(path, "src/bin.js", b"GIF89a\x00\x01binary")
    write(path, "src/latin1.js", b"const s = '\xe9';\n")
    write(path, "src/huge.js", "// " + "x" * MAX_BYTES + "\n")
    write(path, "examples/jsm/e.js", "import { a } from '../../src/core/a.js';\n")
    write(path, "examples/jsm/libs/lib.js", "var lib = {};\n")
    write(path, "docs/guide.md", "# Guide\n")
    os.symlink("core/a.js", path / "src/link.js")
    os.symlink("core", path / "src/linkdir")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "first")
    git(path, "tag", "-a", "v1", "-m", "release 1")
    write(path, "src/core/a.js", "export const a = 2;\n")
    write(path, "src/v2only.js", "export const v2 = true;\n")
    git(path, "rm", "-q", "src/math/m.js")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "second")
    git(path, "tag", "v2")
    return path


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only fixture repository shared by the tests of this module."""
    return make_repo(tmp_path_factory.mktemp("upstream") / "repo")


def build(cwd: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mlm.data build`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "mlm.data", "build", *args],
        cwd=cwd,
        env=env(**extra_env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def build_ok(cwd: Path, repo: Path, *args: str) -> dict:
    """Build ``input.txt`` from ``repo`` with the fixture's size cap; return the manifest."""
    done = build(cwd, "--repo", str(repo), "--max-file-bytes", str(MAX_BYTES), "--cache", "cache", *args)
    assert done.returncode == 0, done.stderr
    return json.loads((cwd / "input.manifest.json").read_text(encoding="utf-8"))


def paths(manifest: dict) -> set[str]:
    """The harvested file paths of a manifest."""
    return {item["path"] for item in manifest["files"]}


def test_tag_pins_files_and_commit(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "v1")
    assert paths(manifest) == V1_FILES
    assert manifest["ref"] == "v1"
    assert manifest["commit"] == git(upstream, "rev-parse", "v1^{commit}")
    assert b"export const a = 1;" in (tmp_path / "input.txt").read_bytes()


def test_rerun_same_cache_moves_to_new_ref(tmp_path: Path, upstream: Path) -> None:
    build_ok(tmp_path, upstream, "--ref", "v1")
    manifest = build_ok(tmp_path, upstream, "--ref", "v2")
    assert paths(manifest) == V2_FILES
    assert manifest["commit"] == git(upstream, "rev-parse", "v2")
    assert b"export const a = 2;" in (tmp_path / "input.txt").read_bytes()


@pytest.mark.parametrize("length", [40, 10])
def test_commit_sha_ref(tmp_path: Path, upstream: Path, length: int) -> None:
    sha = git(upstream, "rev-parse", "v1^{commit}")
    manifest = build_ok(tmp_path, upstream, "--ref", sha[:length])
    assert manifest["commit"] == sha
    assert paths(manifest) == V1_FILES


def test_default_branch_refreshes_on_rerun(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    first = build_ok(tmp_path, repo)
    assert first["ref"] == "main" and paths(first) == V2_FILES
    write(repo, "src/v3.js", "export const v3 = 3;\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "third")
    second = build_ok(tmp_path, repo)
    assert second["commit"] == git(repo, "rev-parse", "HEAD") != first["commit"]
    assert paths(second) == V2_FILES | {"src/v3.js"}


def test_include_exclude_and_pattern(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "v1", "--include", "src", "--exclude", "src/core/nested")
    assert paths(manifest) == {"src/core/a.js", "src/math/m.js", NON_ASCII}


def test_exclude_everything_is_an_error(tmp_path: Path, upstream: Path) -> None:
    done = build(tmp_path, "--repo", str(upstream), "--cache", "cache", "--exclude", "*.js")
    assert done.returncode != 0 and "no files matching" in done.stderr


def test_pattern_and_include_list(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(
        tmp_path, upstream, "--ref", "v1", "--include", "docs src/core", "--pattern", "*.md *.js"
    )
    assert paths(manifest) == {"docs/guide.md", "src/core/a.js", "src/core/nested/deep/b.js"}
    manifest = build_ok(tmp_path, upstream, "--ref", "v1", "--keep-vendored")
    assert paths(manifest) == V1_FILES | {"examples/jsm/libs/lib.js"}
    manifest = build_ok(tmp_path, upstream, "--ref", "v1", "--keep-vendored", "--exclude", "*/libs/*")
    assert paths(manifest) == V1_FILES


def test_include_whole_tree(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "v1", "--include", ".", "--pattern", "*.md *.txt")
    assert paths(manifest) == {"docs/guide.md", "src/readme.txt"}


def test_output_format_is_exact(tmp_path: Path, upstream: Path) -> None:
    build_ok(tmp_path, upstream, "--ref", "v1")
    order = sorted(V1_FILES, key=lambda p: p.encode("utf-8"))
    expected = b"".join(
        f"// === FILE: {p} ===\n".encode() + (upstream_blob(upstream, "v1", p)) + b"\n" for p in order
    )
    assert (tmp_path / "input.txt").read_bytes() == expected


def upstream_blob(repo: Path, ref: str, path: str) -> bytes:
    """The bytes git stores for ``path`` at ``ref``."""
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"], cwd=repo, env=env(), check=True, capture_output=True
    ).stdout


def test_manifest_describes_files_split_and_skips(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "v1", "--val-fraction", "0.3")
    for item in manifest["files"]:
        blob = upstream_blob(upstream, "v1", item["path"])
        assert item["size"] == len(blob)
        assert item["sha256"] == hashlib.sha256(blob).hexdigest()
    order = [item["path"] for item in manifest["files"]]
    assert [item["validation"] for item in manifest["files"]] == split_files(order, 0.3)
    assert {s["path"]: s["reason"] for s in manifest["skipped"]} == V1_SKIPPED
    data = (tmp_path / "input.txt").read_bytes()
    totals = manifest["totals"]
    assert totals["bytes"] == len(data) == totals["train_bytes"] + totals["val_bytes"]
    assert totals["files"] == len(V1_FILES) == totals["train_files"] + totals["val_files"]
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert (manifest["include"], manifest["pattern"], manifest["exclude"]) == (
        ["src", "examples/jsm"],
        ["*.js"],
        [],
    )
    assert manifest["val_fraction"] == 0.3 and manifest["repository"] == str(upstream)


def test_manifest_agrees_with_load_corpus(tmp_path: Path, upstream: Path) -> None:
    manifest = build_ok(tmp_path, upstream, "--ref", "v1", "--val-fraction", "0.3")
    corpus = load_corpus(tmp_path / "input.txt", val_fraction=0.9)  # the manifest's fraction wins
    assert corpus.val_fraction == 0.3
    assert (corpus.train_bytes, corpus.val_bytes) == (
        manifest["totals"]["train_bytes"],
        manifest["totals"]["val_bytes"],
    )
    assert (corpus.n_files, corpus.n_val_files) == (
        manifest["totals"]["files"],
        manifest["totals"]["val_files"],
    )


def test_summary_line(tmp_path: Path, upstream: Path) -> None:
    done = build(
        tmp_path, "--repo", str(upstream), "--ref", "v1", "--cache", "c", "--max-file-bytes", str(MAX_BYTES)
    )
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip()
    assert "\n" not in summary and "MiB" in summary and f"{len(V1_FILES)} files" in summary
    assert "skipped 6 files" in summary and "2 symlink" in summary and "1 vendored" in summary


# --- bad input ------------------------------------------------------------------------------


def other_cache(tmp_path: Path) -> list[str]:
    """Arguments that point --cache at a clone of a different repository."""
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    write(other, "x.js", "x\n")
    git(other, "add", "-A")
    git(other, "commit", "-qm", "x")
    git(tmp_path, "clone", "-q", str(other), "cache")
    return ["--cache", "cache"]


def foreign_clone(tmp_path: Path, upstream: Path) -> list[str]:
    """Arguments that point --cache at an ordinary clone of the same repository, which mlm must not reset."""
    git(tmp_path, "clone", "-q", str(upstream), "cache")
    return ["--cache", "cache"]


BAD_INPUTS = {
    "nonexistent repository": (lambda t, u: ["--repo", str(t / "nope")], "cannot reach repository"),
    "plain folder as repository": (lambda t, u: ["--repo", str(u / "src")], "cannot reach repository"),
    "unknown ref": (lambda t, u: ["--ref", "no-such-tag"], "unknown ref"),
    "unknown commit": (lambda t, u: ["--ref", "deadbeef"], "unknown ref"),
    "missing include": (lambda t, u: ["--include", "src nothere"], "does not exist at"),
    "include outside repo": (lambda t, u: ["--include", "../x"], "inside the repository"),
    "nothing matched": (lambda t, u: ["--pattern", "*.py"], "no files matching"),
    "unwritable output": (
        lambda t, u: ["--out", str(t / "input.txt" / "sub" / "input.txt")],
        "cannot write output",
    ),
    "cache of another repository": (lambda t, u: other_cache(t), "holds a clone of"),
    "clone not made by mlm": (foreign_clone, "mlm did not create"),
    "option-like ref": (lambda t, u: ["--ref=--upload-pack=touch"], "unknown ref"),
    "cache is not a clone": (lambda t, u: ["--cache", str(u / "src")], "not a git clone"),
    "bad val fraction": (lambda t, u: ["--val-fraction", "1.5"], "out of range"),
}


def assert_clean_failure(done: subprocess.CompletedProcess[str], fragment: str, out_dir: Path) -> None:
    """A failure is one ``error:`` line naming the problem, a non-zero exit and no output left behind."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0], done.stderr
    assert fragment in errors[0]
    assert not (out_dir / "input.manifest.json").exists()
    assert not list(out_dir.glob(".input.txt.*")), "temporary files were left behind"


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_fails_cleanly(tmp_path: Path, upstream: Path, case: str) -> None:
    make_args, fragment = BAD_INPUTS[case]
    args = ["--repo", str(upstream), "--cache", "cache", *make_args(tmp_path, upstream)]
    if case == "unwritable output":
        (tmp_path / "input.txt").write_text("a file, so nothing can be created below it\n")
    done = build(tmp_path, *args)
    assert_clean_failure(done, fragment, tmp_path)
    if case != "unwritable output":
        assert not (tmp_path / "input.txt").exists()


@pytest.mark.parametrize("how", ["GIT_PYTHON_GIT_EXECUTABLE", "PATH"])
def test_missing_git_fails_cleanly(tmp_path: Path, upstream: Path, how: str) -> None:
    extra = {"GIT_PYTHON_GIT_EXECUTABLE": "/nonexistent/git"} if how != "PATH" else {"PATH": str(tmp_path)}
    done = build(tmp_path, "--repo", str(upstream), **extra)
    assert_clean_failure(done, "git is not installed", tmp_path)
    assert not (tmp_path / "input.txt").exists()


def test_failed_build_keeps_previous_output(tmp_path: Path, upstream: Path) -> None:
    build_ok(tmp_path, upstream, "--ref", "v1")
    before = (tmp_path / "input.txt").read_bytes()
    done = build(tmp_path, "--repo", str(upstream), "--cache", "cache", "--ref", "no-such-tag")
    assert done.returncode != 0
    assert (tmp_path / "input.txt").read_bytes() == before


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "input.txt"
    options = harvest.BuildOptions(repo="r", out=out)
    source = harvest.Source(repository="r", ref="main", commit="0" * 40)
    files = harvest.Harvest(files={"a.js": b"a\n", "b.js": b"b\n"})

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harvest.os, "replace", fail)
    with pytest.raises(MlmError, match="cannot write output"):
        harvest.write_outputs(options, source, files)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("repo", "cache"),
    [
        ("https://github.com/mrdoob/three.js.git", ".cache/three.js"),
        ("git@github.com:mrdoob/three.js", ".cache/three.js"),
        ("/srv/git/project/", ".cache/project"),
    ],
)
def test_default_cache_name(repo: str, cache: str) -> None:
    assert harvest.default_cache(repo) == Path(cache)

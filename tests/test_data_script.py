"""End-to-end tests of ``scripts/build_threejs_dataset.sh`` against a local fixture repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GIT_IDENTITY

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_threejs_dataset.sh"


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity and no user configuration."""
    done = subprocess.run(
        ["git", *args], cwd=repo, env={**os.environ, **GIT_IDENTITY}, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with tag r1 (src/a.js, src/util/b.js, lib/c.js) and a later commit adding src/d.js."""
    repo = tmp_path_factory.mktemp("script") / "three.js"
    for rel, text in {"src/a.js": "a\n", "src/util/b.js": "b\n", "lib/c.js": "c\n"}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "r1")
    git(repo, "tag", "r1")
    (repo / "src/d.js").write_text("d\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "later")
    return repo


def run_script(cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the dataset script in ``cwd`` with the given environment variables."""
    environ = {
        k: v for k, v in os.environ.items() if k not in {"REPO_URL", "REPO_REF", "INCLUDE", "OUT", "CACHE"}
    }
    environ.update(GIT_IDENTITY, PYTHON=sys.executable, **variables)
    return subprocess.run([str(SCRIPT)], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120)


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


def test_script_builds_pinned_ref_with_env_vars(tmp_path: Path, upstream: Path) -> None:
    out = tmp_path / "data" / "input.txt"
    out.parent.mkdir()
    done = run_script(
        tmp_path,
        REPO_URL=str(upstream),
        REPO_REF="r1",
        INCLUDE="src",
        OUT=str(out),
        CACHE=str(tmp_path / "c"),
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == b"// === FILE: src/a.js ===\na\n\n// === FILE: src/util/b.js ===\nb\n\n"
    manifest = json.loads((out.parent / "input.manifest.json").read_text())
    assert manifest["commit"] == git(upstream, "rev-parse", "r1") and manifest["include"] == ["src"]
    last = done.stdout.strip().splitlines()[-1]
    assert "MiB" in last and "2 files" in last
    assert (tmp_path / "c" / ".git").is_dir()


def test_script_defaults_to_remote_default_branch_and_cache(tmp_path: Path, upstream: Path) -> None:
    done = run_script(tmp_path, REPO_URL=str(upstream), INCLUDE="src lib")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "input.manifest.json").read_text())
    assert manifest["ref"] == "main" and manifest["commit"] == git(upstream, "rev-parse", "main")
    assert [f["path"] for f in manifest["files"]] == ["lib/c.js", "src/a.js", "src/d.js", "src/util/b.js"]
    assert (tmp_path / ".cache" / "three.js" / ".git").is_dir()


def test_script_reports_bad_ref_cleanly(tmp_path: Path, upstream: Path) -> None:
    done = run_script(tmp_path, REPO_URL=str(upstream), REPO_REF="r999")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown ref 'r999'")
    assert not (tmp_path / "input.txt").exists()


def test_training_on_a_harvest_reports_the_manifest_byte_counts(tmp_path: Path) -> None:
    """The script's input.txt trains, and train reports the manifest's train/validation byte counts."""
    repo = tmp_path / "code"
    for i in range(40):
        path = repo / "src" / f"module{i:02d}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"export const value{i}_{j} = {i * j};\n" for j in range(20)))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    work = tmp_path / "work"
    work.mkdir()
    built = run_script(work, REPO_URL=str(repo), REPO_REF="v1", INCLUDE="src", CACHE=str(tmp_path / "cache"))
    assert built.returncode == 0, built.stderr
    totals = json.loads((work / "input.manifest.json").read_text())["totals"]
    trained = subprocess.run([sys.executable, "-m", "mlm.egg", "train", "--preset", "tiny", "--steps", "5",
                              "--run-dir", "R"], cwd=work, capture_output=True, text=True, timeout=120)
    assert trained.returncode == 0, trained.stderr
    assert f"{totals['train_bytes']:,} train bytes, {totals['val_bytes']:,} validation bytes" in trained.stdout
    assert f"({totals['train_files']} train files, {totals['val_files']} validation files)" in trained.stdout

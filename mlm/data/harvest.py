"""Harvest a source tree from a git repository into one ``input.txt`` and its manifest.

The repository is kept in a cache folder (``.cache/<name>`` by default). A fresh cache is an
empty repository plus a depth-1 fetch of the wanted ref, so branches, tags and commit SHAs all
take the same path and the clone stays shallow where the remote allows it; later runs fetch
the ref again and check it out. Only tracked files are walked: the checkout is forced and
untracked files are cleaned away, which is why mlm only reuses caches it created itself (they
carry ``mlm.cache = true`` in their git config) and refuses any other clone.

Instead of a repository, ``--from-input FILE`` takes the files of an existing corpus in the
same format (for example the unfiltered r170 harvest), so a filtered corpus can be rebuilt from
it without the network.

Each selected file is written as ``// === FILE: <path> ===\\n`` + its bytes + ``\\n``, in byte
order of the UTF-8 path. Binary files, files over the size cap and symlinks are skipped and
reported, and so, unless ``keep_vendored``, are vendored, minified and generated files
(:mod:`mlm.data.hygiene`). With ``holdout_ref`` the files that exist at that later ref but not at
``ref`` go to a second corpus, ``<stem>.holdout.txt``: code written after the training snapshot.
Outputs are written to temporary files and renamed into place, so a failed build never leaves a
half-written ``input.txt``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlm.data.corpus import find_headers, manifest_path, section_body
from mlm.data.hygiene import skip_reason
from mlm.data.split import DEFAULT_VAL_FRACTION, check_fraction, content_key, copy_groups, split_files
from mlm.errors import MlmError

DEFAULT_INCLUDE = ("src", "examples/jsm")
DEFAULT_PATTERNS = ("*.js",)
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
BINARY_PROBE_BYTES = 8 * 1024
MANIFEST_VERSION = 2
SHA_RE = re.compile(r"[0-9a-fA-F]{4,40}")
CACHE_MARK = ("mlm", "cache")  # git config key set in caches mlm created and may reset
NO_GIT_HINT = "install git (https://git-scm.com) or point GIT_PYTHON_GIT_EXECUTABLE at it"


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``python -m mlm.data build`` needs; see the CLI help for each option."""

    repo: str | None
    out: Path
    ref: str | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    exclude: tuple[str, ...] = ()
    cache: Path | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    keep_vendored: bool = False
    holdout_ref: str | None = None
    from_input: Path | None = None


@dataclass(frozen=True)
class Checkout:
    """A cache folder checked out at a resolved commit."""

    tree: Path
    ref: str
    commit: str


@dataclass
class Harvest:
    """Files selected from a checkout (path -> bytes) and files refused (path -> reason)."""

    files: dict[str, bytes] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    """What a build wrote: the corpus, its manifest (path and content) and a one-line summary."""

    out: Path
    manifest_path: Path
    manifest: dict[str, Any]
    summary: str


# --- git ------------------------------------------------------------------------------------


def _git_module() -> Any:
    """Import GitPython, turning a missing library or git executable into an MlmError."""
    try:
        import git
    except ModuleNotFoundError as exc:
        if exc.name != "git":
            raise
        raise MlmError("GitPython is not installed; run: pip install gitpython") from None
    except ImportError:
        # GitPython refuses to import when it cannot run the git executable.
        raise MlmError(f"git is not installed or cannot be run; {NO_GIT_HINT}") from None
    return git


def _git_reason(text: str | bytes | None) -> str:
    """Return the most telling line of git's stderr: the first ``fatal:``/``error:`` line, else the last."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # GitPython wraps stderr as "stderr: '<text>'"; drop the wrapper to get git's own lines.
    lines = [line.strip().removeprefix("stderr:").strip().strip("'") for line in (text or "").splitlines()]
    lines = [line for line in lines if line]
    telling = [line for line in lines if line.startswith(("fatal:", "error:"))]
    if telling:
        return telling[0]
    return lines[-1] if lines else "no details"


def _run(gitcmd: Any, *args: str, error: str) -> str:
    """Run ``git <args>`` with ``gitcmd``; on failure raise MlmError ``error`` plus git's reason."""
    git = _git_module()
    gitcmd.update_environment(GIT_TERMINAL_PROMPT="0")  # never block on a credentials prompt
    try:
        return gitcmd.execute([git.Git.GIT_PYTHON_GIT_EXECUTABLE, *args])
    except git.exc.GitCommandNotFound:
        raise MlmError(f"git is not installed or cannot be run; {NO_GIT_HINT}") from None
    except git.exc.GitCommandError as exc:
        raise MlmError(f"{error} ({_git_reason(exc.stderr)})") from None


def _try(gitcmd: Any, *args: str) -> str | None:
    """Run ``git <args>`` and return its output, or None when git reports a failure."""
    try:
        return _run(gitcmd, *args, error="")
    except MlmError:
        return None


def normalize_repo(repo: str) -> str:
    """Return ``repo`` as git should see it: URLs unchanged, local paths made absolute."""
    head = repo.split(":", 1)[0]
    if "://" in repo or (":" in repo and "/" not in head and len(head) > 1):
        return repo  # a URL or scp-like ssh address (user@host:path)
    return str(Path(repo).expanduser().resolve())


def _same_repo(a: str, b: str) -> bool:
    """Compare repository addresses, resolving local paths and ignoring a trailing slash or ``.git``."""

    def key(address: str) -> str:
        return normalize_repo(address).rstrip("/").removesuffix(".git").rstrip("/")

    return key(a) == key(b)


def default_cache(repo: str) -> Path:
    """Return ``.cache/<name>`` where name is the repository's last path component without ``.git``."""
    name = re.split(r"[/:\\]", repo.rstrip("/"))[-1].removesuffix(".git")
    return Path(".cache") / (name or "repo")


def _remote_refs(repo: str, pattern: str) -> dict[str, str]:
    """Return ``{refname: sha}`` for the remote refs matching ``pattern`` (``git ls-remote``)."""
    git = _git_module()
    listing = _run(
        git.cmd.Git(), "ls-remote", repo, pattern, error=f"cannot reach repository {repo}; check --repo"
    )
    refs = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        if not name.endswith("^{}"):
            refs[name] = sha
    return refs


def _default_branch(repo: str) -> tuple[str, str]:
    """Return ``(short name, refname)`` of the remote's default branch."""
    git = _git_module()
    listing = _run(
        git.cmd.Git(),
        "ls-remote",
        "--symref",
        repo,
        "HEAD",
        error=f"cannot reach repository {repo}; check --repo",
    )
    for line in listing.splitlines():
        if line.startswith("ref: ") and line.endswith("\tHEAD"):
            refname = line[len("ref: ") :].split("\t")[0]
            return refname.removeprefix("refs/heads/"), refname
    if not listing.strip():
        raise MlmError(f"repository {repo} has no commits; pass a repository with history")
    return "HEAD", "HEAD"


def _remote_refname(repo: str, ref: str) -> str | None:
    """Return the remote refname for a branch or tag name, or None when ``ref`` names no remote ref."""
    refs = _remote_refs(repo, ref)
    # Same precedence as git's own name lookup: exact name, then tags, then branches.
    for candidate in (ref, f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if candidate in refs:
            return candidate
    return None


def _create_cache(repo: str, cache: Path) -> Any:
    """Create an empty clone of ``repo`` in ``cache``, marked as owned by mlm."""
    git = _git_module()
    try:
        clone = git.Repo.init(cache)
    except OSError as exc:
        raise MlmError(
            f"cannot create cache folder {cache} ({exc.strerror}); pass a writable --cache"
        ) from None
    clone.create_remote("origin", repo)
    with clone.config_writer() as config:
        config.set_value(*CACHE_MARK, "true")
        # Walk the bytes git stores, whatever the user's global line-ending settings are.
        config.set_value("core", "autocrlf", "false")
    return clone


def _reuse_cache(repo: str, cache: Path) -> Any:
    """Open the existing clone in ``cache``, refusing anything but an mlm cache of ``repo``."""
    git = _git_module()
    try:
        clone = git.Repo(cache)
    except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError):
        raise MlmError(
            f"cache {cache} exists but is not a git clone; remove it or pass another --cache"
        ) from None
    if "origin" not in clone.remotes:
        raise MlmError(
            f"cache {cache} is a git repository without an origin; pass another --cache or remove it"
        )
    origin = clone.remotes.origin.url
    if not _same_repo(origin, repo):
        raise MlmError(
            f"cache {cache} holds a clone of {origin}, not {repo}; pass another --cache or remove {cache}"
        )
    # Builds force-checkout and clean the cache, which would destroy work in a clone someone uses.
    if str(clone.config_reader().get_value(*CACHE_MARK, default="false")).lower() != "true":
        raise MlmError(
            f"{cache} is a git clone that mlm did not create; pass another --cache to keep it safe"
        )
    return clone


def _open_cache(repo: str, cache: Path) -> Any:
    """Open the cache clone of ``repo``, creating it when the folder is missing or empty."""
    if cache.exists() and not cache.is_dir():
        raise MlmError(f"cache {cache} is a file, not a folder; pass another --cache or remove it")
    if cache.exists() and any(cache.iterdir()):
        return _reuse_cache(repo, cache)
    return _create_cache(repo, cache)


def _fetch(clone: Any, what: str, *, shallow: bool) -> None:
    """Fetch ``what`` from origin into FETCH_HEAD, depth 1 when ``shallow``."""
    depth = ("--depth", "1") if shallow else ()
    _run(clone.git, "fetch", "--no-tags", *depth, "origin", what, error=f"cannot fetch {what}")


def _fetch_ref(clone: Any, refname: str) -> str:
    """Fetch a remote ref (shallow when the remote allows) and return its commit SHA."""
    try:
        _fetch(clone, refname, shallow=True)
    except MlmError:
        _fetch(clone, refname, shallow=False)  # e.g. dumb HTTP remotes cannot serve shallow fetches
    return _run(clone.git, "rev-parse", "--verify", "FETCH_HEAD^{commit}", error=f"{refname} is not a commit")


def _fetch_commit(clone: Any, repo: str, sha: str) -> str:
    """Make commit ``sha`` (full or abbreviated) present in the cache and return its full SHA."""
    commit = _try(clone.git, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
    if commit:
        return commit  # commits never change, so one already in the cache needs no fetch
    # Fetching by SHA is the shallow way; remotes may refuse it, so fall back to the whole history.
    if len(sha) == 40 and _try(clone.git, "fetch", "--no-tags", "--depth", "1", "origin", sha) is not None:
        return _run(clone.git, "rev-parse", "--verify", "FETCH_HEAD^{commit}", error=f"{sha} is not a commit")
    shallow = (
        _run(clone.git, "rev-parse", "--is-shallow-repository", error="cannot inspect the cache") == "true"
    )
    _run(
        clone.git,
        "fetch",
        "--tags",
        *(("--unshallow",) if shallow else ()),
        "origin",
        "+refs/heads/*:refs/remotes/origin/*",
        error=f"cannot fetch the history of {repo}",
    )
    commit = _try(clone.git, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}")
    if not commit:
        raise MlmError(f"unknown ref {sha!r} in {repo}; pass a branch, tag or commit that exists with --ref")
    return commit


def checkout(repo: str, ref: str | None, cache: Path, log: Callable[[str], None]) -> Checkout:
    """Bring ``cache`` to ``ref`` of ``repo`` (default: the remote's default branch)."""
    if ref is None:
        ref, refname = _default_branch(repo)
    elif ref.startswith("-"):
        # git would read it as an option, never as a ref.
        raise MlmError(f"unknown ref {ref!r}; pass a branch, tag or commit SHA with --ref")
    else:
        refname = _remote_refname(repo, ref)
        if refname is None and not SHA_RE.fullmatch(ref):
            raise MlmError(
                f"unknown ref {ref!r} in {repo}; pass a branch, tag or commit that exists with --ref"
            )
    log(f"fetching {ref} of {repo} into {cache}")
    clone = _open_cache(repo, cache)
    commit = _fetch_ref(clone, refname) if refname else _fetch_commit(clone, repo, ref)
    _run(clone.git, "checkout", "--force", "--detach", commit, error=f"cannot check out {commit} in {cache}")
    _run(clone.git, "clean", "-ffdxq", error=f"cannot clean {cache}")
    return Checkout(tree=cache, ref=ref, commit=commit)


# --- walking --------------------------------------------------------------------------------


def _check_include(tree: Path, include: str, checked_out: Checkout) -> str:
    """Return ``include`` as a clean relative path, or raise MlmError when it is not a folder of the tree."""
    path = PurePosixPath(include)
    if path.is_absolute() or ".." in path.parts:
        raise MlmError(
            f"include folder {include!r} must be a relative path inside the repository; fix --include"
        )
    clean = path.as_posix()  # "." (the whole tree) stays "."
    folder = tree / clean
    if folder.exists() and (folder.is_symlink() or not folder.is_dir()):
        raise MlmError(f"include {clean!r} is not a folder at {checked_out.ref}; fix --include")
    if not folder.exists():
        raise MlmError(
            f"include folder {clean!r} does not exist at {checked_out.ref} ({checked_out.commit[:12]}); "
            "fix --include"
        )
    return clean


def _excluded(rel: str, exclude: Sequence[str]) -> bool:
    """True when ``rel`` or one of its parent folders matches an exclude glob."""
    path = PurePosixPath(rel)
    candidates = [rel, *(p.as_posix() for p in path.parents if p.as_posix() != ".")]
    return any(fnmatch.fnmatchcase(c, glob) for c in candidates for glob in exclude)


def _read_source(path: Path, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Return ``(data, None)`` for a text source file, or ``(None, reason)`` when it must be skipped."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return None, "symlink"
    if not stat.S_ISREG(info.st_mode):
        return None, "not a regular file"
    if info.st_size > max_bytes:
        return None, f"over {max_bytes} bytes"
    data = path.read_bytes()
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        return None, "binary (NUL byte)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    return data, None


def _candidates(
    tree: Path, include: str, patterns: Sequence[str], exclude: Sequence[str], harvest: Harvest
) -> Iterator[tuple[str, Path]]:
    """Yield ``(relative path, absolute path)`` of files under ``include`` that match and are not excluded.

    Symlinked folders are not followed; they are recorded in ``harvest.skipped``.
    """
    for dirpath, dirnames, filenames in os.walk(tree / include):
        rel_dir = Path(dirpath).relative_to(tree)
        for name in list(dirnames):
            rel = (rel_dir / name).as_posix()
            if name == ".git" or _excluded(rel, exclude):
                dirnames.remove(name)
            elif os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)
                harvest.skipped[rel] = "symlink"
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if any(fnmatch.fnmatchcase(name, p) for p in patterns) and not _excluded(rel, exclude):
                yield rel, Path(dirpath, name)


def _admit(harvest: Harvest, rel: str, data: bytes, options: BuildOptions) -> None:
    """Keep a readable text file unless the hygiene filter (or, for corpus input, the size cap) refuses it."""
    reason = None if options.keep_vendored else skip_reason(rel, data)
    if len(data) > options.max_file_bytes:
        reason = f"over {options.max_file_bytes} bytes"
    if reason is None:
        harvest.files[rel] = data
    else:
        harvest.skipped[rel] = reason


def collect(checked_out: Checkout, options: BuildOptions) -> Harvest:
    """Select the files of ``checked_out`` named by the include/pattern/exclude options."""
    harvest = Harvest()
    for include in options.include:
        folder = _check_include(checked_out.tree, include, checked_out)
        for rel, path in _candidates(checked_out.tree, folder, options.patterns, options.exclude, harvest):
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                harvest.skipped[shown] = "path not valid UTF-8"
                continue
            data, reason = _read_source(path, options.max_file_bytes)
            if data is None:
                harvest.skipped[rel] = reason
            else:
                _admit(harvest, rel, data, options)
    return harvest


def _selected(rel: str, options: BuildOptions) -> bool:
    """Whether a corpus file's path passes the include, pattern and exclude options."""
    under = any(folder in (".", "") or rel == folder or rel.startswith(folder.rstrip("/") + "/")
                for folder in options.include)
    name = PurePosixPath(rel).name
    return under and any(fnmatch.fnmatchcase(name, p) for p in options.patterns) and not _excluded(
        rel, options.exclude)


def collect_from_corpus(path: Path, options: BuildOptions) -> tuple[Harvest, str]:
    """Select the files of an existing headered corpus; return them and the corpus's sha256."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MlmError(f"cannot read --from-input {path} ({exc.strerror}); pass an existing corpus file") from None
    headers = find_headers(raw)
    if not headers:
        raise MlmError(f"--from-input {path} has no '// === FILE: <path> ===' headers; "
                       "pass a corpus written by `python -m mlm.data build`")
    harvest = Harvest()
    ends = [offset for offset, _ in headers[1:]] + [len(raw)]
    for (start, rel), end in zip(headers, ends, strict=True):
        body = section_body(raw, start, end)
        data = body[:-1] if body.endswith(b"\n") else body  # the build appends one newline per file
        if _selected(rel, options):
            _admit(harvest, rel, data, options)
    return harvest, hashlib.sha256(raw).hexdigest()


# --- writing --------------------------------------------------------------------------------


def header(path: str) -> bytes:
    """Return the header line that starts a file's section in the corpus."""
    return f"// === FILE: {path} ===\n".encode()


def _sort_key(path: str) -> bytes:
    """Sort paths byte-wise on UTF-8, the same on every machine and locale."""
    return path.encode("utf-8")


def _check_writable(out: Path) -> None:
    """Fail early, before any cloning, when ``out`` cannot be written."""
    if out.is_dir():
        raise MlmError(f"output {out} is a folder; pass a file path with --out")
    try:
        fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".probe")
    except OSError as exc:
        raise MlmError(
            f"cannot write output {out} ({exc.strerror}); pass a writable path with --out"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _write_temp(final: Path, chunks: Iterator[bytes]) -> Path:
    """Write ``chunks`` to a temporary file beside ``final`` and return its path."""
    name = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, unlike mkstemp's private 0o600.
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
    except BaseException:
        name.unlink()
        raise
    return name


def _sections(files: dict[str, bytes], order: list[str]) -> Iterator[bytes]:
    """Yield the corpus bytes: header, content and newline for each file in ``order``."""
    for path in order:
        yield header(path)
        yield files[path]
        yield b"\n"


@dataclass(frozen=True)
class Source:
    """Where a build's files come from: a git commit, or (``input``) an existing corpus file."""

    repository: str | None
    ref: str | None
    commit: str | None
    input: str | None = None
    input_sha256: str | None = None

    def label(self) -> str:
        """How the summary line names the source."""
        if self.input is not None:
            return f"corpus {self.input} ({self.input_sha256[:12]})"
        return f"{self.repository} at {self.ref} ({self.commit[:12]})"


def _file_entries(harvest: Harvest, order: list[str], flags: list[bool] | None) -> list[dict[str, Any]]:
    """One manifest entry per file: path, size, sha256 and (for the training corpus) its split."""
    entries = []
    for i, path in enumerate(order):
        data = harvest.files[path]
        entry: dict[str, Any] = {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if flags is not None:
            entry["validation"] = flags[i]
        entries.append(entry)
    return entries


def _skipped_entries(harvest: Harvest) -> list[dict[str, str]]:
    return [{"path": p, "reason": harvest.skipped[p]} for p in sorted(harvest.skipped, key=_sort_key)]


def build_manifest(options: BuildOptions, source: Source, harvest: Harvest, order: list[str],
                   corpus_sha256: str) -> dict[str, Any]:
    """Describe a build: source, selection rules, every file with its split, copy groups, totals, skips.

    ``totals`` byte counts are corpus bytes (headers included), so they equal what
    :func:`mlm.data.corpus.load_corpus` returns; each file's ``size`` is its own size.
    """
    contents = [harvest.files[path] for path in order]
    flags = split_files(order, options.val_fraction, contents)
    is_val = dict(zip(order, flags, strict=True))
    totals = Counter(files=0, bytes=0, source_bytes=0, train_files=0, train_bytes=0, val_files=0, val_bytes=0)
    for path, data in zip(order, contents, strict=True):
        split = "val" if is_val[path] else "train"
        section = len(header(path)) + len(data) + 1
        totals.update({"files": 1, "bytes": section, "source_bytes": len(data), f"{split}_files": 1,
                       f"{split}_bytes": section})
    groups = [{"paths": list(g.paths), "reasons": list(g.reasons), "validation": is_val[g.paths[0]]}
              for g in copy_groups(order, contents)]
    return {
        "manifest_version": MANIFEST_VERSION,
        "repository": source.repository,
        "ref": source.ref,
        "commit": source.commit,
        "input": source.input,
        "input_sha256": source.input_sha256,
        "include": list(options.include),
        "pattern": list(options.patterns),
        "exclude": list(options.exclude),
        "keep_vendored": options.keep_vendored,
        "max_file_bytes": options.max_file_bytes,
        "val_fraction": options.val_fraction,
        "output": options.out.name,
        "sha256": corpus_sha256,
        "totals": dict(totals),
        "files": _file_entries(harvest, order, flags),
        "copy_groups": groups,
        "skipped": _skipped_entries(harvest),
    }


def holdout_path(out: Path) -> Path:
    """The held-out corpus beside ``out``: ``input.txt`` -> ``input.holdout.txt``."""
    return out.with_name(f"{out.stem}.holdout{out.suffix or '.txt'}")


def _corpus_digest(files: dict[str, bytes], order: list[str]) -> str:
    digest = hashlib.sha256()
    for chunk in _sections(files, order):
        digest.update(chunk)
    return digest.hexdigest()


def write_outputs(options: BuildOptions, source: Source, harvest: Harvest,
                  holdout: tuple[Source, Harvest] | None = None) -> dict[str, Any]:
    """Write the corpus, the held-out corpus (if any) and the manifest atomically; return the manifest."""
    order = sorted(harvest.files, key=_sort_key)
    manifest = build_manifest(options, source, harvest, order, _corpus_digest(harvest.files, order))
    outputs: list[tuple[Path, Iterator[bytes]]] = [(options.out, _sections(harvest.files, order))]
    if holdout is not None:
        held_source, held = holdout
        held_order = sorted(held.files, key=_sort_key)
        out = holdout_path(options.out)
        manifest["holdout"] = {
            "ref": held_source.ref, "commit": held_source.commit, "output": out.name,
            "sha256": _corpus_digest(held.files, held_order),
            "bytes": sum(len(header(p)) + len(held.files[p]) + 1 for p in held_order),
            "files": _file_entries(held, held_order, None), "skipped": _skipped_entries(held),
        }
        outputs.append((out, _sections(held.files, held_order)))
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    outputs.append((manifest_path(options.out), iter([text.encode("utf-8")])))
    temps: list[Path] = []
    try:
        for final, chunks in outputs:
            temps.append(_write_temp(final, chunks))
        for (final, _), temp in zip(outputs, temps, strict=True):
            os.replace(temp, final)
    except OSError as exc:
        raise MlmError(
            f"cannot write output {options.out} ({exc.strerror}); pass a writable path with --out"
        ) from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return manifest


def _reason_kind(reason: str) -> str:
    """A skip reason without its details: ``vendored (libs/)`` -> ``vendored``."""
    return reason.split(" (", 1)[0]


def summarize(out: Path, manifest: dict[str, Any]) -> str:
    """Return the one-line report printed at the end of a build."""
    totals = manifest["totals"]
    mib = 1024 * 1024
    reasons = Counter(_reason_kind(item["reason"]) for item in manifest["skipped"])
    skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    source = Source(manifest["repository"], manifest["ref"], manifest["commit"], manifest["input"],
                    manifest["input_sha256"])
    line = (
        f"wrote {out}: {totals['bytes'] / mib:.2f} MiB, {totals['files']} files "
        f"(train {totals['train_files']} files / {totals['train_bytes'] / mib:.2f} MiB, "
        f"validation {totals['val_files']} files / {totals['val_bytes'] / mib:.2f} MiB; "
        f"{len(manifest['copy_groups'])} group(s) of copies kept on one side) from {source.label()}; "
        f"skipped {len(manifest['skipped'])} files" + (f" ({skipped})" if skipped else "")
    )
    held = manifest.get("holdout")
    if held:
        line += (f"; held out {len(held['files'])} files / {held['bytes'] / mib:.2f} MiB added by "
                 f"{held['ref']} ({held['commit'][:12]}) in {held['output']}")
    return line


def _check_options(options: BuildOptions) -> None:
    """Refuse option values that cannot give a corpus, before any work."""
    check_fraction(options.val_fraction)
    if options.max_file_bytes < 1:
        raise MlmError(f"--max-file-bytes must be at least 1, got {options.max_file_bytes}")
    if not options.include or not options.patterns:
        raise MlmError("nothing to harvest: pass at least one --include folder and one --pattern")
    if (options.repo is None) == (options.from_input is None):
        raise MlmError("pass exactly one source: --repo URL_OR_PATH or --from-input CORPUS")
    if options.holdout_ref is not None and options.repo is None:
        raise MlmError("--holdout-ref needs a git source: pass --repo with --ref and --holdout-ref")
    _check_writable(options.out)


def _refuse_empty(harvest: Harvest, options: BuildOptions, where: str) -> None:
    """A build whose selection and filters leave no file is a mistake worth one clear line."""
    if harvest.files:
        return
    kinds = Counter(_reason_kind(reason) for reason in harvest.skipped.values())
    refused = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    hint = " (pass --keep-vendored to keep vendored and minified files)" if not options.keep_vendored else ""
    raise MlmError(
        f"no files matching {' '.join(options.patterns)} under {' '.join(options.include)} in {where}"
        + (f": every match was skipped ({refused}){hint}" if refused else "")
        + "; check --include, --pattern and --exclude"
    )


def _commit_time(cache: Path, commit: str) -> int:
    git = _git_module()
    return int(_run(git.cmd.Git(cache), "show", "-s", "--format=%ct", commit, error=f"cannot read {commit}"))


def held_out(later: Harvest, base: Harvest, ref: str) -> Harvest:
    """The files of ``later`` whose path does not exist in ``base``, less copies of ``base``'s files."""
    known = {content_key(data): path for path, data in base.files.items()}
    known.pop(None, None)
    result = Harvest(skipped=dict(later.skipped))
    for path, data in later.files.items():
        if path in base.files or path in base.skipped:
            continue
        copy_of = known.get(content_key(data))
        if copy_of is None:
            result.files[path] = data
        else:
            result.skipped[path] = f"copy of a training-snapshot file ({copy_of} at {ref})"
    return result


def _harvest_git(options: BuildOptions, log: Callable[[str], None]) -> tuple[Source, Harvest, tuple | None]:
    """Check out the ref (and the holdout ref) and collect their files."""
    repo = normalize_repo(options.repo)
    cache = options.cache if options.cache is not None else default_cache(repo)
    later = None
    if options.holdout_ref is not None:
        held_checkout = checkout(repo, options.holdout_ref, cache, log)
        later = (held_checkout, collect(held_checkout, options))
    checked_out = checkout(repo, options.ref, cache, log)
    harvest = collect(checked_out, options)
    _refuse_empty(harvest, options, f"{repo} at {checked_out.ref}")
    source = Source(repo, checked_out.ref, checked_out.commit)
    if later is None:
        return source, harvest, None
    held_checkout, held_files = later
    if held_checkout.commit == checked_out.commit:
        raise MlmError(f"--holdout-ref {options.holdout_ref} is the training snapshot itself "
                       f"({checked_out.commit[:12]}); pass a later release, e.g. the next tag")
    if _commit_time(cache, held_checkout.commit) < _commit_time(cache, checked_out.commit):
        raise MlmError(f"--holdout-ref {options.holdout_ref} is older than --ref {checked_out.ref}; "
                       "the held-out set must come from a later release")
    holdout = held_out(held_files, harvest, checked_out.ref)
    if not holdout.files:
        raise MlmError(f"--holdout-ref {options.holdout_ref} adds no new files under {' '.join(options.include)} "
                       f"that pass the filters; pass a later release")
    return source, harvest, (Source(repo, held_checkout.ref, held_checkout.commit), holdout)


def build_dataset(options: BuildOptions, log: Callable[[str], None] = lambda message: None) -> BuildResult:
    """Harvest the selected files (from git or an existing corpus) and write the corpus and manifest."""
    _check_options(options)
    if options.from_input is not None:
        harvest, digest = collect_from_corpus(options.from_input, options)
        _refuse_empty(harvest, options, str(options.from_input))
        source, holdout = Source(None, None, None, str(options.from_input), digest), None
    else:
        source, harvest, holdout = _harvest_git(options, log)
    manifest = write_outputs(options, source, harvest, holdout)
    return BuildResult(options.out, manifest_path(options.out), manifest, summarize(options.out, manifest))

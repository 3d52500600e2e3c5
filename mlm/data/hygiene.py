"""What counts as the code base's own, hand-written code: the harvest filter and eval's categories.

Three kinds of file are not what a specialist should learn from, and are skipped by default
(``--keep-vendored`` keeps them):

* **vendored**: any file under a folder named in :data:`VENDORED_FOLDERS` (three.js keeps its
  third-party libraries in ``examples/jsm/libs/``: draco, ammo, rhino3dm, lottie, opentype...);
* **minified** by name: ``*.min.js`` and the like (:data:`MINIFIED_SUFFIXES`);
* **minified or generated** by shape: a mean line length over :data:`MAX_MEAN_LINE` bytes, or at
  least :data:`MAX_LONG_LINE_SHARE` of the bytes in lines longer than :data:`LONG_LINE` bytes.

The shape thresholds were measured on three.js r170 (``src`` + ``examples/jsm``, 1,039 files).
Outside ``libs/`` the longest mean line of a hand-written file is 115 bytes
(``src/nodes/accessors/Camera.js``); the generated files have 246 (``SMAAPass.js``, an embedded
image) to 3,377 (``RectAreaLightTexturesLib.js``, a data table). A rule on the longest line alone
would also drop hand-written files with one long literal: ``src/math/MathUtils.js`` has a
1,552-byte lookup table in 8.5 KB (18% of its bytes), ``PDBLoader.js`` a 2,562-byte one (37%),
while in ``SMAANode.js`` one 44 KB line of image data is 69% of the file. Half the bytes in lines
over 1,000 bytes separates the two.
"""

from __future__ import annotations

from pathlib import PurePosixPath

VENDORED_FOLDERS = frozenset({"libs", "vendor", "vendors", "third_party", "node_modules"})
MINIFIED_SUFFIXES = (".min.js", ".min.mjs", ".min.cjs")
MAX_MEAN_LINE = 200
LONG_LINE = 1000
MAX_LONG_LINE_SHARE = 0.5

HAND_WRITTEN = "hand-written"
VENDORED = "vendored"
MINIFIED = "minified"
CATEGORIES = (HAND_WRITTEN, VENDORED, MINIFIED)


def vendored_folder(path: str) -> str | None:
    """The vendored folder ``path`` lies under (``libs``, ``vendor``...), or None."""
    for part in PurePosixPath(path).parts[:-1]:
        if part in VENDORED_FOLDERS:
            return part
    return None


def minified_reason(path: str, data: bytes) -> str | None:
    """Why ``data`` looks minified or generated, or None when it looks hand-written."""
    if path.endswith(MINIFIED_SUFFIXES):
        return "minified (*.min.js)"
    if not data:
        return None
    lines = data.split(b"\n")
    mean = len(data) / len(lines)
    if mean > MAX_MEAN_LINE:
        return f"minified or generated (mean line {mean:.0f} bytes > {MAX_MEAN_LINE})"
    long_bytes = sum(len(line) for line in lines if len(line) > LONG_LINE)
    if long_bytes >= MAX_LONG_LINE_SHARE * len(data):
        share = long_bytes / len(data)
        return f"minified or generated ({share:.0%} of bytes in lines over {LONG_LINE} bytes)"
    return None


def skip_reason(path: str, data: bytes) -> str | None:
    """Why the default harvest leaves this file out (vendored first, then minified), or None to keep it."""
    folder = vendored_folder(path)
    if folder is not None:
        return f"vendored ({folder}/)"
    return minified_reason(path, data)


def category(path: str, data: bytes) -> str:
    """``hand-written``, ``vendored`` or ``minified``: the group a file's bits are reported in by ``eval``."""
    if vendored_folder(path) is not None:
        return VENDORED
    return MINIFIED if minified_reason(path, data) else HAND_WRITTEN

"""Environment variables: every name mlm reads is defined once, in mlm/env.py, and starts with MLM_."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mlm import env

ROOT = Path(__file__).resolve().parents[1]
#: A string that names one of mlm's own variables (the EGG_ prefix: the reference's alias).
OWN_NAME = re.compile(r"(MLM|EGG)_[A-Z0-9_]+")


def defined_names() -> set[str]:
    """The variable names mlm/env.py defines."""
    return {value for key, value in vars(env).items() if key.isupper() and isinstance(value, str)}


def test_every_name_has_the_mlm_prefix_but_the_documented_alias() -> None:
    names = defined_names()
    assert env.RESUME_BEST_ALIAS == "EGG_RESUME_BEST"
    assert {name for name in names if not name.startswith("MLM_")} == {env.RESUME_BEST_ALIAS}


def test_python_code_spells_no_variable_name_outside_mlm_env() -> None:
    spelled = []
    for path in sorted([*(ROOT / "mlm").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        if path == ROOT / "mlm" / "env.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and OWN_NAME.fullmatch(node.value):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert spelled == []


def test_the_c_core_reads_only_names_mlm_env_defines_each_spelled_once() -> None:
    defines: dict[str, str] = {}
    reads: list[str] = []
    for path in sorted((ROOT / "csrc").glob("*.[ch]")):
        text = path.read_text()
        defines.update(re.findall(r'^#define (\w+_ENV) "(\w+)"', text, re.M))
        reads += re.findall(r"getenv\(([^)]*)\)", text)
        # The name itself appears in code (not comments) only in its #define.
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)
        assert re.findall(r'"[^"\n]*\bMLM_\w+', code) == re.findall(r'^#define \w+_ENV ("MLM_\w+)"', code, re.M)
    assert reads and all(argument in defines for argument in reads)
    assert set(defines.values()) <= defined_names()
    assert len(set(defines.values())) == len(defines)

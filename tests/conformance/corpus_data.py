"""The conformance corpus and the documented deviations, as data for the tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import yaml

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
SPECS = CORPUS / "specs"
DIRS = CORPUS / "dirs"
DEVIATIONS_FILE = HERE / "deviations.yaml"
DEVIATIONS_DOC = HERE.parents[1] / "docs" / "cdi-deviations.md"

OUTCOMES = ("ok", "invalid", "panic")


@attrs.frozen
class SpecDeviation:
    """A corpus file on which we deliberately differ from the reference."""

    file: str
    reference: str
    ours: str
    doc: str


def spec_files() -> list[Path]:
    """Every spec file of the corpus (one spec per file), sorted."""
    return sorted(p for p in SPECS.iterdir() if p.is_file())


def scenarios() -> list[str]:
    """The spec-dir scenarios under corpus/dirs."""
    return sorted(p.name for p in DIRS.iterdir() if p.is_dir())


def scenario_dirs(name: str) -> list[str]:
    """The spec dirs of a scenario, lowest priority first (sorted by their NN- prefix)."""
    return [str(p) for p in sorted((DIRS / name).iterdir()) if p.is_dir()]


def _raw_deviations() -> dict[str, Any]:
    data = yaml.safe_load(DEVIATIONS_FILE.read_text())
    assert isinstance(data, dict), DEVIATIONS_FILE
    return data


def spec_deviations() -> dict[str, SpecDeviation]:
    """corpus/specs file name -> its documented deviation."""
    out = {}
    for name, entry in (_raw_deviations().get("specs") or {}).items():
        out[name] = SpecDeviation(name, entry["reference"], entry["ours"], entry["doc"])
    return out


def name_deviations() -> dict[str, SpecDeviation]:
    """Qualified device name -> its documented deviation (`file` holds the name)."""
    out = {}
    for name, entry in (_raw_deviations().get("names") or {}).items():
        out[name] = SpecDeviation(name, entry["reference"], entry["ours"], entry["doc"])
    return out


def injection_deviations() -> dict[str, str]:
    """test_inject case id -> the docs/cdi-deviations.md section documenting it."""
    return {k: v["doc"] for k, v in (_raw_deviations().get("injections") or {}).items()}


def doc_sections() -> set[str]:
    """The headings of docs/cdi-deviations.md, lower-cased, without markup or numbering."""
    assert DEVIATIONS_DOC.is_file(), f"{DEVIATIONS_DOC} (written by the CDI core) is missing"
    sections = set()
    for line in DEVIATIONS_DOC.read_text().splitlines():
        match = re.match(r"#+\s+(.*)", line)
        if match:
            title = re.sub(r"[`*_]", "", match[1]).strip().lower()
            sections.add(re.sub(r"^[0-9.]+\s+", "", title))
    return sections


def canonical(value: Any, key: str = "") -> Any:
    """CDI spec data with every empty value dropped the way Go's omitempty drops it.

    Keeps `intelRdt: {}` (its presence matters) and zero uid/gid/fileMode/timeout (pointers in
    Go); drops empty strings, lists, maps, None, false and zero major/minor.
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            c = canonical(v, k)
            if c is None or c == "" or c == [] or c is False:
                continue
            if c == {} and k != "intelRdt":
                continue
            if k in ("major", "minor") and c == 0:
                continue
            out[k] = c
        return out
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value

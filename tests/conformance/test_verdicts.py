"""Every corpus spec through the reference library (Go, 0.8.0) and through cdi.codec.load_spec:
same valid/invalid verdict, same decoded content and minimum version for valid files; the
documented deviations (deviations.yaml) are asserted as exactly those deviations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdi.codec import decode_spec, load_spec
from cdi.dump import dump_spec, to_data
from cdi.errors import SpecError
from cdi.spec import Spec
from cdi.version import minimum_version
from tests.conformance import judge
from tests.conformance.corpus_data import (
    DEVIATIONS_DOC,
    OUTCOMES,
    canonical,
    doc_sections,
    spec_deviations,
    spec_files,
)

FILES = spec_files()
DEVIATIONS = spec_deviations()
RECORDED = Path(__file__).resolve().parent / "reference-verdicts.json"


@pytest.fixture(scope="module")
def verdicts(reference: judge.Reference) -> dict[str, judge.Verdict]:
    """The reference verdict of every corpus file (one runner call for all of them)."""
    return reference.validate(FILES)


def ours(path: Path) -> tuple[str, str, Spec | None]:
    """Our verdict: ("ok"|"invalid", error message, spec)."""
    try:
        spec = load_spec(str(path))
    except SpecError as error:
        return "invalid", str(error), None
    return "ok", "", spec


def outcome(verdict: judge.Verdict) -> str:
    """The reference's verdict as one of OUTCOMES."""
    if verdict.panic:
        return "panic"
    return "ok" if verdict.ok else "invalid"


def test_corpus_is_big_and_varied(verdicts: dict[str, judge.Verdict]) -> None:
    assert len(FILES) >= 80
    suffixes = {p.suffix for p in FILES}
    assert {".yaml", ".json"} <= suffixes
    results = {outcome(v) for v in verdicts.values()}
    assert results == set(OUTCOMES), results
    for suffix in (".yaml", ".json"):
        kinds = {outcome(verdicts[str(p)]) for p in FILES if p.suffix == suffix}
        assert {"ok", "invalid"} <= kinds, suffix


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_same_verdict(path: Path, verdicts: dict[str, judge.Verdict]) -> None:
    ref = verdicts[str(path)]
    our_outcome, message, spec = ours(path)
    deviation = DEVIATIONS.get(path.name)
    if deviation is not None:
        # A documented deviation must still be exactly that deviation on both sides.
        assert outcome(ref) == deviation.reference, (
            f"reference no longer gives {deviation.reference}: {ref.error}"
        )
        assert our_outcome == deviation.ours, f"ours gave {our_outcome}: {message}"
        return
    assert ref.panic is False, f"reference panics, not a listed deviation: {ref.error}"
    assert our_outcome == outcome(ref), (
        f"{path.name}: reference {outcome(ref)} ({ref.error}), ours {our_outcome} ({message})"
    )
    if spec is None:
        assert str(path) in message, f"the error does not name the file: {message}"
        return
    assert ref.spec is not None
    assert canonical(to_data(spec)) == canonical(ref.spec), "decoded content differs"
    assert spec.kind == ref.kind
    assert spec.version == ref.version
    assert minimum_version(spec) == ref.minimum_version
    assert [f"{spec.kind}={d.name}" for d in spec.devices] == list(ref.devices)


def test_deviations_list_real_corpus_files_and_documented_sections() -> None:
    names = {p.name for p in FILES}
    assert set(DEVIATIONS) <= names, set(DEVIATIONS) - names
    assert DEVIATIONS_DOC.is_file(), f"{DEVIATIONS_DOC} is missing"
    sections = doc_sections()
    for deviation in DEVIATIONS.values():
        assert deviation.reference in OUTCOMES and deviation.ours in ("ok", "invalid")
        assert deviation.reference != deviation.ours
        assert deviation.doc.lower() in sections, (
            f"{deviation.file}: no section {deviation.doc!r} in {DEVIATIONS_DOC.name}: {sections}"
        )


def _decoded(path: Path) -> Spec | None:
    try:
        return decode_spec(path.read_bytes(), str(path))
    except SpecError:
        return None


def test_minimum_version_of_unvalidated_specs(reference: judge.Reference) -> None:
    """MinimumRequiredVersion of every decodable spec, also when its declared version is
    wrong or too low (the reference computes it before validation)."""
    expected = reference.min_versions(FILES)
    compared = 0
    for path in FILES:
        spec = _decoded(path)
        theirs = expected[str(path)]
        if theirs is None:
            # The reference cannot decode it: neither may we (barring a documented deviation).
            assert spec is None or path.name in DEVIATIONS, path.name
        elif spec is not None:
            assert minimum_version(spec) == theirs, path.name
            compared += 1
    assert compared > 80


def test_reference_still_gives_the_recorded_verdicts(verdicts: dict[str, judge.Verdict]) -> None:
    """Sanity check of the harness: the reference's verdicts as recorded when the corpus was
    written (reference-verdicts.json). A change means the library or the runner changed."""
    recorded = json.loads(RECORDED.read_text())
    now = {Path(f).name: outcome(v) for f, v in verdicts.items()}
    assert now == recorded


def test_our_dump_of_every_valid_spec_is_accepted_unchanged(
    reference: judge.Reference, tmp_path: Path
) -> None:
    """dump_spec (YAML and JSON) of every spec we accept: the reference accepts it too and
    decodes the same content."""
    written: dict[str, Spec] = {}
    for path in FILES:
        spec = ours(path)[2]
        if spec is None:
            continue
        for fmt in ("yaml", "json"):
            out = tmp_path / f"{path.stem}.{fmt}"
            out.write_text(dump_spec(spec, fmt))
            written[str(out)] = spec
    assert len(written) > 80
    for file, verdict in reference.validate(written).items():
        assert verdict.ok, f"{file}: {verdict.error}"
        assert verdict.spec is not None
        assert canonical(verdict.spec) == canonical(to_data(written[file])), file

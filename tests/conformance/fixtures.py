"""Shared pytest fixture `reference`: the reference CDI library (Go 0.8.0) as a Python object.

Registered in tests/conftest.py. Other areas use it too, e.g. the generator tests prove the
reference accepts a generated spec with `reference.validate([path])`, the NRI plugin tests
compare an adjustment with `reference.inject(...)`. See tests/conformance/judge.py for the API.
"""

from __future__ import annotations

import pytest

from tests.conformance import judge
from tests.require import need


@pytest.fixture(scope="session")
def reference() -> judge.Reference:
    """The reference runner; built (or found up to date) by tests/conformance/build.sh.

    Skips locally, fails in CI (GPU_CDI_REQUIRE_ALL=1), when it cannot be built.
    """
    proc = judge.build()
    tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
    need(
        proc.returncode == 0 and judge.find_binary() is not None,
        f"reference CDI library runner not built (bash tests/conformance/build.sh: {tail})",
    )
    ref = judge.reference()
    version = ref.version()
    assert version["library"].startswith("0.8.0"), version
    return ref

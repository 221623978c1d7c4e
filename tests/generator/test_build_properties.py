"""Whatever the options, the builder's output is a valid spec at its minimum version (the CDI
core's validator and version rules decide), and every requested device is in it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cdi.codec import parse_spec
from cdi.dump import dump_spec
from cdi.nvidia import build as b
from cdi.nvidia import inventory, naming
from cdi.version import minimum_version
from tests.generator.hosts import INVENTORIES

HOST = inventory.load(str(INVENTORIES / "dgx-a100-mig.yaml"))
IDS = sorted(
    {i for g in HOST.gpus for i in naming.gpu_ids(g)}
    | {i for g in HOST.gpus for m in g.migs for i in naming.mig_ids(g, m)}
)

strategies = st.lists(st.sampled_from(naming.STRATEGIES), min_size=1, max_size=3, unique=True)
device_ids = st.one_of(
    st.just(["all"]), st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True)
)
options = st.builds(
    lambda names, ids, all_device, hooks, split, gids: b.Options(
        strategies=tuple(names),
        device_ids=tuple(ids),
        all_device=all_device,
        hooks=frozenset(hooks),
        hook_per_action=split,
        additional_gids=gids,
    ),
    strategies,
    device_ids,
    st.booleans(),
    st.sets(st.sampled_from(b.HOOKS)),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(options)
def test_any_options_give_a_valid_minimal_spec(opts: b.Options) -> None:
    built = b.build(HOST, opts)
    # valid at its version, which is the minimum: the writer and the loader take it as it is
    assert parse_spec(dump_spec(built.spec), "built.yaml") == built.spec
    assert minimum_version(built.spec) == built.spec.version
    names = {d.name for d in built.spec.devices}
    for device_id in opts.device_ids:
        if device_id != "all" and "index" in opts.strategies and device_id[0].isdigit():
            gpu = HOST.gpus[int(device_id.split(":")[0])]
            assert device_id in names or (gpu.mig_enabled and ":" not in device_id)
    if opts.all_device and built.spec.devices:
        assert "all" in names

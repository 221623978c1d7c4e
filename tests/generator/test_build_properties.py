"""Whatever the options, the builder's output is a valid spec at its minimum version (the CDI
core's validator and version rules decide), and every requested device is in it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cdi.nvidia import build as b
from cdi.nvidia import inventory, naming
from cdi.schema import spec_from_data
from cdi.validate import minimum_requirement, validate_spec
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
    spec = spec_from_data(built.data, "built")
    validate_spec(spec, "built")
    assert minimum_requirement(spec)[0] == built.data["cdiVersion"]
    names = {d["name"] for d in built.data["devices"]}
    for device_id in opts.device_ids:
        if device_id != "all" and "index" in opts.strategies and device_id[0].isdigit():
            gpu = HOST.gpus[int(device_id.split(":")[0])]
            assert device_id in names or (gpu.mig_enabled and ":" not in device_id)
    if opts.all_device and built.data["devices"]:
        assert "all" in names

"""Benchmark reference (scripts/bench_floor.py --dispatch): loaded after scripts/bench_buffered_addon.py,
it gives the held floor the gateway's event dispatch (addons/mcpgw/mitm_dispatch.py), which skips
the addons that have nothing for an event. The gateway runs that dispatch, so against this target
its own work is compared like for like; against plain `held` the comparison includes what the
dispatch saves mitmproxy itself."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons"))
from mcpgw import mitm_dispatch  # noqa: E402

_undo = mitm_dispatch.install()


class UndoOnDone:
    def done(self) -> None:
        _undo()


addons = [UndoOnDone()]

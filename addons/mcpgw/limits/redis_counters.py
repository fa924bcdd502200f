"""Counters in Redis (or Valkey), shared by every gateway process using the same server.

Each check is one Lua script: it reads every window's current and previous count, decides, and
charges all windows only if all have room, atomically, so two gateways never both take the
last slot. The window start comes from the gateway's clock (instances need synchronised clocks,
as Kong's do; a skew of s seconds shifts a window boundary by s). Keys are
`<prefix>:rl:{<counter>}:<size>:<window start>`: the hash tag keeps one counter's keys on one
Redis Cluster slot, which a multi-key script requires. Each key expires two windows after its
start, when no sliding window can read it any more."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .counters import Outcome, Window, outcome, usage

# KEYS: per window, the current then the previous window's key.
# ARGV: cost, sliding (0|1), mode (0: charge if allowed, 1: charge anyway, 2: only ask), then per window: limit, size, weight of the previous window.
# Returns the counts read (current, previous per window) and 1 if charged.
SCRIPT = """
local cost = tonumber(ARGV[1])
local sliding = ARGV[2] == '1'
local n = #KEYS / 2
local counts = {}
local allowed = 1
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = 0
  if sliding then prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0') end
  counts[2 * i - 1] = cur
  counts[2 * i] = prev
  local limit = tonumber(ARGV[3 * i + 1])
  local weight = tonumber(ARGV[3 * i + 3])
  if cur + prev * weight + cost > limit then allowed = 0 end
end
if (allowed == 1 and ARGV[3] == '0') or ARGV[3] == '1' then
  for i = 1, n do
    redis.call('INCRBY', KEYS[2 * i - 1], cost)
    redis.call('EXPIRE', KEYS[2 * i - 1], 2 * tonumber(ARGV[3 * i + 2]))
  end
end
counts[2 * n + 1] = allowed
return counts
"""


class RedisCounters:
    def __init__(self, client, prefix: str, clock: Callable[[], float]):
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self._script = client.register_script(SCRIPT)

    def keys(self, key: str, windows: Sequence[Window], now: float) -> list[str]:
        tag = key.replace("{", "(").replace("}", ")")  # a brace in a consumer name must not move the hash tag
        out = []
        for w in windows:
            start = int(now - now % w.size)
            out += [f"{self.prefix}:rl:{{{tag}}}:{w.size}:{start}", f"{self.prefix}:rl:{{{tag}}}:{w.size}:{start - w.size}"]
        return out

    async def check(self, key: str, windows: Sequence[Window], cost: int, sliding: bool,
                    penalty: bool = False, charge: bool = True) -> Outcome:
        now = self.clock()
        found = await self._script(**self._call(key, windows, cost, sliding, penalty, charge, now))
        return _outcome(found, windows, cost, now, sliding, charge)

    async def check_many(self, checks: Sequence[tuple]) -> list[Outcome]:
        """Several checks, each `(key, windows, cost, sliding, penalty[, charge])`, in one round
        trip: a pipeline of scripts (not a transaction: each script is atomic on its own counter,
        as separate checks are, and each counter's keys stay on one Cluster slot)."""
        if len(checks) == 1:
            return [await self.check(*checks[0])]
        now = self.clock()
        pipe = self.client.pipeline(transaction=False)
        for key, windows, cost, sliding, penalty, *charge in checks:
            call = self._call(key, windows, cost, sliding, penalty, charge[0] if charge else True, now)
            await self._script(**call, client=pipe)  # queued: sent with execute()
        found = await pipe.execute()
        return [_outcome(f, c[1], c[2], now, c[3], c[5] if len(c) > 5 else True) for f, c in zip(found, checks)]

    def _call(self, key: str, windows: Sequence[Window], cost: int, sliding: bool, penalty: bool, charge: bool,
              now: float) -> dict:
        args: list[object] = [cost, 1 if sliding else 0, 2 if not charge else 1 if penalty else 0]
        for w in windows:
            # passed as text with enough digits: Lua reads it back exactly enough for a comparison
            args += [w.limit, w.size, repr(usage(0, 1, now, w.size, True))]
        return {"keys": self.keys(key, windows, now), "args": args}


def _outcome(found, windows: Sequence[Window], cost: int, now: float, sliding: bool, charge: bool) -> Outcome:
    counts = [(int(found[2 * i]), int(found[2 * i + 1])) for i in range(len(windows))]
    return outcome(windows, counts, bool(int(found[-1])), cost, now, sliding, charge)

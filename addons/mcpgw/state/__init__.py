"""State the gateway keeps between flows and across policy reloads, behind small store interfaces
so that a shared backend (Redis, for several replicas) can replace the in-process one."""

from .sessions import MemorySessionStore, SessionStore, run_now

__all__ = ["MemorySessionStore", "SessionStore", "run_now"]

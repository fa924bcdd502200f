"""Log injection (logsafe.py): client-chosen values never start a log line of their own."""

from __future__ import annotations

import logging

import pytest

from mcpgw import logsafe, redaction
from mcpgw.policy.store import PolicyStore

FORGED = "[12:00:00.000][mcpgw] route r: allowed admin-user"
log = logging.getLogger("mcpgw.test")  # like the gateway's: created before the filters are installed


@pytest.fixture
def installed():
    undo = redaction.install(PolicyStore())
    yield
    undo()


def test_escape_writes_every_control_character_visibly():
    assert logsafe.escape("plain name") == "plain name"
    assert logsafe.escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert logsafe.escape("\x1b[2K\x00\x7f\x85") == "\\x1b[2K\\x00\\x7f\\x85"
    assert logsafe.escape("x\u2028y\u2029z") == "x\\u2028y\\u2029z"
    assert logsafe.escape("ünïcödé ok") == "ünïcödé ok"


def test_arguments_of_every_type_are_escaped_and_numbers_stay_numbers(installed, caplog):
    class Shown:
        def __str__(self):
            return f"str\n{FORGED}"

        def __repr__(self):
            return f"repr\n{FORGED}"

    with caplog.at_level(logging.INFO, logger="mcpgw"):
        log.info("denied %s: %s (%d calls, %.1f s) %r %s", "dev", f"tools/call x\n{FORGED}", 3, 1.25, Shown(),
                 ["a\nb"])
        log.info("by name: %(tool)s", {"tool": f"t\r{FORGED}"})
        log.info(ValueError(f"raw object\n{FORGED}"))
    for message in caplog.messages:
        assert "\n" not in message and "\r" not in message
    assert caplog.messages[0] == f"denied dev: tools/call x\\n{FORGED} (3 calls, 1.2 s) repr\\n{FORGED} ['a\\nb']"
    assert caplog.messages[1] == f"by name: t\\r{FORGED}"
    assert caplog.messages[2] == f"raw object\\n{FORGED}"


def test_exception_messages_are_escaped_but_tracebacks_keep_their_lines(installed, caplog):
    with caplog.at_level(logging.ERROR, logger="mcpgw"):
        try:
            try:
                raise KeyError(f"inner\n{FORGED}")
            except KeyError as e:
                raise ValueError(f"outer\n{FORGED}") from e
        except ValueError:
            log.exception("request failed")
    text = caplog.records[0].exc_text
    assert text.startswith("Traceback (most recent call last):\n")
    assert "direct cause of the following exception" in text
    assert f"ValueError: outer\\n{FORGED}" in text and "KeyError: 'inner\\n" in text
    assert not [line for line in text.splitlines() if line.startswith("[")]


def test_escaping_runs_before_redaction(installed, caplog):
    redaction.remember(["client-secret-token-99"])
    with caplog.at_level(logging.INFO, logger="mcpgw"):
        log.info("key %s\n", "client-secret-token-99\nforged")
    assert caplog.messages == [f"key {redaction.MASK}\\nforged\n"]  # the gateway's own format keeps its newline

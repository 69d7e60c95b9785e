"""How a stopped worker container ended (`docker inspect` State), said in one sentence."""
import pytest

from comfyume_fab.host.facts import ParseError, ended


def test_parse_and_sentences():
    out = "/comfyume-worker-1\texited\t137\tfalse\n/w2\texited\t0\tfalse\n/w3\texited\t137\ttrue\n"
    killed, clean, oom = ended.parse(out)
    assert (killed.name, killed.exit_code, killed.killed, killed.oom_killed) == ("comfyume-worker-1", 137, True, False)
    assert "was KILLED (SIGKILL, exit 137) after 20 s (grace period 20 s)" in killed.sentence(20.3, 20)
    assert not clean.killed and clean.sentence(0.8, 20) == "w2 stopped cleanly (exit 0) in 0.8 s"
    assert oom.killed and "OOM killer" in oom.sentence(1, 20)
    assert ended.Ended("w", "exited", 143, False).sentence(1.2, 20) == "w stopped cleanly (ended by SIGTERM, exit 143) in 1.2 s"
    with pytest.raises(ParseError):
        ended.parse("garbage")


def test_grace_period_from_the_compose_file():
    assert ended.grace_seconds("services:\n  worker:\n    stop_grace_period: 20s\n") == 20
    assert ended.grace_seconds("    stop_grace_period: 1m\n") == 60
    assert ended.grace_seconds("services: {}") == ended.DEFAULT_GRACE_S

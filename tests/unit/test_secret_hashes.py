"""Nothing printed is derived from a secret, and what stands for a secret on a host is salted per
host (issue 18): `plan`, `--dry-run` and `--json` once printed CFAB_HASH_* values made with a fixed,
public salt, so a small dictionary recovered ADMIN_PASSWORD from `plan` output."""
from __future__ import annotations

import hashlib
import itertools
import json

import pytest

from comfyume_fab.host.facts import salt as saltfacts
from comfyume_fab.plan.planner import make_plan
from comfyume_fab.plan.steps import render_json, render_text
from tests.support import inventory_text, load

GUESSES = ("password", "admin", "letmein", "s3cret-admin-pw", "s3cret-redis-pw", "comfyume", "123456")


def public_salt_fingerprint(name: str, guess: str) -> str:
    return hashlib.scrypt(guess.encode(), salt=f"comfyume-fab:{name}".encode(), n=2 ** 14, r=8, p=1, dklen=16).hex()


def public_salt_env_hashes(env: dict[str, str]) -> set[str]:
    """The attack on revisions up to a9207a6: every input of CFAB_ENV_HASH is printed but the
    secrets, and a secret entered it as scrypt(value, salt='comfyume-fab:NAME'): each combination
    of guesses costs one cheap sha256 once each guess's scrypt is known."""
    masked = sorted(k for k, v in env.items() if v == "***" and not k.startswith("CFAB_"))
    tables = {k: {public_salt_fingerprint(k, word) for word in GUESSES} for k in masked}
    out = set()
    for combo in itertools.product(*(sorted(tables[k]) for k in masked)):
        given = dict(zip(masked, combo))
        lines = [f"{k}={given.get(k, v)}" for k, v in sorted(env.items())
                 if k != "CFAB_ENV_HASH" and not k.startswith("CFAB_HASH_")]
        out.add(hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12])
    return out


def printed(plan) -> str:
    return render_text(plan, "start-all") + render_json(plan, "start-all") + render_text(plan, "stop-all")


def test_plan_output_holds_no_hash_a_dictionary_can_test(tmp_path):
    plan = make_plan(load(tmp_path, inventory_text("dual-server", "two")))
    out = printed(plan)
    shown = json.loads(render_json(plan))
    for host in shown["hosts"]:
        found = [h for h in public_salt_env_hashes(host["env"]) if h in out]
        assert found == [], f"{host['name']}: the dictionary's passwords give a printed hash"
        assert all(v == "***" for k, v in host["env"].items() if k.startswith("CFAB_")), host["env"]


def test_plan_output_is_the_same_whatever_the_secrets_are(tmp_path):
    """The strongest form: change every secret and not one printed character changes."""
    one = make_plan(load(tmp_path, inventory_text("dual-server", "three")))
    two = make_plan(load(tmp_path, inventory_text("dual-server", "three"),
                         {"REDIS_PASSWORD": "other-redis-pw", "ADMIN_PASSWORD": "other-admin-pw"}))
    assert printed(one) == printed(two)


# --- the salt ---------------------------------------------------------------------------------------

def test_a_salt_is_32_random_hex_digits_read_back_only_when_it_is_one():
    made = {saltfacts.new_salt() for _ in range(50)}
    assert len(made) == 50 and all(saltfacts.parse_salt(s) == s for s in made)
    good = saltfacts.new_salt()
    assert saltfacts.parse_salt(saltfacts.salt_text(good).decode()) == good
    for text in ("", "\n", good[:-1], good + "0", good.upper(), "x" * 32, f"{good}\n{good}", "comfyume-fab:X"):
        assert saltfacts.parse_salt(text) is None, text
    from comfyume_fab.host import commands as cmd
    from comfyume_fab.host.facts import Place
    from comfyume_fab.host.state import parse_state

    def read(code: int, text: str):
        return parse_state("mello", f"{cmd.SECTION}-begin salt\n{text}\n{cmd.SECTION}-end salt {code}\n").salt
    assert read(0, good) == good
    assert read(1, good) is None and read(0, "") is None
    assert parse_state("mello", "").salt is None  # no section: no salt, never a guess
    assert saltfacts.SALT.command(Place("p", "comfyume")) == "cat comfyume/fingerprint.salt 2>/dev/null || true"
    assert saltfacts.SALT.section == saltfacts.SECTION


def test_each_salt_gives_other_hashes_of_what_reads_a_secret_and_the_same_of_the_rest(tmp_path):
    inv = load(tmp_path, inventory_text("dual-server", "two"))
    a, b = "a" * 32, "b" * 32
    one = make_plan(inv, salts={"mello": a, "verda": a})
    again = make_plan(inv, salts={"mello": a, "verda": a})
    other = make_plan(inv, salts={"mello": b, "verda": b})
    assert [h.service_hashes for h in one.hosts] == [h.service_hashes for h in again.hosts]
    old, new = one.app.service_hashes, other.app.service_hashes
    assert {svc for svc in old if old[svc] != new[svc]} == {"redis", "queue-manager", "admin"}
    assert one.workers[0].service_hashes["worker"] != other.workers[0].service_hashes["worker"]
    assert all(x.host_hash != y.host_hash and x.env_hash != y.env_hash for x, y in zip(one.hosts, other.hosts))
    assert one.config_hash == other.config_hash  # printed: never follows a salt or a secret
    # Salting a plan made without salts is the same as planning with them (status does that).
    unsalted = make_plan(inv)
    assert unsalted.with_salts({"mello": a, "verda": a}).hosts == one.hosts
    assert [h.host_hash for h in unsalted.with_salts({"mello": a, "verda": a}).hosts] == \
        [h.host_hash for h in one.hosts]
    only_app = unsalted.with_salts({"mello": a})
    assert only_app.app.salt == a and only_app.workers[0].salt is None  # a host without a salt stays so


def test_a_plan_without_the_hosts_salt_is_never_uploaded_and_makes_no_fingerprint(tmp_path, monkeypatch):
    from comfyume_fab.inventory import fingerprint
    calls = []
    monkeypatch.setattr(fingerprint, "slow_fingerprint", lambda *a: calls.append(a) or "x" * 32)
    monkeypatch.setattr(fingerprint, "_memo", {})
    plan = make_plan(load(tmp_path, inventory_text("dual-server", "two")))
    assert calls == []  # plan needs no salt and computes nothing slow
    with pytest.raises(ValueError, match="without the host's salt is never uploaded"):
        plan.app.env_file_text()
    salted = plan.with_salts({"mello": "c" * 32, "verda": "d" * 32})
    assert "REDIS_PASSWORD='s3cret-redis-pw'" in salted.app.env_file_text()
    assert {(name, salt) for name, _, salt in calls} == {
        ("REDIS_PASSWORD", "c" * 32), ("ADMIN_PASSWORD", "c" * 32), ("REDIS_PASSWORD", "d" * 32)}

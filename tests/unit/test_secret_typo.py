"""A mistyped secret is never deployed on the tool's own advice (issue 23, item 1): when a local
secret differs from the one a host's running services were given, the tool says which secret,
where its local value comes from (the secrets file named in the inventory, or the environment)
and that the running services use another value; `status` says so instead of "run start-all to
apply"; a new Redis password (it recreates Redis) needs --yes or a "yes" on a terminal, and
without either start-all refuses in one sentence (exit 2) before anything is touched.

The host's side is a HostState built from what the host-state read brings back (its uploaded .env
in the `envfile` section), the real parser's input; no SSH here."""
from __future__ import annotations

import io
import os

import pytest

from comfyume_fab.errors import ConfigError, ExitCode
from comfyume_fab.host.facts.docker import ContainerInfo
from comfyume_fab.host.state import HostState
from comfyume_fab.inventory import load_inventory
from comfyume_fab.plan.planner import make_plan
from tests.support import inventory_text

DEPLOYED = {"REDIS_PASSWORD": "the-deployed-redis-pw", "ADMIN_PASSWORD": "the-admin-pw"}
TYPO = "the-deployed-redis-pW"


def inventory(tmp_path, environ=None, file_values=None):
    """The two-host inventory with `secrets.env_file: .secrets.env` holding `file_values`."""
    secrets = tmp_path / ".secrets.env"
    secrets.write_text("".join(f"{k}={v}\n" for k, v in (file_values or {}).items()))
    secrets.chmod(0o600)
    path = tmp_path / "hosts.yaml"
    path.write_text(inventory_text("dual-server", "two", num_users=2, extra="secrets: {env_file: .secrets.env}\n"))
    return load_inventory(str(path), environ=dict(environ or {}))


SALTS = {"mello": "a" * 32, "verda": "b" * 32}


def plan_of(inv):
    """The plan made with each host's salt, as start-all and status compare it with the hosts."""
    return make_plan(inv, salts=SALTS)


def container(service: str, label: str) -> ContainerInfo:
    never = "0001-01-01T00:00:00Z"
    return ContainerInfo(f"id-{service}", f"comfyume-{service}-1", service, "comfyume", "running", "healthy", 0,
                         never, never, never, 0, label, f"{service}:1")


def deployed_states(tmp_path, labels_from=None):
    """Each host as the last start-all left it: its .env written from the DEPLOYED secrets, each
    service running with that deploy's fingerprint label (or `labels_from`'s: another plan's)."""
    then = tmp_path / "then"
    then.mkdir(exist_ok=True)
    plan = plan_of(inventory(then, file_values=DEPLOYED))
    labelled = {hp.name: hp for hp in (labels_from or plan).hosts}
    states = {}
    for hp in plan.hosts:
        st = HostState(hp.name, 0.01, engine="27.0")
        text = "".join(f"{k}='{v.reveal() if hasattr(v, 'reveal') else v}'\n" for k, v in hp.env.items())
        st.extra = {"envfile": (0, text)}
        st.containers = tuple(container(svc, labelled[hp.name].service_hashes[svc]) for svc in hp.services)
        states[hp.name] = st
    return states


def test_a_mistyped_secret_in_the_secrets_file_is_named_with_its_file(tmp_path):
    from comfyume_fab.plan.diff import secret_changes, secret_sentence
    states = deployed_states(tmp_path)
    inv = inventory(tmp_path, file_values={**DEPLOYED, "REDIS_PASSWORD": TYPO})
    changes = secret_changes(plan_of(inv), states)
    assert {(c.name, c.host) for c in changes} == {("REDIS_PASSWORD", "mello"), ("REDIS_PASSWORD", "verda")}
    app = next(c for c in changes if c.host == "mello")
    assert app.source == "the secrets file .secrets.env" and "redis" in app.services
    text = secret_sentence(app)
    assert text.startswith("REDIS_PASSWORD from the secrets file .secrets.env differs from the value the running "
                           "redis, ")
    assert "on mello use (deployed earlier): if that is a typo, fix it there" in text
    assert TYPO not in text and DEPLOYED["REDIS_PASSWORD"] not in text


def test_a_secret_from_the_environment_is_named_as_such_and_an_unchanged_one_not_at_all(tmp_path):
    from comfyume_fab.plan.diff import secret_changes, secret_sentence
    states = deployed_states(tmp_path)
    inv = inventory(tmp_path, environ={"ADMIN_PASSWORD": "another-admin-pw"}, file_values=DEPLOYED)
    changes = secret_changes(plan_of(inv), states)
    assert [(c.name, c.host, c.source, c.services) for c in changes] == [
        ("ADMIN_PASSWORD", "mello", "the environment variable ADMIN_PASSWORD", ("admin",))]
    assert "another-admin-pw" not in secret_sentence(changes[0])
    same = inventory(tmp_path, file_values=DEPLOYED)
    assert secret_changes(plan_of(same), states) == []


def test_a_hand_edited_env_whose_services_run_the_local_value_is_no_secret_change(tmp_path):
    """The host's .env was edited by hand after the deploy, but every container still runs with the
    local value's fingerprint: start-all replaces the file, nothing to confirm."""
    from comfyume_fab.plan.diff import secret_changes
    local = inventory(tmp_path, file_values={**DEPLOYED, "REDIS_PASSWORD": TYPO})
    states = deployed_states(tmp_path, labels_from=plan_of(local))
    assert secret_changes(plan_of(local), states) == []


def test_status_names_the_secret_instead_of_advising_start_all(tmp_path):
    from comfyume_fab.ops.status import _auth_refused, _host_block
    from comfyume_fab.plan.diff import secret_changes
    states = deployed_states(tmp_path)
    inv = inventory(tmp_path, file_values={**DEPLOYED, "REDIS_PASSWORD": TYPO})
    plan = plan_of(inv)
    changes = secret_changes(plan, states)
    checks = []
    _host_block(inv, plan.app, states["mello"], 0.01, "rev", plan.config_hash, checks, None,
                [c for c in changes if c.host == "mello"])
    config = next(c for c in checks if c.name == "config-mello")
    assert "run start-all to apply" not in config.detail
    assert "REDIS_PASSWORD from the secrets file .secrets.env differs from the value the running" in config.detail
    assert _auth_refused("Redis on mello: invalid username-password pair or user is disabled.")
    assert not _auth_refused("Connection refused")


def test_status_says_why_redis_refuses_the_local_password(tmp_path):
    from comfyume_fab.checks.result import CheckResult
    from comfyume_fab.ops.status import name_refused_password
    from comfyume_fab.plan.diff import secret_changes
    states = deployed_states(tmp_path)
    inv = inventory(tmp_path, file_values={**DEPLOYED, "REDIS_PASSWORD": TYPO})
    changes = secret_changes(plan_of(inv), states)
    refused = CheckResult("queue", False, "cannot read the queue from Redis on mello: invalid username-password pair "
                          "or user is disabled.", host="mello")
    other = CheckResult("queue", False, "cannot read the queue from Redis on mello: Connection refused", host="mello")
    name_refused_password([refused, other], changes)
    assert refused.detail == ("Redis on mello refuses the local REDIS_PASSWORD (from the secrets file .secrets.env): "
                              "it differs from the one Redis runs with; if the local value is a typo, fix it there "
                              "(start-all would deploy it and recreate Redis)")
    assert other.detail.endswith("Connection refused")
    same = CheckResult("queue", False, "cannot read the queue from Redis on mello: invalid username-password pair",
                       host="mello")
    name_refused_password([same], [])  # no secret differs: Redis's own words stay
    assert same.detail.endswith("invalid username-password pair")


def test_a_new_redis_password_is_refused_without_yes_or_a_terminal(tmp_path):
    from comfyume_fab.plan.diff import secret_changes
    from comfyume_fab.present.confirm import secret_confirmer
    states = deployed_states(tmp_path)
    inv = inventory(tmp_path, file_values={**DEPLOYED, "REDIS_PASSWORD": TYPO})
    change = next(c for c in secret_changes(plan_of(inv), states) if c.host == "mello")
    with pytest.raises(ConfigError) as info:
        secret_confirmer(False, stdin=io.StringIO("y\n"), stream=io.StringIO())(change)  # no terminal: no question
    assert info.value.code == ExitCode.CONFIG
    assert info.value.sentence() == (
        "start-all: not changing REDIS_PASSWORD: the value from the secrets file .secrets.env differs from the one "
        "Redis on mello runs with, and changing it recreates Redis (queue manager and workers reconnect); nothing "
        "was touched: fix the secrets file .secrets.env if that value is a typo, or rerun with --yes to change it")
    secret_confirmer(True, stdin=io.StringIO(""), stream=io.StringIO())(change)  # --yes: goes on


@pytest.mark.parametrize("answer, goes_on", [("y\n", True), ("yes\n", True), ("n\n", False), ("\n", False)])
def test_on_a_terminal_the_question_is_asked(tmp_path, answer, goes_on):
    from comfyume_fab.plan.diff import secret_changes
    from comfyume_fab.present.confirm import secret_confirmer
    states = deployed_states(tmp_path)
    inv = inventory(tmp_path, file_values={**DEPLOYED, "REDIS_PASSWORD": TYPO})
    change = next(c for c in secret_changes(plan_of(inv), states) if c.host == "mello")
    main, sub = os.openpty()
    try:
        with open(sub, "r", closefd=False) as tty_in, open(sub, "w", closefd=False) as tty_out:
            os.write(main, answer.encode())
            confirm = secret_confirmer(False, stdin=tty_in, stream=tty_out)
            if goes_on:
                confirm(change)
            else:
                with pytest.raises(ConfigError):
                    confirm(change)
        asked = os.read(main, 4096).decode()
        assert "change it and recreate Redis? [y/N]" in asked and TYPO not in asked
    finally:
        os.close(main)
        os.close(sub)


def test_start_all_and_rollback_have_a_yes_option():
    from comfyume_fab.tasks import ns
    for task in ("start-all", "rollback"):
        assert ("yes", "y") in [a.names for a in ns[task].get_arguments()], task


def test_the_installed_help_offers_yes_and_list():
    """The real CLI, as a subprocess: start-all's help shows -y/--yes, rollback's --list."""
    import subprocess
    from tests.support import INVOKE, REPO
    out = subprocess.run([INVOKE, "--search-root", str(REPO), "--help", "start-all"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "-y, --yes" in out and "recreates" in out, out
    out = subprocess.run([INVOKE, "--search-root", str(REPO), "--help", "rollback"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "--list" in out and "-y, --yes" in out, out

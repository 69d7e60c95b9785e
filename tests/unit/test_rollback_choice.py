"""rollback's choice of the deploy each host goes back to (plan/rollback.py, pure), and `--to`
refused before any host is touched: 7 to 40 hex digits, one recorded commit, present on every
host of its branch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfyume_fab.errors import ConfigError, ExitCode, UnhealthyError

REPO = Path(__file__).resolve().parents[2]
A1, A2 = "a1" * 20, "a2" * 20  # mello-track's commits, oldest first
V1, V2, V3 = "b1" * 20, "b2" * 20, "b3" * 20  # verda-track's
TWIN = "b1b1b1b" + "0" * 33  # shares its first 7 digits with V1


def deploy(commit, branch, tag=None):
    return {"refs": {"WORKER_IMAGE" if branch == "verda-track" else "ADMIN_IMAGE":
                     f"comfyume-{branch}:{(tag or commit)[:12]}"}, "branch": branch, "commit": commit}


def record(current, *history):
    return {"images": {**current, "history": list(history)}}


def images_of(*records):
    """Every image of these records, as the host's engine lists it."""
    return {r: "sha256:" + "0" * 64 for rec in records
            for d in [rec["images"]] + rec["images"]["history"] for r in d["refs"].values()}


def choose(to, records, images=None):
    from comfyume_fab.plan.rollback import choose as run
    return run(to, records, images if images is not None else {h: images_of(r) for h, r in records.items() if r})


def fleet():
    mello = record(deploy(A2, "mello-track"), deploy(A1, "mello-track"))
    verda = record(deploy(V3, "verda-track"), deploy(V2, "verda-track"), deploy(V1, "verda-track"))
    verda2 = record(deploy(V3, "verda-track"), deploy(V2, "verda-track"))
    return {"mello": mello, "verda": verda, "verda2": verda2}


@pytest.mark.parametrize("bad", ["", "b1b1b1", "xyz1234", "b1b1b1b1 ", "g" * 7, "b" * 41, "$(reboot)", "HEAD~1"])
def test_to_takes_7_to_40_hex_digits_only(bad):
    with pytest.raises(ConfigError) as info:
        choose(bad, fleet())
    assert info.value.sentence() == (f"rollback --to: '{bad}' is not a commit; give 7 to 40 of its hex digits "
                                     "(status shows each host's deployed commit and earlier deploys)")


def test_an_ambiguous_prefix_is_refused_listing_the_candidates():
    records = fleet()
    records["verda"]["images"]["history"].append(deploy(TWIN, "verda-track"))
    with pytest.raises(ConfigError) as info:
        choose("b1b1b1b", records)
    assert info.value.sentence() == (f"rollback --to b1b1b1b: ambiguous, 2 recorded commits start with it: "
                                     f"{TWIN[:12]} (verda-track), {V1[:12]} (verda-track); give more digits")
    assert info.value.code == ExitCode.CONFIG
    targets, _ = choose(V1[:9], records | {"verda2": record(deploy(V3, "verda-track"), deploy(V1, "verda-track"))})
    assert targets["verda"]["commit"] == V1  # more digits: one commit


def test_a_commit_missing_on_a_host_of_its_branch_is_refused_naming_it():
    with pytest.raises(ConfigError) as info:
        choose(V1[:8].upper(), fleet())  # verda has V1, verda2 (same branch) does not
    assert info.value.sentence() == (
        f"rollback --to {V1[:8]}: commit {V1[:12]} of verda-track has no deploy recorded on verda2, which deploys "
        "that branch too; nothing was changed (deploy that commit with start-all, which builds it where missing)")


def test_hosts_of_another_branch_stay_and_say_so():
    targets, notes = choose(V2[:7], fleet())
    assert targets["verda"]["commit"] == V2 and targets["verda2"]["commit"] == V2
    assert targets["mello"] == deploy(A2, "mello-track")  # deployed as it runs now
    assert notes == [f"mello: stays as it is (at {A2[:12]} of mello-track; {V2[:12]} is of verda-track)"]


def test_a_host_already_at_the_commit_keeps_its_images():
    records = fleet()
    records["verda2"] = record(deploy(V2, "verda-track"), deploy(V1, "verda-track"))
    targets, notes = choose(V2[:10], records)
    assert targets["verda2"] == deploy(V2, "verda-track") and f"verda2: already at {V2[:12]}" in notes


def test_without_to_each_host_goes_back_to_its_own_previous_commit():
    targets, _ = choose(None, fleet())
    assert {h: t["commit"] for h, t in targets.items()} == {"mello": A1, "verda": V2, "verda2": V2}


def test_unknown_commit_and_gone_images():
    with pytest.raises(ConfigError, match="rollback: no host has a deploy of commit deadbeef"):
        choose("deadbeef", fleet())
    records = fleet()
    with pytest.raises(UnhealthyError, match=f"the images of {A1[:12]} are no longer on the host"):
        choose(None, records, {"mello": {}, "verda": images_of(records["verda"]),
                               "verda2": images_of(records["verda2"])})


def test_the_cli_refuses_a_bad_to_before_any_host_is_touched(tmp_path):
    """Exit 2 and one sentence, with hosts that cannot be reached (nothing was tried)."""
    (tmp_path / "hosts.yaml").write_text(
        "mode: dual-server\nnum_users: 1\nhosts:\n"
        "  mello: {address: 127.0.0.1, port: 9, roles: [app], tailscale_ip: 100.99.216.71}\n"
        "  verda: {address: 127.0.0.2, port: 9, roles: [worker]}\n")
    env = dict(os.environ, REDIS_PASSWORD="x" * 16, ADMIN_PASSWORD="y" * 16)
    res = subprocess.run([str(Path(sys.executable).with_name("invoke")), "--search-root", str(REPO), "rollback",
                          "--hosts", str(tmp_path / "hosts.yaml"), "--to", "HEAD~1"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "rollback --to: 'HEAD~1' is not a commit; give 7 to 40 of its hex digits (status shows each host's "
        "deployed commit and earlier deploys)"]


def test_nothing_to_roll_back_to_says_what_can_be_and_how_to_list_it():
    """Issue 23 item 6: after deploys of images with no commit, the refusal explains that only
    commit-tagged images can be rolled back to, and names `rollback --list`."""
    plain = {"refs": {"WORKER_IMAGE": "comfyume-worker:v0.11.0"}, "branch": None, "commit": None}
    records = {"verda": record(plain, dict(plain, at="2026-12-01T10:00:00Z"))}
    with pytest.raises(ConfigError) as info:
        choose(None, records)
    text = info.value.sentence()
    assert "no host has an earlier deploy recorded" in text
    assert "only deploys of commit-tagged images can be rolled back to" in text
    assert "`source: build`" in text and "pulled with commit tags" in text
    assert "`rollback --list`" in text


def test_candidates_list_each_hosts_earlier_commits_newest_first_marking_gone_images():
    from comfyume_fab.plan.rollback import candidates
    records = fleet()
    records["verda"]["images"]["history"][0]["at"] = "2026-12-02T09:00:00Z"
    images = {h: images_of(r) for h, r in records.items()}
    del images["verda"][f"comfyume-verda-track:{V1[:12]}"]  # pruned
    found = candidates(records, images)
    assert list(found) == ["mello", "verda", "verda2"]
    assert found["mello"]["current"]["commit"] == A2
    assert [(e["commit"], e["present"]) for e in found["mello"]["earlier"]] == [(A1, True)]
    assert [(e["commit"], e["branch"], e["at"], e["present"]) for e in found["verda"]["earlier"]] == [
        (V2, "verda-track", "2026-12-02T09:00:00Z", True), (V1, "verda-track", None, False)]


def test_rollback_list_text_names_commit_branch_and_when_and_says_when_nothing_can_be():
    from comfyume_fab.plan.rollback import candidates
    from comfyume_fab.present.reports import rollback_list_text
    records = fleet()
    records["verda"]["images"]["history"][0]["at"] = "2026-12-02T09:00:00Z"
    text = rollback_list_text(candidates(records, {h: images_of(r) for h, r in records.items()}))
    assert f"    {V2[:12]}  verda-track  2026-12-02T09:00:00Z" in text.splitlines()
    assert f"  mello: at {A2[:12]} (mello-track, when unknown)" in text.splitlines()
    assert "nothing can be rolled back to" not in text
    plain = {"refs": {"WORKER_IMAGE": "comfyume-worker:v0.11.0"}, "branch": None, "commit": None}
    none = rollback_list_text(candidates({"verda": record(plain)}, {}))
    assert "  verda: runs images with no commit recorded" in none.splitlines()
    assert "nothing can be rolled back to: only deploys of commit-tagged images" in none


def test_rollback_has_a_list_option():
    from comfyume_fab.tasks import ns
    assert ("list",) in [a.names for a in ns["rollback"].get_arguments()]

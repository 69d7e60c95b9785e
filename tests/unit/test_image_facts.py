"""git and docker-image facts, parsed from output recorded from the real programs (git 2.39.5,
docker 20.10 engine), and the image preflight that reads them (pure)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from comfyume_fab.checks.images import image_problems, raise_image_problems
from comfyume_fab.errors import ConfigError, ExitCode, FabError
from comfyume_fab.host.facts import ParseError
from comfyume_fab.host.actions import images as imgact
from comfyume_fab.host.facts import git as gitfacts
from comfyume_fab.host.facts import images as imgfacts
from comfyume_fab.host.state import HostState
from comfyume_fab.inventory import load_inventory
from comfyume_fab.checks.images import state_parts

FIX = Path(__file__).resolve().parents[1] / "fixtures"
GIT = FIX / "git-2.39"
IMAGE_LS = (FIX / "docker-20.10" / "image-ls.tsv").read_text()


def test_branches_from_recordings():
    heads = gitfacts.parse_ls_remote((GIT / "ls-remote.txt").read_text())
    assert heads == {"mello-track": "e748cc4893352bac4859f62dfeaee5cbfbf0253a",
                     "verda-track": "9156cf97de34f512daa70fe3f348bf0583fc6a97"}
    with pytest.raises(ParseError):
        gitfacts.parse_ls_remote((GIT / "ls-remote-denied.txt").read_text())


@pytest.mark.parametrize("name, words", [
    ("ls-remote-denied.txt", ("cannot read the repository", "deploy key", "id_ed25519.pub")),
    ("ls-remote-hostkey.txt", ("host key", "known_hosts")),
    ("ls-remote-notrepo.txt", ("no repository at", "images.repository")),
    ("ls-remote-refused.txt", ("cannot reach the git server", "reachable")),
])
def test_remote_problem_names_the_likely_fix(name, words):
    what, hint = gitfacts.remote_problem((GIT / name).read_text(), "ssh://git@h/x.git")
    text = f"{what} ({hint})"
    assert all(w in text for w in words), text
    assert "\n" not in text


def test_ls_remote_command_quotes_the_url_and_never_prompts():
    command = gitfacts.ls_remote_command("git@h:team/c.git")
    assert command.startswith("GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND='ssh -o BatchMode=yes' ")
    assert shlex.split(command)[-4:] == ["ls-remote", "--heads", "--", "git@h:team/c.git"]


def test_image_list_from_recording():
    images = imgfacts.parse_image_list(IMAGE_LS)
    assert images["redis:7-alpine"].startswith("sha256:e611b3b0") and len(images) == 5
    assert imgfacts.normalize("docker.io/library/redis:7-alpine") == "redis:7-alpine"
    assert imgfacts.normalize("registry:5000/team/worker") == "registry:5000/team/worker:latest"
    assert imgfacts.commit_ref("comfyume-worker:v0.11.0", "0123456789abcdef" * 2) == "comfyume-worker:0123456789ab"
    with pytest.raises(ParseError):
        imgfacts.parse_image_list("Cannot connect to the Docker daemon at unix:///x. Is the docker daemon running?")


DUAL = """\
mode: dual-server
images:
  source: {source}
  repository: ssh://git@100.64.0.9/srv/git/comfyume.git
  branch:
    worker: verda-track
hosts:
  mello: {{address: mello, tailscale_ip: 100.99.216.71, roles: [app]}}
  verda: {{address: verda, roles: [worker]}}
"""
ENV = {"REDIS_PASSWORD": "r-pw", "ADMIN_PASSWORD": "a-pw"}


def inventory(tmp_path, source="build"):
    path = tmp_path / "hosts.yaml"
    path.write_text(DUAL.format(source=source))
    return load_inventory(str(path), environ=ENV)


def state(name, **extra) -> HostState:
    st = HostState(name, 0.01, engine="20.10.24")
    st.extra = extra
    return st


def test_parts_only_ask_git_where_something_is_built(tmp_path):
    inv = inventory(tmp_path)
    assert [n for n, _ in state_parts(inv, inv.host("verda"))] == ["images", "git", "git_remote"]
    present = inventory(tmp_path, "present")
    assert [n for n, _ in state_parts(present, present.host("verda"))] == ["images"]


def test_preflight_every_problem_one_sentence_each(tmp_path):
    inv = inventory(tmp_path)
    ls = (GIT / "ls-remote.txt").read_text().replace("mello-track", "main")
    states = {"mello": state("mello", images=(0, IMAGE_LS), git=(0, "git version 2.39.5"), git_remote=(0, ls)),
              "verda": state("verda", images=(0, ""), git=(127, "bash: git: command not found"))}
    found = image_problems(inv, states)
    texts = [p.sentence() for p in found]
    assert texts[0].endswith("images.branch.app: host mello builds from branch 'mello-track', which does not "
                             "exist in ssh://git@100.64.0.9/srv/git/comfyume.git (its branches: main, verda-track; "
                             "fix the branch in hosts.yaml or push it)")
    assert texts[0].startswith(f"{inv.path}:5 ")  # images.branch has no app entry: its own line
    assert texts[1] == ("host verda, step preflight images: git is not installed, and it builds worker from "
                        "ssh://git@100.64.0.9/srv/git/comfyume.git (install it on the host (apt-get install git))")
    with pytest.raises(FabError) as info:
        raise_image_problems(found)
    assert info.value.code == ExitCode.UNHEALTHY and "also: " in info.value.sentence()


def test_a_missing_present_image_is_the_hosts_problem_naming_copy_image(tmp_path):
    """Issue 23 item 3: not the inventory's (exit 2, a file:line): the host's, its own exit code,
    named for what it is, with `copy-image` from the host that has it."""
    inv = inventory(tmp_path, "present")
    states = {"mello": state("mello", images=(0, IMAGE_LS)),
              "verda": state("verda", images=(0, IMAGE_LS.replace("comfyume-worker", "other")))}
    with pytest.raises(FabError) as info:
        raise_image_problems(image_problems(inv, states))
    assert info.value.code == ExitCode.MISSING_IMAGE and not isinstance(info.value, ConfigError)
    assert info.value.sentence() == (
        "host verda, step preflight images: verda has no image comfyume-worker:v0.11.0 (copy it from mello, which "
        "has it: `comfyume-fab copy-image --source mello --target verda --image comfyume-worker:v0.11.0`; or give "
        f"it a source in {inv.path} (images.source: build with images.repository, or pull), or `docker load` it "
        "on verda)")
    assert "hosts.yaml:" not in info.value.sentence() and "its source is present" not in info.value.sentence()
    states["verda"] = state("verda", images=(0, IMAGE_LS))
    assert image_problems(inv, states) == []


def test_without_a_host_that_has_it_the_fix_is_a_source(tmp_path):
    inv = inventory(tmp_path, "present")
    gone = IMAGE_LS.replace("comfyume-worker", "other")
    states = {"mello": state("mello", images=(0, gone)), "verda": state("verda", images=(0, gone))}
    (problem,) = image_problems(inv, states)
    assert problem.hint == (f"give it a source in {inv.path} (images.source: build with images.repository, or "
                            "pull), or `docker load` it on verda")


def test_a_missing_image_where_nothing_is_to_be_recreated_is_a_warning(tmp_path):
    from comfyume_fab.checks.images import image_findings
    inv = inventory(tmp_path, "present")
    states = {"mello": state("mello", images=(0, IMAGE_LS)),
              "verda": state("verda", images=(0, IMAGE_LS.replace("comfyume-worker", "other")))}
    problems, warnings = image_findings(inv, states, {"mello": True, "verda": True})
    assert problems == []
    assert warnings == ["verda has no image comfyume-worker:v0.11.0 any more, but nothing there is to be (re)created: "
                        "its running container keeps running, going on (before the next change there: copy it from "
                        "mello, which has it: `comfyume-fab copy-image --source mello --target verda --image "
                        f"comfyume-worker:v0.11.0`; or give it a source in {inv.path} (images.source: build with "
                        "images.repository, or pull), or `docker load` it on verda)"]
    problems, warnings = image_findings(inv, states, {"mello": True, "verda": False})
    assert [p.code for p in problems] == [ExitCode.MISSING_IMAGE] and warnings == []


def test_status_sees_a_running_service_whose_image_is_gone():
    from comfyume_fab.checks.images import gone_images
    from comfyume_fab.host.facts.docker import ContainerInfo
    never = "0001-01-01T00:00:00Z"
    st = state("verda", images=(0, IMAGE_LS.replace("comfyume-worker", "other")))
    st.containers = (ContainerInfo("c1", "comfyume-worker-1", "worker", "comfyume", "running", "healthy", 0, never,
                                   never, never, 0, "", "comfyume-worker:v0.11.0"),)
    assert gone_images(st, ["worker"]) == {"worker": "comfyume-worker:v0.11.0"}
    assert gone_images(state("verda", images=(0, IMAGE_LS)), ["worker"]) == {}


def test_registry_login_reads_the_password_from_stdin_only_into_this_runs_folder():
    folder = "/home/dev/comfyume/.registry-auth.Ab3dEf9h"
    command = imgact.login_command("100.64.0.1:5000", "team", folder)
    assert shlex.split(command) == [f"DOCKER_CONFIG={folder}", "docker", "login", "--username", "team",
                                    "--password-stdin", "100.64.0.1:5000"]
    assert shlex.split(imgact.pull_command("r/w:1", folder)) == [f"DOCKER_CONFIG={folder}", "docker", "pull",
                                                                   "-q", "r/w:1"]
    assert shlex.split(imgact.pull_command("redis:7")) == ["docker", "pull", "-q", "redis:7"]


@pytest.mark.parametrize("printed, expected", [
    ("/home/dev/comfyume/.registry-auth.Ab3dEf9h\n", "/home/dev/comfyume/.registry-auth.Ab3dEf9h"),
    ("comfyume/.registry-auth.Ab3dEf9h", None),            # not absolute
    ("/home/dev/comfyume/.registry-auth.Ab3", None),        # not what mktemp made
    ("/home/dev/comfyume/.registry-auth.Ab3dEf9h; rm x", None),
    ("/home/dev/../.registry-auth.Ab3dEf9h", None), ("", None),
])
def test_only_a_login_folder_the_host_made_is_used_and_removed(printed, expected):
    assert imgact.parse_auth_dir(printed, "comfyume") == expected


def test_history_keeps_the_last_deploys_and_the_plan_names_the_commit_tags(tmp_path):
    from comfyume_fab.ops.imagestep import HostImages, _history, with_images
    from comfyume_fab.plan.planner import make_plan
    prev = {"at": "t2", "images": {"refs": {"WORKER_IMAGE": "w:bbbbbbbbbbbb"}, "branch": "verda-track",
                                   "commit": "b" * 40,
                                   "history": [{"refs": {"WORKER_IMAGE": "w:aaaaaaaaaaaa"}, "commit": "a" * 40},
                                               {"refs": {"WORKER_IMAGE": "w:999999999999"}, "commit": "9" * 40}]}}
    assert [h["commit"][0] for h in _history(prev, keep=3)] == ["b", "a"]  # + the new deploy = 3
    assert [h["commit"][0] for h in _history(prev, keep=1)] == ["b"]
    assert _history(None, 3) == [] and _history({"revision": "x"}, 3) == []
    inv = inventory(tmp_path)
    plan = make_plan(inv)
    new = with_images(plan, {"verda": HostImages("verda", refs={"WORKER_IMAGE": "comfyume-worker:0123456789ab"})})
    assert new.host("verda").env["WORKER_IMAGE"] == "comfyume-worker:0123456789ab"
    assert new.host("verda").env_hash != plan.host("verda").env_hash
    # the worker's own fingerprint (its container label) changes, so start-all recreates it
    old_w, new_w = plan.host("verda"), new.host("verda")
    assert new_w.service_hashes["worker"] != old_w.service_hashes["worker"]
    assert new_w.env["CFAB_HASH_WORKER"] == new_w.service_hashes["worker"]
    assert new_w.host_hash != old_w.host_hash
    assert new.host("mello").env == plan.host("mello").env and new.app is new.hosts[0]


def test_plan_lists_each_hosts_fetch_and_builds_before_anything_is_deployed(tmp_path):
    from comfyume_fab.plan.planner import make_plan
    from comfyume_fab.plan.steps import render_text, steps
    inv = inventory(tmp_path)
    listed = steps(make_plan(inv), "start-all")
    fetches = [(h, c) for h, c in listed if "git -C" in c and " fetch " in c]
    assert [h for h, _ in fetches] == ["mello", "verda"]
    assert "refs/heads/mello-track" in fetches[0][1] and "refs/heads/verda-track" in fetches[1][1]
    builds = [(h, c) for h, c in listed if "docker build" in c]
    assert [h for h, _ in builds] == ["mello"] * 3 + ["verda"]  # queue-manager, admin, frontend; worker
    assert "comfyume-worker:<C>" in builds[-1][1] and "comfyui-worker" in builds[-1][1]
    first_upload = next(i for i, (_, c) in enumerate(listed) if c.startswith("(sftp) write"))
    assert listed.index(builds[-1]) < first_upload  # built before anything is uploaded or started
    assert "at most" in builds[0][1] and "fetch mello-track" in render_text(make_plan(inv))
    present = inventory(tmp_path, "present")
    assert not [c for _, c in steps(make_plan(present), "start-all") if "docker build" in c or "git -C" in c]


def test_plan_lists_pulls_and_the_login_with_the_password_on_stdin(tmp_path):
    from comfyume_fab.plan.planner import make_plan
    from comfyume_fab.plan.steps import steps
    path = tmp_path / "hosts.yaml"
    hosts = DUAL[DUAL.index("hosts:"):].replace("{{", "{").replace("}}", "}")
    path.write_text("mode: dual-server\nimages:\n  source: pull\n  frontend: 100.64.0.9:5000/comfyume-frontend:v1\n"
                    "  registry: {server: '100.64.0.9:5000', user: team, password: REG_PW}\n" + hosts)
    inv = load_inventory(str(path), environ=dict(ENV, REG_PW="s3cret-registry"))
    listed = steps(make_plan(inv), "start-all")
    pulls = [(h, c) for h, c in listed if "docker pull" in c]
    assert ("mello", "DOCKER_CONFIG='<private folder>' docker pull -q 100.64.0.9:5000/comfyume-frontend:v1   "
            f"# only if the host lacks it; at most {inv.timeouts.pull:g} s") in pulls
    assert ("mello", f"docker pull -q redis:7-alpine   # only if the host lacks it; at most {inv.timeouts.pull:g} s"
            ) in pulls  # not the registry's: no login needed
    logins = [c for h, c in listed if "docker login" in c]
    assert logins and all(c.startswith("DOCKER_CONFIG='<private folder>' docker login") and "--password-stdin" in c
                          and "REG_PW" in c and "removed after the pulls" in c for c in logins)
    assert not any("s3cret-registry" in c for _, c in listed)

"""Images from the team's repository, on the lab: its git server (a bare repository served by
mello's sshd, read by each host with its own deploy key) and start-all's image preflight, which
refuses with one sentence per problem before it touches anything (no lock, no upload)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support import invoke

from comfyume_fab.lab import gitserver, hostsvc


def _lab_is_ours(lab) -> bool:
    """The lab is shared by every checkout on this machine: another checkout's `lab.up` (while we
    waited for the lock) leaves our known_hosts and operator key stale."""
    from comfyume_fab.lab import hostsvc
    try:
        known = lab.known_hosts.read_text()
        return all(f"{h.address} {hostsvc.host_public_key(h)}" in known for h in lab.hosts.values())
    except OSError:
        return False


@pytest.fixture(scope="module")
def repo(lab):
    if not _lab_is_ours(lab) or not _engine_trusts_lab_registry(lab):
        from comfyume_fab.lab import manager
        manager.up(workers=1, num_users=3, say=lambda _m: None)
    hosts = list(lab.hosts.values())
    url = gitserver.ensure(hosts, say=lambda _m: None)
    yield url
    srv = gitserver.server(hosts)
    for h in hosts:
        gitserver.restore_git(h)
        gitserver._deploy_key(h, srv)  # a revoked key is authorized again for the next module


def build_inventory(lab, tmp_path, url, workdir, **images):
    path = lab.inventory(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["images"] = {"source": "build", "repository": url, **images}
    for spec in data["hosts"].values():
        spec["workdir"] = workdir
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def untouched(lab, workdir):
    """No host has the run's workdir: nothing was uploaded and no lock was taken."""
    return [h.name for h in lab.hosts.values() if (h.home / workdir).exists()]


def errors(res) -> list[str]:
    """stderr without the progress lines ('[   0.0s] ...')."""
    return [ln for ln in res.stderr.strip().splitlines() if ln.strip() and not ln.startswith("[")]


def as_host_user(host, *argv):
    """argv run as the lab host's own login user inside its namespace (what its SSH sessions see),
    in its home folder: never in the caller's working directory, which that user may not be allowed
    to enter (a clone under a 0700 folder such as /root)."""
    return subprocess.run(["nsenter", f"--net={host.netns_path}", "runuser", "-u", host.user, "--", *argv],
                          capture_output=True, text=True, timeout=30, cwd=str(host.home))


def git_as(host, *args):
    return as_host_user(host, "env", f"HOME={host.home}", "GIT_SSH_COMMAND=ssh -o BatchMode=yes", "git", *args)


def test_each_host_reads_the_repository_with_its_own_key_and_only_git(lab, repo):
    for host in lab.hosts.values():
        res = git_as(host, "ls-remote", "--heads", repo)
        assert res.returncode == 0, res.stderr
        assert {line.split("/")[-1] for line in res.stdout.splitlines()} == {"mello-track", "verda-track"}
    verda = lab.hosts["verda"]
    mello = lab.hosts["mello"]
    shell = as_host_user(verda, "ssh", "-o", "BatchMode=yes", "-i", str(verda.home / ".ssh/id_ed25519"),
                         "-o", f"UserKnownHostsFile={verda.home / '.ssh/known_hosts'}",
                         f"{mello.user}@{mello.address}", "id")
    assert shell.returncode != 0 and "uid=" not in shell.stdout  # the deploy key gives git, not a shell


def test_unknown_branch_lists_the_real_ones_and_touches_nothing(lab, repo, tmp_path, healed):
    inv = build_inventory(lab, tmp_path, repo, "wd-branch", branch={"worker": "verda-trak"})
    t0 = time.monotonic()
    res = invoke("start-all", "--hosts", str(inv))
    assert res.returncode == 2, res.stderr
    lines = errors(res)
    assert len(lines) == 1 and "images.branch.worker: host verda builds from branch 'verda-trak', which does not " \
        f"exist in {repo} (its branches: mello-track, verda-track;" in lines[0]
    assert untouched(lab, "wd-branch") == [] and time.monotonic() - t0 < 30


def test_unreadable_repository_names_the_deploy_key(lab, repo, tmp_path, healed):
    hosts = list(lab.hosts.values())
    gitserver.revoke_deploy_key(lab.hosts["verda"], gitserver.server(hosts))
    try:
        inv = build_inventory(lab, tmp_path, repo, "wd-denied")
        res = invoke("start-all", "--hosts", str(inv))
    finally:
        gitserver._deploy_key(lab.hosts["verda"], gitserver.server(hosts))
    assert res.returncode == 4, res.stderr
    err = "\n".join(errors(res))
    assert len(errors(res)) == 1 and "host verda, step preflight images: the host cannot read the repository" \
        in err and "deploy key" in err, err
    assert untouched(lab, "wd-denied") == []


def test_missing_git_is_said_before_anything_is_touched(lab, repo, tmp_path, healed):
    gitserver.hide_git(lab.hosts["verda"])
    try:
        inv = build_inventory(lab, tmp_path, repo, "wd-nogit")
        res = invoke("start-all", "--hosts", str(inv))
    finally:
        gitserver.restore_git(lab.hosts["verda"])
    assert res.returncode == 4, res.stderr
    assert len(errors(res)) == 1 and "host verda, step preflight images: git is not installed" in errors(res)[0]
    assert untouched(lab, "wd-nogit") == []


def test_shell_metacharacters_refused_before_any_host(lab, repo, tmp_path, healed):
    inv = build_inventory(lab, tmp_path, repo + ";touch /tmp/cfab-pwned", "wd-meta",
                          branch={"app": "$(touch /tmp/cfab-pwned)"})
    res = invoke("start-all", "--hosts", str(inv))
    assert res.returncode == 2
    lines = errors(res)
    assert len(lines) == 2 and "is not a git URL this tool accepts" in lines[0] and "is not allowed" in lines[1]
    assert untouched(lab, "wd-meta") == []


def test_present_image_missing_without_a_source(lab, tmp_path, healed):
    path = lab.inventory(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["images"] = {"worker": "comfyume-worker:not-built-anywhere"}
    data["hosts"]["verda"]["workdir"] = "wd-present"
    data["hosts"]["mello"]["workdir"] = "wd-present"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    res = invoke("start-all", "--hosts", str(path))
    assert res.returncode == 7, res.stderr  # the host's problem (issue 23 item 3), not the inventory's
    assert errors(res)[-1].endswith(
        "host verda, step preflight images: verda has no image comfyume-worker:not-built-anywhere (give it "
        f"a source in {path} (images.source: build with images.repository, or pull), or `docker load` it on verda)")
    assert untouched(lab, "wd-present") == []


# --- build on the host at the exact commit ------------------------------------------------------

BUILD_TAGS = {"queue_manager": "comfyume-queue-manager:lab-build", "admin": "comfyume-admin:lab-build",
              "frontend": "comfyume-frontend:lab-build", "worker": "comfyume-worker:lab-build"}


def engine(lab, name, *args):
    from comfyume_fab.lab import hostsvc
    return hostsvc.docker(lab.hosts[name], *args, check=False).stdout


def running(lab, name) -> dict[str, tuple[str, str]]:
    """service -> (container id, configured image) of the comfyume project on that host's engine."""
    ids = engine(lab, name, "ps", "-q", "--filter", "label=com.docker.compose.project=comfyume").split()
    out = {}
    for line in engine(lab, name, "inspect", "--format",
                       '{{index .Config.Labels "com.docker.compose.service"}} {{.ID}} {{.Config.Image}} '
                       '{{if .State.Health}}{{.State.Health.Status}}{{end}}', *ids).splitlines():
        svc, cid, image, *health = line.split()
        out[svc] = (cid, image, health[0] if health else "")
    return out


def branch_head(lab, branch):
    return gitserver._git("rev-parse", f"refs/heads/{branch}", cwd=gitserver.repo_path(list(lab.hosts.values()))
                          ).stdout.strip()


@pytest.fixture(scope="module")
def build_inv(lab, repo, tmp_path_factory):
    path = lab.inventory(tmp_path_factory.mktemp("build"))
    data = yaml.safe_load(path.read_text())
    data["images"] = {"source": "build", "repository": repo, "sources": {"redis": "present"}, **BUILD_TAGS}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_build_from_each_hosts_branch_and_deploy_the_commit(lab, build_inv, healed):
    res = invoke("start-all", "--hosts", str(build_inv))
    assert res.returncode == 0, res.stderr[-3000:]
    mello_sha, verda_sha = branch_head(lab, "mello-track")[:12], branch_head(lab, "verda-track")[:12]
    assert "verda/worker: building comfyume-worker:" + verda_sha in res.stderr
    assert "mello/queue_manager: building comfyume-queue-manager:" + mello_sha in res.stderr
    verda, mello = running(lab, "verda"), running(lab, "mello")
    assert verda["worker"][1] == f"comfyume-worker:{verda_sha}" and verda["worker"][2] == "healthy"
    assert mello["queue-manager"][1] == f"comfyume-queue-manager:{mello_sha}"
    assert mello["user001"][1] == f"comfyume-frontend:{mello_sha}"
    record = (lab.hosts["verda"].home / "comfyume" / "deployed.json").read_text()
    assert branch_head(lab, "verda-track") in record and '"branch": "verda-track"' in record
    audit = (lab.hosts["verda"].home / "comfyume" / "audit.log").read_text().splitlines()[-1]
    assert f"commit={verda_sha} branch=verda-track" in audit


def test_rerun_without_new_commit_builds_nothing(lab, build_inv, healed):
    before = {h: running(lab, h) for h in ("mello", "verda")}
    res = invoke("start-all", "--hosts", str(build_inv))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "building" not in res.stderr and "nothing to do" in res.stderr
    assert {h: running(lab, h) for h in ("mello", "verda")} == before


def test_new_commit_on_verda_track_rebuilds_only_the_worker(lab, build_inv, healed):
    hosts = list(lab.hosts.values())
    old_worker = running(lab, "verda")["worker"]
    mello_before = running(lab, "mello")
    sha = gitserver.commit(hosts, "verda-track", "comfyui-worker/NOTES.md", "a one-line change\n", "worker: notes")
    res = invoke("start-all", "--hosts", str(build_inv))
    assert res.returncode == 0, res.stderr[-3000:]
    worker = running(lab, "verda")["worker"]
    assert worker[1] == f"comfyume-worker:{sha[:12]}" and worker[0] != old_worker[0] and worker[2] == "healthy"
    assert running(lab, "mello") == mello_before  # mello's containers kept their ids
    assert "mello/" not in "".join(ln for ln in res.stderr.splitlines() if "building" in ln)


def test_broken_dockerfile_stops_there_and_keeps_the_running_worker(lab, build_inv, healed):
    hosts = list(lab.hosts.values())
    before = running(lab, "verda")["worker"]
    text = gitserver.dockerfile("worker.py", "worker (ComfyUI inference API)")
    gitserver.commit(hosts, "verda-track", "comfyui-worker/Dockerfile",
                     text.replace("COPY worker.py", "RUN exit 3\nCOPY worker.py"), "worker: broken")
    try:
        res = invoke("start-all", "--hosts", str(build_inv))
        assert res.returncode == 4, res.stderr[-3000:]
        err = errors(res)
        assert len(err) == 1 and "host verda, step build worker: building comfyume-worker:" in err[0]
        assert "exit 3" in err[0] or "returned a non-zero code: 3" in err[0], err[0]
        assert running(lab, "verda")["worker"] == before  # still the previous image, running and healthy
        # and the failed build left no container of its own behind on the host
        listed = hostsvc.docker(lab.hosts["verda"], "ps", "-a", "--format",
                                '{{.ID}} {{.Label "com.docker.compose.project"}}').stdout.splitlines()
        left = [ln for ln in listed if len(ln.split()) == 1]  # not a Compose service's container
        assert left == [], left
    finally:
        gitserver.commit(hosts, "verda-track", "comfyui-worker/Dockerfile", text, "worker: fixed")


def test_a_build_past_timeouts_build_is_stopped_on_the_host(lab, build_inv, healed, tmp_path):
    """exit 4 (not "unreachable"), the previous worker kept, and nothing left building on the host
    that could tag the image later."""
    hosts = list(lab.hosts.values())
    data = yaml.safe_load(build_inv.read_text())
    data.setdefault("timeouts", {})["build"] = 3
    slow_inv = tmp_path / "hosts.yaml"
    slow_inv.write_text(yaml.safe_dump(data, sort_keys=False))
    before = running(lab, "verda")["worker"]
    text = gitserver.dockerfile("worker.py", "worker (ComfyUI inference API)")
    slow = gitserver.commit(hosts, "verda-track", "comfyui-worker/Dockerfile",
                            text.replace("COPY worker.py", "RUN sleep 60\nCOPY worker.py"), "worker: slow")
    try:
        res = invoke("start-all", "--hosts", str(slow_inv))
        assert res.returncode == 4, res.stderr[-3000:]
        err = errors(res)
        assert len(err) == 1 and "host verda, step build worker: building comfyume-worker:" in err[0], err
        assert "did not finish within 3 s (timeouts.build" in err[0] and "raise timeouts.build" in err[0], err[0]
        assert running(lab, "verda")["worker"] == before
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _building(slow[:12]):
            time.sleep(1)
        assert not _building(slow[:12]), "the build went on after start-all gave up"
        time.sleep(2)
        tags = hostsvc.docker(lab.hosts["verda"], "image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout
        assert f"comfyume-worker:{slow[:12]}" not in tags
    finally:
        gitserver.commit(hosts, "verda-track", "comfyui-worker/Dockerfile", text, "worker: fast again")


def _building(tag_part: str) -> bool:
    """Some process on this machine (every lab host's processes are visible here) still builds it."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"build" in argv and any(tag_part.encode() in a for a in argv):
            return True
    return False


def test_rollback_to_the_previous_commit_without_building(lab, build_inv, healed):
    """Runs after the chain above: verda deployed the initial commit, then the NOTES commit."""
    notes_sha = running(lab, "verda")["worker"][1].rpartition(":")[2]
    mello_before = running(lab, "mello")
    t0 = time.monotonic()
    res = invoke("rollback", "--hosts", str(build_inv))
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    assert "building" not in res.stderr and "fetch" not in res.stdout
    worker = running(lab, "verda")["worker"]
    assert worker[1] != f"comfyume-worker:{notes_sha}" and worker[2] == "healthy"
    assert worker[1].rpartition(":")[2] == gitserver._git(
        "--git-dir", str(gitserver.repo_path(list(lab.hosts.values()))), "rev-parse", "--short=12",
        f"{notes_sha}^").stdout.strip()
    assert running(lab, "mello") == mello_before
    assert took < 60, took
    res = invoke("rollback", "--hosts", str(build_inv), "--to", notes_sha[:8])
    assert res.returncode == 0, res.stderr[-3000:]
    assert running(lab, "verda")["worker"][1] == f"comfyume-worker:{notes_sha}"
    # mello deploys another branch: it stays as it runs, and says so
    assert f"of mello-track; {notes_sha} is of verda-track)" in res.stderr and running(lab, "mello") == mello_before
    res = invoke("rollback", "--hosts", str(build_inv), "--to", notes_sha[:6])
    assert res.returncode == 2 and errors(res) == [
        f"rollback --to: '{notes_sha[:6]}' is not a commit; give 7 to 40 of its hex digits (status shows each "
        "host's deployed commit and earlier deploys)"], res.stderr
    res = invoke("rollback", "--hosts", str(build_inv), "--to", "deadbeef")
    assert res.returncode == 2 and "rollback: no host has a deploy of commit deadbeef" in res.stderr, res.stderr
    assert "`rollback --list`" in res.stderr, res.stderr
    # --list: verda (back at the NOTES commit) lists its earlier commit(s), branch and when; nothing changes
    before = running(lab, "verda")
    res = invoke("rollback", "--hosts", str(build_inv), "--list")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"  verda: at {notes_sha}" in res.stdout and "verda-track" in res.stdout, res.stdout
    assert running(lab, "verda") == before


def test_status_shows_each_services_commit_and_undeployed_commits(lab, build_inv, healed):
    """After the rollback chain: verda runs the NOTES commit; verda-track has newer commits."""
    import json
    hosts = list(lab.hosts.values())
    res = invoke("status", "--hosts", str(build_inv), "--json", "--no-probe")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    verda = json.loads(res.stdout)["hosts"]["verda"]
    worker = next(s for s in verda["services"] if s["service"] == "worker")
    assert worker["image"] == f"comfyume-worker:{worker['commit']}" and len(worker["commit"]) == 12
    img = verda["images"]
    assert img["branch"] == "verda-track" and img["deployed_commit"].startswith(worker["commit"])
    assert img["undeployed"] is True  # the broken commit was fetched by start-all, never deployed
    assert img["head"] != branch_head(lab, "verda-track")  # the fix came after the last fetch
    res = invoke("status", "--hosts", str(build_inv), "--json", "--no-probe", "--fetch")
    assert json.loads(res.stdout)["hosts"]["verda"]["images"]["head"] == gitserver._git(
        "--git-dir", str(gitserver.repo_path(hosts)), "rev-parse", "refs/heads/verda-track").stdout.strip()
    text = invoke("status", "--hosts", str(build_inv), "--no-probe").stdout
    assert "branch verda-track at" in text and "the branch has commits not deployed" in text
    assert f"comfyume-worker:{worker['commit']}" in text


def test_copy_an_image_host_to_host_then_skip_the_second_copy(lab, build_inv, healed):
    """mello's admin image (built above at mello-track's commit) is not on verda: copy it there."""
    ref = running(lab, "mello")["admin"][1]
    engine(lab, "verda", "rmi", ref)
    assert engine(lab, "verda", "image", "inspect", "--format", "{{.Id}}", ref).strip() == ""
    res = invoke("copy-image", "--hosts", str(build_inv), "--source", "mello", "--target", "verda", "--image", ref)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "1 image(s) copied from mello to verda" in res.stdout and "compressed" in res.stderr
    want = engine(lab, "mello", "image", "inspect", "--format", "{{.Id}}", ref).strip()
    assert want and engine(lab, "verda", "image", "inspect", "--format", "{{.Id}}", ref).strip() == want
    res = invoke("copy-image", "--hosts", str(build_inv), "--source", "mello", "--target", "verda", "--image", ref)
    assert res.returncode == 0 and "copy skipped" in res.stderr and "0 image(s) copied" in res.stdout, res.stderr
    res = invoke("copy-image", "--hosts", str(build_inv), "--source", "mello", "--target", "verda",
                 "--image", "comfyume-admin:not-there")
    assert res.returncode == 4 and "host mello has no image comfyume-admin:not-there" in res.stderr


def test_copy_refuses_an_archive_that_retags_other_images_and_puts_them_back(lab, tmp_path, monkeypatch):
    """A tampered source (stand-in: its `docker save` also saves another tag) cannot replace the
    target's images: the copy is refused in one sentence and each foreign tag is put back."""
    from comfyume_fab.errors import UnhealthyError
    from comfyume_fab.host.session import Session
    from comfyume_fab.inventory.read import load_inventory
    from comfyume_fab.ops import transfer
    inv = load_inventory(str(lab.inventory(tmp_path)))
    want, foreign = "cfab-copy-test:want", "cfab-copy-test:foreign"
    admin, redis = inv.images.admin, inv.images.redis

    def image_id(host, ref):
        return engine(lab, host, "image", "inspect", "--format", "{{.Id}}", ref).strip()
    engine(lab, "mello", "tag", admin, want)
    engine(lab, "mello", "tag", redis, foreign)  # what the tampered archive would put on verda
    monkeypatch.setattr(transfer, "save_command", lambda ref: f"docker save {ref} {foreign} | gzip -1")
    said: list[str] = []
    redis_before = image_id("verda", redis)
    try:
        for before in (admin, None):  # verda had that tag (of another image), then: did not have it
            engine(lab, "verda", "rmi", want, foreign)
            if before:
                engine(lab, "verda", "tag", before, foreign)
            with Session(inv, [inv.host("mello"), inv.host("verda")]) as s:
                s.connect()
                with pytest.raises(UnhealthyError) as info:
                    transfer.copy_image(s, "mello", "verda", want, 120, said.append)
            how = f"{foreign} to its previous image" if before else f"{foreign} removed"
            assert info.value.sentence() == (
                f"host verda, step copy: the archive of {want} from mello also loaded {foreign}, which were not "
                f"asked for (put back as they were: {how}; check the images on mello)")
            assert image_id("verda", foreign) == (image_id("verda", admin) if before else "")
            assert image_id("verda", redis) == redis_before  # untouched
        monkeypatch.undo()  # an honest archive: copied, and nothing else changed
        engine(lab, "verda", "rmi", want, foreign)
        with Session(inv, [inv.host("mello"), inv.host("verda")]) as s:
            s.connect()
            assert transfer.copy_image(s, "mello", "verda", want, 120, said.append) is True
        assert image_id("verda", want) == image_id("mello", want) and image_id("verda", foreign) == ""
    finally:
        engine(lab, "mello", "rmi", want, foreign)
        engine(lab, "verda", "rmi", want, foreign)


# --- pull mode against the lab's registry -------------------------------------------------------


def _engine_trusts_lab_registry(lab) -> bool:
    from comfyume_fab.lab import hostsvc
    pid = hostsvc.read_pid(lab.hosts["verda"].dockerd_pid)
    try:
        return pid is not None and hostsvc.LAB_REGISTRY in open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return False


def login_left_behind(host, password: str) -> list[str]:
    """Files and folders under the host's home that hold the registry login after a run: a
    config.json with the password (docker stores base64 of user:password) or a login folder."""
    import base64
    auth = base64.b64encode(f"team:{password}".encode())
    found = []
    for folder, dirs, files in os.walk(host.home):
        found += [os.path.join(folder, d) for d in dirs if d.startswith(".registry-auth.")]
        for name in files:
            path = os.path.join(folder, name)
            try:
                if os.path.getsize(path) < 1 << 20 and auth in open(path, "rb").read():
                    found.append(path)
            except OSError:
                pass
    return found


def test_pull_from_the_lab_registry_with_a_password_never_in_argv(lab, build_inv, tmp_path, healed):
    import os
    import secrets as random
    import threading
    from comfyume_fab.lab import hostsvc, registry
    assert _engine_trusts_lab_registry(lab), "the lab engines were started without --insecure-registry"
    password = "reg-" + random.token_urlsafe(12)
    server = registry.start(lab.hosts["mello"], "team", password)
    try:
        ref = f"{server}/comfyume-worker:reg-{random.token_hex(3)}"
        mello = lab.hosts["mello"]
        # Outside registries fail at once, locally (a closed proxy port), never a DNS query.
        t0 = time.monotonic()
        out = hostsvc.docker(mello, "pull", "docker.io/library/alpine:3", check=False, timeout=60)
        assert out.returncode != 0 and "proxyconnect tcp: dial tcp 127.0.0.1:9: connect: connection refused" in out.stderr \
            and time.monotonic() - t0 < 30, out.stderr  # the daemon retries a refused proxy for ~10 s
        conf = tmp_path / "docker-config"
        conf.mkdir()
        env = dict(os.environ, DOCKER_HOST=mello.docker_host, DOCKER_CONFIG=str(conf))
        for argv, inp in ((["login", "--username", "team", "--password-stdin", server], password),
                          (["tag", "comfyume-worker:v0.11.0", ref], None), (["push", "-q", ref], None)):
            res = subprocess.run(["docker", *argv], env=env, input=inp, capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr
        engine(lab, "verda", "rmi", ref)
        data = yaml.safe_load(build_inv.read_text())
        data["images"] = {"worker": ref, "sources": {"worker": "pull", "redis": "present"},
                          "registry": {"server": server, "user": "team", "password": "LAB_REGISTRY_PASSWORD"}}
        inv = tmp_path / "hosts.yaml"
        inv.write_text(yaml.safe_dump(data, sort_keys=False))
        seen, stop = [], threading.Event()

        def watch():
            while not stop.is_set():
                for pid in os.listdir("/proc"):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            if password.encode() in f.read():
                                seen.append(pid)
                    except OSError:
                        pass
                time.sleep(0.05)
        t = threading.Thread(target=watch)
        t.start()
        try:
            res = invoke("start-all", "--hosts", str(inv), env={"LAB_REGISTRY_PASSWORD": password})
        finally:
            stop.set()
            t.join()
        assert res.returncode == 0, res.stderr[-3000:]
        assert "verda: docker login" in res.stderr and "verda/worker: docker pull " + ref in res.stderr
        assert running(lab, "verda")["worker"][1] == ref and running(lab, "verda")["worker"][2] == "healthy"
        assert seen == [] and password not in res.stdout + res.stderr
        assert login_left_behind(lab.hosts["verda"], password) == []  # not in ~/.docker/config.json either
        # A pull that fails after the login removes the login as well.
        data["images"]["worker"] = f"{server}/comfyume-worker:absent-{random.token_hex(3)}"
        inv.write_text(yaml.safe_dump(data, sort_keys=False))
        res = invoke("start-all", "--hosts", str(inv), env={"LAB_REGISTRY_PASSWORD": password})
        assert res.returncode == 4 and "verda: docker login" in res.stderr and "docker pull" in res.stderr, \
            res.stderr[-2000:]
        assert login_left_behind(lab.hosts["verda"], password) == []
    finally:
        registry.stop()
        invoke("start-all", "--hosts", str(build_inv))  # back to the built worker for what follows


def test_each_host_keeps_only_the_images_of_its_last_keep_deploys(lab, build_inv, healed, tmp_path):
    """images.keep: 1 -> a new deploy untags the worker images this tool built for older commits;
    the one the running worker still uses stays until the next deploy (never removed under it)."""
    import re
    hosts = list(lab.hosts.values())

    def commit_tags() -> set[str]:
        listed = engine(lab, "verda", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split()
        return {r for r in listed if re.fullmatch(r"comfyume-worker:[0-9a-f]{12}", r)}
    data = yaml.safe_load(build_inv.read_text())
    data["images"]["keep"] = 1
    inv = tmp_path / "hosts.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    in_use = running(lab, "verda")["worker"][1]
    before = commit_tags()
    assert in_use in before and len(before) >= 3, before  # the deploys above left several
    sha = gitserver.commit(hosts, "verda-track", "comfyui-worker/NOTES.md", "keep only the last\n", "worker: prune")
    res = invoke("start-all", "--hosts", str(inv))
    assert res.returncode == 0, res.stderr[-3000:]
    assert running(lab, "verda")["worker"][1] == f"comfyume-worker:{sha[:12]}"
    assert commit_tags() == {f"comfyume-worker:{sha[:12]}", in_use}, (before, commit_tags())
    assert engine(lab, "mello", "image", "ls", "-q", "comfyume-admin:lab-build").strip()  # mello untouched

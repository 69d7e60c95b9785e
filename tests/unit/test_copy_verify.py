"""copy-image checks every tag the archive loaded, before and after (checks/imagecopy.py, pure):
an archive that also carries another tag (e.g. `redis`) is refused, and the target's tags are put
back as they were."""
from __future__ import annotations

from comfyume_fab.errors import UnhealthyError

OLD, NEW, OTHER = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64


def test_docker_loads_output_lists_the_loaded_tags():
    from comfyume_fab.checks.imagecopy import loaded_refs
    out = ("Loaded image: comfyume-admin:abc\nLoaded image: docker.io/library/redis:7\n"
           "Loaded image ID: sha256:" + "4" * 64 + "\n")
    assert loaded_refs(out) == {"comfyume-admin:abc", "redis:7"}


def test_only_the_requested_tag_may_change():
    from comfyume_fab.checks.imagecopy import foreign_changes
    before = {"redis:7": OLD, "comfyume-admin:abc": OLD}
    after = {"redis:7": OTHER, "comfyume-admin:abc": NEW, "evil:latest": OTHER}
    assert foreign_changes(before, after, {"comfyume-admin:abc", "redis:7", "evil:latest"}, "comfyume-admin:abc") \
        == {"redis:7": OLD, "evil:latest": None}
    assert foreign_changes(before, {**before, "comfyume-admin:abc": NEW}, {"comfyume-admin:abc"},
                           "comfyume-admin:abc") == {}
    # a tag the load output names, even with the same id as before, was not asked for
    assert foreign_changes(before, before, {"redis:7"}, "comfyume-admin:abc") == {"redis:7": OLD}


def test_the_repair_puts_each_tag_back_and_says_so_in_one_sentence():
    from comfyume_fab.checks.imagecopy import refusal, repair_command
    changes = {"redis:7": OLD, "evil:latest": None}
    line = repair_command(changes)
    assert f"docker tag {OLD} redis:7" in line and "docker rmi evil:latest" in line
    err = refusal("comfyume-admin:abc", "mello", "verda", changes, repaired=True)
    assert isinstance(err, UnhealthyError) and "\n" not in err.sentence()
    assert err.sentence() == (
        "host verda, step copy: the archive of comfyume-admin:abc from mello also loaded evil:latest, redis:7, which "
        "were not asked for (put back as they were: redis:7 to its previous image, evil:latest removed; check the "
        "images on mello)")


def test_nothing_foreign_means_no_repair():
    from comfyume_fab.checks.imagecopy import foreign_changes, repair_command
    assert foreign_changes({}, {"comfyume-admin:abc": NEW}, {"comfyume-admin:abc"}, "comfyume-admin:abc") == {}
    assert repair_command({}) == ""

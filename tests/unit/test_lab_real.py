"""The lab's real profile, the parts that need no lab: recipes read from the team's files."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from comfyume_fab.lab import real, venvs


def test_comfyui_requirements_drop_torch_torchvision_torchaudio_and_keep_the_rest():
    text = ("comfyui-frontend-package==1.35.9\ntorch\ntorchsde\ntorchvision\ntorchaudio\n"
            "numpy>=1.25.0\n\n#non essential dependencies:\nkornia>=0.7.1\ntorch>=2.0 ; python_version>'3'\n")
    assert venvs.comfyui_requirements(text) == [
        "comfyui-frontend-package==1.35.9", "torchsde", "numpy>=1.25.0", "kornia>=0.7.1"]


def test_the_standin_torchvision_wheel_installs_imports_and_fails_on_use(tmp_path):
    wheel = venvs.standin_wheel(tmp_path / "w")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert f"torchvision-{venvs.STANDIN_VERSION}.dist-info/RECORD" in names
        zf.extractall(tmp_path / "site")
    code = ("import torchvision, torchvision.transforms as T, torchvision.transforms.functional\n"
            "try:\n    T.Normalize\nexcept ImportError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "site", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: torchvision.transforms.Normalize: torchvision is a lab stand-in")


def test_dockerfile_instructions_are_the_team_files_own(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text('FROM python:3.11-slim\nWORKDIR /app\nUSER qm\nEXPOSE 3000\n'
                    'HEALTHCHECK CMD curl -f http://localhost:3000/health || exit 1\n'
                    'CMD ["uvicorn", "main:app", "--port", "3000"]\n')
    assert real.dockerfile_instructions(path) == {
        "WORKDIR": "/app", "USER": "qm", "EXPOSE": "3000", "CMD": '["uvicorn", "main:app", "--port", "3000"]'}


def test_missing_real_sources_are_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setattr(real, "SHARED", tmp_path)
    with pytest.raises(real.LabError) as exc:
        real.sources()
    assert str(exc.value).startswith(f"{tmp_path}/comfyume-real/mello-track/queue-manager/main.py is missing")
    assert "COMFYUME_SHARED" in str(exc.value)


def test_the_cpu_shim_adds_cpu_only_to_comfyui_main_and_only_without_a_working_nvidia_smi(tmp_path):
    shim = tmp_path / "python3"
    shim.write_text(real.CPU_SHIM.replace("/opt/venv/bin/python3", str(tmp_path / "echo-args")))
    shim.chmod(0o755)
    (tmp_path / "echo-args").write_text('#!/bin/sh\necho "$@"\n')
    (tmp_path / "echo-args").chmod(0o755)
    bin_ok = tmp_path / "gpu"
    bin_ok.mkdir()
    (bin_ok / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (bin_ok / "nvidia-smi").chmod(0o755)

    def run(path, *args):
        return subprocess.run([str(shim), *args], env={"PATH": path}, capture_output=True, text=True).stdout.strip()

    assert run("/usr/bin:/bin", "main.py", "--listen", "0.0.0.0") == "main.py --listen 0.0.0.0 --cpu"
    assert run(f"{bin_ok}:/usr/bin:/bin", "main.py", "--listen", "0.0.0.0") == "main.py --listen 0.0.0.0"
    assert run("/usr/bin:/bin", "worker.py") == "worker.py"


@pytest.mark.skipif(not (real.SHARED / "comfyume-real").is_dir(), reason="../shared/comfyume-real is not beside this checkout")
def test_the_team_dockerfiles_give_the_commands_the_images_run():
    src = real.sources()["real"]
    assert real.dockerfile_instructions(src / "verda-track/comfyui-worker/Dockerfile")["CMD"] == '["/workspace/start-worker.sh"]'
    fe = real.dockerfile_instructions(src / "mello-track/comfyui-frontend/Dockerfile")
    assert fe["ENTRYPOINT"] == '["/usr/local/bin/docker-entrypoint.sh"]' and "--cpu" in fe["CMD"]
    assert real.dockerfile_instructions(src / "mello-track/queue-manager/Dockerfile")["USER"] == "queuemanager"


def test_a_venv_is_rebuilt_when_its_requirements_change_and_only_then(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("fastapi==0.128.0\n")
    comfy = tmp_path / "comfy.txt"
    comfy.write_text("torch\nnumpy\n")
    qm, ui = venvs.Venv("qm", [reqs]), venvs.Venv("ui", [reqs], comfyui=comfy)
    before = (qm.key(), ui.key())
    assert before == (venvs.Venv("qm", [reqs]).key(), venvs.Venv("ui", [reqs], comfyui=comfy).key())
    comfy.write_text("torch\nnumpy\nscipy\n")
    assert qm.key() == before[0] and ui.key() != before[1]
    reqs.write_text("fastapi==0.129.0\n")
    assert qm.key() != before[0]

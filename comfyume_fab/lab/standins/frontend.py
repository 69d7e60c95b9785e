"""STAND-IN for a comfyume user frontend, ComfyUI's UI (lab only; not the real service).

The real frontend container (`comfyume-frontend`, one per user) runs ComfyUI with `--cpu` for the
UI only: no inference. This stand-in answers the endpoints that healthchecks and the orchestrator
read, in ComfyUI 0.8.0's shapes (tests/fixtures/comfyui-0.8.0-cpu/):

  GET /              small HTML page containing "ComfyUI" and the USER_ID
  GET /system_stats  {"system": {..., "argv": ["main.py", *COMFYUI_ARGS, "--listen", "0.0.0.0",
                     "--port", "<port>"]}, "devices": [the cpu device]}
  GET /queue         {"queue_running": [], "queue_pending": []}
  GET /prompt        {"exec_info": {"queue_remaining": 0}}

Env: COMFYUI_LISTEN_PORT (8188), COMFYUI_ARGS (space separated, e.g. "--cpu"), USER_ID,
QUEUE_MANAGER_URL (only shown on the page).
"""
from __future__ import annotations

import html

try:
    from . import common
except ImportError:  # run as a script inside the stand-in container
    import common

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ComfyUI - {user}</title></head>
<body><h1>ComfyUI</h1>
<p>STAND-IN ComfyUI frontend for user <b id="user-id">{user}</b> (lab only; UI only, no inference).</p>
<p>Queue manager: {qm}</p></body></html>
"""


class Handler(common.StandinHandler):
    standin = "frontend"
    quiet_paths = ("/system_stats", "/queue", "/prompt")

    def route(self, method, path, query):
        if method == "GET" and path in ("/", "/index.html"):
            page = PAGE.format(user=html.escape(common.env_str("USER_ID", "user001")),
                               qm=html.escape(common.env_str("QUEUE_MANAGER_URL", "(not set)")))
            return self.send_bytes(200, page.encode(), "text/html; charset=utf-8")
        if method == "GET" and path == "/system_stats":
            return self.send_json(200, common.system_stats(ARGV, [common.cpu_device()]))
        if method == "GET" and path == "/queue":
            return self.send_json(200, {"queue_running": [], "queue_pending": []})
        if method == "GET" and path == "/prompt":
            return self.send_json(200, {"exec_info": {"queue_remaining": 0}})
        raise common.HTTPError(404, {"error": "not found"})


PORT = common.env_int("COMFYUI_LISTEN_PORT", 8188)
ARGV = common.comfy_argv(common.env_str("COMFYUI_ARGS").split(), PORT)


def main() -> None:
    common.banner("frontend", "user frontend (ComfyUI UI)")
    common.log(f"frontend: USER_ID={common.env_str('USER_ID', 'user001')} argv={ARGV}")
    common.serve(Handler, PORT)


if __name__ == "__main__":
    main()

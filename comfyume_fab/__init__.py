"""comfyume-fab: start, stop and watch a multi-host ComfyuME deployment over SSH."""

__version__ = "0.1.0"

"""comfyume-fab: start, stop and watch a multi-host ComfyuME deployment over SSH.

The sub-packages are the layers, top to bottom (imports only go down):

- `tasks` (thin: parse options, call one operation, print its rendering) and `taskrun` (errors
  to exit codes).
- `present`: every text, colour and progress line (the ANSI codes defined once, in present.style).
- `ops`: the operations behind the tasks (start, stop, status, rollback, copy-image, logs, ...), one
  entry point each.
- `plan` and `checks`: the pure planner; the checks that report what they find.
- `host`: the SSH edge (`host.ssh` is the only module that opens SSH), command builders, facts.
- `inventory`: hosts.yaml read into a validated, frozen model.
- `errors`: FabError and the exit code each kind of failure carries.
"""

__version__ = "0.1.0"

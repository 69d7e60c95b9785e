"""comfyume-fab: start, stop and watch a multi-host ComfyuME deployment over SSH.

The sub-packages are the layers, bottom to top (imports only go down; tests/unit/test_layers.py):

- `errors`: FabError, the exit code each kind of failure carries and `clean` for remote text.
- `invocation`: the command the user ran with (`comfyume-fab` or `invoke`), for messages that name it.
- `statusschema`: the shape of `status --json`, shipped in the package.
- `inventory`: hosts.yaml read into a validated, frozen model.
- `host`: the SSH edge (`host.ssh` is the only package that opens SSH), the facts a host is read
  for, the actions that change it.
- `plan` and `checks`: the pure planner; the checks that report what they find.
- `cloud`: renting GPU hosts: the provider's API (Verda), the record of what was rented, generated host keys.
- `ops`: the operations behind the tasks (start, stop, status, rollback, copy-image, logs, ...), one
  entry point each.
- `present`: every text, colour and progress line (the ANSI codes defined once, in present.style).
- `taskrun`: how every task runs (inventory loaded, errors printed, exit codes picked).
- `tasks`: the Invoke tasks, thin: parse options, call one operation, print its rendering.
- `usage`: help, option errors and "did you mean", for both commands.
- `cli`: `comfyume-fab`, the installed command over the same tasks.
- `lab`: the built-in lab (simulated hosts on this machine) the tests and the demo run against.
"""

__version__ = "0.1.0"

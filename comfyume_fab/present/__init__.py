"""Presentation: every text, colour and progress line a task writes, one layer between the
operations (which return data and take `say`/`render` callables) and the tasks (which parse
options, call one operation and print its rendering). One concept per module:

- `style`: colour on a terminal; every ANSI code this tool writes is defined there, once
- `progress`: timestamped progress lines, the self-rewriting status line, the cleaning stream
- `reports`: a task's result as text (status, start-all, rollback, stop, copy-image, diff)
- `logs`: `host/service` log lines, coloured per host
- `watch`: the `status --watch` screen (rich)
- `swarm`: start-all, stop-verda and status with `engine: swarm`, as text (and status as JSON)
- `confirm`: asking before a new Redis password is deployed (`--yes`, a terminal's question, or a refusal)
"""

"""The `streamscale` command: click commands over plain logic modules.

`main` holds the click group (a lazy table of commands) and the one place a `StreamscaleError`
becomes a message and an exit code; `commands` has one click module per command; `producing`,
`snapshots` (the status view), `replaying` (dead-letter inspection and replay), `demo` and
`local` (local processes for the demo) are the logic they call, and never import click. The
layers (main > commands > demo > the other logic modules > common) are import-linter contracts.
"""

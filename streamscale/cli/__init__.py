"""The `streamscale` command: click commands over plain logic modules.

`main` holds the click group and its commands; `producing`, `snapshots` (the status view),
`replaying` (dead-letter inspection and replay), `demo` and `local` (local processes for the
demo) are the logic they call.
"""

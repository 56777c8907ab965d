"""The click commands of `streamscale`, one module each, over the plain logic modules.

Click only: options, arguments, help texts and output. What a command does lives in
`streamscale.cli.producing`, `snapshots`, `replaying`, `demo` and `local` (or in the consumer and
the operator), which never import click. `streamscale.cli.main` imports a module here only when
its command runs or `--help` lists it, so every module keeps its heavy imports (kopf, SQLAlchemy,
the consumer's app) inside the command function.
"""

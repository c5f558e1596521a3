"""What the user runs: the doit task graph (tasks.py), the doit commands
(commands.py, registered in pyproject.toml, and one module per command
with logic of its own: clean, diff, explain, push, repro, rebuild, vm and
listing), booting in qemu, and what a user sees when something fails
(report.py).

Imports: any layer; nothing imports onlydocker.cli but dodo.py and doit's
command plugins.
"""

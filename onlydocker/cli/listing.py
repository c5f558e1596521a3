"""`doit list`: doit's own listing of tasks (the lane's stages are listed
as top-level tasks, see tasks.stage_shortcuts), followed by the commands of
ours a user runs, each with its one-line purpose (`doit help COMMAND` says
more). `-q`, `--template` or named tasks: doit's listing alone, as scripts
expect it."""
from __future__ import annotations

from doit.cmd_list import List as DoitList


def command_lines(cmds) -> list[str]:
    """`name  purpose` for every command of this package, sorted by name."""
    rows = []
    for name in sorted(cmds):
        try:
            cls = cmds.get_plugin(name) if hasattr(cmds, "get_plugin") else cmds[name]
        except Exception:          # a plugin that does not load is doit's to report
            continue
        if not getattr(cls, "__module__", "").startswith("onlydocker.") or cls.__module__ == __name__:
            continue
        rows.append((name, " ".join(str(cls.doc_purpose).split())))
    width = max((len(n) for n, _ in rows), default=0) + 3
    return [f"{n:<{width}}{doc}" for n, doc in rows]


class List(DoitList):
    doc_purpose = "list the lane's tasks (its stages, `build`, `dist`) and the commands of Only Docker"

    def __init__(self, *args, cmds=None, **kwargs):
        super().__init__(*args, cmds=cmds, **kwargs)
        self._cmds = cmds or {}

    def _execute(self, subtasks=False, quiet=True, status=False, private=False,
                 list_deps=False, template=None, sort='name', pos_args=None):
        code = super()._execute(subtasks=subtasks, quiet=quiet, status=status, private=private,
                                list_deps=list_deps, template=template, sort=sort, pos_args=pos_args)
        if not quiet and template is None and not pos_args:
            lines = command_lines(self._cmds)
            if lines:
                self.outstream.write("\ncommands (`doit help COMMAND` for their options):\n")
                self.outstream.write("".join(f"  {line}\n" for line in lines))
        return code

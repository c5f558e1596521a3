"""A container stage's lane data: `lanes/<lane>/lane.toml`, rendered on the
host as the shell file its build.sh sources, `/build/stage/lane/lane.env`
(the container has no TOML parser). A tool with Kconfig (Linux, BusyBox)
keeps a `config` fragment instead.

The mapping is fixed: every top-level key, lower_snake in TOML, becomes one
bash assignment of the same name in UPPER_SNAKE, in sorted order, every value
quoted with `shlex.quote`:

    multi_binary = "xtables-multi"        MULTI_BINARY=xtables-multi
    jobs_hint = 2                         JOBS_HINT=2
    static = true                         STATIC=true          (false: false)
    programs = ["scp", "dbclient"]        PROGRAMS=( scp dbclient )
    [layout]                              declare -gA LAYOUT=( [docker]=usr )
    docker = "usr"

Nothing else is data: a float, a date, a list of anything but strings, a
table of anything but strings, a nested table, a key that is not lower_snake
or whose name the container or the shell already uses (PATH, JOBS, LANE,
KBUILD_*, ...) is refused, naming the file and the key. Variables are
assigned, not exported. A table is a bash associative array: its iteration
order is bash's, so a build that needs an order sorts the keys. Under bash
older than 4.4 (the 2015 builder's 4.3), `"${X[@]}"` of an empty list fails
`set -u`: a list that may be empty is expanded as `${X[@]+"${X[@]}"}`.
"""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from ..errors import BuildError

LANE_TOML = "lane.toml"
LANE_ENV = "lane.env"
CONTAINER_PATH = f"/build/stage/lane/{LANE_ENV}"
KEY = re.compile(r"[a-z][a-z0-9_]*")
TABLE_KEY = re.compile(r"[A-Za-z0-9_.+-]+")
# Names the engine sets in the container's environment, or the shell gives a
# meaning: a lane key of that name would change the build's machinery.
RESERVED = {"PATH", "HOME", "IFS", "PWD", "OLDPWD", "SHELL", "ENV", "CDPATH", "PS1", "PS2", "PS4",
            "OPTIND", "OPTARG", "UID", "EUID", "PPID", "RANDOM", "LINENO", "SECONDS", "TZ", "LANG",
            "JOBS", "LANE", "STAGE", "SOURCE_DATE_EPOCH", "XZ_OPT", "LD_PRELOAD", "MAKEFLAGS"}
RESERVED_PREFIXES = ("KBUILD_", "ONLYDOCKER_", "BASH", "LC_", "FAKETIME")


def _string(origin: str, where: str, value: object) -> str:
    if not isinstance(value, str):
        raise BuildError(f"{origin}: {where}: expected a string, got {type(value).__name__} {value!r}")
    if "\0" in value:
        raise BuildError(f"{origin}: {where}: a NUL character cannot be a shell value")
    return shlex.quote(value)


def _assignment(origin: str, key: str, value: object) -> str:
    if not KEY.fullmatch(key):
        raise BuildError(f"{origin}: key {key!r}: expected lower_snake (a-z, 0-9, _; a letter first)")
    name = key.upper()
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        raise BuildError(f"{origin}: key {key!r}: {name} is a name the container or the shell already uses")
    where = f"key {key!r}"
    if isinstance(value, bool):        # before int: a bool is an int in Python
        return f"{name}={'true' if value else 'false'}"
    if isinstance(value, int):
        return f"{name}={value}"
    if isinstance(value, str):
        return f"{name}={_string(origin, where, value)}"
    if isinstance(value, list):
        items = [_string(origin, f"{where} item {i + 1}", v) for i, v in enumerate(value)]
        return f"{name}=( {' '.join(items)} )" if items else f"{name}=()"
    if isinstance(value, dict):
        pairs = []
        for k in sorted(value):
            if not TABLE_KEY.fullmatch(k):
                raise BuildError(f"{origin}: {where}: table key {k!r}: expected letters, digits, _ . + -")
            pairs.append(f"[{shlex.quote(k)}]={_string(origin, f'{where} table key {k!r}', value[k])}")
        return f"declare -gA {name}=( {' '.join(pairs)} )" if pairs else f"declare -gA {name}=()"
    raise BuildError(f"{origin}: {where}: a {type(value).__name__} is not lane data "
                     "(expected a string, an integer, a boolean, a list of strings or a table of strings)")


def render(data: dict, origin: str) -> str:
    """lane.env's text for the parsed lane.toml `data`; `origin` names the file in errors."""
    lines = [f"# {origin}, rendered by onlydocker/stage/lanedata.py: bash, sourced by build.sh\n"]
    lines += [_assignment(origin, k, data[k]) + "\n" for k in sorted(data)]
    return "".join(lines)


def render_file(path: Path) -> str:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise BuildError(f"{path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BuildError(f"{path}: not valid TOML: {e}") from None
    return render(data, f"lanes/{path.parent.name}/{path.name}")


def container_inputs(lane_dir: Path, tmp: Path) -> list[tuple[Path, str]]:
    """The rendered lane.env as an input of the container (written in `tmp`),
    or nothing when the lane has no lane.toml. The stage key covers lane.toml
    (a stage file) and this module (the container code), so it covers this."""
    source = lane_dir / LANE_TOML
    if (lane_dir / LANE_ENV).exists():
        raise BuildError(f"{lane_dir / LANE_ENV}: lane.env is rendered from {LANE_TOML}; remove the file")
    if not source.is_file():
        return []
    env = tmp / LANE_ENV
    env.write_text(render_file(source))
    env.chmod(0o644)
    return [(env, CONTAINER_PATH)]

"""The bootable ISO, as the original made it: xorriso in mkisofs mode, an
ISOLINUX El Torito image made hybrid (isohdpfx.bin MBR) so it boots from a
CD drive and from a disk, laid out as

    boot/vmlinuz  boot/initrd  boot/isolinux/{isolinux.bin, ldlinux.c32, isolinux.cfg, boot.cat}

Every date in it is fixed: `-volume_date` c, m and uuid (the uuid also
seeds the hybrid MBR's disk id, random otherwise) and all_file_dates for
every file, SOURCE_DATE_EPOCH in xorriso's environment besides; `-r` makes
owners and modes rational. Input trees with other mtimes and modes give the
same bytes (tests/test_iso.py).

xorriso runs where its version is pinned (the builder container); this
module only says what to run. The bootloader files come from Debian's
`isolinux` and the same version's `syslinux-common`.
"""
from __future__ import annotations

import datetime
import re
import shlex
import shutil
from pathlib import Path

ISOLINUX_BIN = "/usr/lib/ISOLINUX/isolinux.bin"
ISOHDPFX_BIN = "/usr/lib/ISOLINUX/isohdpfx.bin"
LDLINUX_C32 = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
PREPARER = "ONLYDOCKER"
KERNEL = "boot/vmlinuz"
INITRD = "boot/initrd"
ISOLINUX_DIR = "boot/isolinux"
# Serial first and last on the command line: /dev/console is the last
# console= given, so init's output reaches ttyS0, where tests read it.
CONSOLES = "console=tty0 console=ttyS0,115200"
_EPOCH_MARK = "@ONLYDOCKER_EPOCH@"
_UUID_MARK = "@ONLYDOCKER_UUID@"


def _check_label(label: str) -> None:
    # ISO 9660 volume id: at most 32 d-characters.
    if not re.fullmatch(r"[A-Z0-9_]{1,32}", label):
        raise ValueError(f"ISO volume label {label!r}: 1 to 32 of A-Z, 0-9 and _")


def isolinux_cfg(cmdline: str = "", *, extra_labels: dict[str, str] | None = None,
                 default: str = "onlydocker", timeout_ds: int = 20) -> str:
    """ISOLINUX's configuration: the serial console at 115200, a default
    label booting boot/vmlinuz with boot/initrd and `cmdline`, and optional
    extra labels (name -> extra command line), e.g. {"selftest": "onlydocker.selftest"}."""
    labels = {default: cmdline, **{n: f"{cmdline} {extra}".strip() for n, extra in (extra_labels or {}).items()}}
    lines = ["# Serial first, so a test (or a headless server) reads the console on ttyS0.",
             "serial 0 115200",
             f"default {default}",
             "prompt 1",
             f"timeout {int(timeout_ds)}"]
    for name, args in labels.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"isolinux label {name!r}: letters, digits, _ . - only")
        if "\n" in args:
            raise ValueError(f"isolinux label {name!r}: the command line is one line")
        lines += [f"label {name}",
                  f"  kernel /{KERNEL}",
                  f"  initrd /{INITRD}",
                  f"  append {f'{CONSOLES} {args}'.strip()}"]
    return "\n".join(lines) + "\n"


def volume_uuid(epoch: int) -> str:
    """xorriso's 16-digit volume "uuid" (YYYYMMDDhhmmsscc, UTC) of `epoch`:
    it also seeds the hybrid MBR's disk id, which is otherwise random."""
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime("%Y%m%d%H%M%S00")


def _command(label: str, epoch: str, uuid: str, src_dir: str, out_path: str, isohdpfx: str,
             preparer: str, xorriso: str) -> list[str]:
    _check_label(label)
    return [
        xorriso,
        # Native commands first: they fix what mkisofs mode has no option for.
        "-preparer_id", preparer,
        "-volume_date", "c", f"={epoch}",
        "-volume_date", "m", f"={epoch}",
        "-volume_date", "uuid", uuid,
        "-volume_date", "all_file_dates", f"={epoch}",
        "-as", "mkisofs",
        "-l", "-J", "-r",
        "-V", label,
        "-b", f"{ISOLINUX_DIR}/isolinux.bin",
        "-c", f"{ISOLINUX_DIR}/boot.cat",
        "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "-isohybrid-mbr", isohdpfx,
        "-o", out_path,
        src_dir,
    ]


def xorriso_command(label: str, epoch: int, src_dir: str, out_path: str, *,
                    isohdpfx: str = ISOHDPFX_BIN, preparer: str = PREPARER,
                    xorriso: str = "xorriso") -> list[str]:
    """The exact command. Every date is in its arguments (the same bytes come
    out with or without SOURCE_DATE_EPOCH set); run it with xorriso_env(epoch)
    all the same. `src_dir` holds the layout of the module docstring."""
    return _command(label, str(int(epoch)), volume_uuid(epoch), src_dir, out_path, isohdpfx, preparer, xorriso)


def xorriso_env(epoch: int) -> dict[str, str]:
    return {"SOURCE_DATE_EPOCH": str(int(epoch)), "TZ": "UTC", "LC_ALL": "C"}


def stage_tree(dest: Path, *, kernel: Path, initrd: Path, cfg: str,
               isolinux_bin: Path = Path(ISOLINUX_BIN), ldlinux_c32: Path = Path(LDLINUX_C32)) -> Path:
    """Lay out the ISO's tree under `dest` (which must not exist) from host
    files; returns `dest`. (In the builder, build_iso_script does the same.)"""
    dest = Path(dest)
    (dest / ISOLINUX_DIR).mkdir(parents=True)
    shutil.copyfile(kernel, dest / KERNEL)
    shutil.copyfile(initrd, dest / INITRD)
    shutil.copyfile(isolinux_bin, dest / ISOLINUX_DIR / "isolinux.bin")
    shutil.copyfile(ldlinux_c32, dest / ISOLINUX_DIR / "ldlinux.c32")
    (dest / ISOLINUX_DIR / "isolinux.cfg").write_text(cfg)
    return dest


def build_iso_script(*, kernel: str, initrd: str, out: str, label: str = "ONLYDOCKER",
                     cmdline: str = "", extra_labels: dict[str, str] | None = None,
                     epoch: int | None = None, work: str = "/build/work/iso") -> str:
    """A POSIX sh script for the builder container: lay out `work` from the
    `kernel` and `initrd` paths given (e.g. under /build/deps/<stage>/),
    write isolinux.cfg, run xorriso to `out`. Without `epoch`, it uses the
    container's $SOURCE_DATE_EPOCH (and fails when that is unset)."""
    q = shlex.quote
    cfg = isolinux_cfg(cmdline, extra_labels=extra_labels)
    if "ONLYDOCKER_CFG_EOF" in cfg:
        raise ValueError("isolinux.cfg would end the here-document early")
    cmd = _command(label, _EPOCH_MARK, _UUID_MARK, "$iso", out, ISOHDPFX_BIN, PREPARER, "xorriso")
    quoted = " ".join('"$iso"' if a == "$iso" else q(a) for a in cmd)
    quoted = quoted.replace(_EPOCH_MARK, '"$epoch"').replace(_UUID_MARK, '"$uuid"')
    epoch_line = 'epoch="${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set}"' if epoch is None \
        else f"epoch={int(epoch)}"
    return f"""set -eu
# The ISO (onlydocker.iso module): layout, isolinux.cfg, then xorriso with
# every date fixed.
{epoch_line}
uuid=$(date -u -d "@$epoch" +%Y%m%d%H%M%S00)
iso={q(work)}
rm -rf "$iso"
mkdir -p "$iso/{ISOLINUX_DIR}"
cp {q(kernel)} "$iso/{KERNEL}"
cp {q(initrd)} "$iso/{INITRD}"
cp {q(ISOLINUX_BIN)} {q(LDLINUX_C32)} "$iso/{ISOLINUX_DIR}/"
cat > "$iso/{ISOLINUX_DIR}/isolinux.cfg" <<'ONLYDOCKER_CFG_EOF'
{cfg}ONLYDOCKER_CFG_EOF
mkdir -p "$(dirname {q(out)})"
SOURCE_DATE_EPOCH="$epoch" TZ=UTC LC_ALL=C {quoted}
"""


def has_hybrid_mbr(iso: Path) -> bool:
    """The first sector is an MBR (0x55AA) with a bootable first partition
    that starts at sector 0: isohybrid's signature."""
    with open(iso, "rb") as f:
        mbr = f.read(512)
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        return False
    part = mbr[446:462]
    start = int.from_bytes(part[8:12], "little")
    return part[0] == 0x80 and part[4] != 0 and start == 0

"""Booting an image in qemu (software emulation) and reading its serial
console: the proof that what we build runs. Judged by a marker line on the
console, never by qemu's exit code; a hard timeout always ends qemu."""
from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OnlyDockerError


@dataclass
class BootResult:
    text: str
    marker_seen: bool
    seconds: float
    log_path: Path


# UEFI firmware (Debian's ovmf): its code read-only, a copy of its empty
# variable store per boot (the firmware writes its boot entries there).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot enforced: this build of OVMF only runs on q35 with SMM (its
# variables then cannot be written around the firmware), and with a variable
# store that holds the keys (tests/test_boot.py enrolls ours).
OVMF_CODE_SECBOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
FIRMWARES = ("bios", "uefi", "uefi-secureboot")


def qemu_command(kernel: Path | None, initrd: Path | None, *, iso: Path | None = None, append: str = "",
                 memory_mb: int = 2048, disk: Path | None = None, hostfwd: dict[int, int] | None = None,
                 terminal: bool = False, firmware: str = "bios", uefi_vars: Path | None = None,
                 iso_as_disk: bool = False) -> list[str]:
    """qemu under TCG with the serial console on stdio. `terminal`: for a
    person at a terminal (`doit boot`): Ctrl-C ends qemu, no monitor;
    otherwise the console is a pipe a program reads (the tests).
    `firmware`: SeaBIOS ("bios", qemu's own) or OVMF ("uefi", with
    `uefi_vars` a writable copy of its variable store; "uefi-secureboot",
    Secure Boot enforced, `uefi_vars` holding the enrolled keys). `iso_as_disk`: the
    ISO is the first disk (written raw to it, as `dd` would: the hybrid MBR
    and GPT boot it), not a CD-ROM; qemu writes nothing to it (snapshot).
    Under UEFI `append` reaches the unified kernel image's stub as SMBIOS
    type 11 io.systemd.stub.kernel-cmdline-extra, the way a hypervisor hands
    a UKI more command line."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise OnlyDockerError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    if firmware not in FIRMWARES:
        raise OnlyDockerError(f"boot: firmware is one of {', '.join(FIRMWARES)}, not {firmware!r}")
    nic = "user,model=e1000" + "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}"
                                       for host, guest in sorted((hostfwd or {}).items()))
    cmd = [qemu, "-accel", "tcg", "-m", str(memory_mb), "-smp", "2", "-no-reboot", "-nic", nic]
    if firmware != "bios":
        code = OVMF_CODE_SECBOOT if firmware == "uefi-secureboot" else OVMF_CODE
        if not code.is_file():
            raise OnlyDockerError(f"{code} is missing: UEFI boots need OVMF (apt-get install ovmf)")
        if uefi_vars is None:
            raise OnlyDockerError("boot: a UEFI boot needs a writable copy of the firmware's variable store")
        if firmware == "uefi-secureboot":
            cmd += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={uefi_vars}"]
        if append:
            # A comma in an SMBIOS value is written twice on qemu's command line.
            value = f"io.systemd.stub.kernel-cmdline-extra={append}".replace(",", ",,")
            cmd += ["-smbios", f"type=11,value={value}"]
    if terminal:
        cmd += ["-display", "none", "-monitor", "none", "-chardev", "stdio,id=console,signal=on",
                "-serial", "chardev:console"]
    else:
        cmd += ["-nographic", "-serial", "mon:stdio"]
    if iso is not None and iso_as_disk:
        if disk is not None:
            raise OnlyDockerError("boot: the ISO as the first disk leaves no place for another disk")
        cmd += ["-drive", f"file={iso},format=raw,if=ide,index=0,media=disk,snapshot=on", "-boot", "c"]
        return cmd
    if disk is not None:
        cmd += ["-drive", f"file={disk},format=raw,if=ide,index=0,media=disk"]
    if iso is not None:
        cmd += ["-cdrom", str(iso), "-boot", "d"]
    elif kernel is None or initrd is None:
        raise OnlyDockerError("boot: give kernel and initrd, or iso")
    elif firmware != "bios":
        raise OnlyDockerError("boot: a kernel and initrd boot under qemu's own loader (firmware bios)")
    else:
        cmd += ["-kernel", str(kernel), "-initrd", str(initrd),
                "-append", f"console=ttyS0,115200 panic=-1 {append}".strip()]
    return cmd


def boot(kernel: Path | None, initrd: Path | None, *, iso: Path | None = None, append: str = "",
         boot_label: str | None = None, timeout: float = 600, marker: str, log_path: Path,
         memory_mb: int = 2048, disk: Path | None = None,
         hostfwd: dict[int, int] | None = None,
         on_output: Callable[[str], None] | None = None,
         wrap: list[str] | None = None, firmware: str = "bios", iso_as_disk: bool = False,
         uefi_vars: Path | None = None) -> BootResult:
    """Boot `kernel` + `initrd` (or `iso`, typing `boot_label` at ISOLINUX's
    prompt) with the serial console on stdio; stop at `marker` or after
    `timeout` seconds, whichever comes first, and always end qemu. `disk` is
    attached as the first IDE disk (/dev/sda), raw. `hostfwd` maps host TCP
    ports on 127.0.0.1 to the guest's ports (qemu's user-mode network, never
    another address); `on_output` is called with the console text so far
    whenever more arrives, so a test can act while the guest runs. `wrap` is
    a command qemu runs under (a test's `nsenter --net=...`: qemu's user
    network then reaches that namespace's loopback, never this one's).
    `firmware` and `iso_as_disk`: see qemu_command. A UEFI boot starts from
    a copy (beside the log) of `uefi_vars`, else of OVMF's empty store."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if firmware != "bios":
        store = uefi_vars or OVMF_VARS
        if not store.is_file():
            raise OnlyDockerError(f"{store} is missing: UEFI boots need OVMF (apt-get install ovmf)")
        uefi_vars = log_path.with_name(log_path.name + ".OVMF_VARS.fd")
        shutil.copyfile(store, uefi_vars)
    cmd = [*(wrap or []),
           *qemu_command(kernel, initrd, iso=iso, append=append, memory_mb=memory_mb, disk=disk, hostfwd=hostfwd,
                         firmware=firmware, uefi_vars=uefi_vars, iso_as_disk=iso_as_disk)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None     # both are pipes
    text = bytearray()
    seen = False
    typed = boot_label is None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        with open(log_path, "wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            while time.monotonic() - start < timeout:
                if not sel.select(timeout=1):
                    if proc.poll() is not None:
                        break
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                text += chunk
                log.write(chunk)
                log.flush()
                if on_output is not None:
                    on_output(text.decode("utf-8", "replace"))
                if not typed and boot_label is not None and b"boot:" in text:
                    # ISOLINUX's prompt, read from the serial line too.
                    proc.stdin.write(boot_label.encode() + b"\r")
                    proc.stdin.flush()
                    typed = True
                if marker.encode() in text:
                    seen = True
                    # Keep reading the rest of the marker's line.
                    end = time.monotonic() + 5
                    while b"\n" not in text[text.rfind(marker.encode()):] and time.monotonic() < end:
                        if sel.select(timeout=0.5):
                            more = os.read(proc.stdout.fileno(), 65536)
                            if not more:
                                break
                            text += more
                            log.write(more)
                    break
    finally:
        proc.kill()
        proc.wait()
    return BootResult(text.decode("utf-8", "replace"), seen, time.monotonic() - start, log_path)


def assert_selftest_passed(result: BootResult) -> None:
    """Raise AssertionError with the console's evidence unless init's
    self-check passed."""
    tail = result.text[-6000:]
    assert result.marker_seen, f"no self-check result within {result.seconds:.0f} s; console:\n{tail}"
    verdict = result.text[result.text.rfind("ONLYDOCKER-SELFTEST:"):].splitlines()[0]
    assert verdict.strip() == "ONLYDOCKER-SELFTEST: PASS", f"{verdict}\n{tail}"
    for line in ("pid 1 is: dockerd", "selftest: ok: docker version", "selftest: ok: iptables -L",
                 "selftest: ok: module overlay loaded", "selftest: ok: dhcp container ran",
                 "selftest: ok: console container is running"):
        assert line in result.text, f"missing {line!r} on the console:\n{tail}"

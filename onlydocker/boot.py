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

from .errors import OnlyDockerError


@dataclass
class BootResult:
    text: str
    marker_seen: bool
    seconds: float
    log_path: Path


def qemu_command(kernel: Path | None, initrd: Path | None, *, iso: Path | None = None, append: str = "",
                 memory_mb: int = 2048, disk: Path | None = None, hostfwd: dict[int, int] | None = None,
                 terminal: bool = False) -> list[str]:
    """qemu under TCG with the serial console on stdio. `terminal`: for a
    person at a terminal (`doit boot`): Ctrl-C ends qemu, no monitor;
    otherwise the console is a pipe a program reads (the tests)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise OnlyDockerError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    nic = "user,model=e1000" + "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}"
                                       for host, guest in sorted((hostfwd or {}).items()))
    cmd = [qemu, "-accel", "tcg", "-m", str(memory_mb), "-smp", "2", "-no-reboot", "-nic", nic]
    if terminal:
        cmd += ["-display", "none", "-monitor", "none", "-chardev", "stdio,id=console,signal=on",
                "-serial", "chardev:console"]
    else:
        cmd += ["-nographic", "-serial", "mon:stdio"]
    if disk is not None:
        cmd += ["-drive", f"file={disk},format=raw,if=ide,index=0,media=disk"]
    if iso is not None:
        cmd += ["-cdrom", str(iso), "-boot", "d"]
    elif kernel is None or initrd is None:
        raise OnlyDockerError("boot: give kernel and initrd, or iso")
    else:
        cmd += ["-kernel", str(kernel), "-initrd", str(initrd),
                "-append", f"console=ttyS0,115200 panic=-1 {append}".strip()]
    return cmd


def boot(kernel: Path | None, initrd: Path | None, *, iso: Path | None = None, append: str = "",
         boot_label: str | None = None, timeout: float = 600, marker: str, log_path: Path,
         memory_mb: int = 2048, disk: Path | None = None,
         hostfwd: dict[int, int] | None = None,
         on_output: Callable[[str], None] | None = None,
         wrap: list[str] | None = None) -> BootResult:
    """Boot `kernel` + `initrd` (or `iso`, typing `boot_label` at ISOLINUX's
    prompt) with the serial console on stdio; stop at `marker` or after
    `timeout` seconds, whichever comes first, and always end qemu. `disk` is
    attached as the first IDE disk (/dev/sda), raw. `hostfwd` maps host TCP
    ports on 127.0.0.1 to the guest's ports (qemu's user-mode network, never
    another address); `on_output` is called with the console text so far
    whenever more arrives, so a test can act while the guest runs. `wrap` is
    a command qemu runs under (a test's `nsenter --net=...`: qemu's user
    network then reaches that namespace's loopback, never this one's)."""
    cmd = [*(wrap or []),
           *qemu_command(kernel, initrd, iso=iso, append=append, memory_mb=memory_mb, disk=disk, hostfwd=hostfwd)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
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

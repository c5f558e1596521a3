"""The shared cache's lock says whom a waiter waits for, and a killed
writer's leftovers are removed by the next holder."""
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from onlydocker import atomic


def _hold_in_child(lock: Path, seconds: float) -> subprocess.Popen:
    """A separate process that takes the lock, prints 'held', and keeps it."""
    code = textwrap.dedent(f"""
        import sys, time
        from onlydocker import atomic
        with atomic.entry_lock({str(lock)!r}, "testing", print):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_waiter_names_the_pid_of_the_holder(tmp_path):
    lock = tmp_path / "entry.lock"
    holder = _hold_in_child(lock, 1.0)
    said = []
    with atomic.entry_lock(lock, "building stage tiny", said.append):
        pass
    holder.wait()
    assert said == [f"waiting for pid {holder.pid}, which is building stage tiny"]


def test_a_free_lock_is_taken_without_a_word_and_left_empty(tmp_path):
    lock = tmp_path / "entry.lock"
    said = []
    with atomic.entry_lock(lock, "x", said.append):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert said == [] and lock.read_text() == ""


def test_the_pid_of_a_killed_holder_is_not_reported(tmp_path):
    lock = tmp_path / "entry.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock.write_text(f"{dead}\n")           # a holder that was SIGKILLed
    fd = os.open(lock, os.O_RDONLY)
    assert atomic._holder(fd) == ""
    os.close(fd)


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    entry = tmp_path / "entry"
    left = atomic.temp_path(entry)
    left.write_bytes(b"half")
    other = tmp_path / ".other.1.ab.tmp"
    other.write_bytes(b"not ours")
    atomic.clear_leftovers(entry)
    assert not left.exists() and other.exists()


def test_two_threads_never_hold_one_entry_at_once(tmp_path):
    lock = tmp_path / "entry.lock"
    inside, overlap = [0], []

    def work():
        for _ in range(20):
            with atomic.entry_lock(lock, "x", lambda _: None):
                inside[0] += 1
                overlap.append(inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlap) == 1 and len(overlap) == 80


@pytest.mark.parametrize("old_kind", ["folder", "file", "link", "none"])
def test_replace_dir_puts_the_new_tree_in_place_of_anything_and_leaves_nothing_behind(tmp_path, old_kind):
    dest = tmp_path / "dist"
    if old_kind == "folder":
        (dest / "sub").mkdir(parents=True)
        (dest / "sub" / "old").write_text("old")
    elif old_kind == "file":
        dest.write_text("old")
    elif old_kind == "link":
        dest.symlink_to(tmp_path / "elsewhere")
    new = tmp_path / ".dist.new"
    new.mkdir()
    (new / "a").write_text("new")
    atomic.replace_dir(new, dest)
    assert dest.is_dir() and not dest.is_symlink() and [p.name for p in dest.iterdir()] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def test_replace_dir_puts_the_old_tree_back_when_the_new_cannot_go_in(tmp_path):
    dest = tmp_path / "dist"
    dest.mkdir()
    (dest / "old").write_text("old")
    with pytest.raises(FileNotFoundError):
        atomic.replace_dir(tmp_path / "never-made", dest)
    assert (dest / "old").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]

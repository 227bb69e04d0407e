"""core/file_lock.py: the one file lock (embedded model builds, reclaiming dead runs)."""

import threading

from reer_assets.core.file_lock import file_lock


def test_a_second_holder_waits_for_the_first(tmp_path):
    path = tmp_path / "nested" / ".x.lock"  # the folder is created
    order, held = [], threading.Event()

    def second():
        held.wait()
        with file_lock(path):  # flock locks an open file description: a second open waits, in-process too
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with file_lock(path):
        held.set()
        thread.join(timeout=0.5)  # wait: long enough for the second holder to have taken the lock if it could
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]
    assert path.exists() and path.read_text() == ""


def test_the_lock_file_is_never_truncated(tmp_path):
    path = tmp_path / ".x.lock"
    path.write_text("kept")
    with file_lock(path):
        pass
    assert path.read_text() == "kept"

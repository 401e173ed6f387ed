import threading
import time
from contextlib import contextmanager

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.support.messages import make_message
from webhook_service.storage.engine import Database
from webhook_service.storage.group_commit import GroupCommit
from webhook_service.storage.messages import NewMessage, insert_messages_if_new


def new_message(message_id: str, text: str = "hi") -> NewMessage:
    payload = make_message(message_id=message_id, text=text)
    return NewMessage(payload["message_id"], payload["from"], payload["to"], payload["ts"], payload["text"])


def run_concurrently(count: int, action) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index):
        barrier.wait(timeout=10)
        try:
            results[index] = action(index)
        except BaseException as error:  # noqa: BLE001 - the caller asserts on what was raised
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def wait_until_queued(writer: GroupCommit, count: int) -> None:
    """Hold the first transaction until `count` callers wait, so that they form one batch."""
    deadline = time.monotonic() + 5
    while len(writer._queue) < count and time.monotonic() < deadline:
        time.sleep(0.001)


def test_concurrent_writes_are_all_committed_with_their_own_results(database_url, stored_messages):
    database = Database(database_url)
    writer = GroupCommit(database.write_transaction, insert_messages_if_new)
    try:
        results = run_concurrently(40, lambda i: writer.submit(new_message(f"m{i % 20}", text=f"t{i}")))
    finally:
        database.dispose()
    # 20 distinct ids sent twice each: exactly one delivery of each id is the stored one.
    assert results.count(True) == 20 and results.count(False) == 20
    rows = stored_messages()
    assert sorted(row["message_id"] for row in rows) == sorted(f"m{i}" for i in range(20))


def test_the_earlier_delivery_of_an_id_wins_within_a_batch(database_url, stored_messages):
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            results = insert_messages_if_new(conn, [new_message("x", "first"), new_message("x", "second")])
    finally:
        database.dispose()
    assert results == [True, False]
    assert [row["text"] for row in stored_messages()] == ["first"]


def test_a_failed_transaction_fails_every_caller_in_it():
    @contextmanager
    def broken_transaction():
        raise OperationalError("BEGIN", {}, Exception("disk I/O error"))
        yield

    writer = GroupCommit(broken_transaction, lambda conn, items: [True] * len(items))
    results = run_concurrently(8, lambda i: writer.submit(i))
    assert all(isinstance(result, OperationalError) for result in results)
    # The writer is not left stuck: a later call runs normally.
    with pytest.raises(OperationalError):
        writer.submit(99)


@pytest.mark.parametrize(
    "failure", [IntegrityError("INSERT", {}, Exception("constraint")), UnicodeEncodeError("utf-8", "", 0, 1, "x")]
)
def test_one_bad_item_does_not_fail_the_others_in_its_batch(failure):
    committed, batch_sizes = [], []
    writer = None

    @contextmanager
    def transaction():
        # The first transaction waits until all twelve callers are queued: one batch of 12.
        if not batch_sizes:
            wait_until_queued(writer, 12)
        pending = []
        yield pending
        committed.extend(pending)

    def write(pending, items):
        batch_sizes.append(len(items))
        if "bad" in items:
            raise failure
        pending.extend(items)
        return [True] * len(items)

    writer = GroupCommit(transaction, write)
    results = run_concurrently(12, lambda i: writer.submit("bad" if i == 5 else f"ok{i}"))
    assert batch_sizes[0] == 12
    assert results[5] is failure
    assert [r for i, r in enumerate(results) if i != 5] == [True] * 11
    assert sorted(committed) == sorted(f"ok{i}" for i in range(12) if i != 5)


class Interrupted(BaseException):
    """Like KeyboardInterrupt or a worker's SystemExit: not an Exception."""


def test_an_interrupted_batch_acknowledges_none_of_its_callers():
    writer = None
    calls = []

    @contextmanager
    def transaction():
        if not calls:
            wait_until_queued(writer, 6)
        yield None

    def write(conn, items):
        calls.append(len(items))
        if len(calls) == 1:
            raise Interrupted()
        return [True] * len(items)

    writer = GroupCommit(transaction, write)
    results = run_concurrently(6, lambda i: writer.submit(i))
    assert calls[0] == 6
    assert all(isinstance(result, Interrupted) for result in results), results
    # Nothing is left waiting or stuck: the next write goes through.
    assert writer.submit(99) is True


def test_callers_queued_behind_a_commit_are_led_by_a_successor(database_url, stored_messages):
    database = Database(database_url)
    entered, release = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def write(conn, items):
        batches.append([item.message_id for item in items])
        if len(batches) == 1:
            entered.set()
            release.wait(timeout=5)
        return insert_messages_if_new(conn, items)

    writer = GroupCommit(database.write_transaction, write)
    results: dict[str, object] = {}

    def submit(message_id: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.update({message_id: writer.submit(new_message(message_id))}))
        thread.start()
        return thread

    try:
        threads = [submit("first")]
        assert entered.wait(timeout=5)
        threads += [submit(f"queued-{n}") for n in range(3)]
        wait_until_queued(writer, 3)
        release.set()
        for thread in threads:
            thread.join(timeout=5)
        # Nobody submits again: the queued callers return only if one of them took over.
        assert not any(thread.is_alive() for thread in threads)
    finally:
        release.set()
        database.dispose()
    assert results == {"first": True, "queued-0": True, "queued-1": True, "queued-2": True}
    assert [sorted(batch) for batch in batches] == [["first"], ["queued-0", "queued-1", "queued-2"]]
    assert len(stored_messages()) == 4

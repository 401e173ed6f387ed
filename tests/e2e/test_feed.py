"""The feed through real gunicorn: complete, in one order for every reader, across workers,
hosts (PostgreSQL) and restarts; long-polls that wake on any worker's commit and never
hold up a stop or the other requests."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.database import stored_ids
from tests.support.messages import make_message
from tests.support.servers import Gunicorn, Load, request, signed_post, wait_until

pytestmark = pytest.mark.e2e


def read_feed(port: int, after: str | None, wait: int = 0, limit: int = 100, timeout: float = 45) -> dict:
    query = f"/feed?limit={limit}&wait={wait}" + ("" if after is None else f"&after={after}")
    response = request(port, "GET", query, timeout=timeout)
    assert response.status == 200, response.body
    return response.json()


def read_on(port: int, after: str | None, limit: int, seen: list[str], expected: set[str]) -> str | None:
    """Read the feed after `after` into `seen` until every id in `expected` is there (or 20 s
    pass) and a page comes back empty; the position reached. An empty page alone is not the
    end of what was acknowledged: on PostgreSQL the feed holds back what a transaction still
    running could precede (a count fold, a readiness probe, another host's batch) until it ends."""
    deadline = time.monotonic() + 20
    while True:
        missing = not expected <= set(seen) and time.monotonic() < deadline
        page = read_feed(port, after, wait=1 if missing else 0, limit=limit)
        if not page["data"] and not missing:
            return after
        seen += [item["message_id"] for item in page["data"]]
        after = page["next"]


class FeedReader(threading.Thread):
    """Follows /feed with long-polls until told what was acknowledged, then reads on until all
    of it has come (read_on)."""

    def __init__(self, port: int, limit: int = 37) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.limit = limit
        self.ids: list[str] = []
        self.after: str | None = None
        self.expected: set[str] = set()
        self.finish = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 120
            while not self.finish.is_set() and time.monotonic() < deadline:
                self._read(wait=1)
            self.after = read_on(self.port, self.after, self.limit, self.ids, self.expected)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def _read(self, wait: int) -> None:
        page = read_feed(self.port, self.after, wait=wait, limit=self.limit)
        self.ids += [item["message_id"] for item in page["data"]]
        self.after = page["next"]

    def result(self, acknowledged: list[str]) -> list[str]:
        """Every message_id read, in feed order, once the `acknowledged` ones came (or the
        drain ended without them: the test's comparison then says which are missing)."""
        self.expected = set(acknowledged)
        self.finish.set()
        self.join(timeout=60)
        assert not self.is_alive() and self.error is None, self.error
        return self.ids


def repost_duplicates(port: int, load: Load, stop: threading.Event, progress: dict) -> int:
    """Deliver already acknowledged ids again until `stop`, counting them in progress["sent"];
    returns how many."""
    rng = random.Random(7)
    progress["sent"] = 0
    while not stop.is_set():
        if load.acknowledged:
            assert signed_post(port, make_message(message_id=rng.choice(load.acknowledged), text="again")).status == 200
            progress["sent"] += 1
        time.sleep(0.005)
    return progress["sent"]


def test_readers_get_every_acknowledged_message_once_in_one_order_while_eight_threads_post(gunicorn_server, server_env):
    port = gunicorn_server.port
    readers = [FeedReader(port), FeedReader(port, limit=100)]
    for reader in readers:
        reader.start()
    stop_duplicates = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool, Load(port, "e2e-secret", threads=8) as load:
        progress = {"sent": 0}
        duplicates = pool.submit(repost_duplicates, port, load, stop_duplicates, progress)
        # Until hundreds are acknowledged and some sent again, the readers long-polling meanwhile.
        assert wait_until(lambda: len(load.acknowledged) >= 400 and progress["sent"] > 10, timeout=60)
        stop_duplicates.set()
        assert duplicates.result() > 10
    acknowledged = load.acknowledged
    assert len(acknowledged) >= 400 and set(load.statuses) == {200}
    first, second = (reader.result(acknowledged) for reader in readers)
    assert len(first) == len(set(first)), "a message came twice"
    assert sorted(first) == sorted(acknowledged)
    assert second == first
    assert first == stored_ids(server_env["DATABASE_URL"])


@pytest.mark.postgresql_only
def test_two_hosts_writing_while_two_readers_long_poll_give_both_readers_one_complete_sequence(
    tmp_path, server_env, backend
):
    hosts = [Gunicorn(workdir=tmp_path, env=server_env, workers=2).start()]
    hosts.append(Gunicorn(workdir=tmp_path, env=server_env, workers=2).start())
    try:
        readers = [FeedReader(hosts[0].port), FeedReader(hosts[1].port, limit=11)]
        for reader in readers:
            reader.start()
        with (
            Load(hosts[0].port, "e2e-secret", threads=4, prefix="host-a") as load_a,
            Load(hosts[1].port, "e2e-secret", threads=4, prefix="host-b") as load_b,
        ):
            assert wait_until(lambda: min(len(load_a.acknowledged), len(load_b.acknowledged)) >= 150, timeout=60)
        acknowledged = load_a.acknowledged + load_b.acknowledged
        assert len(load_a.acknowledged) >= 150 and len(load_b.acknowledged) >= 150
        first, second = (reader.result(acknowledged) for reader in readers)
    finally:
        for host in hosts:
            host.stop()
    assert len(first) == len(set(first))
    assert sorted(first) == sorted(acknowledged)
    assert second == first == stored_ids(server_env["DATABASE_URL"])


def test_a_reader_resumes_across_a_restart_without_gap_or_repeat(tmp_path, server_env):
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=2).start()
    try:
        for number in range(30):
            assert signed_post(server.port, make_message(message_id=f"r{number:02d}")).status == 200
        page = read_feed(server.port, None, limit=12)
    finally:
        server.stop()
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=2).start()
    try:
        for number in range(30, 35):
            assert signed_post(server.port, make_message(message_id=f"r{number:02d}")).status == 200
        seen = [item["message_id"] for item in page["data"]]
        read_on(server.port, page["next"], 7, seen, {f"r{number:02d}" for number in range(35)})
    finally:
        server.stop()
    assert seen == [f"r{number:02d}" for number in range(35)]


def test_a_long_poll_wakes_on_a_commit_of_any_worker(gunicorn_server):
    port = gunicorn_server.port
    end = read_feed(port, "latest")["next"]
    for number in range(6):
        # Each delivery lands on whichever of the 3 workers accepts it, the reader on another or the same.
        with ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(read_feed, port, end, 20)
            time.sleep(0.3)
            assert signed_post(port, make_message(message_id=f"woken-{number}")).status == 200
            posted = time.monotonic()
            page = held.result(timeout=25)
            # Answered because of the commit, not because its 20 s wait ran out.
            assert time.monotonic() - posted < 5
        assert [item["message_id"] for item in page["data"]] == [f"woken-{number}"]
        end = page["next"]


def test_with_every_waiter_slot_taken_other_requests_still_answer(tmp_path, server_env):
    env = {**server_env, "FEED_MAX_WAITERS": "4"}
    server = Gunicorn(workdir=tmp_path, env=env, workers=1).start()
    try:
        port = server.port
        with ThreadPoolExecutor(max_workers=4) as pool:
            held = [pool.submit(read_feed, port, "latest", 20) for _ in range(4)]
            time.sleep(1)
            assert not any(future.done() for future in held)
            started = time.monotonic()
            # A fifth is told at once when to come back; probes, reads and deliveries go on.
            fifth = request(port, "GET", "/feed?after=latest&wait=20")
            assert fifth.status == 429 and fifth.headers["retry-after"] == "2", fifth.body
            assert request(port, "GET", "/health/ready").status == 200
            assert request(port, "GET", "/messages").status == 200
            assert signed_post(port, make_message(message_id="while-held")).status == 200
            assert time.monotonic() - started < 10
            pages = [future.result(timeout=25) for future in held]
        assert all([item["message_id"] for item in page["data"]] == ["while-held"] for page in pages)
    finally:
        server.stop()


def test_a_stopping_worker_answers_its_held_long_polls_at_once(tmp_path, server_env):
    # Room for all six on either worker, however the connections are spread.
    server = Gunicorn(workdir=tmp_path, env={**server_env, "FEED_MAX_WAITERS": "6"}, workers=2).start()
    with ThreadPoolExecutor(max_workers=6) as pool:
        held = [
            pool.submit(request, server.port, "GET", "/feed?after=latest&wait=30", None, None, 45) for _ in range(6)
        ]
        time.sleep(1)
        started = time.monotonic()
        server.stop()
        stopped_after = time.monotonic() - started
        answers = [future.result(timeout=10) for future in held]
    assert stopped_after < 10, "held long-polls kept the workers from stopping"
    assert [answer.status for answer in answers] == [200] * 6
    assert all(json.loads(answer.body)["data"] == [] for answer in answers)

"""Read benchmark: every query of GET /messages and GET /stats on a large database.

Builds a database of ROWS realistic messages (about 10,000 senders with a skewed share,
one year of ts) through the storage layer at the first release's schema (revision 0001),
times the upgrade to the newest revision (which backfills the counters), starts gunicorn on
it, and prints the median and p90 of each query, one request at a time.

Two corpora of texts: `otp` (the default: templates with rare needles, such as one-time
codes and a rare word) and `sms` (a small Zipf vocabulary of a few hundred words, some of
them not ASCII, so that every word and trigram is in a large share of the texts, as in real
SMS traffic; its needles are phrases of common words, a common three-letter word and
two-character needles in no text).

    python bench/queries.py [--rows 1000000] [--runs 21] [--corpus otp|sms] [--database PATH]
                            [--postgres-url postgresql://user:pw@host:5432/empty_db] [--peer PATH] [--sweep]

A SQLite database built once is reused when --database names an existing file (upgraded
to the newest revision first, timed when there was anything to do). With --postgres-url
the rows are loaded into that PostgreSQL database instead, upgraded the same way, then
VACUUM ANALYZEd; a database that holds messages already is measured as it is. With --peer,
each query is also timed on the naive design (bench/peer_like.py: one table, a plain LIKE
scan, served by Flask on the same gunicorn settings) built from the same corpus into PATH
once, in the same run: the last column is how many times longer the peer took. --sweep then times plain q needles of 1 to 64 characters
(pieces of stored texts, the rarest and commonest grams, absent ones) and prints the
slowest. Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import http.client
import random
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select

from bench import peer_like
from bench.harness import Server
from webhook_service.storage.cursor import Position, encode_cursor
from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import create_database_engine
from webhook_service.storage.messages import NewMessage, message_row
from webhook_service.storage.migrations import head_revision, upgrade_to_head
from webhook_service.storage.tables import messages, text_grams

SENDERS = 10_000
RARE_WORD = "zebrafish"
COMMON_WORD = "otp"
WORDS = [
    "hello",
    "hi",
    "thanks",
    "ok",
    "see",
    "you",
    "soon",
    "meeting",
    "call",
    "me",
    "later",
    "please",
    "confirm",
    "order",
    "shipped",
    "delivered",
    "payment",
    "received",
    "invoice",
    "due",
    "tomorrow",
    "today",
    "tonight",
    "weekend",
    "lunch",
    "dinner",
    "coffee",
    "train",
    "late",
    "sorry",
]
TEMPLATES = (
    "Your otp is {n}",
    "{w1} {w2} {w3}",
    "otp {n} expires in 5 minutes",
    "{w1} {w2}, {w3} {w4} {w5}",
    "Order {n} {w1}",
    "{w1}!",
    "Use otp {n} to sign in",
    "{w1} {w2} at {h}pm?",
)
YEAR_START = 1_704_067_200  # 2024-01-01T00:00:00Z


# The sms corpus: a vocabulary ranked by frequency (rank r drawn about 1/r as often).
_SMS_WORDS = (
    "the you to and i a is for your it of in on me we my be at this that are have order will "
    "ok can with so get now not just do from call what up when no go thanks today all how if "
    "shipped out tomorrow time see am our by pls been here was out delivered payment know love "
    "good day back one please has its an come there yes hi send need there new home got more "
    "week like make still please then take only want meeting about sorry night free text only "
    "min reply stop code account number done soon later dinner lunch pick train bus car late "
    "confirm confirmed received due invoice ready bank card otp pin balance amount rs inr usd "
    "track package arriving arrived store pickup driver ride cab office school class exam test "
    "mom dad bro sis happy birthday congrats welcome offer sale discount coupon valid till "
    "expires link click update app login verify password reset alert blocked unusual activity "
    "grüße danke bitte schön früh später straße café déjà vu niño mañana señor très bientôt "
    "merci voilà naïve résumé garçon crème brûlée smörgåsbord jalapeño über müde fünf"
)
SMS_VOCABULARY = tuple(dict.fromkeys(_SMS_WORDS.split()))
# Needles made of common words: phrases in about 1% of the texts, a three-letter word in many.
SMS_PHRASE = "order shipped"
SMS_COMMON_3 = "you"
SMS_TEMPLATES = ("{p}", "{a} {p} {b}", "{a} {b} {c} {d}", "{a} {b}, {c} {d} {e} {f}", "{a} {b} {c}")


def sms_word(rng: random.Random) -> str:
    rank = min(int(len(SMS_VOCABULARY) ** rng.random()), len(SMS_VOCABULARY) - 1)
    return SMS_VOCABULARY[rank]


def sms_text(rng: random.Random) -> str:
    words = {slot: sms_word(rng) for slot in "abcdef"}
    phrase = SMS_PHRASE if rng.random() < 0.0175 else f"{sms_word(rng)} {sms_word(rng)}"
    return rng.choice(SMS_TEMPLATES).format(p=phrase, **words)


def sender_for(rng: random.Random) -> str:
    # A few senders send most messages: rank r is picked about 1/r as often.
    rank = min(int(SENDERS ** rng.random()), SENDERS - 1)
    return f"+9198{rank:08d}"


def make_messages(count: int, seed: int = 1, corpus: str = "otp", arrivals: bool = False):
    """`count` messages of `corpus`; their ts spread at random over a year, or, with
    `arrivals`, evenly in the order they come (as senders stamp live traffic)."""
    rng = random.Random(seed)
    for number in range(count):
        if corpus == "sms":
            text = sms_text(rng)
        else:
            words = {f"w{slot}": rng.choice(WORDS) for slot in range(1, 6)}
            text = rng.choice(TEMPLATES).format(n=rng.randint(100_000, 999_999), h=rng.randint(1, 12), **words)
        if number % 50_000 == 7:
            text += f" {RARE_WORD}"
        if number % 10_000 == 3:
            text += " aaaaaaaah"  # so that a needle of thousands of a's has candidates to check
        seconds = YEAR_START + (number * 365 * 86_400 // count if arrivals else rng.randrange(365 * 86_400))
        fraction = f".{rng.randrange(1000):03d}" if number % 3 else ""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"
        yield NewMessage(f"msg-{number:08d}", sender_for(rng), "+14155550100", ts, text)


def build(path: Path | str, rows: int, corpus: str = "otp", arrivals: bool = False) -> None:
    """ROWS messages at revision 0001, into a SQLite file (a path) or a database URL, all
    stored (created_at) at the start of 2025; with `arrivals`, each stored a second after its
    ts instead, in ts order, as live traffic is (make_messages)."""
    url = path if isinstance(path, str) else f"sqlite:///{path}"
    upgrade_to_head(url, "0001")
    engine = create_database_engine(url)
    started = time.perf_counter()
    try:
        batch: list[dict] = []
        with engine.connect() as conn:
            dialect = dialect_of(conn)
            for position, message in enumerate(make_messages(rows, corpus=corpus, arrivals=arrivals), 1):
                created_at = _stored_after(message.ts) if arrivals else "2025-01-01T00:00:00.000000Z"
                batch.append(message_row(dialect, message, position, created_at))
                if len(batch) == 20_000:
                    with conn.begin():
                        conn.execute(insert(messages), batch)
                    batch = []
            if batch:
                with conn.begin():
                    conn.execute(insert(messages), batch)
    finally:
        engine.dispose()
    print(f"built {rows} messages at revision 0001 in {time.perf_counter() - started:.1f} s", flush=True)


def _stored_after(ts: str) -> str:
    """created_at a second after `ts` (of make_messages: whole seconds, maybe milliseconds)."""
    seconds = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + 1
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000000Z"


def upgrade_revision(url: str) -> str | None:
    """The revision the database at `url` is at (None when it has none)."""
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _loaded(url: str) -> bool:
    """Whether the database at `url` holds messages already (then it is measured as it is)."""
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("messages"):
                return False
            return conn.execute(select(messages.c.id).limit(1)).first() is not None
    finally:
        engine.dispose()


def cursor_at(url: str, fraction: float, rows: int) -> str:
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(messages.c.ts_instant, messages.c.message_id)
                .order_by(messages.c.ts_instant, messages.c.message_id)
                .offset(int(rows * fraction))
                .limit(1)
            ).one()
    finally:
        engine.dispose()
    return encode_cursor(Position(row.ts_instant, row.message_id))


def time_query(port: int, path: str, runs: int) -> tuple[float, float, int, int]:
    median, p90, status, size, _first = time_query_and_first(port, path, runs)
    return median, p90, status, size


def time_query_and_first(port: int, path: str, runs: int) -> tuple[float, float, int, int, float]:
    """Median, p90, the last status and size, and the first run's time (on PostgreSQL the
    first read of a long needle many texts hold counts it; later ones add to its total)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, status = [], 0
    size = 0
    try:
        for _ in range(runs):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            times.append((time.perf_counter() - started) * 1000)
            status, size = response.status, len(body)
    finally:
        conn.close()
    first = times[0]
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], status, size, first


def sweep_needles(url: str, seed: int = 9) -> list[str]:
    """Plain q needles of 1 to 64 characters: pieces of stored texts (so present), the rarest
    and the commonest stored grams of one to three characters, absent ones, repetitions."""
    rng = random.Random(seed)
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            last = conn.execute(select(messages.c.id).order_by(messages.c.id.desc()).limit(1)).scalar_one()
            texts = [
                text
                for text in conn.execute(
                    select(messages.c.text_folded).where(messages.c.id.in_([rng.randint(1, last) for _ in range(400)]))
                ).scalars()
                if text
            ]
            needles = []
            for length in (1, 2, 3):
                grams = select(text_grams.c.gram).where(func.length(text_grams.c.gram) == length)
                needles += conn.execute(grams.order_by(text_grams.c.texts).limit(2)).scalars().all()
                needles += conn.execute(grams.order_by(text_grams.c.texts.desc()).limit(2)).scalars().all()
    finally:
        engine.dispose()
    needles += ["q", "zq", "qzx"]  # in no text of either corpus
    for length in (4, 6, 8, 12, 16, 24, 32, 48, 64):
        longer = [text for text in texts if len(text) >= length]
        for text in rng.sample(longer, min(3, len(longer))):
            start = rng.randrange(len(text) - length + 1)
            needles.append(text[start : start + length])
    needles += ["a" * 64, ("you " * 16)[:64], ("the " * 16)[:64]]
    return list(dict.fromkeys(needles))


def sweep(port: int, url: str, runs: int) -> None:
    """Time each sweep needle as a plain q; print the slowest and every answer but 200."""
    results = []
    for needle in sweep_needles(url):
        median, _p90, status, _size, first = time_query_and_first(
            port, f"/messages?q={urllib.parse.quote(needle)}", runs
        )
        results.append((median, first, status, needle))
    results.sort(reverse=True)
    refused = [needle for _median, _first, status, needle in results if status != 200]
    print(f"plain q sweep: {len(results)} needles of 1 to 64 characters, {len(refused)} not answered 200")
    print(f"  {'median ms':>9} {'first ms':>9}")
    for median, first, status, needle in results[:8]:
        print(f"  {median:9.1f} {first:9.1f} {status} {needle!r}")
    print("  slowest first answers:")
    for median, first, status, needle in sorted(results, key=lambda result: -result[1])[:5]:
        print(f"  {median:9.1f} {first:9.1f} {status} {needle!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--corpus", choices=("otp", "sms"), default="otp")
    parser.add_argument("--database", type=Path, default=None, help="reuse (or build once into) this SQLite file")
    parser.add_argument("--postgres-url", default=None, help="an empty PostgreSQL database to load and measure")
    parser.add_argument(
        "--peer",
        type=Path,
        default=None,
        help="also time a plain LIKE design (bench/peer_like.py) in this SQLite file (built once)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="also time plain q needles of 1 to 64 characters, common, rare and absent"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="queries-bench-"))
    path = args.database or workdir / "messages.db"
    url = args.postgres_url or f"sqlite:///{path}"
    reused = _loaded(url) if args.postgres_url else path.exists()
    if not reused:
        build(url if args.postgres_url else path, args.rows, args.corpus)
    started = time.perf_counter()
    from_revision = upgrade_revision(url)
    upgrade_to_head(url)
    if from_revision != head_revision():
        print(f"upgrade from {from_revision} to {head_revision()}: {time.perf_counter() - started:.1f} s", flush=True)
        if args.postgres_url:
            engine = create_database_engine(url)
            try:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            finally:
                engine.dispose()
    deep_cursor = cursor_at(url, 0.9, args.rows)
    busiest = "+919800000001"  # rank 1: about one message in thirteen
    since = "2024-12-01T00:00:00Z"
    quoted = urllib.parse.quote
    common = COMMON_WORD if args.corpus == "otp" else SMS_COMMON_3
    queries = [
        ("/stats", "/stats"),
        ("first page", "/messages"),
        ("cursor page at 90% depth", f"/messages?cursor={deep_cursor}"),
        ("offset page at 90% depth", f"/messages?offset={int(args.rows * 0.9)}"),
        ("from", f"/messages?from={quoted(busiest)}"),
        ("since", f"/messages?since={since}"),
        ("q rare", f"/messages?q={RARE_WORD}"),
        ("q absent", "/messages?q=qqqzzzx"),
        (f"q common 3-letter ({common})", f"/messages?q={common}"),
        ("from + q + since", f"/messages?from={quoted(busiest)}&q={common}&since={since}"),
        ("q 2 characters", "/messages?q=ks" if args.corpus == "otp" else "/messages?q=qx"),
        ("q 4096 repeated letters", "/messages?q=" + "a" * 4096),
    ]
    if args.corpus == "sms":
        queries += [
            (f"q phrase of common words ({SMS_PHRASE})", f"/messages?q={quoted(SMS_PHRASE)}"),
            ("from + phrase + since", f"/messages?from={quoted(busiest)}&q={quoted(SMS_PHRASE)}&since={since}"),
            ("cursor page under since", f"/messages?since={since}&cursor={deep_cursor}"),
            ("q 2 characters, in no text", "/messages?q=zq"),
        ]
    if args.peer and not args.peer.exists():
        started = time.perf_counter()
        peer_like.build(args.peer, make_messages(args.rows, corpus=args.corpus))
        print(f"built the plain LIKE peer's database in {time.perf_counter() - started:.1f} s", flush=True)
    env = {"WEBHOOK_SECRET": "bench", "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    peer_env = {**env, "DATABASE_URL": f"sqlite:///{workdir / 'unused.db'}", "PEER_DATABASE": str(args.peer)}
    with contextlib.ExitStack() as servers:
        server = servers.enter_context(Server(env, workdir / "gunicorn.log"))
        peer = (
            servers.enter_context(Server(peer_env, workdir / "peer.log", app="bench.peer_like:app"))
            if args.peer
            else None
        )
        where = "PostgreSQL" if args.postgres_url else f"{path.stat().st_size / 1e6:.0f} MB SQLite database"
        print(f"{args.runs} runs each, one request at a time, {args.corpus} corpus, {where}")
        heading = f"{'query':42} {'median ms':>10} {'p90 ms':>8} {'status':>7}"
        print(heading + (f" {'peer LIKE ms':>12} {'peer/ours':>9}" if peer else ""))
        for name, query_url in queries:
            median, p90, status, _size = time_query(server.port, query_url, args.runs)
            line = f"{name:42} {median:10.1f} {p90:8.1f} {status:7d}"
            if peer:
                peer_median, _peer_p90, _status, _size = time_query(peer.port, query_url, args.runs)
                line += f" {peer_median:12.1f} {peer_median / median:9.1f}"
            print(line, flush=True)
        if args.sweep:
            sweep(server.port, url, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

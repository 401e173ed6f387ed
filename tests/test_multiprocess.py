"""Folding a dead worker's metric files into the archives."""

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from webhook_service.observability.multiprocess import fold_dead_worker

KEY = mmap_key("webhook_requests", "webhook_requests_total", ["result"], ["success"], "POST /webhook outcomes.")


def write(path, value: float) -> None:
    values = MmapedDict(str(path))
    values.write_value(KEY, value, 0.0)
    values.close()


def read(path) -> float:
    return {key: value for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path))}[KEY]


def test_dead_workers_add_up_in_one_archive_and_their_files_go(tmp_path):
    write(tmp_path / "counter_101.db", 3.0)
    write(tmp_path / "counter_102.db", 4.0)
    write(tmp_path / "counter_103.db", 5.0)  # still alive
    fold_dead_worker(str(tmp_path), 101)
    fold_dead_worker(str(tmp_path), 102)
    fold_dead_worker(str(tmp_path), 999)  # wrote nothing: nothing to do
    assert read(tmp_path / "counter_archive.db") == 7.0
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_103.db", "counter_archive.db"]


def test_a_worker_killed_before_its_file_was_sized_is_folded_as_nothing(tmp_path):
    # SIGKILL right after a worker starts can leave its file empty: the master's child_exit
    # hook must not fail on it (it would stop gunicorn from starting a new worker).
    write(tmp_path / "counter_101.db", 3.0)
    fold_dead_worker(str(tmp_path), 101)
    (tmp_path / "counter_102.db").touch()
    fold_dead_worker(str(tmp_path), 102)
    assert read(tmp_path / "counter_archive.db") == 3.0
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_archive.db"]


def test_a_scrape_passes_over_a_file_a_starting_worker_has_not_sized_yet(make_app, settings, tmp_path, monkeypatch):
    # prometheus_client creates a worker's file empty and sizes it a moment later; a scrape
    # that lands in between must still answer, with every other worker's values.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    write(metrics_dir / "counter_101.db", 3.0)
    (metrics_dir / "counter_102.db").touch()
    client = make_app(settings).test_client()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert 'webhook_requests_total{result="success"} 3.0' in response.get_data(as_text=True)

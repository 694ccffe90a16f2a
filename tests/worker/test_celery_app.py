"""The Celery application's configuration, from the settings."""

from __future__ import annotations

from app.settings import Settings
from worker.celery_app import FETCH_TASK, LEARN_TASK, celery_for, make_celery


def test_embedded_broker_lives_in_the_data_folder(tmp_path):
    settings = Settings(data_dir=tmp_path)
    celery = make_celery(settings)
    conf = celery.conf
    assert conf.broker_url == "filesystem://"
    options = conf.broker_transport_options
    assert options["data_folder_in"] == options["data_folder_out"]
    assert options["data_folder_in"].startswith(str(tmp_path / "broker"))
    assert (tmp_path / "broker" / "messages").is_dir()
    # Every folder the transport writes is in there, its exchange tables included (kombu's
    # default would be ./control in the worker's working directory).
    assert options["control_folder"] == str(tmp_path / "broker" / "control")
    assert (tmp_path / "broker" / "control").is_dir()
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert {q.name for q in conf.task_queues} == {"io", "gpu"}
    assert conf.task_routes == {FETCH_TASK: {"queue": "io"}, LEARN_TASK: {"queue": "gpu"}}
    assert conf.task_ignore_result


def test_redis_broker_waits_longer_than_a_task(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3",
                        broker_visibility_timeout=7200, broker_key_prefix="x:")
    conf = make_celery(settings).conf
    assert conf.broker_url == "redis://127.0.0.1:6379/3"
    assert conf.broker_transport_options == {"visibility_timeout": 7200,
                                             "global_keyprefix": "x:"}
    assert celery_for(settings) is celery_for(settings)


def test_tasks_are_registered_under_their_names():
    from worker import tasks

    assert tasks.fetch.name == FETCH_TASK and tasks.learn.name == LEARN_TASK

"""One attribute process shared by streams whose track ids collide, with a real child process."""

from __future__ import annotations

import os
import signal

import pytest
from test_worker import DominantColor, crop, expected
from waiting import wait_until

from edge.runtime.worker import AttributeWorker
from edge.service.attribute_hub import AttributeHub, Channel


@pytest.fixture
def hub():
    worker = AttributeWorker(DominantColor)
    worker.start()
    shared = AttributeHub(worker)
    yield shared
    shared.close()
    assert not worker.alive


def collect(channel: Channel, count: int) -> list[tuple[int, dict[str, str]]]:
    answers: list[tuple[int, dict[str, str]]] = []

    def enough() -> bool:
        answers.extend(channel.poll())
        return len(answers) >= count

    wait_until(enough, f"{count} answers")
    return answers


def test_each_stream_gets_the_answers_of_its_own_tracks_even_with_the_same_ids(hub):
    first, second, gone = hub.channel(), hub.channel(), hub.channel()
    for track_id in (7, 8):
        first.submit(track_id, crop(0))  # blue
        second.submit(track_id, crop(1))  # green
    gone.submit(7, crop(2))
    gone.close()  # its answer is dropped, not handed to another stream
    assert sorted(collect(first, 2)) == [(7, expected(0)), (8, expected(0))]
    assert sorted(collect(second, 2)) == [(7, expected(1)), (8, expected(1))]
    wait_until(lambda: hub.stats()["answers"] == 5, "the closed channel's answer")
    assert first.poll() == [] and second.poll() == [] and gone.poll() == []
    assert first.stats() == {"requests": 2, "answers": 2, "unanswered": 0}


def test_a_killed_process_is_restarted_while_no_stream_polls(hub):
    channel = hub.channel()
    channel.submit(1, crop(2))
    collect(channel, 1)
    os.kill(hub.worker.pid, signal.SIGKILL)
    wait_until(lambda: hub.stats()["restarts"] == 1 and hub.alive, "a restart")
    channel.submit(2, crop(0))
    assert collect(channel, 1) == [(2, expected(0))]

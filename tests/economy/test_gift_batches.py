"""Gift requests group-committed: many requests share a transaction, each gets its own answer."""

from __future__ import annotations

import threading

from economy_env import EconomyEnv

from giftflow.economy.service import GiftRequest
from giftflow.ledger import Applied, Failure, GroupCommitSettings, Result
from giftflow.ledger.group_commit import GroupCommitter

ROSE = 5655


def test_concurrent_gift_requests_share_commits_and_fail_alone(env: EconomyEnv) -> None:
    """Four threads send 60 Roses each through one gift committer: the 70 coins of each of
    three fans pay for 70 Roses' worth of their requests, the broke fan's requests are all
    ``insufficient_coins``, and no refusal disturbs a neighbour in its batch.
    """
    env.creator("star")
    for fan in ("a", "b", "c", "broke"):
        env.viewer(fan)
    for fan in ("a", "b", "c"):
        assert env.buy(fan, "web-70").ok
    committer: GroupCommitter[GiftRequest] = GroupCommitter(
        env.service.send_gifts, GroupCommitSettings(window_us=5_000), batch_max=50)
    answers: dict[str, list[Result]] = {fan: [] for fan in ("a", "b", "c", "broke")}
    lock = threading.Lock()

    def send(fan: str) -> None:
        for n in range(60):
            future = committer.submit(GiftRequest(fan, "star", ROSE, 1, "live", f"{fan}-{n}"))
            result = future.result(timeout=30)
            with lock:
                answers[fan].append(result)

    threads = [threading.Thread(target=send, args=(fan,)) for fan in answers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committer.close()
    for fan in ("a", "b", "c"):
        assert all(isinstance(result, Applied) for result in answers[fan]), fan
        assert env.service.wallet(fan)["coins"] == 10
    assert {r.code for r in answers["broke"] if isinstance(r, Failure)} == {"insufficient_coins"}
    assert len(answers["broke"]) == 60
    assert env.service.wallet("star")["diamonds_held"] == 180 * 5_000
    env.verify_ok()


def test_a_duplicate_key_in_one_batch_is_applied_once(env: EconomyEnv) -> None:
    """The same request twice in one batch moves coins once; the second gets the first's
    answer back as a replay, with the same gift id.
    """
    env.creator("star")
    env.viewer("fan")
    assert env.buy("fan", "web-70").ok
    request = GiftRequest("fan", "star", ROSE, 1, "live", "same-key")
    first, second = env.service.send_gifts([request, request])
    assert isinstance(first, Applied)
    assert isinstance(second, Applied)
    assert (first.replayed, second.replayed) == (False, True)
    assert first.response["gift"] == second.response["gift"]
    assert env.service.wallet("fan")["coins"] == 69
    env.verify_ok()

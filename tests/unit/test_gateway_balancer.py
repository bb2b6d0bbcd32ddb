"""Replica choice: least outstanding requests, prefix affinity with bounded load, cool-off."""

from __future__ import annotations

from collections import Counter

import pytest

from aima.gateway.balancer import Balancer, PrefixOwners, least_outstanding, prefix_affinity

pytestmark = pytest.mark.unit

REPLICAS = ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]


def test_least_outstanding_takes_the_idlest_replica() -> None:
    loads = {REPLICAS[0]: 3, REPLICAS[1]: 1, REPLICAS[2]: 2}
    assert least_outstanding(REPLICAS, loads, turn=7) == REPLICAS[1]


def test_ties_rotate_so_sequential_requests_spread() -> None:
    picks = {least_outstanding(REPLICAS, {}, turn=turn) for turn in range(3)}
    assert picks == set(REPLICAS)


def test_balancer_counts_requests_in_flight() -> None:
    balancer = Balancer()
    busy = balancer.pick(REPLICAS)
    assert busy is not None
    balancer.acquire(busy)
    others = {balancer.pick(REPLICAS) for _ in range(10)}
    assert busy not in others
    balancer.release(busy)
    assert balancer.outstanding(busy) == 0


def test_excluded_replicas_are_not_picked_and_none_when_all_are() -> None:
    balancer = Balancer()
    assert balancer.pick(REPLICAS, exclude=REPLICAS[:2]) == REPLICAS[2]
    assert balancer.pick(REPLICAS, exclude=REPLICAS) is None


def test_a_refused_replica_cools_off_unless_it_is_the_only_one() -> None:
    now = [100.0]
    balancer = Balancer(cool_off=5.0, clock=lambda: now[0])
    balancer.failed(REPLICAS[0])
    assert REPLICAS[0] not in {balancer.pick(REPLICAS) for _ in range(10)}
    assert balancer.pick(REPLICAS[:1]) == REPLICAS[0]
    now[0] += 6
    assert REPLICAS[0] in {balancer.pick(REPLICAS) for _ in range(10)}


def test_the_same_prefix_goes_to_the_same_replica() -> None:
    picks = {
        prefix_affinity(REPLICAS, {}, key=b"You are a helpful assistant.\nhello", load_factor=1.25)
        for _ in range(5)
    }
    assert len(picks) == 1


def test_prefixes_spread_over_the_replicas() -> None:
    spread = Counter(
        prefix_affinity(REPLICAS, {}, key=f"user {i}".encode(), load_factor=1.25) for i in range(300)
    )
    assert set(spread) == set(REPLICAS)
    assert min(spread.values()) > 50


def test_an_overloaded_affine_replica_hands_over_to_the_next() -> None:
    key = b"a long shared system prompt"
    preferred = prefix_affinity(REPLICAS, {}, key=key, load_factor=1.25)
    loads = {preferred: 4}  # total with this request 5, bound ceil(1.25 * 5/3) + 1 = 4
    assert prefix_affinity(REPLICAS, loads, key=key, load_factor=1.25) != preferred
    assert prefix_affinity(REPLICAS, {preferred: 1}, key=key, load_factor=1.25) == preferred


def test_affinity_through_the_balancer_is_bounded_by_its_requests_in_flight() -> None:
    balancer = Balancer(load_factor=1.25)
    key = b"conversation"
    first = balancer.pick(REPLICAS, affinity=key)
    assert first is not None
    assert all(balancer.pick(REPLICAS, affinity=key) == first for _ in range(5))
    for _ in range(3):
        balancer.acquire(first)
    assert balancer.pick(REPLICAS, affinity=key) != first


def test_new_prefixes_go_to_the_replica_owning_fewest_so_each_holds_its_share() -> None:
    replicas = [f"http://10.0.0.{n}:8000" for n in range(1, 5)]
    balancer = Balancer()
    owners = Counter(balancer.pick(replicas, affinity=f"system prompt {g}".encode()) for g in range(16))
    assert sorted(owners.values()) == [4, 4, 4, 4]  # hashing alone gives shares such as 6/5/3/2
    again = [balancer.pick(replicas, affinity=f"system prompt {g}".encode()) for g in range(16)]
    assert Counter(again) == owners


def test_a_busy_owner_passes_one_request_on_and_keeps_its_prefix() -> None:
    balancer = Balancer(load_factor=1.25)
    key = b"conversation"
    owner = balancer.pick(REPLICAS, affinity=key)
    assert owner is not None
    for _ in range(4):
        balancer.acquire(owner)
    assert balancer.pick(REPLICAS, affinity=key) != owner
    for _ in range(4):
        balancer.release(owner)
    assert balancer.pick(REPLICAS, affinity=key) == owner


def test_a_prefix_whose_replica_left_gets_a_new_owner() -> None:
    balancer = Balancer()
    key = b"conversation"
    owner = balancer.pick(REPLICAS, affinity=key)
    rest = [r for r in REPLICAS if r != owner]
    successor = balancer.pick(rest, affinity=key)
    assert successor in rest
    assert balancer.pick(REPLICAS, affinity=key) == successor


def test_prefix_owners_forget_the_least_recently_used_and_the_stale() -> None:
    owners = PrefixOwners(capacity=2, ttl=60.0)
    owners.give(b"a", "r1", now=0.0)
    owners.give(b"b", "r2", now=1.0)
    assert owners.owner(b"a", now=2.0) == "r1"  # now b is the least recently used
    owners.give(b"c", "r1", now=3.0)
    assert owners.owner(b"b", now=3.0) is None
    assert owners.owned == Counter({"r1": 2})
    assert owners.owner(b"a", now=62.5) is None  # used last at 2 s, c at 3 s: only a is stale
    assert owners.owned == Counter({"r1": 1})

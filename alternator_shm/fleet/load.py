"""Per-node load shared by every process: attempts in flight and recent attempt latency.

Each node's health entry ``i`` (:mod:`~alternator_shm.fleet.health`) has a load entry ``i`` of
two words (:data:`~alternator_shm.fleet.layout.L_IN_FLIGHT`, ``L_LATENCY``; 16 KiB for the
1024 entries): no second key table,
and a node's load lives exactly as long as its health entry. A recycled entry starts with what
the previous node left: its in-flight halves expire with their epochs, its latency decays.

**In flight, crash-safe by epochs.** A process killed in the middle of an attempt never
decrements what it incremented, so a plain counter would drift upwards forever. Instead time is
cut into epochs of :data:`EPOCH_S` seconds (``CLOCK_MONOTONIC // EPOCH``: every process of the
host agrees without a shared word), and the in-flight word of a node holds two 32-bit halves,
one per epoch parity, each ``(epoch tag: 16 bits, count: 16 bits)``:

* an attempt adds 1 to the half of the current epoch (a compare-and-swap that also recycles a
  half still tagged with an older epoch) and remembers which epoch it counted in;
* it subtracts 1 from that same half when it ends, only if the tag still matches;
* readers add the halves tagged with the current or the previous epoch; older halves count 0.

So a count can only outlive its process by two epochs (2 to 4 s): that is the reclamation, with
nothing to scan and no process table. Live attempts must not expire with them: every process
*renews* its outstanding attempts into the current epoch (a daemon thread that runs only while
the process has attempts outstanding, every half epoch; after a fork the child starts its own).
Counts are exact for live processes, up to the instant of a renewal.

A 16-bit tag wraps after 65536 epochs (36 h); a half left stale that long by a crash could
alias. Once per epoch and process, the first attempt clears the halves of every entry that
carry no recent tag, which closes that hole.

**Latency.** One word per node: ``(estimate of attempt latency in µs: 28 bits, samples so far,
saturating: 4 bits, monotonic ms of the last sample mod 2**32: 32 bits)``, updated with a plain
load and store: concurrent updates may lose a sample (an estimate tolerates that) but never
tear the word. The first :data:`WARMUP` samples keep their *minimum* (a node's first answers pay
for new connections; a slow node is slow every time), and routing treats the node as unknown
until then. Afterwards it is an EWMA whose samples are clipped to ``4 x estimate + 5 ms``, so
one scheduler hiccup does not mark a node slow while a node that stays slow is recognised within
a few answers (the clip doubles each time). For routing the estimate decays with a half-life of
:data:`DECAY_S` since its last sample, so a node that is avoided (and therefore not sampled) is
retried after a few seconds: that is how a recovered node gets its share back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from alternator_shm._forkmark import getpid as _getpid
from alternator_shm.fleet import layout
from alternator_shm.fleet.counter import CounterLockBusy, SharedWords
from alternator_shm.fleet.health import node_key

__all__ = [
    "DECAY_S",
    "EPOCH_S",
    "WARMUP",
    "Attempt",
    "Load",
    "LocalAttempt",
    "LocalLoad",
    "NodeLoad",
    "node_loads",
]

log = logging.getLogger("alternator_shm.fleet.load")

EPOCH_S = 2.0
_EPOCH_NS = int(EPOCH_S * 1e9)
DECAY_S = 1.0
#: Samples before routing trusts a node's estimate (their minimum, until then).
WARMUP = 3
_ALPHA = 0.25  # weight of a new latency sample
_CLIP_FACTOR = 4.0
_CLIP_SLACK_US = 5000.0

_HALF = 0xFFFF_FFFF
_TAG_MASK = 0xFFFF
_COUNT_MAX = 0xFFFF
_STAMP_MASK = 0xFFFF_FFFF
_EWMA_MAX = (1 << 28) - 1
_SAMPLES_MAX = 15

_INFLIGHT = layout.word_index(layout.LOAD_OFF + layout.L_IN_FLIGHT)
_LATENCY = layout.word_index(layout.LOAD_OFF + layout.L_LATENCY)
_STRIDE = layout.LOAD_ENTRY // layout.WORD
_CAP = layout.HEALTH_CAPACITY
_HEALTH_KEYS = layout.HEALTH_OFF // 8 + layout.H_KEY // 8
_HEALTH_STRIDE = layout.HEALTH_ENTRY // 8


def _epoch(now_ns: int) -> int:
    return now_ns // _EPOCH_NS


def _half(word: int, parity: int) -> int:
    return (word >> (32 * parity)) & _HALF


def _with_half(word: int, parity: int, half: int) -> int:
    shift = 32 * parity
    return (word & ~(_HALF << shift) & 0xFFFF_FFFF_FFFF_FFFF) | (half << shift)


def _count_in(word: int, epoch: int) -> int:
    """Attempts counted in ``word`` by the current or the previous epoch."""
    total = 0
    for e in (epoch, epoch - 1):
        half = _half(word, e & 1)
        if half >> 16 == e & _TAG_MASK:
            total += half & _COUNT_MAX
    return total


def _in_flight_offset(index: int) -> int:
    return layout.LOAD_OFF + index * layout.LOAD_ENTRY + layout.L_IN_FLIGHT


def _latency_word(index: int) -> int:
    return _LATENCY + index * _STRIDE


def _decoded_latency(
    word: int, now_ms: int, decay: bool, min_samples: int = 1
) -> float | None:
    """Latency estimate in ms from a latency word (None: fewer than ``min_samples``)."""
    if word == 0 or (word >> 32) & _SAMPLES_MAX < min_samples:
        return None
    ewma_us: float = word >> 36
    if decay:
        age_ms = (now_ms - (word & _STAMP_MASK)) & _STAMP_MASK
        if age_ms < 1 << 31:  # else: a stamp from the future (another clock): no decay
            ewma_us *= 0.5 ** (age_ms / (DECAY_S * 1000.0))
    return ewma_us / 1000.0


def _next_latency(old: int, sample_us: float, now_ns: int) -> int:
    """The latency word after one more sample (decay, clip, EWMA; see the module docstring)."""
    now_ms = now_ns // 1_000_000
    samples = (old >> 32) & _SAMPLES_MAX if old else 0
    if samples < WARMUP:
        value = sample_us if samples == 0 else min(sample_us, float(old >> 36))
    else:
        decayed = _decoded_latency(old, now_ms, True)
        assert decayed is not None
        estimate = decayed * 1000.0
        clipped = min(sample_us, _CLIP_FACTOR * estimate + _CLIP_SLACK_US)
        value = estimate + _ALPHA * (clipped - estimate)
    ewma = min(max(int(value), 1), _EWMA_MAX)
    samples = min(samples + 1, _SAMPLES_MAX)
    return (ewma << 36) | (samples << 32) | (now_ms & _STAMP_MASK)


@dataclass(frozen=True)
class NodeLoad:
    """One node's host-wide load at one instant."""

    in_flight: int
    #: smoothed attempt latency in ms (no decay); None before the first answer
    latency_ms: float | None


def _entry_index(words: memoryview) -> dict[int, int]:
    keys = words[_HEALTH_KEYS : _HEALTH_KEYS + _CAP * _HEALTH_STRIDE : _HEALTH_STRIDE].tolist()
    index: dict[int, int] = {}
    for i, k in enumerate(keys):
        if k and k not in index:
            index[k] = i
    return index


def node_loads(words: memoryview, nodes: tuple[str, ...]) -> dict[str, NodeLoad]:
    """Load of the table's nodes (read-only: works on a read-only mapping, for ``status``)."""
    index = _entry_index(words)
    now = time.monotonic_ns()
    epoch = _epoch(now)
    result: dict[str, NodeLoad] = {}
    for node in nodes:
        i = index.get(node_key(node))
        if i is None:
            result[node] = NodeLoad(0, None)
            continue
        flying = _count_in(int(words[_INFLIGHT + i * _STRIDE]), epoch)
        latency = _decoded_latency(int(words[_latency_word(i)]), now // 1_000_000, False)
        result[node] = NodeLoad(flying, latency)
    return result


class Attempt:
    """One outstanding attempt of this process (returned by :meth:`Load.begin`)."""

    __slots__ = ("epoch", "index", "owner", "start_ns")

    def __init__(self, owner: Load, index: int, epoch: int, start_ns: int) -> None:
        self.owner = owner  # the mapping it was counted in (a re-attach makes a new one)
        self.index = index  # load entry; -1 = not counted (untracked node, saturated count)
        self.epoch = epoch
        self.start_ns = start_ns

    def finish(self, answered: bool) -> None:
        """End this attempt on the load that counted it (see :meth:`Load.end`)."""
        self.owner.end(self, answered)


class Load:
    """One process's handle on the load entries of one mapping (thread-safe)."""

    def __init__(self, words: memoryview, ops: SharedWords) -> None:
        self._words = words
        self._ops = ops
        self._lock = threading.Lock()
        self._pid = _getpid()
        self._outstanding: set[Attempt] = set()
        self._renewer: threading.Thread | None = None
        self._swept_epoch = -1
        self._busy = False  # the last update found the flock counter lock held
        self.skipped = 0  # updates skipped for that reason (diagnostics, tests)

    def _after_fork(self) -> None:
        """Fork child: the parent's attempts are not ours, and its lock may have been held by
        a thread that does not exist here."""
        self._lock = threading.Lock()
        self._outstanding = set()
        self._renewer = None
        self._swept_epoch = -1
        self._pid = _getpid()

    # -- in flight -------------------------------------------------------------------------------

    def _cas(self, offset: int, old: int, new: int) -> bool:
        """compare_exchange for figures that are statistics only: on the flock backend, with
        its lock held by a stopped process, the update is skipped (False) instead of raising.
        A skipped +1 leaves the attempt untracked; a skipped -1 over-counts until its epoch
        expires. Neither may fail a call or send the process local."""
        try:
            ok = self._ops.compare_exchange(offset, old, new)
        except CounterLockBusy:
            self._busy = True
            self.skipped += 1
            return False
        self._busy = False
        return ok

    def _add(self, index: int, epoch: int, delta: int) -> bool:
        """Add ``delta`` (+1 / -1) to the ``epoch`` half of entry ``index``; False if refused
        (saturated, or a -1 on a half that was recycled meanwhile)."""
        offset = _in_flight_offset(index)
        parity = epoch & 1
        tag = epoch & _TAG_MASK
        for _ in range(1000):
            word = int(self._words[offset // 8])
            half = _half(word, parity)
            if half >> 16 == tag:
                count = (half & _COUNT_MAX) + delta
                if not 0 <= count <= _COUNT_MAX:
                    return False
            elif delta > 0:
                count = delta  # recycle a half left by an epoch nobody counts any more
            else:
                return False
            new = _with_half(word, parity, (tag << 16) | count)
            if self._cas(offset, word, new):
                return True
        return False  # pathological contention: give up on this count rather than spin

    def begin(self, index: int | None) -> Attempt:
        """An attempt to the node of load entry ``index`` starts now (None: untracked)."""
        now = time.monotonic_ns()
        epoch = _epoch(now)
        if index is None or not self._add(index, epoch, +1):
            return Attempt(self, -1, epoch, now)
        attempt = Attempt(self, index, epoch, now)
        if self._pid != _getpid():
            self._after_fork()
        with self._lock:
            self._outstanding.add(attempt)
            start_renewer = self._renewer is None
            if start_renewer:
                self._renewer = threading.Thread(
                    target=self._renew_loop, name="alternator-shm-load", daemon=True
                )
            sweep = self._swept_epoch != epoch
            self._swept_epoch = epoch
        if start_renewer:
            assert self._renewer is not None
            self._renewer.start()
        if sweep:
            self._sweep(epoch)
        return attempt

    def end(self, attempt: Attempt, answered: bool) -> None:
        """The attempt is over; ``answered``: an HTTP answer came back (its latency counts)."""
        now = time.monotonic_ns()
        if attempt.index >= 0 and self._pid == _getpid():
            with self._lock:
                self._outstanding.discard(attempt)
                epoch = attempt.epoch
            self._add(attempt.index, epoch, -1)
            if answered:
                self._sample(attempt.index, (now - attempt.start_ns) / 1000.0, now)

    def _renew_loop(self) -> None:
        """Move this process's outstanding attempts into the current epoch, every half epoch,
        while it has any; then exit (``begin`` starts a new one when needed)."""
        while True:
            time.sleep(EPOCH_S / 2)
            with self._lock:
                if self._pid != _getpid() or not self._outstanding:
                    if self._pid == _getpid():
                        self._renewer = None
                    return
                epoch = _epoch(time.monotonic_ns())
                stale = [a for a in self._outstanding if a.epoch < epoch]
                for a in stale:
                    # Add to the new epoch first: a crash in between only over-counts, and
                    # only until the old epoch expires.
                    if self._add(a.index, epoch, +1):
                        self._add(a.index, a.epoch, -1)
                        a.epoch = epoch

    def _sweep(self, epoch: int) -> None:
        """Zero every in-flight half whose tag is neither this epoch nor the previous one."""
        base = _INFLIGHT
        values = self._words[base : base + _CAP * _STRIDE : _STRIDE].tolist()
        live = {epoch & _TAG_MASK, (epoch - 1) & _TAG_MASK}
        for i, word in enumerate(values):
            if not word:
                continue
            new = word
            for parity in (0, 1):
                half = _half(word, parity)
                if half and half >> 16 not in live:
                    new = _with_half(new, parity, 0)
            if new != word and not self._cas(_in_flight_offset(i), word, new) and self._busy:
                return  # the flock backend's lock is held by a stopped process

    def in_flight(self, index: int) -> int:
        return _count_in(int(self._words[_INFLIGHT + index * _STRIDE]), _epoch(time.monotonic_ns()))

    # -- latency ---------------------------------------------------------------------------------

    def _sample(self, index: int, sample_us: float, now_ns: int) -> None:
        i = _latency_word(index)
        self._words[i] = _next_latency(int(self._words[i]), sample_us, now_ns)

    def latency_ms(self, index: int, *, decay: bool = True) -> float | None:
        """The node's latency estimate in ms. By default as routing sees it: decayed since its
        last sample, None until :data:`WARMUP` samples; else the stored estimate (stats)."""
        now_ms = time.monotonic_ns() // 1_000_000
        word = int(self._words[_latency_word(index)])
        return _decoded_latency(word, now_ms, decay, WARMUP if decay else 1)

    def outstanding(self) -> int:
        """Attempts of this process now counted (tests, diagnostics)."""
        with self._lock:
            return len(self._outstanding) if self._pid == _getpid() else 0


class LocalAttempt:
    """One outstanding attempt counted by a :class:`LocalLoad`."""

    __slots__ = ("node", "owner", "pid", "start_ns")

    def __init__(self, owner: LocalLoad, node: str, start_ns: int, pid: int) -> None:
        self.owner = owner
        self.node = node
        self.start_ns = start_ns
        self.pid = pid

    def finish(self, answered: bool) -> None:
        self.owner.end_attempt(self, answered)


class LocalLoad:
    """The same figures for a process balancing alone (``shared="auto"`` fallback, ``"off"``).

    Process memory, so no epochs are needed: nothing outlives the process. Same estimator and
    the same ``begin`` / ``end`` / ``node_load`` contract as the shared fleet's, keyed by node.
    After a fork the child starts empty (the parent's attempts are not its own).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = _getpid()
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, int] = {}

    def _check_fork(self) -> None:
        if self._pid != _getpid():
            self._lock = threading.Lock()
            self._in_flight = {}
            self._latency = {}
            self._pid = _getpid()

    def begin_attempt(self, node: str) -> LocalAttempt:
        self._check_fork()
        with self._lock:
            self._in_flight[node] = self._in_flight.get(node, 0) + 1
        return LocalAttempt(self, node, time.monotonic_ns(), self._pid)

    def end_attempt(self, attempt: LocalAttempt, answered: bool) -> None:
        node, started, pid = attempt.node, attempt.start_ns, attempt.pid
        now = time.monotonic_ns()
        self._check_fork()
        if pid != self._pid:
            return
        with self._lock:
            count = self._in_flight.get(node, 0)
            if count > 1:
                self._in_flight[node] = count - 1
            else:
                self._in_flight.pop(node, None)
            if answered:
                old = self._latency.get(node, 0)
                self._latency[node] = _next_latency(old, (now - started) / 1000.0, now)

    def node_load(self, node: str) -> tuple[int, float | None]:
        """(in flight, latency ms decayed since the last sample) as for routing."""
        self._check_fork()
        now_ms = time.monotonic_ns() // 1_000_000
        return self._in_flight.get(node, 0), _decoded_latency(
            self._latency.get(node, 0), now_ms, True, WARMUP
        )

    def node_loads(self, nodes: tuple[str, ...]) -> dict[str, NodeLoad]:
        """Figures for ``stats()`` (latency without decay)."""
        self._check_fork()
        now_ms = time.monotonic_ns() // 1_000_000
        return {
            n: NodeLoad(
                self._in_flight.get(n, 0),
                _decoded_latency(self._latency.get(n, 0), now_ms, False),
            )
            for n in nodes
        }

"""Byte layout of the shared segment: the only module that knows an offset.

Every multi-byte word is native-endian and 8-byte aligned, so a native ``struct``/memoryview
``'Q'`` access is one aligned load or store. Words written by different parties (the leader, any
worker) live on separate 128-byte lines so that the hot counter does not share a cache line with
the publish word (and aarch64's 128-byte prefetch pairs do not couple them either).

The layout version is part of the segment *name*, so processes running an older or newer
alternator-shm never open each other's segments; a version mismatch inside a segment therefore
means corruption, not skew.
"""

from __future__ import annotations

from typing import Final

LAYOUT_VERSION: Final = 3  # 3: ROTATION_OFF (old processes would ignore it: no sharing)
MAGIC: Final = 0x52524C42_0000_0003  # "RRLB" + layout; written last by the initialiser
ENDIAN_PROBE: Final = 0x0102030405060708
WORD: Final = 8

# -- header -------------------------------------------------------------------------------------
HEADER_SIZE: Final = 0x1000

MAGIC_OFF: Final = 0x000
LAYOUT_OFF: Final = 0x008  # u32 layout version, u32 header size
GEOMETRY_OFF: Final = 0x010  # u32 slot size, u32 slot count
BACKEND_OFF: Final = 0x018  # u32 counter backend code, u32 flags
ABI_OFF: Final = 0x020  # u64 abi tag
ENDIAN_OFF: Final = 0x028  # u64 endian probe
CREATED_OFF: Final = 0x030  # u64 creation wall-clock ns (diagnostics only)
HEALTH_GEOMETRY_OFF: Final = 0x038  # u32 health capacity, u32 health entry size
# u64 random, written once at creation: routing picks (counter + rotation) mod n, so hosts
# deployed together do not all start on the same node (scripts/sim_many_hosts.py)
ROTATION_OFF: Final = 0x040

PUBLISH_OFF: Final = 0x080  # (generation << 1) | active slot; own line
# -- fencing (owned by fleet/fencing.py; written only under the commit lock, byte LOCK_COMMIT) --
EPOCH_OFF: Final = 0x088  # the leader epoch (fencing token); bumped by every new leader and close
PUBLISHED_EPOCH_OFF: Final = 0x090  # epoch of the writer of the last commit (never decreases)
LEADER_MODE_OFF: Final = 0x098  # 0 none, 1 holds the leader lock, 2 took over a wedged leader
TAKEOVERS_OFF: Final = 0x0A0  # takeovers of a wedged leader (diagnostics)
# the epoch of the takeover leader that holds its deputy byte (deputy_byte(epoch)): when that
# byte is free while the epoch and mode are still its, the takeover leader is gone (killed or
# closed): no need to wait for its heartbeat to go stale
DEPUTY_EPOCH_OFF: Final = 0x0A8
DEPUTY_BYTE_OFF: Final = 0x0B0  # which lock-file byte that takeover leader holds

LEADER_PID_OFF: Final = 0x100
LEADER_START_OFF: Final = 0x108  # /proc/<pid>/stat starttime ticks: (pid, start) is reuse-proof
LEADER_SINCE_OFF: Final = 0x110  # monotonic ns
HEARTBEAT_OFF: Final = 0x118  # monotonic ns, every leader loop (fenced: fencing.py)
LAST_SUCCESS_OFF: Final = 0x120  # monotonic ns of the *start* of the last successful refresh
LAST_ATTEMPT_OFF: Final = 0x128  # monotonic ns of the last refresh attempt
FAILURES_OFF: Final = 0x130  # consecutive refresh failures
REFRESHES_OFF: Final = 0x138  # successful refreshes
ATTEMPTS_OFF: Final = 0x140  # refresh attempts (success or failure)
COUNTER_AT_REFRESH_OFF: Final = 0x148  # counter value at the last refresh (active vs idle)
# monotonic ns of the last attempt that did not advance the counter (key-route affinity plans):
# traffic too, so the refresher keeps its active period (plain store: a hint, not a count)
ACTIVITY_OFF: Final = 0x158
ERROR_LEN_OFF: Final = 0x150  # u32 length of the last refresh error text, u32 reserved

COUNTER_OFF: Final = 0x180  # the round-robin counter; own line
COUNTER_HOLDER_OFF: Final = 0x188  # flock backend: pid of the last counter-lock holder

REQUEST_OFF: Final = 0x200  # refresh requests (followers add 1); own line
REQUEST_SERVED_OFF: Final = 0x208  # the request value the leader's last attempt answered

HEALTH_VERSION_OFF: Final = 0x280  # bumped on every health state change; own line
HEALTH_OVERFLOW_OFF: Final = 0x288  # nodes that found no free health slot
HEALTH_MODE_OFF: Final = 0x290  # 1 = node health on, 2 = off (node_health=False); leader-written

NAMESPACE_LEN_OFF: Final = 0x300  # u32 length, u32 reserved
NAMESPACE_OFF: Final = 0x308
NAMESPACE_MAX: Final = 0x0F8  # 248 bytes, truncated (diagnostics: lets `status` name a segment)

ERROR_OFF: Final = 0x400
ERROR_MAX: Final = 0x100  # last refresh error text, truncated

# Options the leader runs with (fleet/identity.py): "name=digest" lines, self-validating.
IDENTITY_LEN_OFF: Final = 0xC00  # u32 length, u32 reserved
IDENTITY_DIGEST_OFF: Final = 0xC08  # blake2b-128 of the text
IDENTITY_OFF: Final = 0xC20
IDENTITY_MAX: Final = HEADER_SIZE - IDENTITY_OFF

# -- health: one 48-byte entry per node, claimed by key (owned by fleet/health.py) -------------
# 1024 x 48 B = 48 KiB: one entry per node of the table plus room for departed nodes' history.
HEALTH_OFF: Final = HEADER_SIZE
HEALTH_CAPACITY: Final = 1024  # = MAX_NODES: a full table never overflows the health entries
HEALTH_ENTRY: Final = 48
# fields of one entry, relative to its start
H_KEY: Final = 0x00  # 64-bit hash of the canonical endpoint, 0 = free
H_STATUS: Final = 0x08  # CAS-only word: claim tag, generation, state, failures, successes
H_PICKS: Final = 0x10  # attempts routed to the node (fetch-add; stats)
H_FAILURES: Final = 0x18  # traffic failures ever reported (fetch-add; stats)
H_UPDATED: Final = 0x20  # monotonic ns of the last accepted observation (diagnostics)
H_PROBED: Final = 0x28  # monotonic ns the leader last started a probe of the node
HEALTH_SIZE: Final = HEALTH_CAPACITY * HEALTH_ENTRY

# -- node table: two self-validating slots --------------------------------------------------------
SLOTS_OFF: Final = HEALTH_OFF + HEALTH_SIZE
# 92 KiB per slot keeps the whole segment under 256 KiB: MAX_NODES nodes of up to 90 bytes each
# on average ("https://[v6 address]:port" is at most 55); validate_nodes refuses more.
SLOT_SIZE: Final = 92 * 1024
SLOT_COUNT: Final = 2
S_GENERATION: Final = 0x00  # 0 = invalid / being written
S_LENGTH: Final = 0x08  # u32 payload length
S_FORMAT: Final = 0x0C  # u32 payload format
S_DIGEST: Final = 0x10  # blake2b-128(generation ‖ length ‖ format ‖ payload)
S_PAYLOAD: Final = 0x20
DIGEST_SIZE: Final = 16
PAYLOAD_MAX: Final = SLOT_SIZE - S_PAYLOAD
FORMAT_LINES: Final = 1  # UTF-8 node strings separated by "\n"
MAX_NODES: Final = 1024

# -- load: attempts in flight and latency per node (owned by fleet/load.py) -----------------------
# Load entry i belongs to the node of health entry i: two words per node, 16 KiB in all.
LOAD_OFF: Final = SLOTS_OFF + SLOT_COUNT * SLOT_SIZE
LOAD_ENTRY: Final = 16
L_IN_FLIGHT: Final = 0x00  # two halves (one per epoch parity): u16 epoch tag << 16 | u16 count
L_LATENCY: Final = 0x08  # estimate us (28 bits) | samples (4) | monotonic ms of last sample (32)
LOAD_SIZE: Final = HEALTH_CAPACITY * LOAD_ENTRY

TOTAL_SIZE: Final = LOAD_OFF + LOAD_SIZE

# -- counter backends (recorded in the header; every attacher must use the same one) -------------
BACKEND_FLOCK: Final = 1
BACKEND_ATOMIC: Final = 2
BACKEND_NAMES: Final = {BACKEND_FLOCK: "flock", BACKEND_ATOMIC: "atomic"}
BACKEND_CODES: Final = {name: code for code, name in BACKEND_NAMES.items()}

# -- lock file bytes (Linux OFD locks; POSIX record locks elsewhere) -----------------------------
LOCK_LEADER: Final = 0  # exclusive, held by the leader while it leads
LOCK_INIT: Final = 1  # exclusive, brief: serialises creation, repair and cleanup
LOCK_ATTACHED: Final = 2  # shared by every attached process; exclusive only for cleanup
# 3: once the mutex of takeover attempts; no longer taken (a follower SIGSTOPped holding it
# blocked every takeover): the epoch check under LOCK_COMMIT alone picks the one winner
LOCK_TAKEOVER: Final = 3
LOCK_COMMIT: Final = 4  # exclusive, brief: epoch check + write of fenced words (fencing.py)
# A takeover leader (which cannot hold LOCK_LEADER: a stopped process still does) holds a deputy
# byte, the first free one from deputy_byte(its epoch) on, recorded at DEPUTY_BYTE_OFF; several
# bytes, so a stopped process still holding one never stands in the way of the next deputy.
LOCK_DEPUTY_BASE: Final = 64
DEPUTY_BYTES: Final = 64


def slot_offset(index: int) -> int:
    """Start of node-table slot ``index``."""
    return SLOTS_OFF + index * SLOT_SIZE


def health_offset(index: int) -> int:
    """Start of health entry ``index``."""
    return HEALTH_OFF + index * HEALTH_ENTRY


def load_offset(index: int) -> int:
    """Start of load entry ``index`` (the node of health entry ``index``)."""
    return LOAD_OFF + index * LOAD_ENTRY


def deputy_byte(epoch: int) -> int:
    """The first lock-file byte a takeover leader of ``epoch`` tries to hold while it leads."""
    return LOCK_DEPUTY_BASE + epoch % DEPUTY_BYTES


def word_index(offset: int) -> int:
    """Index of the aligned 8-byte word at ``offset`` in a ``'Q'`` view of the segment."""
    return offset // WORD


assert TOTAL_SIZE % 4096 == 0
assert TOTAL_SIZE <= 256 * 1024
assert L_LATENCY + WORD <= LOAD_ENTRY
assert HEALTH_ENTRY % WORD == 0 and SLOT_SIZE % WORD == 0

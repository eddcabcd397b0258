def fetch_add(address: int, delta: int, /) -> int: ...
def compare_exchange(address: int, expected: int, desired: int, /) -> bool: ...
def lock_free() -> bool: ...
def pick(
    mark: int,
    token: int,
    publish_addr: int,
    publish: int,
    version_addr: int,
    version: int,
    counter_addr: int,
    rotation: int,
    pick_addrs: tuple[int, ...],
    /,
) -> int: ...

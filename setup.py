"""Optional C accelerator for the lock-free counter (everything else is in pyproject.toml).

``optional=True``: an install without a C compiler still succeeds and falls back to libatomic
through ctypes, then to the flock backend (see ``alternator_shm/fleet/counter.py``); without
``_mapguard``, a segment truncated underneath a process kills it (``fleet/mapguard.py``); without
``_pidcache``, every fork check is an ``os.getpid()`` system call (``_forkmark.py``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alternator_shm.fleet._atomic",
            sources=["alternator_shm/fleet/_atomic.c"],
            optional=True,
        ),
        Extension(
            "alternator_shm._pidcache",
            sources=["alternator_shm/_pidcache.c"],
            optional=True,
        ),
        Extension(
            "alternator_shm.fleet._mapguard",
            sources=["alternator_shm/fleet/_mapguard.c"],
            optional=True,
        ),
    ]
)

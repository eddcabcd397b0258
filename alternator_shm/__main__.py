"""``python -m alternator_shm``: the same CLI as the ``alternator-shm`` console script."""

from alternator_shm.cli import main

raise SystemExit(main())

"""The async (aiobotocore) client path: same routing and fleet, aiohttp on the wire.

Installed with the extra ``alternator-shm[async]``; reached through
:meth:`alternator_shm.Helper.new_async_dynamodb_client`.
"""

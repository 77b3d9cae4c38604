import asyncio
from tests.backends.harness import harness
from fleet.backends.agones import ALLOCATE_ATTEMPTS
async def test_dbg(redis_url, tmp_path):
    async with harness("agones", redis_url, tmp_path, buffer=2, max=4) as h:
        await h.ready(2)
        h.sim.drop_allocation_responses(ALLOCATE_ATTEMPTS)
        print(await h.claim("ann"))
        await asyncio.sleep(2)
        for r in await h.backend.observe(): print(r)
        for g in h.sim.gameservers("sd"): print(g["metadata"]["name"], g["status"]["state"], g["metadata"]["labels"])
        print(await h.store.pods(["default"]))
        assert 0

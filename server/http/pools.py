"""The HTTP app's thread pools: listings (and deletes), and pulls, each bounded and apart.

Name resolution has its own pool in the engine (`Engine.resolving`); a
new file's hash runs in the store's own threads (`models.store`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from emberd.server.core.pools import WorkPool

# Listings read every manifest and may wait for a new file's hash.
LISTING_WORKERS = 4
# Pulls wait on registries; more than this many at once queue.
PULL_WORKERS = 8


@dataclass(frozen=True)
class HttpPools:
    """The pools the routes run their blocking work in."""

    listing: WorkPool = field(default_factory=lambda: WorkPool("list", LISTING_WORKERS))
    pulls: WorkPool = field(default_factory=lambda: WorkPool("pull", PULL_WORKERS))

    def close(self) -> None:
        """Drop queued work; threads end once their work is done."""
        self.listing.close()
        self.pulls.close()


def pools_of(request: Request) -> HttpPools:
    """The pools of the app serving `request`."""
    pools: HttpPools = request.app.state.pools
    return pools

"""Points on the Earth: validated coordinates, great-circle distance, and the H3 cells that index drivers.

Distances are haversine on a sphere of the Earth's mean radius (the one H3 uses), in metres. The same formula
is the SQL function ``taxi_distance_m`` on both databases, so a list and a broadcast never disagree about who
is near. H3 cells (Uber's hexagonal grid) have no seam at the antimeridian and no singularity at the poles,
which a latitude/longitude grid would.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import h3

EARTH_RADIUS_M = 6371007.180918475
# Cells whose average edge is about a quarter of the search radius: a search reads 30-50 cells covering about 2.3
# times the circle's area (measured in Berlin from 800 m to 5 km; more for a radius between two resolutions, e.g.
# 3.3 times at 10 km). Finer cells read less area but many more keys, and cost more to list.
_EDGES_PER_RADIUS = 4
_FINEST = 10


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lng: float

    def out(self) -> dict[str, float]:
        return {"lat": self.lat, "lng": self.lng}


def distance_m(a_lat: float, a_lng: float, b_lat: float, b_lng: float) -> float:
    """The great-circle distance between two points, metres (haversine)."""
    p1, p2 = math.radians(a_lat), math.radians(b_lat)
    dlat, dlng = p2 - p1, math.radians(b_lng - a_lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def resolution_for(radius_m: float) -> int:
    """The finest H3 resolution whose average edge is at least a quarter of ``radius_m``."""
    for res in range(_FINEST, -1, -1):
        if h3.average_hexagon_edge_length(res, "m") * _EDGES_PER_RADIUS >= radius_m:
            return res
    return 0


def cell_of(lat: float, lng: float, res: int) -> str:
    return str(h3.latlng_to_cell(lat, lng, res))


def _circumradius_m(cell: str, lat: float, lng: float) -> float:
    """The farthest a point of ``cell`` can be from its centre (``lat``, ``lng``)."""
    return max(distance_m(lat, lng, b_lat, b_lng) for b_lat, b_lng in h3.cell_to_boundary(cell))


def cells_within(lat: float, lng: float, radius_m: float, res: int) -> tuple[str, ...]:
    """Every cell of resolution ``res`` that may hold a point within ``radius_m`` of (``lat``, ``lng``)."""
    return _cells_near(h3.latlng_to_cell(lat, lng, res), radius_m)


@functools.lru_cache(maxsize=4096)
def _cells_near(origin: str, radius_m: float) -> tuple[str, ...]:
    """The cells that may hold a point within ``radius_m`` of any point of the cell ``origin``.

    A point lies at most its cell's circumradius from the cell's centre, so a cell qualifies only if the two
    centres are within radius + both circumradii (checked exactly). Candidates come from a disk of cells wide
    enough even where cells are smallest: H3 cells vary about twofold in size around the globe. Cached per
    origin cell, so a busy area costs one computation.
    """
    o_lat, o_lng = h3.cell_to_latlng(origin)
    reach = radius_m + _circumradius_m(origin, o_lat, o_lng)
    average_edge = h3.average_hexagon_edge_length(h3.get_resolution(origin), "m")
    # Neighbouring centres are at least sqrt(3) x the edge apart; half the average edge bounds the smallest,
    # and 1.5 x the average bounds the largest circumradius.
    k = math.ceil((reach + 1.5 * average_edge) / (math.sqrt(3) * average_edge * 0.5))
    found = []
    for cell in h3.grid_disk(origin, k):
        c_lat, c_lng = h3.cell_to_latlng(cell)
        if distance_m(o_lat, o_lng, c_lat, c_lng) <= reach + _circumradius_m(cell, c_lat, c_lng):
            found.append(str(cell))
    return tuple(found)


def rounded(value: float, places: int = 3) -> float:
    """A coordinate rounded to ``places`` decimals (3: about 100 m), for showing roughly where someone is."""
    return round(value, places)

"""A worker for the kill -9 test: ingests numbered batches (printing ACK n after each returns) or delivers.

Usage: python crash_worker.py ingest START RECORDS_PER_BATCH | deliver
The configuration comes from the environment (MXCAT_DATA_DIR, MXCAT_DELIVERY_LEASE...).
"""

from __future__ import annotations

import sys

from mxcat.client import Catalogue
from mxcat.records import Batch, Provenance, Subject


def batch(n: int, per: int) -> Batch:
    ds = Subject(facility="TEST", beamline="BL1", proposal="p1", session="s1", sample=f"x{n % 7}", dataset=f"d{n}")
    b = Batch(ds, Provenance(run=f"run{n}", program="crash-test"))
    b.add_table("mmcat_live_image", [{"image_number": i, "n_spots_total": n + i} for i in range(per)])
    for i in range(per):
        b.add("mmcat_collection.exposure_time", 0.001 * (n + 1), subject=ds.child(dataset=f"d{n}_{i}"))
    return b


def main() -> None:
    mode = sys.argv[1]
    with Catalogue.open() as cat:
        if mode == "ingest":
            start, per = int(sys.argv[2]), int(sys.argv[3])
            n = start
            while True:
                cat.ingest(batch(n, per), deliver_timeout=0.02 if n % 3 == 0 else None)
                print(f"ACK {n}", flush=True)
                n += 1
        else:
            import threading

            cat.start_delivery(idle=0.01)
            threading.Event().wait()


if __name__ == "__main__":
    main()

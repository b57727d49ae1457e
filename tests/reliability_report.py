"""Print the reliability table from tests/output/reliability.jsonl (written by tests/integration/reliability)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

LEDGER = Path(__file__).resolve().parent / "output" / "reliability.jsonl"
ROWS = [
    ("fault", "faults injected / survived"),
    ("bad_input", "bad inputs tried / handled (clear message, no traceback, no change)"),
    ("secret", "secret scans / clean (hits shown in the last column)"),
    ("check_mode", "check-mode snapshots / identical (mutations in the last column)"),
    ("idempotence", "second runs / changed=0 (changed tasks in the last column)"),
]


def main() -> int:
    if not LEDGER.exists() or not LEDGER.read_text().strip():
        print(f"no ledger at {LEDGER}: run `make reliability-report` (it runs the suite first)", file=sys.stderr)
        return 1
    records = [json.loads(line) for line in LEDGER.read_text().splitlines() if line.strip()]
    by_category = defaultdict(list)
    for record in records:
        by_category[record["category"]].append(record)
    width = max(len(row[1]) for row in ROWS)
    print(f"{'':{width}}  {'tried':>6}  {'held':>6}  {'count':>6}")
    for category, label in ROWS:
        rows = by_category.get(category, [])
        print(f"{label:{width}}  {len(rows):>6}  {sum(r['held'] for r in rows):>6}  {sum(r['count'] for r in rows):>6}")
    broken = [r for r in records if not r["held"]]
    for record in broken:
        print(f"NOT HELD: [{record['category']}] {record['case']}: {record['detail']}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

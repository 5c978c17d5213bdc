"""``python -m stream.topic_schemas``: regenerate the committed topic schemas and the README's topics and alarms tables
(from a source checkout; ``--check`` only reports whether they are up to date, exit 1 when not)."""

from __future__ import annotations

import sys

from stream.stages.alarms import alarms_table
from stream.topic_schemas import (
    SCHEMA_DIR,
    committed_schemas,
    render_topics_table,
    replace_table,
    table_in,
    topic_json_schemas,
    write_schemas,
)

README = SCHEMA_DIR.parent.parent / "README.md"


def main(argv: list[str]) -> int:
    schemas = topic_json_schemas()
    table = render_topics_table(schemas)
    alarms = alarms_table()
    readme = README.read_text(encoding="utf-8")
    if "--check" in argv:
        stale = (
            committed_schemas() != schemas
            or table_in(readme) != table
            or table_in(readme, "alarms-table") != alarms
        )
        print("topic schemas and README tables: " + ("STALE" if stale else "up to date"))
        return int(stale)
    # raises before anything is written when the README lacks the markers
    new_readme = replace_table(replace_table(readme, table), alarms, "alarms-table")
    for path in write_schemas(SCHEMA_DIR):
        print(f"wrote {path}")
    for old in SCHEMA_DIR.glob("*.schema.json"):
        if old.name.removesuffix(".schema.json") not in schemas:
            old.unlink()
            print(f"removed {old}")
    README.write_text(new_readme, encoding="utf-8")
    print(f"updated the topics and alarms tables of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

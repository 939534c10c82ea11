"""MkDocs hooks: publish the benchmark records that docs/benchmarks.md links to.

The benchmark page links its JSON records as `../benchmarks/results/NAME.json`,
a path that works when the page is read in the repository. That path leaves
the docs folder, so `mkdocs build --strict` would reject it. These hooks copy
the records into the site under `benchmark-results/` and point the links
there, so the same page works in both places.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

RECORDS_FOLDER = Path(__file__).parent / "benchmarks" / "results"
SITE_FOLDER = "benchmark-results"
RECORD_LINK = re.compile(r"\]\(\.\./benchmarks/results/([^)/]+\.json)\)")


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add each JSON record of the benchmarks to the site as a static file."""
    for record in sorted(RECORDS_FOLDER.glob("*.json")):
        files.append(
            File.generated(config, f"{SITE_FOLDER}/{record.name}", abs_src_path=str(record))
        )
    return files


def on_page_markdown(
    markdown: str, page: Page, config: MkDocsConfig, files: Files, **kwargs: Any
) -> str:
    """Point links to a benchmark record at its copy in the site."""
    return RECORD_LINK.sub(rf"]({SITE_FOLDER}/\1)", markdown)

#!/usr/bin/env python3
"""docs/*.md and README.md as standalone HTML pages (python3-markdown), with links
between the pages rewritten to the .html files, for the offline install media.
The output depends only on the input files.
    usage: scripts/docs-html.py SOURCE-ROOT OUT-DIR
"""
import html
import pathlib
import re
import shutil
import sys

import markdown

root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
pages = sorted((root / "docs").glob("*.md")) + [root / "README.md"]
for page in pages:
    text = page.read_text(encoding="utf-8")
    # Links to other pages of the set point to their HTML twins.
    text = re.sub(r"\]\((?:\.\./|docs/)?([A-Za-z0-9_-]+)\.md(#[^)]*)?\)",
                  lambda m: f"]({'index' if m.group(1) == 'README' else m.group(1)}.html{m.group(2) or ''})",
                  text)
    body = markdown.markdown(text, extensions=["tables", "fenced_code", "toc"])
    title = page.stem if page.name != "README.md" else "makproxy"
    name = "index.html" if page.name == "README.md" else page.stem + ".html"
    (out / name).write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head><body>\n{body}\n</body></html>\n",
        encoding="utf-8")
for image in sorted((root / "docs").glob("*.png")):
    shutil.copyfile(image, out / image.name)

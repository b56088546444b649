#!/usr/bin/env python3
"""Every relative link in the repository's Markdown resolves: the file exists,
and a #fragment names a heading of that file (GitHub's anchor rules). Also
refuses links and mentions of paths outside the repository."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SKIP_DIRS = {"target", "node_modules", ".git", ".venv"}


def anchors(path):
    found = set()
    in_code = False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        text = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        found.add(text)
    return found


def main():
    problems = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            if not name.endswith(".md"):
                continue
            path = os.path.join(folder, name)
            text = open(path, encoding="utf-8").read()
            rel = os.path.relpath(path, ROOT)
            if "../shared" in text or "/work/" in text:
                problems.append(f"{rel}: mentions a path outside the repository")
            for target in LINK.findall(text):
                if re.match(r"^[a-z]+:", target):
                    continue  # http(s), mailto: not checked offline
                file_part, _, fragment = target.partition("#")
                dest = os.path.normpath(os.path.join(folder, file_part)) if file_part else path
                if not dest.startswith(ROOT) or not os.path.exists(dest):
                    problems.append(f"{rel}: broken link {target}")
                elif fragment and dest.endswith(".md") and fragment not in anchors(dest):
                    problems.append(f"{rel}: no heading for #{fragment} in {os.path.relpath(dest, ROOT)}")
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print("links ok")


if __name__ == "__main__":
    main()

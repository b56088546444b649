#!/usr/bin/env python3
"""Every relative link in the repository's Markdown resolves: the file exists,
and a #fragment names a heading of that file (GitHub's anchor rules). Also
refuses relative paths, linked or quoted as code, that lead out of the
repository: a reader of the repository has nothing there."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`(\.\./[^`\s]*)`")
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
            for quoted in CODE_PATH.findall(text):
                if not os.path.normpath(os.path.join(folder, quoted)).startswith(ROOT + os.sep):
                    problems.append(f"{rel}: `{quoted}` leads out of the repository")
            for target in LINK.findall(text):
                if re.match(r"^[a-z]+:", target):
                    continue  # http(s), mailto: not checked offline
                file_part, _, fragment = target.partition("#")
                dest = os.path.normpath(os.path.join(folder, file_part)) if file_part else path
                if not (dest == ROOT or dest.startswith(ROOT + os.sep)) or not os.path.exists(dest):
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

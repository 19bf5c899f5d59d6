"""Code blocks of the repository's Markdown files, for the tests that run
the documentation's commands as written."""

import re


def code_blocks(path, section, lang="sh"):
    """The ```lang blocks of a file's `## section`, in order."""
    text = path.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", body, re.S)

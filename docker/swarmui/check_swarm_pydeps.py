"""Build-time proof that SwarmUI's first start needs no network for Python packages.

On every ComfyUI backend start SwarmUI (`ComfyUISelfStartBackend.DoLibFixes`) pip-installs
whatever it finds missing from its two lists, `RequiredPythonPackages` and
`RequiredVersionPythonPackages`. This script reads those lists from the SwarmUI source that was
just checked out (so a new SWARMUI_REF cannot silently add a package) and checks the ComfyUI venv
the way SwarmUI does: a folder named `<libFolder>` or `<libFolder>-…` in site-packages, and the
version rule. Run it with the venv's python:

    venv/bin/python check_swarm_pydeps.py /SwarmUI/src/BuiltinExtensions/ComfyUIBackend/ComfyUISelfStartBackend.cs

Exits 1 listing every gap; prints nothing else a person needs to read.
"""

import importlib.metadata
import os
import re
import sys
import sysconfig

PAIR = re.compile(r'\(\s*"([^"]+)"\s*,\s*\$?"[^"]*"\s*\)')
QUAD = re.compile(r'\(\s*"([^"]+)"\s*,\s*"([^"]+)"\s*,\s*"([^"]+)"\s*,\s*"([^"]+)"\s*\)')


def list_block(source: str, name: str) -> str:
    """The text between `name =` and the `];` closing its collection expression, without comments."""
    match = re.search(rf"\b{name}\s*=\s*\[(.*?)\];", source, re.S)
    if not match:
        raise SystemExit(f"check_swarm_pydeps: {name} not found: SwarmUI changed its source layout, update this script")
    return "\n".join(line.split("//", 1)[0] for line in match.group(1).splitlines())


def parse_lists(source: str) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    plain = PAIR.findall(list_block(source, "RequiredPythonPackages"))
    versioned = QUAD.findall(list_block(source, "RequiredVersionPythonPackages"))
    if not plain or not versioned:
        raise SystemExit("check_swarm_pydeps: parsed an empty package list: SwarmUI changed its source layout")
    return plain, versioned


def version_tuple(text: str) -> tuple[int, ...]:
    """`Version.Parse(vers.Before(".dev"))` on the numeric part, as SwarmUI compares."""
    parts = []
    for piece in text.split(".dev")[0].split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def needs_update(installed: str, rel: str, wanted: str) -> bool:
    """SwarmUI's rule: `>=` and `==` only upgrade when older; `<=` when newer; `force-eq` on any difference."""
    have, want = version_tuple(installed), version_tuple(wanted)
    if rel in (">=", "=="):
        return have < want
    if rel == "<=":
        return have > want
    if rel == "force-eq":
        return have != want
    raise SystemExit(f"check_swarm_pydeps: unknown version relation {rel!r}: update this script")


def installed_version(pip_name: str) -> str | None:
    try:
        return importlib.metadata.version(pip_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(cs_path: str) -> int:
    with open(cs_path, encoding="utf-8") as handle:
        plain, versioned = parse_lists(handle.read())
    site = sysconfig.get_paths()["purelib"]
    libs = {entry.split("-", 1)[0].lower() for entry in os.listdir(site) if os.path.isdir(os.path.join(site, entry))}
    problems = []
    if "pip" not in libs:
        problems.append("pip is not in the venv")
    for lib_folder in plain:
        if lib_folder.lower() not in libs:
            problems.append(f"{lib_folder}: missing (SwarmUI would pip-install it at first start)")
    numpy = installed_version("numpy")
    if numpy is None or version_tuple(numpy) < (1, 25):
        problems.append(f"numpy {numpy}: SwarmUI wants >= 1.25")
    for lib_folder, pip_name, rel, wanted in versioned:
        have = installed_version(pip_name)
        if have is None or lib_folder.lower() not in libs:
            problems.append(f"{pip_name}: missing (SwarmUI wants {rel}{wanted})")
        elif needs_update(have, rel, wanted):
            problems.append(f"{pip_name} {have}: SwarmUI wants {rel}{wanted}")
    if problems:
        print("check_swarm_pydeps: the first start would need the network:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"check_swarm_pydeps: OK, {len(plain)} + {len(versioned)} packages SwarmUI checks are present")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: check_swarm_pydeps.py PATH/TO/ComfyUISelfStartBackend.cs")
    sys.exit(main(sys.argv[1]))

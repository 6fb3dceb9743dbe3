"""What tests/matrix/install installs and the tests find: each release of versions.json with the
directory it is installed in (`py-<package>-<version>`, `js-<package>-<version>`; frameworks name
theirs). One place for the naming, so installer and tests cannot drift apart."""
import json
import os

VERSIONS = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "versions.json")))


def install_dir_name(lang, entry):
    if "dir" in entry:
        return entry["dir"]
    tag = entry["package"].replace("@", "").replace("/", "-")
    return f"{'py' if lang == 'python' else 'js'}-{tag}-{entry['version']}"


def sdk_releases():
    """(language, entry) of the SDK matrix, in the order of versions.json."""
    return [(lang, e) for lang in ("python", "js") for e in VERSIONS[lang]]


def installs():
    """(language, entry) of everything to install: the SDK releases, then the frameworks."""
    return sdk_releases() + [("python", e) for e in VERSIONS.get("frameworks", [])]


if __name__ == "__main__":
    # For the installer: one line per install, `lang package version dir with`.
    for lang, e in installs():
        print(lang, e["package"], e["version"], install_dir_name(lang, e), e.get("with", ""))

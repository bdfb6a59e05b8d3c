"""Fails unless the crates evcxr built a notebook with are the versions in Cargo.lock.

    python scripts/check_lock.py EVCXR_LOCK PROJECT_LOCK
    python scripts/check_lock.py --selftest PROJECT_LOCK   (shows that the check can fail)

evcxr resolves dependencies into a Cargo.lock of its own build folder; every package there
but evcxr's own crate (`ctx`) must be in the project's Cargo.lock at the same version and
source.
"""
import sys
import tomllib


def packages(text):
    return {(p["name"], p["version"]): p.get("source") for p in tomllib.loads(text).get("package", [])}


def differences(evcxr_text, project_text):
    ours = packages(project_text)
    found = []
    for (name, version), source in sorted(packages(evcxr_text).items()):
        if name == "ctx":
            continue
        if (name, version) not in ours:
            pinned = sorted(v for (n, v) in ours if n == name)
            found.append(f"{name} {version} (Cargo.lock: {', '.join(pinned) or 'absent'})")
        elif ours[(name, version)] != source:
            found.append(f"{name} {version} from {source} (Cargo.lock: {ours[(name, version)]})")
    return found


def main(argv):
    if argv[:1] == ["--selftest"]:
        text = open(argv[1]).read()
        bumped = text.replace('name = "serde"\nversion = "', 'name = "serde"\nversion = "9', 1)
        assert bumped != text, "selftest: no serde entry to change"
        ok = not differences(text, text) and differences(bumped, text)
        print(f"check_lock selftest: same lock passes, a changed version fails: {'yes' if ok else 'NO'}")
        return 0 if ok else 1
    evcxr, project = argv
    found = differences(open(evcxr).read(), open(project).read())
    for line in found:
        print(f"check_lock: evcxr built {line}", file=sys.stderr)
    count = len(packages(open(evcxr).read())) - 1
    print(f"check_lock: {count} crates in evcxr's lock, {len(found)} not as in Cargo.lock")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

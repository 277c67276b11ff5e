"""Install wheels into a venv on the device, with nothing but the device's Python (no pip).

Run on the device by ``edge targets setup`` (:mod:`edge.provision` sends this file's source
with ``python -c``)::

    python -c SOURCE VENV_DIR '["/path/a.whl", ...]'

Creates VENV_DIR (``python -m venv --without-pip``; a bare site-packages folder where the
``venv`` module is missing), then unpacks each wheel not yet installed: files first, its
``.dist-info`` last, so a wheel cut short is installed again by the next run; an older version
of the same distribution is removed first (its RECORD). Prints one JSON line: the
site-packages path, the wheels installed (bytes written) and every distribution present.
"""
import json
import os
import shutil
import sys
import zipfile


def site_packages(venv):
    return os.path.join(venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")


def make_venv(venv):
    if not os.path.exists(os.path.join(venv, "pyvenv.cfg")):
        try:
            import venv as venv_module
            venv_module.EnvBuilder(with_pip=False, symlinks=True).create(venv)
        except Exception as exc:  # Debian without python3-venv parts, a read-only lib: a bare folder works
            sys.stderr.write("venv module failed (%s); using a plain site-packages folder\n" % exc)
    os.makedirs(site_packages(venv), exist_ok=True)
    return site_packages(venv)


def present(site):
    """{distribution name: version} of every installed .dist-info."""
    out = {}
    for entry in os.listdir(site):
        if entry.endswith(".dist-info") and "-" in entry:
            name, version = entry[:-len(".dist-info")].rsplit("-", 1)
            out[name.lower()] = version
    return out


def _remove(site, name, version):
    """Remove an installed distribution through its RECORD."""
    info = os.path.join(site, "%s-%s.dist-info" % (name, version))
    for cand in os.listdir(site):
        if cand.lower() == os.path.basename(info).lower():
            info = os.path.join(site, cand)
    try:
        with open(os.path.join(info, "RECORD")) as f:
            for line in f:
                path = os.path.normpath(os.path.join(site, line.rsplit(",", 2)[0]))
                if path.startswith(site + os.sep) and os.path.isfile(path):
                    os.remove(path)
    except OSError:
        pass
    shutil.rmtree(info, ignore_errors=True)


def _target(venv, site, member):
    """Where a wheel member goes: site-packages, or a .data/<scheme>/ folder's place."""
    parts = member.split("/")
    if len(parts) > 2 and parts[0].endswith(".data"):
        scheme, rest = parts[1], "/".join(parts[2:])
        base = {"purelib": site, "platlib": site, "scripts": os.path.join(venv, "bin")}.get(scheme, venv)
        return os.path.join(base, rest)
    return os.path.join(site, member)


def install(venv, site, wheel):
    """Unpack one wheel; returns the bytes written."""
    written = 0
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        # .dist-info last: it marks the wheel as installed
        members.sort(key=lambda m: ".dist-info/" in m.filename)
        for m in members:
            dest = os.path.normpath(_target(venv, site, m.filename))
            if not dest.startswith(os.path.normpath(venv) + os.sep):
                raise ValueError("%s: member %s leaves the venv" % (wheel, m.filename))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with zf.open(m) as src, open(dest + ".part", "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(dest + ".part", dest)
            mode = (m.external_attr >> 16) & 0o777
            if mode & 0o111:
                os.chmod(dest, 0o755)
            written += m.file_size
    return written


def main(argv):
    venv, wheels = os.path.abspath(argv[0]), json.loads(argv[1]) if len(argv) > 1 else []
    site = make_venv(venv)
    installed = []
    for wheel in wheels:
        name, version = os.path.basename(wheel).split("-")[:2]
        have = present(site)
        if have.get(name.lower()) == version:
            continue
        if name.lower() in have:
            _remove(site, name, have[name.lower()])
        installed.append({"name": name, "version": version, "bytes": install(venv, site, wheel)})
    print(json.dumps({"site": site, "installed": installed, "present": present(site),
                      "python": "%d.%d" % sys.version_info[:2]}))


if __name__ == "__main__":
    main(sys.argv[1:])

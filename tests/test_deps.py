"""nwcache/deps.py: the dependency check the client and the daemon share,
and whether a venv already satisfies a request (then nothing is resolved)."""

from __future__ import annotations

from packaging.markers import default_environment

from nwcache.deps import Dist, problems, satisfied

MARKERS = {k: str(v) for k, v in default_environment().items()}
VENV = {
    "app": Dist("App", "1.0", ["lib>=2", 'fast; extra == "fast"', 'never; python_version < "3"']),
    "lib": Dist("lib", "2.1", []),
}


def test_satisfied_follows_requirements_extras_and_markers() -> None:
    assert satisfied(["app", "App>=1", "lib==2.1"], VENV, MARKERS)
    assert not satisfied(["app[fast]"], VENV, MARKERS)  # the extra's dependency is missing
    assert satisfied(["app[fast]"], {**VENV, "fast": Dist("fast", "1", [])}, MARKERS)
    assert not satisfied(["app>1"], VENV, MARKERS)
    assert not satisfied(["app"], {"app": VENV["app"], "lib": Dist("lib", "1.0")}, MARKERS)  # lib>=2
    assert satisfied(['other; python_version < "3"'], VENV, MARKERS)  # not for this interpreter
    assert not satisfied(["app @ https://example.org/app-1.0-py3-none-any.whl"], VENV, MARKERS)
    assert not satisfied(["not a requirement!"], VENV, MARKERS)


def test_problems_involve_what_changed() -> None:
    old_lib = {**VENV, "lib": Dist("lib", "1.0")}
    assert problems(old_lib, {"lib"}, MARKERS) == ["App 1.0 requires lib>=2, but lib 1.0 is installed"]
    assert problems(old_lib, {"other"}, MARKERS) == []  # not involved
    assert problems({"app": VENV["app"]}, {"app"}, MARKERS) == [
        "App 1.0 requires lib>=2, which is not installed"
    ]

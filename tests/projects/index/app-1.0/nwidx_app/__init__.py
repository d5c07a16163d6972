VERSION = "1.0"


def main() -> None:
    print(f"nwidx-app {VERSION}")

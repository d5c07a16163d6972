"""Core helpers."""

from .sub_a.alpha import shout
from .sub_b.beta import reverse_words


def greeting(who: str) -> str:
    return shout(f"hello from nwdemo-pure {who}") + " / " + reverse_words("round trip ok")

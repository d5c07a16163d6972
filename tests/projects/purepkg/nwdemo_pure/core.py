"""Core helpers."""

from nwdemo_pure.sub_a.alpha import shout
from nwdemo_pure.sub_b.beta import reverse_words


def greeting(who: str) -> str:
    return shout(f"hello from nwdemo-pure {who}") + " / " + reverse_words("round trip ok")

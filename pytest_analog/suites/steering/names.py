"""The names of the steering part's tensors: written by the teacher half, read by the analog half and the fixtures."""


def map_name(layer: int) -> str:
    """The part's tensor of the teacher's states at ``layer`` on the map prompts."""
    return f"map/{layer}"


def native_name(behaviour: str, layer: int) -> str:
    """The part's tensor of the teacher's native vector of ``behaviour`` at ``layer``."""
    return f"{behaviour}/{layer}/native"


def differences_name(behaviour: str, layer: int) -> str:
    """The part's tensor of the teacher's per-pair activation differences of ``behaviour`` at ``layer``."""
    return f"{behaviour}/{layer}/differences"
